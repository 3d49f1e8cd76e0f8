/**
 * The resume layer (src/protocol/resume.ts) end to end, in-process: a real ShadowServer on
 * loopback, a ReconnectingTunnel reaching it through a relay the test cuts (as a dropped
 * port-forward would be cut), and real TCP targets on loopback. Downloads, uploads, remote forwards
 * and half-closes survive cuts byte for byte; a window that runs out resets both ends.
 */
import test, { type ExecutionContext } from 'ava';
import { createCipheriv, createHash } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { ShadowServer } from '../src/shadow/server.js';
import { ReconnectingTunnel } from '../src/ssh/reconnect.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { ControlDecoder, encodeFrame, RESUME_DEFAULTS, type ControlFrame, type ResumeLimits } from '../src/protocol/index.js';
import { ed25519 } from './helpers/ssh-fixtures.js';

/** Deterministic bytes: AES-CTR of zeros under a key made from `seed`. */
function bytesOf(seed: string, n: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A TCP relay to `target` whose connections the test can cut, and refuse for a while. */
async function relay(t: ExecutionContext, target: number): Promise<{ port: number; cut(): void; refuse(on: boolean): void; cuts: number }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let refusing = false;
  const state = { cuts: 0 };
  const server = net.createServer({ noDelay: true }, (a) => {
    if (refusing) {
      a.destroy();
      return;
    }
    const b = net.connect({ port: target, host: '127.0.0.1', noDelay: true });
    const pair: [net.Socket, net.Socket] = [a, b];
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
    a.pipe(b);
    b.pipe(a);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.close();
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
  });
  return {
    port: (server.address() as AddressInfo).port,
    cut: () => {
      state.cuts++;
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
    },
    refuse: (on) => {
      refusing = on;
    },
    get cuts() {
      return state.cuts;
    },
  };
}

interface Rig {
  tunnel: ReconnectingTunnel;
  relay: Awaited<ReturnType<typeof relay>>;
  shadowLog: Array<Record<string, unknown>>;
  logs: string[];
}

async function rig(t: ExecutionContext, limits: Partial<ResumeLimits> = {}): Promise<Rig> {
  const hostKey = ed25519('host');
  const userKey = ed25519('user');
  const shadowLog: Array<Record<string, unknown>> = [];
  const shadow = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', log: (event, fields) => shadowLog.push({ event, ...fields }) });
  const { port } = await shadow.listen();
  t.teardown(() => shadow.close());
  const r = await relay(t, port);
  const logs: string[] = [];
  const tunnel = new ReconnectingTunnel({
    label: 'the test shadow',
    initialDelayMs: 20,
    maxDelayMs: 200,
    resume: { ...RESUME_DEFAULTS, ...limits },
    connect: () =>
      SshTunnel.open({ sock: net.connect({ port: r.port, host: '127.0.0.1' }), username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public }, keepaliveInterval: 1000 }),
    debug: (l) => logs.push(l),
  });
  tunnel.on('log', (l) => logs.push(l));
  t.teardown(() => tunnel.close());
  await tunnel.start();
  return { tunnel, relay: r, shadowLog, logs };
}

async function listen(t: ExecutionContext, onConnection: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** Reads `stream` to its end, cutting the relay each time another `every` bytes came; resolves with everything. */
function readCutting(stream: Duplex, r: Rig['relay'], every: number, cuts: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let next = every;
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      n += c.length;
      if (n >= next && r.cuts < cuts) {
        next += every;
        r.cut();
      }
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

const SIZE = 48 << 20;

test('a download survives three cuts: every byte once, in order, then FIN', async (t) => {
  const g = await rig(t);
  const body = bytesOf('download', SIZE);
  const port = await listen(t, (s) => s.end(body));
  const stream = await g.tunnel.dial('127.0.0.1', port);
  stream.end();
  const got = await readCutting(stream, g.relay, SIZE / 4, 3);
  t.is(g.relay.cuts, 3);
  t.is(got.length, body.length);
  t.is(sha(got), sha(body));
  t.is(g.tunnel.resumeCounts?.resumed, 3, g.logs.join('\n'));
  t.is(g.tunnel.resumeCounts?.lost, 0);
});

test('an upload survives three cuts, and the reply after the half-close arrives', async (t) => {
  const g = await rig(t);
  const body = bytesOf('upload', SIZE);
  const port = await listen(t, (s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (c: Buffer) => {
      h.update(c);
      n += c.length;
    });
    s.on('end', () => s.end(`${n} ${h.digest('hex')}`));
  });
  const stream = await g.tunnel.dial('127.0.0.1', port);
  const reply = new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks).toString()));
    stream.on('error', reject);
  });
  // Write in pieces, cutting after each quarter (the writes wait while the stream keeps its bound).
  const quarter = SIZE / 4;
  for (let i = 0; i < 4; i++) {
    const piece = body.subarray(i * quarter, (i + 1) * quarter);
    for (let o = 0; o < piece.length; o += 1 << 20) {
      if (!stream.write(piece.subarray(o, o + (1 << 20)))) await new Promise((r) => stream.once('drain', r));
    }
    if (i < 3) g.relay.cut();
  }
  stream.end();
  t.is(await reply, `${SIZE} ${sha(body)}`);
  t.true((g.tunnel.resumeCounts?.resumed ?? 0) >= 3, g.logs.join('\n'));
});

