/**
 * The live figures of a running session (issue 14): flows open, bytes in and out with their rates,
 * DNS queries and answers, reconnects and the tunnel's round trip. They are counted where every
 * serving command's traffic passes, the Tunnel (src/transport.ts): each stream it dials and each
 * stream a remote forward hands over is metered, whatever front end uses it (TUN engine, proxy,
 * `forward`, the remote forwards of exchange/mesh/preview). The control socket (socket.ts) serves
 * them; `ktctl status` and the dashboard read them there.
 *
 * Counting costs one wrapped `push` and `write` per stream (made once, when the stream opens),
 * never a listener: a 'data' listener would switch a paused stream to flowing and change what the
 * front ends see. "in" is what came from the far side, "out" what went to it.
 */
import type { Duplex } from 'node:stream';
import type { DialOptions } from '../dialer.js';
import type { RemoteConnection, Tunnel } from '../transport.js';

/** Which serving command runs, for the figures' reader. */
export interface SessionInfo {
  command: 'connect' | 'forward' | 'exchange' | 'mesh' | 'preview';
  /** --mode (tun/socks, selector/scale, auto/manual), or '' */
  mode: string;
  /** what the command serves: the service, the preview's name, the forward's target; '' for connect */
  target: string;
  /** true for --via (an ssh server), false for a shadow pod through the Kubernetes API */
  via: boolean;
}

/** What the control socket answers (version 1; fields are only ever added). */
export interface SessionFigures extends SessionInfo {
  version: 1;
  pid: number;
  /** the Transport's label: the shadow pod (`shadow pod ns/name`) or the --via server */
  transport: string;
  startedAt: string;
  flows: { open: number; opened: number };
  bytes: { in: number; out: number };
  /** bytes per second over the last whole second */
  rates: { in: number; out: number };
  dns: { queries: number; answers: number };
  reconnects: number;
  /** open streams carried over reconnects, and those lost (the resume window ran out, ...); null without the resume layer */
  streams: { resumed: number; lost: number } | null;
  /** the last round trip of the tunnel (ssh keepalive request), ms; null before the first or while it is down */
  rttMs: number | null;
  /** bytes per second in and out, one entry a second, oldest first (at most HISTORY_SECONDS) */
  history: Array<{ at: number; in: number; out: number }>;
}

/** How many seconds of rates a session keeps for the dashboard's chart (a fixed ring). */
export const HISTORY_SECONDS = 120;
/** How often the tunnel's round trip is measured. */
export const PING_EVERY_MS = 5000;

interface Counters {
  open: number;
  opened: number;
  bytesIn: number;
  bytesOut: number;
  dnsQueries: number;
  dnsAnswers: number;
}

/**
 * A Tunnel that counts what passes through `inner`: `tunnel` is what the front ends get, `figures()`
 * what the control socket serves. `start()` runs the once-a-second sampler and the ping (both
 * unref'd); `stop()` ends them.
 */
export class TunnelMeter {
  readonly tunnel: Tunnel;
  readonly #inner: Tunnel;
  readonly #info: SessionInfo;
  readonly #label: string;
  readonly #startedAt = new Date().toISOString();
  readonly #c: Counters = { open: 0, opened: 0, bytesIn: 0, bytesOut: 0, dnsQueries: 0, dnsAnswers: 0 };
  /** the ring of per-second rates: HISTORY_SECONDS slots, `#next` the slot to write */
  readonly #ring: Array<{ at: number; in: number; out: number }> = [];
  #next = 0;
  #last = { in: 0, out: 0 };
  #rtt: number | null = null;
  #sampler: NodeJS.Timeout | undefined;
  #pinger: NodeJS.Timeout | undefined;

  constructor(inner: Tunnel, info: SessionInfo, label: string) {
    this.#inner = inner;
    this.#info = info;
    this.#label = label;
    const meter = (stream: Duplex): Duplex => this.#meter(stream);
    const c = this.#c;
    this.tunnel = {
      dial: async (host: string, port: number, options?: DialOptions) => meter(await inner.dial(host, port, options)),
      dnsQuery: async (message: Buffer, options?: { signal?: AbortSignal }) => {
        c.dnsQueries++;
        const answer = await inner.dnsQuery(message, options);
        c.dnsAnswers++;
        return answer;
      },
      forwardIn: (bindAddr: string, bindPort: number, handler: (stream: Duplex, info: RemoteConnection) => void) =>
        inner.forwardIn(bindAddr, bindPort, (stream, info) => handler(meter(stream), info)),
      get reconnects() {
        return inner.reconnects;
      },
      get resumeCounts() {
        return inner.resumeCounts;
      },
      ping: inner.ping ? (timeoutMs?: number) => inner.ping!(timeoutMs) : undefined,
      udp: inner.udp ? () => inner.udp!() : undefined,
    };
  }

  #meter(stream: Duplex): Duplex {
    const c = this.#c;
    c.open++;
    c.opened++;
    stream.once('close', () => c.open--);
    const push = stream.push;
    stream.push = function (this: Duplex, chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk !== null && chunk !== undefined) c.bytesIn += byteLength(chunk);
      return push.call(this, chunk, encoding);
    };
    const write = stream.write as (...args: unknown[]) => boolean;
    stream.write = function (this: Duplex, ...args: unknown[]): boolean {
      c.bytesOut += byteLength(args[0]);
      return write.apply(this, args);
    } as Duplex['write'];
    return stream;
  }

  start(): void {
    this.#sampler ??= setInterval(() => this.#sample(), 1000).unref();
    if (this.#inner.ping && this.#pinger === undefined) {
      const ping = (): void => {
        this.#inner.ping!(2000).then(
          (ms) => (this.#rtt = Math.round(ms * 100) / 100),
          () => (this.#rtt = null),
        );
      };
      ping();
      this.#pinger = setInterval(ping, PING_EVERY_MS).unref();
    }
  }

  stop(): void {
    clearInterval(this.#sampler);
    clearInterval(this.#pinger);
  }

  #sample(): void {
    const c = this.#c;
    const entry = { at: Date.now(), in: c.bytesIn - this.#last.in, out: c.bytesOut - this.#last.out };
    this.#last = { in: c.bytesIn, out: c.bytesOut };
    if (this.#ring.length < HISTORY_SECONDS) this.#ring.push(entry);
    else this.#ring[this.#next] = entry;
    this.#next = (this.#next + 1) % HISTORY_SECONDS;
  }

  figures(): SessionFigures {
    const c = this.#c;
    const n = this.#ring.length;
    const history = n < HISTORY_SECONDS ? this.#ring.slice() : [...this.#ring.slice(this.#next), ...this.#ring.slice(0, this.#next)];
    const latest = history[history.length - 1];
    return {
      version: 1,
      pid: process.pid,
      ...this.#info,
      transport: this.#label,
      startedAt: this.#startedAt,
      flows: { open: c.open, opened: c.opened },
      bytes: { in: c.bytesIn, out: c.bytesOut },
      rates: { in: latest?.in ?? 0, out: latest?.out ?? 0 },
      dns: { queries: c.dnsQueries, answers: c.dnsAnswers },
      reconnects: this.#inner.reconnects ?? 0,
      streams: this.#inner.resumeCounts === undefined ? null : { ...this.#inner.resumeCounts },
      rttMs: this.#rtt,
      history,
    };
  }
}

function byteLength(chunk: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk);
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return 0;
}
