/**
 * The proxy campaign: hostile and valid sessions, interleaved, against a real ProxyServer on
 * 127.0.0.1 port 0. Hostile sessions send random and mutated SOCKS5/HTTP bytes, dribble their
 * handshakes (slowloris), get refused and never close, or vanish (FIN or RST) at every step:
 * before and after the greeting, in the middle of a request, while the dial is pending, after the
 * reply. Valid sessions (SOCKS5 and HTTP CONNECT to an echo server, HTTP POST through the
 * forwarding path) must keep working, their bytes checked by SHA-256.
 *
 * Every socket is accounted for: after the sessions the proxy has no client connection, no pending
 * dial and no upstream; the test Dialer has no dial in progress; the echo and origin servers no
 * connection; and once everything is closed the process has no more sockets, servers or timers
 * than before. Each session draws from its own PRNG (seed, index): a failure names both and its
 * bytes reproduce (the timing, on a loaded machine, may not).
 *
 * Used by test/fuzz-proxy.test.ts (short) and test/fuzz/run.ts (`npm run fuzz`, long).
 */
import { createHash, randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { once } from 'node:events';
import { Agent, createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DialOptions, Dialer } from '../../src/dialer.js';
import { DialError } from '../../src/errors.js';
import { ProxyServer, type ProxyStats } from '../../src/proxy/index.js';
import { DirectDialer } from './direct-dialer.js';
import { prng } from './prng.js';

export interface CampaignOptions {
  seed: number;
  sessions: number;
  /** Sessions running at once. */
  concurrency: number;
  handshakeTimeoutMs: number;
  lingerMs: number;
  dialTimeoutMs: number;
  /** Progress lines (the long run prints them). */
  log?: (line: string) => void;
}

export interface CampaignReport {
  seed: number;
  sessions: number;
  valid: number;
  hostile: number;
  kinds: Record<string, number>;
  /** Payload bytes that went through the proxy and came back verified. */
  verifiedBytes: number;
  /** One line per broken rule, naming seed, session and kind. */
  failures: string[];
  /** The proxy's stats after the sessions settled (before close()). */
  settled: ProxyStats;
  /** Dials the test Dialer still had open after the sessions settled. */
  dialerPending: number;
  /** Handles this process has more of after everything closed than before (type: extra count). */
  leakedHandles: Record<string, number>;
  durationMs: number;
  maxRssMiB: number;
  /** The longest the event loop was blocked (proxy and clients share it): timing checks allow for it. */
  maxEventLoopDelayMs: number;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const int = (rnd: () => number, n: number): number => Math.floor(rnd() * n);
const pick = <T>(rnd: () => number, items: readonly T[]): T => items[int(rnd, items.length)]!;

/**
 * Routes by name: `hang.test` never answers (until aborted), `refuse.test` is refused after a
 * moment, `slow.test` connects after 20-200 ms, everything else is a real loopback socket
 * (DirectDialer: `echo.test`/`web.test` -> 127.0.0.1, other names unresolvable). Counts what is
 * in progress so the campaign can see that every dial ended.
 */
class CampaignDialer implements Dialer {
  pending = 0;
  dials = 0;
  readonly #direct = new DirectDialer({ names: { 'echo.test': '127.0.0.1', 'web.test': '127.0.0.1', 'slow.test': '127.0.0.1' } });
  readonly #rnd: () => number;

  constructor(seed: number) {
    this.#rnd = prng(seed ^ 0x0d1a1e5);
  }

  async dial(host: string, port: number, options: DialOptions = {}): Promise<Duplex> {
    this.dials++;
    this.pending++;
    try {
      if (host === 'hang.test') {
        await new Promise<never>((_resolve, reject) => {
          if (options.signal?.aborted) reject(new DialError('tunnel', host, port, 'dial aborted'));
          options.signal?.addEventListener('abort', () => reject(new DialError('tunnel', host, port, 'dial aborted')), { once: true });
        });
      }
      if (host === 'refuse.test') {
        await sleep(int(this.#rnd, 20), undefined, { signal: options.signal }).catch(() => undefined);
        throw new DialError('refused', host, port, 'Connection refused');
      }
      if (host === 'slow.test') {
        await sleep(20 + int(this.#rnd, 180), undefined, { signal: options.signal }).catch(() => {
          throw new DialError('tunnel', host, port, 'dial aborted');
        });
      }
      return await this.#direct.dial(host, port, options);
    } finally {
      this.pending--;
    }
  }
}

/** A server whose connections are counted (and destroyed at the end if any is left). */
async function tracked<S extends Server | HttpServer>(server: S): Promise<{ server: S; port: number; open: Set<Socket> }> {
  const open = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    open.add(s);
    s.on('error', () => undefined);
    s.once('close', () => open.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, open };
}

/** A raw client socket that records what the proxy sends and when it ended its side. */
class RawClient {
  readonly socket: Socket;
  readonly started = Date.now();
  received: Buffer = Buffer.alloc(0);
  /** When the proxy sent FIN or the socket broke (ms since start), or undefined. */
  endedAfter: number | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(port: number) {
    this.socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    this.socket.on('error', () => undefined);
    this.socket.on('data', (d: Buffer) => {
      this.received = this.received.length === 0 ? d : Buffer.concat([this.received, d]);
      this.#wake();
    });
    const ended = (): void => {
      this.endedAfter ??= Date.now() - this.started;
      this.#wake();
    };
    this.socket.once('end', ended);
    this.socket.once('close', ended);
  }

  connected(): Promise<boolean> {
    if (!this.socket.connecting) return Promise.resolve(!this.socket.destroyed);
    return new Promise((resolve) => {
      this.socket.once('connect', () => resolve(true));
      this.socket.once('close', () => resolve(false));
    });
  }

  write(b: Buffer | string): void {
    if (this.socket.writable) this.socket.write(b);
  }

  /** Waits until `cond` holds or the proxy ended; false after `ms`. */
  async until(cond: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (this.endedAfter !== undefined) return cond();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.add(done);
      });
    }
    return true;
  }

  leave(how: 'FIN' | 'RST'): void {
    if (how === 'RST') this.socket.resetAndDestroy();
    else this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  #wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}

// ---- building valid and broken handshakes ------------------------------------------------------

function socksGreeting(rnd: () => number): Buffer {
  const methods = [0x00, ...Array.from({ length: int(rnd, 3) }, () => 1 + int(rnd, 254))];
  if (rnd() < 0.5) methods.reverse();
  return Buffer.from([0x05, methods.length, ...methods]);
}

function socksRequest(host: string, port: number, command = 0x01): Buffer {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return Buffer.from([0x05, command, 0x00, 0x01, ...host.split('.').map(Number), port >> 8, port & 0xff]);
  const name = Buffer.from(host);
  return Buffer.from([0x05, command, 0x00, 0x03, name.length, ...name, port >> 8, port & 0xff]);
}

function connectHead(host: string, port: number): string {
  return `CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\nUser-Agent: campaign\r\n\r\n`;
}

function getHead(host: string, port: number, path = '/x'): string {
  return `GET http://${host}:${port}${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: */*\r\n\r\n`;
}

/** 1-4 random edits: bit flips, byte overwrites, truncation, insertion, deletion, duplication. */
function mutate(rnd: () => number, input: Buffer): Buffer {
  let b = Buffer.from(input);
  for (let n = 1 + int(rnd, 4); n > 0 && b.length > 0; n--) {
    const at = int(rnd, b.length);
    switch (int(rnd, 6)) {
      case 0:
        b[at] = b[at]! ^ (1 << int(rnd, 8));
        break;
      case 1:
        b[at] = int(rnd, 256);
        break;
      case 2:
        b = b.subarray(0, at);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), randomFrom(rnd, 1 + int(rnd, 16)), b.subarray(at)]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
        break;
      default:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + int(rnd, 20)), b.subarray(at)]);
    }
  }
  return b;
}

