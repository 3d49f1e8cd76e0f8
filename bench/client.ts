/**
 * Benchmark client, run inside the client namespace. Measures request/response latency and new
 * connections per second to the echo target, either directly/through a local forward (`tcp`) or
 * through a SOCKS5 proxy (`socks`, host name resolved on the far side). Prints one JSON line.
 *
 *   node --import tsx bench/client.ts latency tcp HOST PORT COUNT
 *   node --import tsx bench/client.ts latency socks PROXYHOST PROXYPORT TARGETHOST TARGETPORT COUNT
 *   node --import tsx bench/client.ts connrate (tcp HOST PORT | socks PH PP TH TP) SECONDS
 */
import net from 'node:net';

/** Untimed round trips before a latency run (see `latency`). */
const WARMUP_MS = 1000;

type Target = { kind: 'tcp'; host: string; port: number } | { kind: 'socks'; proxyHost: string; proxyPort: number; host: string; port: number };

/** Reads exact byte counts from a socket; keeps what arrived early for the next read. */
class Reader {
  #buf: Buffer = Buffer.alloc(0);
  #want = 0;
  #wake: ((b: Buffer) => void) | undefined;
  #fail: ((e: Error) => void) | undefined;
  constructor(sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
      this.#check();
    });
    const fail = (e: Error): void => this.#fail?.(e);
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }
  #check(): void {
    if (this.#wake && this.#buf.length >= this.#want) {
      const out = this.#buf.subarray(0, this.#want);
      this.#buf = this.#buf.subarray(this.#want);
      const wake = this.#wake;
      this.#wake = undefined;
      wake(out);
    }
  }
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#want = n;
      this.#wake = resolve;
      this.#fail = reject;
      this.#check();
    });
  }
}

const readers = new WeakMap<net.Socket, Reader>();
function readExactly(sock: net.Socket, n: number): Promise<Buffer> {
  let r = readers.get(sock);
  if (!r) {
    r = new Reader(sock);
    readers.set(sock, r);
  }
  return r.read(n);
}

async function open(target: Target): Promise<net.Socket> {
  const host = target.kind === 'tcp' ? target.host : target.proxyHost;
  const port = target.kind === 'tcp' ? target.port : target.proxyPort;
  const sock = net.connect({ host, port, noDelay: true });
  readers.set(sock, new Reader(sock));
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  if (target.kind === 'socks') {
    sock.write(Buffer.from([5, 1, 0]));
    const hello = await readExactly(sock, 2);
    if (hello[1] !== 0) throw new Error('SOCKS method refused');
    const name = Buffer.from(target.host);
    const req = Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([target.port >> 8, target.port & 255])]);
    sock.write(req);
    const head = await readExactly(sock, 4);
    if (head[1] !== 0) throw new Error(`SOCKS reply ${head[1]}`);
    const rest = head[3] === 1 ? 6 : head[3] === 4 ? 18 : (await readExactly(sock, 1))[0]! + 2;
    await readExactly(sock, rest);
  }
  return sock;
}

function parseTarget(args: string[]): { target: Target; rest: string[] } {
  if (args[0] === 'tcp') return { target: { kind: 'tcp', host: args[1]!, port: Number(args[2]) }, rest: args.slice(3) };
  return {
    target: { kind: 'socks', proxyHost: args[1]!, proxyPort: Number(args[2]), host: args[3]!, port: Number(args[4]) },
    rest: args.slice(5),
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function latency(target: Target, count: number): Promise<void> {
  const sock = await open(target);
  const msg = Buffer.alloc(64, 0x42);
  // Steady state: one second of untimed round trips first, for every path alike. A tunnel written
  // in JavaScript (ktctl, the ssh2 loop) runs its small-message path in V8's baseline tiers for the
  // first few thousand messages; timed from the start, a short run measured its warm-up.
  const warmUntil = Date.now() + WARMUP_MS;
  while (Date.now() < warmUntil) {
    sock.write(msg);
    await readExactly(sock, msg.length);
  }
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    sock.write(msg);
    await readExactly(sock, msg.length);
    samples.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  sock.destroy();
  samples.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ p50_us: percentile(samples, 50), p99_us: percentile(samples, 99), count }) + '\n');
}

async function connrate(target: Target, seconds: number): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let failed = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      try {
        const s = await open(target);
        s.write('x');
        await readExactly(s, 1);
        s.destroy();
        done++;
      } catch {
        failed++;
      }
    }
  };
  const t0 = Date.now();
  await Promise.all([worker(), worker(), worker(), worker()]);
  process.stdout.write(JSON.stringify({ per_second: done / ((Date.now() - t0) / 1000), done, failed }) + '\n');
}

const [what, ...args] = process.argv.slice(2);
const { target, rest } = parseTarget(args);
if (what === 'latency') await latency(target, Number(rest[0] ?? 2000));
else if (what === 'connrate') await connrate(target, Number(rest[0] ?? 3));
else throw new Error(`unknown probe ${what}`);
