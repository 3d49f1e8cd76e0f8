/**
 * A user-space delay relay: the WAN of bench/wan.ts, where netem is not available. It accepts TCP
 * connections and forwards each to one target, holding every chunk for RTT/2 in each direction.
 *
 * What it emulates, and what not. It is a *split* relay: each side's TCP runs over loopback and is
 * acknowledged by the relay at once, so the kernel's own congestion window and receive window never
 * see the delay. What does see it is everything end to end above TCP: ssh channel windows, request/
 * response turns, TLS and WebSocket handshakes. That is what the WAN rows measure (ssh2's fixed 2 MiB
 * channel window); a real WAN would add TCP's own ramp-up and loss on top.
 *
 * Each direction is a delay line: a FIFO of (chunk, due time). Order is kept (a chunk is released only
 * after every chunk before it, even if the delay was lowered meanwhile). Backpressure: when the bytes
 * held in one direction reach the cap, the relay stops reading that side until they drop below it, so
 * the sender is throttled by TCP and memory stays bounded (cap per direction per connection, plus one
 * read chunk). The cap should exceed the bandwidth-delay product the relay must carry: a delay line
 * moves at most cap / (RTT/2) bytes a second. The default, 64 MiB, carries 6.7 GB/s at 20 ms RTT and
 * 1.7 GB/s at 80 ms, above what any row here moves; `stats` reports whether the line was ever full.
 * A destination that does not drain (its `write` returns false) holds the line: its chunks stay
 * queued and count against the cap.
 *
 *   node --import tsx bench/relay.ts LISTEN_HOST:PORT TARGET_HOST:PORT [--rtt MS] [--cap BYTES]
 *
 * Prints `relay listening HOST:PORT` when ready (PORT 0 picks one). Commands on stdin, one a line:
 * `rtt MS` changes the round trip for every connection (answers `rtt MS`), `stats` prints one JSON
 * line ({connections, peakBytes, capHits, fullLine}, counted since the last `stats`). Ends when stdin ends.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';

export const DEFAULT_CAP = 64 * 1024 * 1024;

interface Held {
  /** null: the sender's FIN, passed on after the data before it */
  buf: Buffer | null;
  due: number;
}

export interface RelayStats {
  connections: number;
  /** the most bytes one direction of one connection held */
  peakBytes: number;
  /** how often a direction stopped reading because it held `cap` bytes */
  capHits: number;
  /**
   * the part of capHits where even the oldest held chunk was still waiting out its delay: the delay
   * line was full, so for that moment the relay, not the endpoints, set the speed (the other hits
   * are ordinary backpressure from a destination that reads slower)
   */
  fullLine: number;
}