function randomFrom(rnd: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(rnd, 256);
  return b;
}

/** Writes `b` in 1-4 pieces. */
async function writeInPieces(rnd: () => number, c: RawClient, b: Buffer): Promise<void> {
  let off = 0;
  for (let pieces = 1 + int(rnd, 4); off < b.length; pieces--) {
    const len = pieces <= 1 ? b.length - off : 1 + int(rnd, b.length - off);
    c.write(b.subarray(off, off + len));
    off += len;
    if (off < b.length && rnd() < 0.5) await sleep(int(rnd, 5));
  }
}

/** Did the proxy answer as if a tunnel is open? Then no deadline applies (by design). */
function tunnelOpened(received: Buffer): boolean {
  if (received.length >= 4 && received[0] === 0x05 && received[2] === 0x05 && received[3] === 0x00) return true;
  return received.subarray(0, 40).toString('latin1').startsWith('HTTP/1.1 200 Connection established');
}

// ---- the campaign -------------------------------------------------------------------------------

interface Env {
  o: CampaignOptions;
  proxyPort: number;
  echoPort: number;
  originPort: number;
  closedPort: number;
  fail(kind: string, index: number, message: string): void;
  verified(n: number): void;
  /** Counts a session under its precise kind (for the report). */
  count(kind: string): void;
}

