/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §4 and §7): the proxy opens a UDP relay socket on the address the
 * client reached it at, says where in the reply (BND.ADDR, BND.PORT), and relays datagrams between
 * the client and the Dialer's `UdpSession` (the tunnel's UDP subsystem) until the TCP connection
 * that asked for it closes ("A UDP association terminates when the TCP connection that the UDP
 * ASSOCIATE request arrived on terminates", §6/§7).
 *
 * - Who may send: §4, "The DST.ADDR and DST.PORT fields contain the address and port that the
 *   client expects to use to send UDP datagrams on for the association. The server MAY use this
 *   information to limit access to the association." It does: only that address (the TCP peer's
 *   when the client sent all zeros, or a name), and only that port unless it was 0. Anything else
 *   is dropped.
 * - FRAG: §7 "An implementation that does not support fragmentation MUST drop any datagram whose
 *   FRAG field is other than X'00'." Fragmentation is not supported; such datagrams are dropped.
 * - DST.ADDR may be a name: it is resolved on the far side (the flow's OPEN carries the name).
 * - Each destination is a flow of the session; its answers go back to the client with the header
 *   naming that destination as the client named it (RFC 4787-style filtering: only the destination
 *   answers, src/protocol/udp.ts). ICMP errors have no SOCKS form and are only counted.
 * - Bounds: MAX_FLOWS destinations per association (the least recently used goes), flows idle for
 *   120 s (30 s to port 53) go, as the shadow's (src/shadow/udp.ts); a datagram the session does not
 *   take is dropped, and so is an answer while more than 1 MiB waits to go to the client.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { isIPv6, type Socket } from 'node:net';
import type { UdpFlow, UdpSession } from '../dialer.js';
import type { ProxyContext } from './context.js';
import { Reply, encodeReply, encodeUdpHeader, parseUdpDatagram, type SocksRequest } from './socks5-wire.js';

export const SOCKS_UDP_BOUNDS = { MAX_FLOWS: 256, IDLE_MS: 120_000, DNS_IDLE_MS: 30_000 } as const;
const RELAY_RECV_BUFFER_BYTES = 2 << 20;
const RELAY_MAX_SEND_QUEUE_BYTES = 1 << 20;

interface Flow {
  key: string;
  host: string;
  port: number;
  flow: UdpFlow;
  lastActive: number;
  idleMs: number;
  /** where the client sent from last: where answers go */
  client: { address: string; port: number };
}

/** Counters of one association, for the proxy's event. */
export interface UdpAssociationCounters {
  datagramsOut: number;
  datagramsIn: number;
  dropped: number;
  errors: number;
}

/**
 * Serves a UDP ASSOCIATE request on `socket` (the handshake is done). `session` undefined: the far
 * side carries no UDP, the client gets X'07' (command not supported) as for a server without it.
 */
export function serveUdpAssociate(socket: Socket, ctx: ProxyContext, request: SocksRequest, session: UdpSession | undefined): void {
  if (session === undefined) {
    ctx.clientError(socket, 'socks5', 'UDP ASSOCIATE refused: the tunnel carries no UDP (its server has no ktctl UDP subsystem)');
    ctx.refuse(socket, encodeReply(Reply.commandNotSupported));
    return;
  }
  const local = plain(socket.localAddress ?? '127.0.0.1');
  const peer = plain(socket.remoteAddress ?? '');
  const named = plain(request.host);
  // §4: all zeros (or a name we cannot compare with) means "the TCP peer, any port it likes" for the address.
  const allowedAddress = named === '0.0.0.0' || named === '::' || (request.addressType === 3) ? peer : named;
  const allowedPort = request.port;
  // A burst of a thousand small datagrams waits in the kernel while the event loop writes the tunnel
  // (the default buffer, ~200 KiB, holds about 250); capped by net.core.rmem_max.
  const relay = createSocket({ type: isIPv6(local) ? 'udp6' : 'udp4', recvBufferSize: RELAY_RECV_BUFFER_BYTES });
  const flows = new Map<string, Flow>();
  const counters: UdpAssociationCounters = { datagramsOut: 0, datagramsIn: 0, dropped: 0, errors: 0 };
  let closed = false;
  let sweeper: NodeJS.Timeout | undefined;

  const end = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(sweeper);
    for (const f of flows.values()) f.flow.close();
    flows.clear();
    try {
      relay.close();
    } catch {
      /* not bound yet, or closed */
    }
    socket.destroy();
  };
  socket.once('close', end);
  // The control connection carries nothing more (§7); what comes is read and dropped, its end ends all.
  socket.on('data', () => undefined);
  socket.once('end', end);
  relay.on('error', () => end());

  const onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (plain(rinfo.address) !== allowedAddress || (allowedPort !== 0 && rinfo.port !== allowedPort)) {
      counters.dropped++;
      return;
    }
    const d = parseUdpDatagram(msg);
    if (d === undefined || d.frag !== 0 || d.port === 0) {
      counters.dropped++;
      return;
    }
    const key = `${d.host}|${d.port}`;
    let f = flows.get(key);
    if (f === undefined) {
      if (flows.size >= SOCKS_UDP_BOUNDS.MAX_FLOWS) evictOldest();
      const header = encodeUdpHeader(d.host, d.port);
      const entry: Flow = {
        key,
        host: d.host,
        port: d.port,
        lastActive: Date.now(),
        idleMs: d.port === 53 ? SOCKS_UDP_BOUNDS.DNS_IDLE_MS : SOCKS_UDP_BOUNDS.IDLE_MS,
        client: { address: rinfo.address, port: rinfo.port },
        flow: undefined as unknown as UdpFlow,
      };
      entry.flow = session.open(d.host, d.port, {
        message: (payload) => {
          if (closed) return;
          entry.lastActive = Date.now();
          // The client does not read (its socket buffer is full): drop rather than queue.
          if (relay.getSendQueueSize() > RELAY_MAX_SEND_QUEUE_BYTES) {
            counters.dropped++;
            return;
          }
          counters.datagramsIn++;
          relay.send([header, payload], entry.client.port, entry.client.address);
        },
        error: () => {
          counters.errors++;
        },
      });
      f = entry;
      flows.set(key, f);
    }
    f.lastActive = Date.now();
    f.client = { address: rinfo.address, port: rinfo.port };
    if (f.flow.send(d.data)) counters.datagramsOut++;
    else counters.dropped++;
  };

  const evictOldest = (): void => {
    let oldest: Flow | undefined;
    for (const f of flows.values()) if (oldest === undefined || f.lastActive < oldest.lastActive) oldest = f;
    if (oldest === undefined) return;
    flows.delete(oldest.key);
    oldest.flow.close();
  };

  relay.on('message', onMessage);
  relay.bind(0, local, () => {
    if (closed) return end();
    const { port } = relay.address();
    sweeper = setInterval(() => {
      const now = Date.now();
      for (const f of flows.values()) {
        if (now - f.lastActive >= f.idleMs) {
          flows.delete(f.key);
          f.flow.close();
        }
      }
    }, SOCKS_UDP_BOUNDS.DNS_IDLE_MS / 4);
    sweeper.unref();
    socket.write(encodeReply(Reply.succeeded, local, port));
  });
}

/** An IPv4-mapped IPv6 address as plain IPv4 (a dual-stack listener reports those). */
function plain(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
