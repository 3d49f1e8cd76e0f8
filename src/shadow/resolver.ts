import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { connect, isIP } from 'node:net';
import { DnsFrameDecoder, frameDnsMessage } from '../protocol/index.js';

/** DNS header (RFC 1035 §4.1.1): id, flags, four counts; all big-endian 16-bit. */
const HEADER_LEN = 12;
const FLAGS_HI = 2; // QR(0x80) OPCODE(0x78) AA(0x04) TC(0x02) RD(0x01)
const FLAGS_LO = 3; // RA(0x80) Z AD CD RCODE(0x0f)
const TC = 0x02;
const RCODE_SERVFAIL = 2;

export interface Nameserver {
  host: string;
  port: number;
}

export interface UpstreamResolverOptions {
  /** resolv.conf to take the first `nameserver` from (default /etc/resolv.conf). */
  resolvConfPath?: string;
  /** Skip resolv.conf and ask this server. */
  nameserver?: Nameserver;
  /** How long one UDP attempt waits for its answer (default 1500 ms). */
  attemptTimeoutMs?: number;
  /** UDP attempts before giving up (default 2). */
  attempts?: number;
  /** Timeout of the TCP retry after a truncated answer (default 3000 ms). */
  tcpTimeoutMs?: number;
}

/**
 * Answers DNS messages with the pod's own resolver: the first `nameserver` of resolv.conf, over
 * UDP with retries, and again over TCP when the UDP answer is truncated (RFC 7766 §5). Never
 * fails: a query that gets no answer is answered with SERVFAIL (RFC 1035 §4.1.1), keeping its id.
 * The message is passed through untouched; only the id and the TC bit are looked at.
 */
export class UpstreamResolver {
  readonly #options: UpstreamResolverOptions;
  #server: Promise<Nameserver> | undefined;

  constructor(options: UpstreamResolverOptions = {}) {
    this.#options = options;
  }

  /** The server queries go to (resolv.conf is read once, on first use). */
  nameserver(): Promise<Nameserver> {
    if (this.#options.nameserver) return Promise.resolve(this.#options.nameserver);
    this.#server ??= readNameserver(this.#options.resolvConfPath ?? '/etc/resolv.conf');
    return this.#server;
  }

  /** Resolves with the upstream's answer, or with SERVFAIL when there is none. */
  async query(message: Buffer): Promise<Buffer> {
    if (message.length < HEADER_LEN) return servfail(message);
    try {
      const server = await this.nameserver();
      const udpAnswer = await this.#udp(server, message);
      if (udpAnswer === undefined) return servfail(message);
      if ((udpAnswer[FLAGS_HI]! & TC) === 0) return udpAnswer;
      return (await this.#tcp(server, message)) ?? udpAnswer;
    } catch {
      return servfail(message);
    }
  }

  #udp(server: Nameserver, message: Buffer): Promise<Buffer | undefined> {
    const attempts = this.#options.attempts ?? 2;
    const attemptMs = this.#options.attemptTimeoutMs ?? 1500;
    const id = message.readUInt16BE(0);
    return new Promise((resolve) => {
      const sock: UdpSocket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
      let sent = 0;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (answer: Buffer | undefined): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.close();
        resolve(answer);
      };
      const send = (): void => {
        if (sent++ >= attempts) {
          finish(undefined);
          return;
        }
        sock.send(message);
        timer = setTimeout(send, attemptMs);
      };
      sock.on('message', (answer) => {
        // Only an answer to this query counts (RFC 5452 §4.3: id and source address).
        if (answer.length >= HEADER_LEN && answer.readUInt16BE(0) === id) finish(answer);
      });
      sock.on('error', () => finish(undefined));
      sock.connect(server.port, server.host, send);
    });
  }

  #tcp(server: Nameserver, message: Buffer): Promise<Buffer | undefined> {
    const id = message.readUInt16BE(0);
    return new Promise((resolve) => {
      const sock = connect({ host: server.host, port: server.port });
      const decoder = new DnsFrameDecoder();
      const timer = setTimeout(() => finish(undefined), this.#options.tcpTimeoutMs ?? 3000);
      let done = false;
      function finish(answer: Buffer | undefined): void {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sock.destroy();
        resolve(answer);
      }
      sock.on('connect', () => sock.write(frameDnsMessage(message)));
      sock.on('data', (chunk: Buffer) => {
        for (const answer of decoder.push(chunk)) {
          if (answer.length >= HEADER_LEN && answer.readUInt16BE(0) === id) finish(answer);
        }
      });
      sock.on('error', () => finish(undefined));
      sock.on('close', () => finish(undefined));
    });
  }
}

/** The first `nameserver` line of a resolv.conf; glibc's default (127.0.0.1) when there is none. */
export async function readNameserver(path: string): Promise<Nameserver> {
  const text = await readFile(path, 'utf8');
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (m && isIP(m[1]!.replace(/%.*$/, '')) !== 0) return { host: m[1]!, port: 53 };
  }
  return { host: '127.0.0.1', port: 53 };
}

/**
 * A SERVFAIL answer to `query`: same id, opcode and RD, QR and RA set, RCODE 2, the question
 * copied when it can be found, no other records.
 */
export function servfail(query: Buffer): Buffer {
  const out = Buffer.alloc(HEADER_LEN);
  if (query.length >= 2) query.copy(out, 0, 0, 2);
  const hi = query.length > FLAGS_HI ? query[FLAGS_HI]! : 0;
  out[FLAGS_HI] = 0x80 | (hi & 0x78) | (hi & 0x01);
  out[FLAGS_LO] = 0x80 | RCODE_SERVFAIL;
  const qEnd = query.length >= HEADER_LEN && query.readUInt16BE(4) === 1 ? questionEnd(query, HEADER_LEN) : -1;
  if (qEnd < 0) return out;
  out.writeUInt16BE(1, 4);
  return Buffer.concat([out, query.subarray(HEADER_LEN, qEnd)]);
}

/** Offset just past the question that starts at `offset` (name, type, class), or -1. */
function questionEnd(msg: Buffer, offset: number): number {
  let p = offset;
  for (;;) {
    if (p >= msg.length) return -1;
    const len = msg[p]!;
    if (len === 0) {
      p += 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      p += 2;
      break;
    }
    if ((len & 0xc0) !== 0) return -1;
    p += 1 + len;
  }
  return p + 4 <= msg.length ? p + 4 : -1;
}