type Session = (env: Env, rnd: () => number, index: number) => Promise<void>;

/** How long a stubborn client waits for the proxy to end a connection that holds no tunnel. */
function holdBound(o: CampaignOptions): number {
  // head deadline + dial deadline + (a 502 on a kept-alive connection) the next head's deadline + linger
  return 2 * o.handshakeTimeoutMs + o.dialTimeoutMs + o.lingerMs + 1500;
}

// Valid sessions ---------------------------------------------------------------------------------

const validTunnel: Session = async (env, rnd, index) => {
  const viaSocks = rnd() < 0.5;
  const kind = viaSocks ? 'valid-socks5' : 'valid-connect';
  env.count(kind);
  const target = pick(rnd, ['echo.test', 'slow.test', '127.0.0.1']);
  const payload = randomBytes(int(rnd, 1 + (rnd() < 0.2 ? 1 << 20 : 1 << 15)));
  const early = rnd() < 0.3 ? payload.subarray(0, Math.min(payload.length, int(rnd, 4096))) : Buffer.alloc(0);
  const c = new RawClient(env.proxyPort);
  try {
    if (!(await c.connected())) return env.fail(kind, index, 'could not connect to the proxy');
    let replyLength: number;
    if (viaSocks) {
      const greeting = socksGreeting(rnd);
      const request = socksRequest(target, env.echoPort);
      if (rnd() < 0.5) {
        await writeInPieces(rnd, c, Buffer.concat([greeting, request, early]));
      } else {
        c.write(greeting);
        if (!(await c.until(() => c.received.length >= 2, 5000))) return env.fail(kind, index, 'no method selection');
        await writeInPieces(rnd, c, Buffer.concat([request, early]));
      }
      if (!(await c.until(() => c.received.length >= 12, 5000))) return env.fail(kind, index, `no reply (${c.received.toString('hex')})`);
      if (c.received[3] !== 0x00) return env.fail(kind, index, `SOCKS reply ${c.received[3]}`);
      replyLength = 12;
    } else {
      await writeInPieces(rnd, c, Buffer.concat([Buffer.from(connectHead(target, env.echoPort)), early]));
      if (!(await c.until(() => c.received.includes('\r\n\r\n'), 5000))) return env.fail(kind, index, 'no CONNECT reply');
      const head = c.received.subarray(0, c.received.indexOf('\r\n\r\n')).toString('latin1');
      if (!head.startsWith('HTTP/1.1 200 ')) return env.fail(kind, index, head.split('\r\n')[0]!);
      replyLength = c.received.indexOf('\r\n\r\n') + 4;
    }
    // The rest of the payload in random pieces, then a half-close; the echo sends it all back.
    let off = early.length;
    while (off < payload.length) {
      const len = 1 + int(rnd, Math.min(65536, payload.length - off));
      c.write(payload.subarray(off, off + len));
      off += len;
      if (rnd() < 0.1) await sleep(1);
    }
    c.socket.end();
    const want = replyLength + payload.length;
    if (!(await c.until(() => c.received.length >= want && c.endedAfter !== undefined, 15000))) {
      return env.fail(kind, index, `echo incomplete: ${c.received.length - replyLength} of ${payload.length} bytes`);
    }
    if (sha256(c.received.subarray(replyLength)) !== sha256(payload)) return env.fail(kind, index, 'echoed bytes differ');
    env.verified(payload.length);
  } finally {
    c.destroy();
  }
};

const validPost: Session = async (env, rnd, index) => {
  env.count('valid-post');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let n = 1 + int(rnd, 3); n > 0; n--) {
      const body = randomBytes(int(rnd, rnd() < 0.2 ? 1 << 19 : 1 << 12));
      const result = await new Promise<{ status: number; body: Buffer } | Error>((resolve) => {
        const req = httpRequest({
          host: '127.0.0.1',
          port: env.proxyPort,
          method: 'POST',
          path: `http://web.test:${env.originPort}/echo/${index}`,
          headers: { host: `web.test:${env.originPort}`, 'content-length': body.length },
          agent,
          timeout: 15000,
        });
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.on('error', resolve);
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on('error', resolve);
        });
        req.end(body);
      });
      if (result instanceof Error) return env.fail('valid-post', index, result.message);
      if (result.status !== 200) return env.fail('valid-post', index, `status ${result.status}: ${result.body.toString().slice(0, 100)}`);
      if (sha256(result.body) !== sha256(body)) return env.fail('valid-post', index, 'echoed body differs');
      env.verified(body.length);
    }
  } finally {
    agent.destroy();
  }
};

