/**
 * The machine's original resolvers, asked the way a stub resolver asks them (RFC 1035 §4.2,
 * RFC 7766): UDP first from a fresh socket (random source port) with an id of our own; an answer
 * with TC set is asked again over TCP; no answer within the timeout moves on to the next server.
 * The answer's bytes are handed back unchanged but for the id, which is the caller's again.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { DnsQueryError } from '../errors.js';
import { DnsFrameDecoder, frameDnsMessage } from '../protocol/index.js';
import { HEADER_LENGTH, isTruncated, readId, readQuestion, withId } from './message.js';

export interface UpstreamServer {
  host: string;
  port: number;
}

/**
 * Parses a server as written in options: `IP`, `IPv4:port`, `[IPv6]:port` (port 53 when absent).
 * resolv.conf itself has no ports; tests give one.
 */
export function parseServer(spec: string): UpstreamServer | undefined {
  const s = spec.trim();
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return net.isIPv6(v6[1]!) ? { host: v6[1]!, port: v6[2] ? Number(v6[2]) : 53 } : undefined;
  if (net.isIPv6(s)) return { host: s, port: 53 };
  const v4 = /^([0-9.]+)(?::(\d+))?$/.exec(s);
  if (v4 && net.isIPv4(v4[1]!)) {
    const port = v4[2] ? Number(v4[2]) : 53;
    return port > 0 && port < 65536 ? { host: v4[1]!, port } : undefined;
  }
  return undefined;
}

export function formatServer(s: UpstreamServer): string {
  const host = net.isIPv6(s.host) ? `[${s.host}]` : s.host;
  return `${host}:${s.port}`;
}

export interface UpstreamOptions {
  servers: UpstreamServer[];
  /** per server and transport (default 2000 ms) */
  timeoutMs?: number;
  /** rounds over the server list (default 2, like glibc's `attempts:2`) */
  attempts?: number;
}

export class UpstreamClient {
  readonly servers: readonly UpstreamServer[];
  readonly #timeoutMs: number;
  readonly #attempts: number;

  constructor(options: UpstreamOptions) {
    this.servers = options.servers;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#attempts = Math.max(1, options.attempts ?? 2);
  }

  /** Resolves with the first usable answer (any rcode); rejects with DnsQueryError when none came. */
  async query(message: Buffer): Promise<Buffer> {
    if (this.servers.length === 0) throw new DnsQueryError('unsupported', 'no upstream DNS server is configured');
    const callerId = readId(message);
    let last: unknown;
    for (let round = 0; round < this.#attempts; round++) {
      for (const server of this.servers) {
        const id = randomInt(0x10000);
        const q = withId(message, id);
        try {
          let answer = await udpExchange(server, q, this.#timeoutMs);
          // RFC 1035 §4.2.1, RFC 7766 §5: a truncated answer is asked again over TCP.
          if (isTruncated(answer)) answer = await tcpExchange(server, q, this.#timeoutMs);
          return withId(answer, callerId);
        } catch (e) {
          last = e;
        }
      }
    }
    throw new DnsQueryError('timeout', `no answer from the upstream DNS servers (${this.servers.map(formatServer).join(', ')})`, { cause: last });
  }
}

/** True when `answer` answers `query`: same id and the same question (name compared case-insensitively). */
function matches(query: Buffer, answer: Buffer): boolean {
  if (answer.length < HEADER_LENGTH || readId(answer) !== readId(query)) return false;
  const q = readQuestion(query);
  const a = readQuestion(answer);
  if (q === undefined) return true;
  // A FORMERR may come back without a question.
  if (a === undefined) return answer.readUInt16BE(4) === 0;
  return q.type === a.type && q.class === a.class && q.name.toLowerCase() === a.name.toLowerCase();
}

export function udpExchange(server: UpstreamServer, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: Error | undefined, answer?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new DnsQueryError('timeout', `no UDP answer from ${formatServer(server)} within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(e));
    sock.on('message', (msg, rinfo) => {
      // Only the server we asked, with our id and question (RFC 5452 §9.1); anything else is ignored.
      if (rinfo.port !== server.port || !sameAddress(rinfo.address, server.host)) return;
      if (!matches(query, msg)) return;
      finish(undefined, msg);
    });
    sock.connect(server.port, server.host, () => {
      sock.send(query, (e) => {
        if (e) finish(e);
      });
    });
  });
}

function sameAddress(a: string, b: string): boolean {
  const strip = (s: string): string => s.replace(/^::ffff:/, '').toLowerCase();
  return strip(a) === strip(b);
}

export function tcpExchange(server: UpstreamServer, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: server.host, port: server.port });
    const decoder = new DnsFrameDecoder();
    let done = false;
    const finish = (err: Error | undefined, answer?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new DnsQueryError('timeout', `no TCP answer from ${formatServer(server)} within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(new DnsQueryError('timeout', `${formatServer(server)} closed the TCP connection without an answer`)));
    sock.on('connect', () => sock.write(frameDnsMessage(query)));
    sock.on('data', (chunk: Buffer) => {
      for (const msg of decoder.push(chunk)) {
        if (matches(query, msg)) {
          finish(undefined, msg);
          return;
        }
      }
    });
  });
}