test('a remote forward: a cluster client uploading through the shadow survives cuts', async (t) => {
  const g = await rig(t);
  const body = bytesOf('forwarded', SIZE);
  let answered!: (text: string) => void;
  const answer = new Promise<string>((r) => (answered = r));
  const received = new Promise<{ text: string; n: number }>((resolve, reject) => {
    void g.tunnel.forwardIn('127.0.0.1', 0, (stream, info) => {
      const h = createHash('sha256');
      let n = 0;
      stream.on('error', reject);
      stream.on('data', (c: Buffer) => {
        h.update(c);
        n += c.length;
        if (n >= (SIZE / 4) * (g.relay.cuts + 1) && g.relay.cuts < 3) g.relay.cut();
      });
      stream.on('end', () => {
        stream.end(`got ${n}`);
        resolve({ text: `${info.srcIP} ${h.digest('hex')}`, n });
      });
    }).then((fwd) => {
      const c = net.connect({ port: fwd.port, host: '127.0.0.1', allowHalfOpen: true });
      c.on('error', reject);
      c.end(body);
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('end', () => answered(Buffer.concat(chunks).toString()));
    }, reject);
  });
  const r = await received;
  t.is(r.n, SIZE);
  t.is(r.text, `127.0.0.1 ${sha(body)}`, 'the real originator is given to the handler');
  t.is(await answer, `got ${SIZE}`, 'the answer after the half-close reached the cluster client');
  t.is(g.relay.cuts, 3);
});

test('an interactive stream keeps typing across cuts: every line echoed once, in order', async (t) => {
  const g = await rig(t);
  const port = await listen(t, (s) => s.pipe(s));
  const stream = await g.tunnel.dial('127.0.0.1', port);
  let echoed = '';
  stream.on('data', (c: Buffer) => (echoed += c.toString()));
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) {
    const line = `line ${i}\n`;
    lines.push(line);
    stream.write(line);
    if (i % 20 === 10) g.relay.cut();
    await new Promise((r) => setTimeout(r, 10));
  }
  stream.end();
  await new Promise((r) => stream.once('end', r));
  t.is(echoed, lines.join(''));
});

test('a window that runs out resets the stream on both ends; new streams work after', async (t) => {
  const g = await rig(t, { windowMs: 500 });
  let farClosed: (() => void) | undefined;
  const farGone = new Promise<void>((r) => (farClosed = r));
  const port = await listen(t, (s) => {
    s.on('close', () => farClosed?.());
    s.pipe(s);
  });
  const stream = await g.tunnel.dial('127.0.0.1', port);
  stream.write('hello');
  await new Promise((r) => stream.once('data', r));
  const failed = new Promise<Error>((resolve) => stream.once('error', resolve));
  g.relay.refuse(true);
  g.relay.cut();
  const error = await failed;
  t.regex(error.message, /resume window \(0\.5 s\)/);
  await farGone; // the shadow gave it up too (its own window), closing the far socket
  g.relay.refuse(false);
  const again = await g.tunnel.dial('127.0.0.1', port);
  again.end('after');
  const chunks: Buffer[] = [];
  for await (const c of again) chunks.push(c as Buffer);
  t.is(Buffer.concat(chunks).toString(), 'after');
  t.true(g.shadowLog.some((l) => l.event === 'close' && l.stream !== undefined), 'the shadow logged the reset stream closing');
  t.is(g.tunnel.resumeCounts?.lost, 1);
});

test('control frames: what is encoded decodes the same, however it is cut; garbage is refused', (t) => {
  const frames: ControlFrame[] = [
    { type: 'hello', version: 2, session: 'ab'.repeat(16), limits: RESUME_DEFAULTS, streams: [1, 3, 5] },
    { type: 'welcome', version: 2, limits: RESUME_DEFAULTS, streams: [] },
    { type: 'ack', id: 7, offset: 2 ** 40 + 5, fin: true },
    { type: 'reset', id: 9, reason: 'why not' },
    { type: 'attached', id: 2, offset: 0, fin: false },
  ];
  const wire = Buffer.concat(frames.map(encodeFrame));
  const d = new ControlDecoder();
  const out: ControlFrame[] = [];
  for (let i = 0; i < wire.length; i += 3) out.push(...d.push(wire.subarray(i, i + 3)));
  t.deepEqual(out, frames);
  t.throws(() => new ControlDecoder().push(Buffer.from([0, 0, 0, 1, 99])), { message: /unknown control frame type 99/ });
  t.throws(() => new ControlDecoder().push(Buffer.from([0xff, 0, 0, 0])), { instanceOf: RangeError });
});