// Hostile sessions -------------------------------------------------------------------------------

/** Random or mutated bytes; then the client stays (the proxy must end it unless a tunnel opened) or leaves. */
const garbage: Session = async (env, rnd, index) => {
  const targets: [string, number][] = [
    ['echo.test', env.echoPort], ['web.test', env.originPort], ['hang.test', 80], ['refuse.test', 80],
    ['nosuch.test', 80], ['127.0.0.1', env.closedPort], ['echo.test', 0],
  ];
  const [host, port] = pick(rnd, targets);
  const style = int(rnd, 4);
  const kind = ['random-bytes', 'socks5-mutant', 'connect-mutant', 'get-mutant'][style]!;
  env.count(kind);
  const bytes =
    style === 0 ? randomFrom(rnd, 1 + int(rnd, 600))
    : style === 1 ? mutate(rnd, Buffer.concat([socksGreeting(rnd), socksRequest(host, port, rnd() < 0.9 ? 1 : int(rnd, 256))]))
    : style === 2 ? mutate(rnd, Buffer.from(connectHead(host, port)))
    : mutate(rnd, Buffer.from(getHead(host, port)));
  const c = new RawClient(env.proxyPort);
  try {
    if (!(await c.connected())) return;
    await writeInPieces(rnd, c, bytes);
    if (rnd() < 0.3) {
      await sleep(int(rnd, 30));
      return c.leave(rnd() < 0.5 ? 'FIN' : 'RST');
    }
    const bound = holdBound(env.o);
    await c.until(() => false, bound);
    if (c.endedAfter === undefined && !tunnelOpened(c.received)) {
      env.fail(kind, index, `the proxy held a connection without a tunnel for ${bound} ms (sent ${bytes.toString('hex').slice(0, 80)}, got ${c.received.toString('latin1').slice(0, 40)})`);
    }
  } finally {
    c.destroy();
  }
};

/** A handshake dribbled a byte at a time and never finished: the proxy must cut it at the deadline. */
const slowloris: Session = async (env, rnd, index) => {
  const flavour = int(rnd, 4);
  const kind = ['slowloris-socks5', 'slowloris-connect', 'slowloris-get', 'slowloris-keepalive'][flavour]!;
  env.count(kind);
  const c = new RawClient(env.proxyPort);
  try {
    if (!(await c.connected())) return;
    const connectMs = Date.now() - c.started;
    let from = Date.now();
    if (flavour === 3) {
      // One good request first; the deadline for the next head starts when its response is out.
      c.write(`GET http://web.test:${env.originPort}/ka HTTP/1.1\r\nHost: web.test\r\n\r\n`);
      if (!(await c.until(() => /\r\n\r\n$/.test(c.received.toString('latin1')) || c.received.includes('content-length: 0\r\n'), 5000))) {
        return env.fail(kind, index, 'the first request got no response');
      }
      from = Date.now();
    }
    const full =
      flavour === 0 ? Buffer.concat([socksGreeting(rnd), socksRequest('echo.test', env.echoPort)])
      : flavour === 1 ? Buffer.from(connectHead('echo.test', env.echoPort))
      : Buffer.from(getHead('web.test', env.originPort));
    const prefix = full.subarray(0, 1 + int(rnd, full.length - 1));
    const gap = 10 + int(rnd, 50);
    for (const byte of prefix) {
      if (c.endedAfter !== undefined) break;
      c.write(Buffer.from([byte]));
      await sleep(gap);
    }
    const limit = env.o.handshakeTimeoutMs + 1000;
    await c.until(() => false, Math.max(0, from + limit - Date.now()));
    const held = Date.now() - from;
    if (c.endedAfter === undefined) {
      env.fail(kind, index, `a dribbling client was not cut: ${held} ms against a ${env.o.handshakeTimeoutMs} ms deadline (connect took ${connectMs} ms, ${prefix.length} bytes ${gap} ms apart)`);
    }
  } finally {
    c.destroy();
  }
};