/** One direction of one connection: reads `src`, writes `dst` `delayMs()` later. */
class DelayLine {
  readonly #queue: Held[] = [];
  #head = 0;
  #bytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #waitingDrain = false;
  readonly #flush = (): void => this.#release();

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly delayMs: () => number,
    private readonly cap: number,
    private readonly stats: RelayStats,
  ) {
    src.on('data', (buf: Buffer) => this.#push(buf));
    src.on('end', () => this.#push(null));
    dst.on('drain', () => {
      this.#waitingDrain = false;
      this.#release();
    });
  }

  #push(buf: Buffer | null): void {
    this.#queue.push({ buf, due: performance.now() + this.delayMs() });
    if (buf) {
      this.#bytes += buf.length;
      if (this.#bytes > this.stats.peakBytes) this.stats.peakBytes = this.#bytes;
      if (this.#bytes >= this.cap && !this.src.isPaused()) {
        this.src.pause();
        this.stats.capHits++;
        // Full of bytes still waiting out their delay (not of bytes the destination is slow to take).
        if (this.#queue[this.#head]!.due > performance.now()) this.stats.fullLine++;
      }
    }
    if (this.#queue.length - this.#head === 1) this.#release();
  }

  #release(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#waitingDrain || this.dst.destroyed) return;
    const now = performance.now();
    while (this.#head < this.#queue.length) {
      const h = this.#queue[this.#head]!;
      if (h.due > now) {
        this.#timer = setTimeout(this.#flush, Math.max(1, Math.ceil(h.due - now)));
        break;
      }
      this.#head++;
      if (h.buf === null) {
        this.dst.end();
        continue;
      }
      this.#bytes -= h.buf.length;
      if (this.src.isPaused() && this.#bytes < this.cap) this.src.resume();
      if (!this.dst.write(h.buf)) {
        this.#waitingDrain = true;
        break;
      }
    }
    // Compact the FIFO now and then (an array with a moving head: no shift() per chunk).
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#queue.length = 0;
    this.#head = 0;
    this.#bytes = 0;
  }
}

export class DelayRelay {
  #rttMs: number;
  readonly #cap: number;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly stats: RelayStats = { connections: 0, peakBytes: 0, capHits: 0, fullLine: 0 };

  constructor(
    private readonly target: { host: string; port: number },
    options: { rttMs?: number; cap?: number } = {},
  ) {
    this.#rttMs = options.rttMs ?? 0;
    this.#cap = options.cap ?? DEFAULT_CAP;
    this.#server = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => this.#accept(c));
  }

  get rttMs(): number {
    return this.#rttMs;
  }

  /** Applies to chunks read from now on; chunks already held keep their due time. */
  setRtt(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`rtt must be a number of milliseconds >= 0, not ${ms}`);
    this.#rttMs = ms;
  }

  /** The counters since the last call (reset in place: the delay lines hold this object). */
  takeStats(): RelayStats {
    const s = { ...this.stats };
    Object.assign(this.stats, { connections: this.#sockets.size / 2, peakBytes: 0, capHits: 0, fullLine: 0 });
    return s;
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => resolve((this.#server.address() as net.AddressInfo).port));
    });
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true, noDelay: true });
    this.stats.connections++;
    this.#sockets.add(client).add(upstream);
    const half = (): number => this.#rttMs / 2;
    const lines = [new DelayLine(client, upstream, half, this.#cap, this.stats), new DelayLine(upstream, client, half, this.#cap, this.stats)];
    // The client's bytes wait (in the kernel) until the far side is connected.
    client.pause();
    upstream.once('connect', () => client.resume());
    // A socket that closed cleanly has exchanged both FINs: its peer's line may still hold data and
    // a FIN to deliver, so the other socket stays until it closes too. An error (a reset) drops both.
    let closed = 0;
    const onClose = (hadError: boolean): void => {
      if (hadError) {
        client.destroy();
        upstream.destroy();
      }
      if (++closed === 2) {
        for (const l of lines) l.stop();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      }
    };
    for (const s of [client, upstream]) {
      s.on('error', () => s.destroy());
      s.on('close', onClose);
    }
  }
}

function hostPort(s: string | undefined, what: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(s ?? '');
  if (!m) throw new Error(`${what}: expected HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: m[1]!, port: Number(m[2]) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const flag = (name: string): number | undefined => {
    const i = args.indexOf(name);
    return i < 0 ? undefined : Number(args[i + 1]);
  };
  const listen = hostPort(args[0], 'listen address');
  const target = hostPort(args[1], 'target');
  const relay = new DelayRelay(target, { rttMs: flag('--rtt') ?? 0, cap: flag('--cap') ?? DEFAULT_CAP });
  const port = await relay.listen(listen.port, listen.host);
  process.stdout.write(`relay listening ${listen.host}:${port}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'rtt') {
      relay.setRtt(Number(arg));
      process.stdout.write(`rtt ${relay.rttMs}\n`);
    } else if (cmd === 'stats') process.stdout.write(JSON.stringify(relay.takeStats()) + '\n');
    else process.stderr.write(`relay: unknown command ${JSON.stringify(line)} (rtt MS | stats)\n`);
  });
  rl.on('close', () => void relay.close().then(() => process.exit(0)));
}
