/**
 * The proxy under load and at its edges: many parallel tunnels, a slow reader, aborts on either
 * side, and close() with live connections. Loopback only; the Dialer is the plain-socket one.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProxyServer } from '../src/proxy/index.js';
import { DirectDialer, type DirectDialerOptions } from './helpers/direct-dialer.js';
import { listenLocal } from './helpers/local-server.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const listen = listenLocal;

/** Echoes everything and half-closes after the client does. */
function echoServer(): Server {
  return createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
}

async function startProxy(t: ExecutionContext, options: DirectDialerOptions = {}): Promise<{ proxy: ProxyServer; port: number; dialer: DirectDialer }> {
  const dialer = new DirectDialer({ names: { 'web.test': '127.0.0.1' }, ...options });
  const proxy = new ProxyServer({ dialer, host: '127.0.0.1', port: 0 });
  t.teardown(() => proxy.close());
  const { port } = await proxy.listen();
  return { proxy, port, dialer };
}

async function readN(socket: Socket, n: number): Promise<Buffer> {
  for (;;) {
    const b = socket.read(n) as Buffer | null;
    if (b !== null) return b;
    if (socket.readableEnded || socket.destroyed) throw new Error(`stream ended before ${n} bytes`);
    await Promise.race([once(socket, 'readable'), once(socket, 'close')]);
  }
}

/** SOCKS5 CONNECT by name; resolves with the socket once the reply said "succeeded". */
async function viaSocks(proxyPort: number, host: string, port: number): Promise<Socket> {
  const s = connect(proxyPort, '127.0.0.1');
  await once(s, 'connect');
  const name = Buffer.from(host);
  s.write(Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x03, name.length, ...name, port >> 8, port & 0xff]));
  const method = await readN(s, 2);
  const reply = await readN(s, 10);
  if (method[1] !== 0 || reply[1] !== 0) throw new Error(`SOCKS reply ${reply[1]}`);
  return s;
}

/** HTTP CONNECT; resolves with the socket after the 200 head. */
async function viaConnect(proxyPort: number, host: string, port: number): Promise<Socket> {
  const s = connect(proxyPort, '127.0.0.1');
  await once(s, 'connect');
  s.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  let head = Buffer.alloc(0);
  for (;;) {
    const c = s.read() as Buffer | null;
    if (c === null) {
      if (s.readableEnded || s.destroyed) throw new Error('proxy closed before the CONNECT reply');
      await Promise.race([once(s, 'readable'), once(s, 'close')]);
      continue;
    }
    head = Buffer.concat([head, c]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) continue;
    if (end + 4 < head.length) s.unshift(head.subarray(end + 4));
    const status = head.subarray(0, end).toString('latin1');
    if (!status.startsWith('HTTP/1.1 200 ')) throw new Error(status);
    return s;
  }
}

async function echoRoundTrip(socket: Socket, payload: Buffer): Promise<string> {
  const hash = createHash('sha256');
  const done = (async () => {
    for await (const c of socket) hash.update(c as Buffer);
  })();
  socket.end(payload);
  await done;
  return hash.digest('hex');
}

test('64 parallel 1 MiB echo transfers (SOCKS5 and CONNECT), SHA-256 checked', async (t) => {
  const echoPort = await listen(t, echoServer());
  const { proxy, port } = await startProxy(t);
  const jobs = Array.from({ length: 64 }, async (_, i) => {
    const payload = randomBytes(1 << 20);
    const socket = i % 2 === 0 ? await viaSocks(port, 'web.test', echoPort) : await viaConnect(port, 'web.test', echoPort);
    return (await echoRoundTrip(socket, payload)) === sha256(payload);
  });
  const results = await Promise.all(jobs);
  t.is(results.filter(Boolean).length, 64);
  const stats = proxy.stats();
  t.is(stats.totalConnections, 64);
  t.true(stats.bytesFromClients >= 64 << 20);
  t.true(stats.bytesToClients >= 64 << 20);
  // Every tunnel is gone once both sides closed.
  while (proxy.stats().activeConnections > 0 || proxy.stats().activeUpstreams > 0) await sleep(10);
  t.pass();
});

test('a slow reader keeps the proxy\'s buffers bounded; nothing is lost when it reads again', async (t) => {
  const total = 48 << 20;
  const blob = randomBytes(1 << 20);
  let sent = 0;
  let targetBlocked = false;
  const target = createServer((s) => {
    const push = (): void => {
      while (sent < total) {
        sent += blob.length;
        if (!s.write(blob)) {
          targetBlocked = true;
          s.once('drain', () => {
            targetBlocked = false;
            push();
          });
          return;
        }
      }
      s.end();
    };
    push();
  });
  const targetPort = await listen(t, target);
  const { proxy, port } = await startProxy(t);
  const client = await viaSocks(port, 'web.test', targetPort);
  client.pause();

  // Wait until the sender is stuck behind a full path (kernel buffers and the proxy's own).
  let maxBuffered = 0;
  let stableRounds = 0;
  let lastSent = -1;
  // Ends when the sender has been stuck for 20 polls, or (a broken proxy) when it finished.
  for (let round = 0; stableRounds < 20 && !(sent >= total && !targetBlocked) && round < 2000; round++) {
    await sleep(25);
    maxBuffered = Math.max(maxBuffered, proxy.stats().bufferedBytes);
    stableRounds = targetBlocked && sent === lastSent ? stableRounds + 1 : 0;
    lastSent = sent;
  }
  t.log(`sender stalled after ${sent} of ${total} bytes; proxy buffered at most ${maxBuffered}`);
  t.true(sent < total, 'the sender is held back, not done');
  // Socket highWaterMarks are 16 KiB; a pipe holds at most that plus one read (64 KiB) per side.
  t.true(maxBuffered < 1 << 20, `proxy buffered ${maxBuffered} bytes`);

  const hash = createHash('sha256');
  let received = 0;
  for await (const c of client) {
    hash.update(c as Buffer);
    received += (c as Buffer).length;
  }
  t.is(received, total);
  const expected = createHash('sha256');
  for (let i = 0; i < total / blob.length; i++) expected.update(blob);
  t.is(hash.digest('hex'), expected.digest('hex'));
});