/** A valid request whose answer is a refusal; the client never closes: the proxy must. */
const refusedStubborn: Session = async (env, rnd, index) => {
  const cases: [string, () => Buffer | string][] = [
    ['refused-socks5', () => Buffer.concat([socksGreeting(rnd), socksRequest(pick(rnd, ['refuse.test', 'nosuch.test', 'hang.test']), 80)])],
    ['refused-socks5-closed', () => Buffer.concat([socksGreeting(rnd), socksRequest('127.0.0.1', env.closedPort)])],
    ['refused-socks5-command', () => Buffer.concat([socksGreeting(rnd), socksRequest('echo.test', env.echoPort, pick(rnd, [2, 3, 9]))])],
    ['refused-socks5-auth', () => Buffer.from([0x05, 0x01, 0x02])],
    ['refused-connect', () => connectHead(pick(rnd, ['refuse.test', 'nosuch.test', 'hang.test']), 80)],
    ['refused-connect-port0', () => connectHead('echo.test', 0)],
    ['refused-connect-duphost', () => `CONNECT echo.test:${env.echoPort} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`],
    ['refused-get-port0', () => getHead('web.test', 0)],
    ['refused-get-duphost', () => `GET http://web.test:${env.originPort}/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`],
    ['refused-upgrade', () => `GET http://web.test:${env.originPort}/ HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n`],
  ];
  const [kind, make] = pick(rnd, cases);
  env.count(kind);
  const c = new RawClient(env.proxyPort);
  try {
    if (!(await c.connected())) return;
    await writeInPieces(rnd, c, Buffer.from(make()));
    const bound = holdBound(env.o);
    await c.until(() => false, bound);
    if (c.endedAfter === undefined) env.fail(kind, index, `held ${bound} ms after a refusal (got ${c.received.toString('latin1').slice(0, 40)})`);
    else if (c.received.length === 0) env.fail(kind, index, 'closed without a reply');
  } finally {
    c.destroy();
  }
};

/** Leaves (FIN or RST) at one step of a SOCKS5 or CONNECT session. */
const vanish: Session = async (env, rnd) => {
  const viaSocks = rnd() < 0.5;
  const how = rnd() < 0.5 ? 'FIN' : 'RST';
  const step = pick(rnd, ['before-greeting', 'after-greeting', 'mid-request', 'during-dial', 'after-reply'] as const);
  const target = step === 'during-dial' ? pick(rnd, ['hang.test', 'slow.test']) : pick(rnd, ['echo.test', 'slow.test', 'refuse.test', 'hang.test']);
  const kind = `vanish-${step}-${how}`;
  env.count(kind);
  const c = new RawClient(env.proxyPort);
  try {
    if (!(await c.connected())) return;
    const greeting = socksGreeting(rnd);
    const request = viaSocks ? socksRequest(target, env.echoPort) : Buffer.from(connectHead(target, env.echoPort));
    const early = rnd() < 0.5 ? randomFrom(rnd, int(rnd, 2000)) : Buffer.alloc(0);
    if (step === 'before-greeting') return c.leave(how);
    if (viaSocks) {
      c.write(greeting);
      if (step === 'after-greeting') {
        if (rnd() < 0.5) await c.until(() => c.received.length >= 2, 2000);
        return c.leave(how);
      }
    } else if (step === 'after-greeting') {
      c.write('CONNECT ');
      return c.leave(how);
    }
    if (step === 'mid-request') {
      c.write(request.subarray(0, int(rnd, request.length)));
      return c.leave(how);
    }
    c.write(Buffer.concat([request, early]));
    if (step === 'during-dial') {
      await sleep(int(rnd, 40));
      return c.leave(how);
    }
    // after-reply: wait for the answer (success or refusal), maybe use the tunnel a little, leave.
    await c.until(() => (viaSocks ? c.received.length >= 12 : c.received.includes('\r\n\r\n')), env.o.dialTimeoutMs + 2000);
    if (rnd() < 0.5) c.write(randomFrom(rnd, int(rnd, 5000)));
    if (rnd() < 0.5) await sleep(int(rnd, 20));
    c.leave(how);
  } finally {
    // After a FIN the proxy may still be sending; this side is done either way.
    if (how === 'FIN') await sleep(int(rnd, 20));
    c.destroy();
  }
};

const SESSIONS: [Session, number, boolean][] = [
  // [session, weight, valid]
  [validTunnel, 30, true],
  [validPost, 10, true],
  [garbage, 25, false],
  [slowloris, 8, false],
  [refusedStubborn, 12, false],
  [vanish, 25, false],
];

