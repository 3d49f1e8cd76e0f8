/**
 * The proxy's resource bounds, one test per finding of the outside fuzzing campaign:
 * P1 the handshake is a deadline from accept, not an idle timeout; P2 a refused request leaves no
 * half-open socket behind; P3 a client that leaves while its dial is pending is noticed and its
 * dial aborted (and early bytes of one that stays are kept); P4 port 0 and bad Host fields are 400.
 * Loopback only; Dialers are the plain-socket one and small in-test ones.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DialOptions, Dialer } from '../src/dialer.js';
import { DialError } from '../src/errors.js';
import { ProxyServer, type ProxyServerOptions } from '../src/proxy/index.js';
import { DirectDialer } from './helpers/direct-dialer.js';
import { listenLocal } from './helpers/local-server.js';
import { closedPort } from './helpers/netns.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const listen = listenLocal;

async function startProxy(
  t: ExecutionContext,
  dialer: Dialer,
  options: Partial<ProxyServerOptions> = {},
): Promise<{ proxy: ProxyServer; port: number }> {
  const proxy = new ProxyServer({ dialer, host: '127.0.0.1', port: 0, ...options });
  t.teardown(() => proxy.close());
  const { port } = await proxy.listen();
  return { proxy, port };
}

/** A Dialer whose dials never settle by themselves; it records each one and whether it was aborted. */
class HangingDialer implements Dialer {
  readonly dials: { host: string; port: number; aborted: boolean }[] = [];
  dial(host: string, port: number, options: DialOptions = {}): Promise<Duplex> {
    const entry = { host, port, aborted: false };
    this.dials.push(entry);
    return new Promise((_resolve, reject) => {
      options.signal?.addEventListener('abort', () => {
        entry.aborted = true;
        reject(new DialError('tunnel', host, port, 'dial aborted'));
      }, { once: true });
    });
  }
}

/** A client that never closes its side by itself (allowHalfOpen: a FIN from the proxy is not answered). */
async function stubborn(port: number): Promise<Socket> {
  const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

/** Resolves with how long it took until `cond` held, or rejects after `limitMs`. */
async function within(limitMs: number, cond: () => boolean, what: string): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > limitMs) throw new Error(`${what}: still not true after ${limitMs} ms`);
    await sleep(10);
  }
  return Date.now() - start;
}

function socksConnect(host: string, port: number): Buffer {
  const name = Buffer.from(host);
  return Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x03, name.length, ...name, port >> 8, port & 0xff]);
}

/** The proxy ended or broke the connection (an 'error' on the way counts too). */
function endOrClose(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    s.once('end', resolve);
    s.once('close', resolve);
  });
}

async function readUntilEnd(s: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  await endOrClose(s);
  return Buffer.concat(chunks);
}

// ---- P1: the handshake timeout is a deadline ----------------------------------------------------

/** Writes `bytes` one at a time, `gapMs` apart, while the socket is open. */
async function dribble(s: Socket, bytes: Buffer, gapMs: number): Promise<void> {
  for (const b of bytes) {
    if (s.destroyed || !s.writable) return;
    s.write(Buffer.from([b]));
    await sleep(gapMs);
  }
}

test('P1 handshakeDeadline_dribblingClients: SOCKS5 and HTTP heads sent a byte at a time are cut at the deadline from accept', async (t) => {
  const { proxy, port } = await startProxy(t, new DirectDialer(), { handshakeTimeoutMs: 400 });
  // Each would take ~4 s at one byte every 50 ms, well past the 400 ms deadline.
  const socks = Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), socksConnect('a'.repeat(70), 80).subarray(3)]);
  const http = Buffer.from(`GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\nX-Slow: ${'z'.repeat(60)}\r\n\r\n`);
  const runs = [socks, http].map(async (bytes) => {
    const s = await stubborn(port);
    const started = Date.now();
    const closed = endOrClose(s).then(() => Date.now() - started);
    void dribble(s, bytes, 50);
    const ms = await Promise.race([closed, sleep(3000).then(() => Infinity)]);
    s.destroy();
    return ms;
  });
  const [socksMs, httpMs] = await Promise.all(runs);
  t.log(`SOCKS5 dropped after ${socksMs} ms, HTTP after ${httpMs} ms`);
  t.true(socksMs! < 1200, `SOCKS5 handshake held ${socksMs} ms against a 400 ms deadline`);
  t.true(httpMs! < 1200, `HTTP head held ${httpMs} ms against a 400 ms deadline`);
  await within(1000, () => proxy.stats().activeConnections === 0, 'proxy sockets closed');
});

test('P1 handshakeDeadline_keepAlive: the next request head on a kept-alive HTTP connection has a deadline too', async (t) => {
  const origin = createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'));
  });
  const originPort = await listen(t, origin);
  const { proxy, port } = await startProxy(t, new DirectDialer({ names: { 'web.test': '127.0.0.1' } }), { handshakeTimeoutMs: 400 });
  const s = await stubborn(port);
  s.write(`GET http://web.test:${originPort}/ HTTP/1.1\r\nHost: web.test\r\n\r\n`);
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  await within(3000, () => got.includes('\r\n\r\nok'), 'first response');
  const started = Date.now();
  const closed = endOrClose(s).then(() => Date.now() - started);
  void dribble(s, Buffer.from(`GET http://web.test:${originPort}/2 HTTP/1.1\r\nHost: web.test\r\nX-Slow: ${'z'.repeat(60)}\r\n\r\n`), 50);
  const ms = await Promise.race([closed, sleep(3000).then(() => Infinity)]);
  s.destroy();
  t.true(ms < 1200, `second head held ${ms} ms`);
  await within(1000, () => proxy.stats().activeConnections === 0, 'proxy sockets closed');
});