test('a client that aborts destroys the upstream, and an upstream abort destroys the client', async (t) => {
  const upstreamClosed: Promise<unknown>[] = [];
  const targetSockets: Socket[] = [];
  const target = createServer((s) => {
    targetSockets.push(s);
    upstreamClosed.push(once(s, 'close'));
    s.write('hello');
  });
  const targetPort = await listen(t, target);
  const { proxy, port } = await startProxy(t);

  const a = await viaSocks(port, 'web.test', targetPort);
  t.is((await readN(a, 5)).toString(), 'hello');
  a.resetAndDestroy();
  await upstreamClosed[0];

  const b = await viaConnect(port, 'web.test', targetPort);
  t.is((await readN(b, 5)).toString(), 'hello');
  b.on('error', () => undefined);
  targetSockets[1]!.resetAndDestroy();
  await once(b, 'close');
  while (proxy.stats().activeConnections > 0) await sleep(10);
  t.is(proxy.stats().activeUpstreams, 0);
});

test('close() destroys live tunnels, pending dials and idle connections, and is idempotent', async (t) => {
  const echoPort = await listen(t, echoServer());
  const { proxy, port, dialer } = await startProxy(t);
  const slow = await startProxy(t, { dialDelayMs: 60_000 });

  const tunnel = await viaSocks(port, 'web.test', echoPort);
  tunnel.write('x');
  t.is((await readN(tunnel, 1)).toString(), 'x');
  const idle = connect(port, '127.0.0.1');
  await once(idle, 'connect');
  const pending = connect(slow.port, '127.0.0.1');
  await once(pending, 'connect');
  pending.write(`CONNECT web.test:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
  while (slow.dialer.requests.length === 0) await sleep(5);

  const closes = [tunnel, idle, pending].map((s) => {
    s.on('error', () => undefined);
    return once(s, 'close');
  });
  await Promise.all([proxy.close(), proxy.close(), slow.proxy.close()]);
  await Promise.all(closes);
  t.true(dialer.dialed.every((s) => s.destroyed), 'upstream sockets destroyed');
  t.like(proxy.stats(), { listening: false, activeConnections: 0, activeUpstreams: 0 });
  t.like(slow.proxy.stats(), { activeConnections: 0, activeUpstreams: 0 });
  await proxy.close();
  const refused = connect(port, '127.0.0.1');
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
  t.is(err.code, 'ECONNREFUSED');
});

test('http forwarding: a slow reader keeps the proxy\'s buffers bounded too', async (t) => {
  const total = 32 << 20;
  const blob = randomBytes(1 << 20);
  let sent = 0;
  let blocked = false;
  const origin = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-length': total });
    const push = (): void => {
      while (sent < total) {
        sent += blob.length;
        if (!res.write(blob)) {
          blocked = true;
          res.once('drain', () => {
            blocked = false;
            push();
          });
          return;
        }
      }
      res.end();
    };
    push();
  });
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  t.teardown(() => {
    origin.closeAllConnections();
    origin.close();
  });
  const originPort = (origin.address() as AddressInfo).port;
  const { proxy, port } = await startProxy(t);
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  client.pause();
  client.write(`GET http://web.test:${originPort}/big HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n`);
  let maxBuffered = 0;
  let stable = 0;
  let last = -1;
  for (let round = 0; stable < 20 && !(sent >= total && !blocked) && round < 2000; round++) {
    await sleep(25);
    maxBuffered = Math.max(maxBuffered, proxy.stats().bufferedBytes);
    stable = blocked && sent === last ? stable + 1 : 0;
    last = sent;
  }
  t.log(`origin stalled after ${sent} of ${total} bytes; proxy buffered at most ${maxBuffered}`);
  t.true(sent < total, 'the origin is held back, not done');
  t.true(maxBuffered < 1 << 20);
  let received = 0;
  for await (const c of client) received += (c as Buffer).length;
  t.true(received > total, 'head and the whole body arrived');
});

test('a client that never finishes its handshake is dropped after handshakeTimeoutMs', async (t) => {
  const proxy = new ProxyServer({ dialer: new DirectDialer(), host: '127.0.0.1', port: 0, handshakeTimeoutMs: 300 });
  t.teardown(() => proxy.close());
  const { port } = await proxy.listen();
  const silent = connect(port, '127.0.0.1');
  const halfSocks = connect(port, '127.0.0.1');
  halfSocks.write(Buffer.from([0x05, 0x01]));
  const halfHttp = connect(port, '127.0.0.1');
  halfHttp.write('GET http://web.test/ HTTP/1.1\r\nHost: web');
  await Promise.all([silent, halfSocks, halfHttp].map((s) => once(s, 'close')));
  t.is(proxy.stats().totalConnections, 3);
  while (proxy.stats().activeConnections > 0) await sleep(10);
  t.pass();
});