function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

export async function runProxyCampaign(o: CampaignOptions): Promise<CampaignReport> {
  const before = handleCounts();
  const started = Date.now();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let maxRss = process.memoryUsage().rss;
  const failures: string[] = [];
  const kinds: Record<string, number> = {};
  let valid = 0;
  let verifiedBytes = 0;

  const echo = await tracked(createServer({ allowHalfOpen: true }, (s) => s.pipe(s)));
  const origin = await tracked(
    createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        res.writeHead(200, { 'content-length': body.length });
        res.end(body);
      });
    }),
  );
  // A port with nobody listening: a real ECONNREFUSED.
  const closedServer = await tracked(createServer());
  const closedPort = closedServer.port;
  await new Promise<void>((resolve) => closedServer.server.close(() => resolve()));

  const dialer = new CampaignDialer(o.seed);
  const proxy = new ProxyServer({
    dialer,
    host: '127.0.0.1',
    port: 0,
    handshakeTimeoutMs: o.handshakeTimeoutMs,
    lingerMs: o.lingerMs,
    dialTimeoutMs: o.dialTimeoutMs,
  });
  const { port: proxyPort } = await proxy.listen();
  const env: Env = {
    o,
    proxyPort,
    echoPort: echo.port,
    originPort: origin.port,
    closedPort,
    fail: (kind, index, message) => failures.push(`seed ${o.seed} session ${index} (${kind}): ${message}`),
    verified: (n) => (verifiedBytes += n),
    count: (kind) => (kinds[kind] = (kinds[kind] ?? 0) + 1),
  };

  const total = SESSIONS.reduce((n, [, w]) => n + w, 0);
  let next = 0;
  const rssTimer = setInterval(() => (maxRss = Math.max(maxRss, process.memoryUsage().rss)), 100);
  const worker = async (): Promise<void> => {
    while (next < o.sessions) {
      const index = next++;
      const rnd = prng((o.seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
      let w = rnd() * total;
      let chosen = SESSIONS[0]!;
      for (const s of SESSIONS) {
        w -= s[1];
        if (w < 0) {
          chosen = s;
          break;
        }
      }
      const [session, , isValid] = chosen;
      if (isValid) valid++;
      try {
        await session(env, rnd, index);
      } catch (err) {
        env.fail(session.name, index, `threw ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      }
      if (index > 0 && index % 1000 === 0) o.log?.(`${index} sessions, ${failures.length} failures, proxy ${JSON.stringify(proxy.stats())}`);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));

  // Every socket must be gone by itself (deadlines, linger, clients leaving), before close().
  const settledBy = Date.now() + holdBound(o) + 2000;
  const busy = (): boolean => {
    const s = proxy.stats();
    return s.activeConnections > 0 || s.pendingDials > 0 || s.activeUpstreams > 0 || dialer.pending > 0 || echo.open.size > 0 || origin.open.size > 0;
  };
  while (busy() && Date.now() < settledBy) await sleep(20);
  const settled = proxy.stats();
  if (busy()) {
    failures.push(
      `seed ${o.seed}: not settled: proxy ${JSON.stringify(settled)}, dialer pending ${dialer.pending}, ` +
        `echo connections ${echo.open.size}, origin connections ${origin.open.size}`,
    );
  }
  clearInterval(rssTimer);
  loopDelay.disable();
  maxRss = Math.max(maxRss, process.memoryUsage().rss);

  await proxy.close();
  for (const s of [...echo.open, ...origin.open]) s.destroy();
  await Promise.all([echo.server, origin.server].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  // Handles go away on the next turns of the loop once closed.
  const leakedHandles: Record<string, number> = {};
  for (let round = 0; round < 50; round++) {
    await sleep(20);
    const after = handleCounts();
    for (const k of Object.keys(leakedHandles)) delete leakedHandles[k];
    for (const [k, n] of Object.entries(after)) if (n > (before[k] ?? 0)) leakedHandles[k] = n - (before[k] ?? 0);
    if (Object.keys(leakedHandles).length === 0) break;
  }

  return {
    seed: o.seed,
    sessions: o.sessions,
    valid,
    hostile: o.sessions - valid,
    kinds,
    verifiedBytes,
    failures,
    settled,
    dialerPending: dialer.pending,
    leakedHandles,
    durationMs: Date.now() - started,
    maxRssMiB: Math.round(maxRss / (1 << 20)),
    maxEventLoopDelayMs: Math.round(loopDelay.max / 1e6),
  };
}
