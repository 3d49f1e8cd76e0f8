/**
 * A small SOCKS5 UDP ASSOCIATE client (RFC 1928 §4, §7) for tests, written from the RFC and nothing
 * else, so it checks the proxy as an independent client would: the TCP control connection with the
 * greeting and the request, then datagrams with the §7 header to the relay the reply names.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { connect, isIPv4, type Socket } from 'node:net';

export interface SocksUdpReply {
  host: string;
  port: number;
  data: Buffer;
}

export interface SocksUdpAssociation {
  /** the relay's address and port from the reply */
  relay: { host: string; port: number };
  /** the reply code (0 = succeeded) */
  code: number;
  control: Socket;
  socket: DgramSocket;
  /** sends `data` to host:port through the relay (`frag` in the header, 0 by default) */
  send(host: string, port: number, data: Buffer, frag?: number): void;
  /** the next datagram the relay sends back, or an error after `timeoutMs` */
  next(timeoutMs?: number): Promise<SocksUdpReply>;
  /** every datagram received so far, parsed */
  received: SocksUdpReply[];
  close(): Promise<void>;
}

/** The §7 header for host:port (IPv4 or a name). */
export function udpHeader(host: string, port: number, frag = 0): Buffer {
  let addr: Buffer;
  if (isIPv4(host)) addr = Buffer.from([1, ...host.split('.').map(Number)]);
  else addr = Buffer.concat([Buffer.from([3, host.length]), Buffer.from(host, 'latin1')]);
  const out = Buffer.alloc(3 + addr.length + 2);
  out[2] = frag;
  addr.copy(out, 3);
  out.writeUInt16BE(port, 3 + addr.length);
  return out;
}

function parseReplyAddress(buf: Buffer, at: number): { host: string; port: number; end: number } {
  const atyp = buf[at]!;
  if (atyp === 1) return { host: [...buf.subarray(at + 1, at + 5)].join('.'), port: buf.readUInt16BE(at + 5), end: at + 7 };
  if (atyp === 3) {
    const n = buf[at + 1]!;
    return { host: buf.toString('latin1', at + 2, at + 2 + n), port: buf.readUInt16BE(at + 2 + n), end: at + 4 + n };
  }
  throw new Error(`address type ${atyp} in a reply`);
}

/**
 * Opens the control connection to the proxy at host:port, asks for UDP ASSOCIATE naming
 * `from` (default 0.0.0.0:0) and binds a UDP socket on 127.0.0.1 (port `bindPort`, default any).
 */
export async function socksUdpAssociate(proxyHost: string, proxyPort: number, o: { from?: { host: string; port: number }; bindPort?: number } = {}): Promise<SocksUdpAssociation> {
  const control = connect(proxyPort, proxyHost);
  control.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    control.once('connect', resolve);
    control.once('error', reject);
  });
  let buffered = Buffer.alloc(0);
  const read = (n: number): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (buffered.length >= n) {
          control.off('data', onData);
          control.off('close', onClose);
          const out = buffered.subarray(0, n);
          buffered = buffered.subarray(n);
          resolve(out);
        }
      };
      const onData = (d: Buffer): void => {
        buffered = Buffer.concat([buffered, d]);
        check();
      };
      const onClose = (): void => reject(new Error('the proxy closed the control connection'));
      control.on('data', onData);
      control.once('close', onClose);
      check();
    });
  control.write(Buffer.from([5, 1, 0]));
  const method = await read(2);
  if (method[1] !== 0) throw new Error(`method ${method[1]}`);
  const from = o.from ?? { host: '0.0.0.0', port: 0 };
  const req = udpHeader(from.host, from.port);
  req[0] = 5;
  req[1] = 3; // UDP ASSOCIATE
  req[2] = 0;
  control.write(req);
  const head = await read(5);
  const rest = await read(head[3] === 1 ? 5 : head[3] === 4 ? 17 : head[4]! + 2);
  const reply = Buffer.concat([head, rest]);
  const bound = parseReplyAddress(reply, 3);
  const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  await new Promise<void>((resolve) => socket.bind(o.bindPort ?? 0, '127.0.0.1', resolve));
  const received: SocksUdpReply[] = [];
  let waiter: (() => void) | undefined;
  socket.on('message', (msg) => {
    const a = parseReplyAddress(msg, 3);
    received.push({ host: a.host, port: a.port, data: Buffer.from(msg.subarray(a.end)) });
    waiter?.();
  });
  let read_ = 0;
  let closed = false;
  return {
    relay: { host: bound.host, port: bound.port },
    code: reply[1]!,
    control,
    socket,
    received,
    send(host, port, data, frag = 0) {
      socket.send(Buffer.concat([udpHeader(host, port, frag), data]), bound.port, bound.host);
    },
    async next(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length <= read_) {
        if (Date.now() > deadline) throw new Error(`no datagram within ${timeoutMs} ms (${received.length} so far)`);
        await new Promise<void>((resolve) => {
          waiter = resolve;
          setTimeout(resolve, 50);
        });
      }
      return received[read_++]!;
    },
    async close() {
      control.destroy();
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