// ---- P2: no half-open socket after a refusal ----------------------------------------------------

test('P2 refusal_linger: after SOCKS reply 5, a 502 and a 400 for CONNECT host:0 the proxy frees the socket although the client never closes', async (t) => {
  const closed = await closedPort();
  const { proxy, port } = await startProxy(t, new DirectDialer({ names: { 'web.test': '127.0.0.1' } }), { handshakeTimeoutMs: 5000, lingerMs: 300 });
  const cases: [string, Buffer | string, RegExp][] = [
    ['SOCKS5 reply 5', socksConnect('web.test', closed), /^\x05\x00\x05\x05/],
    ['CONNECT 502', `CONNECT web.test:${closed} HTTP/1.1\r\nHost: web.test:${closed}\r\n\r\n`, /^HTTP\/1\.1 502 /],
    ['CONNECT host:0 400', 'CONNECT web.test:0 HTTP/1.1\r\nHost: web.test:0\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['SOCKS5 command 7', Buffer.from([0x05, 0x01, 0x00, 0x05, 0x02, 0x00, 0x01, 127, 0, 0, 1, 0, 80]), /^\x05\x00\x05\x07/],
    ['malformed HTTP 400', 'GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 /],
  ];
  for (const [name, request, expected] of cases) {
    const s = await stubborn(port);
    s.write(request);
    const reply = await readUntilEnd(s);
    t.regex(reply.toString('latin1'), expected, name);
    // The client got the proxy's FIN and keeps its own side open; the proxy must not wait for it.
    const ms = await within(2000, () => proxy.stats().activeConnections === 0, `${name}: proxy socket freed`).catch((err: Error) => err);
    s.destroy();
    t.is(typeof ms, 'number', `${name}: ${ms instanceof Error ? ms.message : ''}`);
    await within(1000, () => proxy.stats().activeConnections === 0, 'settled');
  }
});

// ---- P3: a client leaving during a pending dial ------------------------------------------------

test('P3 pendingDial_clientLeaves: FIN or RST during a hung dial frees the socket and aborts the dial (SOCKS5 and CONNECT)', async (t) => {
  const dialer = new HangingDialer();
  const { proxy, port } = await startProxy(t, dialer, { handshakeTimeoutMs: 5000 });
  const requests: [string, Buffer | string][] = [
    ['SOCKS5', socksConnect('hang.test', 80)],
    ['CONNECT', 'CONNECT hang.test:80 HTTP/1.1\r\nHost: hang.test:80\r\n\r\n'],
  ];
  for (const [name, request] of requests) {
    for (const leave of ['FIN', 'RST'] as const) {
      const before = dialer.dials.length;
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await once(s, 'connect');
      s.write(request);
      await within(2000, () => dialer.dials.length > before, `${name}: dial started`);
      if (leave === 'FIN') s.end();
      else s.resetAndDestroy();
      const entry = dialer.dials[before]!;
      const ms = await within(2000, () => entry.aborted && proxy.stats().activeConnections === 0, `${name} ${leave}: dial aborted, socket freed`).catch((err: Error) => err);
      s.destroy();
      t.is(typeof ms, 'number', `${name} ${leave}: ${ms instanceof Error ? ms.message : ''}`);
    }
  }
});

test('P3 pendingDial_earlyData: bytes pipelined right after the request reach the target once a slow dial succeeds', async (t) => {
  const echoPort = await listen(t, createServer({ allowHalfOpen: true }, (s) => s.pipe(s)));
  const { proxy, port } = await startProxy(t, new DirectDialer({ names: { 'web.test': '127.0.0.1' }, dialDelayMs: 200 }));
  const early = randomBytes(3000);
  const later = randomBytes(5000);
  for (const request of [socksConnect('web.test', echoPort), `CONNECT web.test:${echoPort} HTTP/1.1\r\nHost: web.test\r\n\r\n`]) {
    const s = connect(port, '127.0.0.1');
    await once(s, 'connect');
    s.write(Buffer.concat([Buffer.from(request), early]));
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    await sleep(300);
    s.end(later);
    await once(s, 'close');
    const all = Buffer.concat(chunks);
    const replyLength = typeof request === 'string' ? all.indexOf('\r\n\r\n') + 4 : 12;
    t.is(sha256(all.subarray(replyLength)), sha256(Buffer.concat([early, later])), typeof request === 'string' ? 'CONNECT' : 'SOCKS5');
  }
  await within(1000, () => proxy.stats().activeConnections === 0 && proxy.stats().activeUpstreams === 0, 'all closed');
});

// ---- P4: port 0 and Host fields -----------------------------------------------------------------

test('P4 httpRequest_port0_duplicateHost: refused with 400 before anything is dialed', async (t) => {
  const dialer = new DirectDialer({ names: { 'web.test': '127.0.0.1' } });
  const { port } = await startProxy(t, dialer);
  const send = async (text: string): Promise<string> => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(text);
    const timer = setTimeout(() => s.destroy(), 2000);
    const out = await readUntilEnd(s);
    clearTimeout(timer);
    s.destroy();
    return out.toString('latin1');
  };
  t.regex(await send('GET http://web.test:0/ HTTP/1.1\r\nHost: web.test:0\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 [^]*port/);
  t.regex(await send('GET http://web.test:1/ HTTP/1.1\r\nHost: web.test:1\r\nHost: evil.test\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 [^]*Host/);
  t.regex(await send('CONNECT web.test:1 HTTP/1.1\r\nHost: web.test:1\r\nHost: evil.test\r\n\r\n'), /^HTTP\/1\.1 400 [^]*Host/);
  t.regex(await send('GET http://web.test:1/ HTTP/1.1\r\nHost: we b.test\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 [^]*Host/);
  t.deepEqual(dialer.requests, [], 'nothing was dialed');
});