test.serial('memory: 200 streams held at their bound while the tunnel is down; RSS grows by about what they keep; all finish after', async (t) => {
  const BOUND = 1 << 20;
  const g = await rig(t, { streamBytes: BOUND, totalBytes: 256 << 20 });
  const counts: number[] = [];
  const port = await listen(t, (s) => {
    let n = 0;
    s.on('data', (c: Buffer) => (n += c.length));
    s.on('end', () => {
      counts.push(n);
      s.end();
    });
  });
  const streams = await Promise.all(Array.from({ length: 200 }, () => g.tunnel.dial('127.0.0.1', port)));
  for (const s of streams) s.on('error', () => undefined);
  global.gc?.();
  const before = process.memoryUsage().rss;
  g.relay.refuse(true);
  g.relay.cut();
  await new Promise((r) => setTimeout(r, 100));
  const CHUNK = 64 << 10;
  /** Writes fresh chunks (as sockets give them) until a write's callback waits: the stream keeps its bound. */
  const fill = async (s: Duplex): Promise<number> => {
    let written = 0;
    for (;;) {
      const accepted = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 300);
        s.write(Buffer.alloc(CHUNK, written & 0xff), () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      written += CHUNK;
      if (!accepted) return written;
    }
  };
  const written = await Promise.all(streams.map(fill));
  const kept = streams.map((s) => (s as unknown as { keptBytes: number }).keptBytes);
  const held = kept.reduce((a, b) => a + b, 0);
  const grown = process.memoryUsage().rss - before;
  t.log(`200 streams keep ${(held / 2 ** 20).toFixed(0)} MiB; RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB`);
  for (const k of kept) t.true(k >= BOUND && k <= BOUND + CHUNK, `a stream keeps ${k} bytes`);
  // The documented figure (README, "What survives a dropped tunnel"): what the streams keep, plus a quarter, plus 64 MiB.
  t.true(grown <= held * 1.25 + (64 << 20), `RSS grew ${grown} bytes for ${held} kept`);
  g.relay.refuse(false);
  for (const s of streams) s.end();
  for (let i = 0; counts.length < 200 && i < 1000; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(counts.length, 200);
  t.deepEqual(counts.sort((a, b) => a - b), written.sort((a, b) => a - b), 'every stream delivered all it was given, after the tunnel came back');
});

test('the total bound caps what all streams keep together', async (t) => {
  const g = await rig(t, { streamBytes: 4 << 20, totalBytes: 8 << 20 });
  const port = await listen(t, (s) => s.resume());
  const streams = await Promise.all(Array.from({ length: 8 }, () => g.tunnel.dial('127.0.0.1', port)));
  for (const s of streams) s.on('error', () => undefined);
  g.relay.refuse(true);
  g.relay.cut();
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 64; i++) for (const s of streams) s.write(Buffer.alloc(64 << 10));
  await new Promise((r) => setTimeout(r, 300));
  const held = streams.reduce((a, s) => a + (s as unknown as { keptBytes: number }).keptBytes, 0);
  // At most the total, plus the one chunk each stream may take before it sees the budget spent.
  t.true(held >= 8 << 20 && held <= (8 << 20) + 8 * (64 << 10), `held ${held}`);
  g.relay.refuse(false);
});

test('an older shadow (protocol 1): said once, however often the tunnel comes back; its streams are not made resumable', async (t) => {
  const { ResumeClient } = await import('../src/ssh/resume.js');
  const logs: string[] = [];
  const client = new ResumeClient(RESUME_DEFAULTS, (l) => logs.push(l), () => undefined);
  // What ResumeClient reads of a connection: the server's software and whether it is up.
  const old = Object.assign(new (await import('node:events')).EventEmitter(), { serverSoftware: 'ktctl-shadow_1', ready: true, subsystem: () => Promise.resolve(undefined) });
  const tunnel = old as unknown as SshTunnel;
  t.false(await client.connect(tunnel));
  t.false(await client.connect(tunnel));
  t.false(client.active(tunnel));
  t.deepEqual(logs, ['open connections will not survive a dropped tunnel: the ssh server is an older shadow (ktctl-shadow_1), without ktctl\'s resume layer']);
});

test('a writer that ignores backpressure past twice the bound while the tunnel is down: the stream is reset on both ends, with why', async (t) => {
  const g = await rig(t, { streamBytes: 256 << 10 });
  let farClosed!: () => void;
  const farGone = new Promise<void>((r) => (farClosed = r));
  const port = await listen(t, (s) => {
    s.resume();
    s.on('end', () => farClosed());
    s.on('close', () => farClosed());
  });
  const stream = await g.tunnel.dial('127.0.0.1', port);
  const failed = new Promise<Error>((resolve) => stream.once('error', resolve));
  g.relay.refuse(true);
  g.relay.cut();
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 64; i++) stream.write(Buffer.alloc(16 << 10)); // 1 MiB, never waiting for 'drain'
  t.regex((await failed).message, /past the buffer bound of 262144 bytes/);
  g.relay.refuse(false);
  await farGone; // the shadow was told at the next HELLO (the client no longer has it)
  t.is(g.tunnel.resumeCounts?.lost, 0, 'reset by its own writer, not lost by the tunnel');
});
