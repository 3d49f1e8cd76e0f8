/**
 * UDP through the shadow (UDP_SUBSYSTEM), in this process: a real ShadowServer on 127.0.0.1:0, a
 * real SshTunnel to it, and a UDP echo server on 127.0.0.1. Datagrams of 1, 1400 and 8000 bytes
 * come back intact, 1000 in flight all come back in order (one channel, loopback: nothing to
 * reorder them), a closed port comes back as a port-unreachable ERROR, the flood bound holds, and a
 * reconnecting tunnel opens its flows again on the new connection.
 */
import test, { type ExecutionContext } from 'ava';
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { UdpFailure, UdpFlow, UdpSession } from '../src/dialer.js';
import { ShadowServer } from '../src/shadow/server.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { ReconnectingTunnel } from '../src/ssh/reconnect.js';
import { ed25519, type KeyPair } from './helpers/ssh-fixtures.js';

const hostKey: KeyPair = ed25519('udp-host');
const userKey: KeyPair = ed25519('udp-user');

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A UDP echo server on 127.0.0.1: every datagram goes back to its sender, as it came. */
async function echoServer(t: Teardown): Promise<{ port: number; socket: DgramSocket }> {
  // A receive buffer for a burst of 1000 (the default, ~200 KiB, holds ~250 small datagrams).
  const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  socket.on('message', (msg, rinfo) => socket.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => socket.close());
  return { port: (socket.address() as AddressInfo).port, socket };
}

/** A port on 127.0.0.1 where nothing listens (bound once, then closed). */
async function closedPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function shadow(t: Teardown, log?: (event: string, fields?: Record<string, unknown>) => void): Promise<{ server: ShadowServer; port: number }> {
  const server = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', log });
  t.teardown(() => server.close());
  const address = await server.listen();
  return { server, port: address.port };
}

async function tunnelTo(t: Teardown, port: number): Promise<SshTunnel> {
  const tun = await SshTunnel.open({ host: '127.0.0.1', port, username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public }, readyTimeout: 5000 });
  t.teardown(() => tun.close());
  return tun;
}

/** A flow whose replies and errors are collected. */
function collector(session: UdpSession, host: string, port: number): { flow: UdpFlow; got: Buffer[]; errors: UdpFailure[]; next(n?: number): Promise<Buffer[]>; nextError(): Promise<UdpFailure> } {
  const got: Buffer[] = [];
  const errors: UdpFailure[] = [];
  let wake: (() => void) | undefined;
  const flow = session.open(host, port, {
    message: (p) => {
      got.push(p);
      wake?.();
    },
    error: (f) => {
      errors.push(f);
      wake?.();
    },
  });
  const until = async (cond: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out: ${got.length} datagrams, errors ${errors.join(',')}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  };
  let read = 0;
  let readErrors = 0;
  return {
    flow,
    got,
    errors,
    async next(n = 1) {
      const start = read;
      await until(() => got.length >= start + n);
      read += n;
      return got.slice(start, start + n);
    },
    async nextError() {
      const start = readErrors;
      await until(() => errors.length > start);
      readErrors++;
      return errors[start]!;
    },
  };
}

test('echo of 1, 1400, 8000 and 65507 bytes through the shadow comes back intact', async (t) => {
  const { port } = await shadow(t);
  const echo = await echoServer(t);
  const tun = await tunnelTo(t, port);
  const session = await tun.udp();
  if (session === undefined) return t.fail('the shadow offers no UDP');
  const c = collector(session, '127.0.0.1', echo.port);
  for (const size of [1, 1400, 8000, 65507]) {
    const payload = randomBytes(size);
    t.true(c.flow.send(payload));
    const [back] = await c.next();
    t.true(back!.equals(payload), `${size} bytes`);
  }
  t.is(session.stats.datagramsOut, 4);
  t.is(session.stats.datagramsIn, 4);
});

test('1000 datagrams in flight all come back, in order', async (t) => {
  const { port } = await shadow(t);
  const echo = await echoServer(t);
  const tun = await tunnelTo(t, port);
  const session = (await tun.udp())!;
  const c = collector(session, '127.0.0.1', echo.port);
  for (let i = 0; i < 1000; i++) {
    const p = Buffer.alloc(64);
    p.writeUInt32BE(i, 0);
    t.true(c.flow.send(p));
  }
  const back = await c.next(1000);
  t.deepEqual(back.map((b) => b.readUInt32BE(0)), Array.from({ length: 1000 }, (_, i) => i));
});

test('a closed port comes back as port unreachable; a name that does not resolve as host unreachable', async (t) => {
  const { port } = await shadow(t);
  const tun = await tunnelTo(t, port);
  const session = (await tun.udp())!;
  const c = collector(session, '127.0.0.1', await closedPort());
  c.flow.send(Buffer.from('anyone?'));
  t.is(await c.nextError(), 'portUnreachable');
  const n = collector(session, 'no-such-name.invalid', 9);
  n.flow.send(Buffer.from('x'));
  t.is(await n.nextError(), 'hostUnreachable');
});

test('a name is resolved on the far side', async (t) => {
  const { port } = await shadow(t);
  const echo = await echoServer(t);
  const tun = await tunnelTo(t, port);
  const session = (await tun.udp())!;
  const c = collector(session, 'localhost', echo.port);
  c.flow.send(Buffer.from('by name'));
  const [back] = await c.next();
  t.is(back!.toString(), 'by name');
});

test('several flows at once keep their replies apart', async (t) => {
  const { port } = await shadow(t);
  const a = await echoServer(t);
  const b = await echoServer(t);
  const tun = await tunnelTo(t, port);
  const session = (await tun.udp())!;
  const ca = collector(session, '127.0.0.1', a.port);
  const cb = collector(session, '127.0.0.1', b.port);
  ca.flow.send(Buffer.from('to a'));
  cb.flow.send(Buffer.from('to b'));
  t.is((await ca.next())[0]!.toString(), 'to a');
  t.is((await cb.next())[0]!.toString(), 'to b');
});

test('a flood is dropped at the bounds and counted, and the channel still works after it', async (t) => {
  const lines: Array<{ event: string; fields?: Record<string, unknown> }> = [];
  const { port } = await shadow(t, (event, fields) => lines.push({ event, fields }));
  // A sink that never answers: all the flood's weight is on the way out.
  const sink = createSocket('udp4');
  sink.on('message', () => undefined);
  await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
  t.teardown(() => sink.close());
  const tun = await tunnelTo(t, port);
  const session = (await tun.udp())!;
  const c = collector(session, '127.0.0.1', (sink.address() as AddressInfo).port);
  const payload = randomBytes(1400);
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) if (c.flow.send(payload)) accepted++;
  // Accepted: what the ssh window (2 MiB) let go out at once, and at most 4 MiB (+1 datagram)
  // queued behind it; the rest was dropped at once.
  t.true(accepted * (1400 + 9) <= (6 << 20) + 1409, `accepted ${accepted}`);
  t.is(session.stats.dropped, 20_000 - accepted);
  const echo = await echoServer(t);
  const after = collector(session, '127.0.0.1', echo.port);
  // Sent again until it gets through: right after the flood the queue may still be full (a drop).
  const retry = setInterval(() => after.flow.send(Buffer.from('still there')), 200);
  after.flow.send(Buffer.from('still there'));
  try {
    t.is((await after.next())[0]!.toString(), 'still there');
  } finally {
    clearInterval(retry);
  }
});

test('a server without the subsystem says no UDP: undefined, and the tunnel goes on', async (t) => {
  // A mesh router's shadow refuses every session channel, as OpenSSH refuses unknown subsystems.
  const { MeshRouter } = await import('../src/shadow/router.js');
  const router = new MeshRouter({ ports: [{ port: 1, protocol: 'tcp' }], upstream: '127.0.0.1' });
  t.teardown(() => router.close());
  const server = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', router });
  t.teardown(() => server.close());
  const { port } = await server.listen();
  const tun = await tunnelTo(t, port);
  t.is(await tun.udp(), undefined);
  t.true(tun.udpUnsupported);
  t.true(tun.ready);
});

test('after a reconnect, a flow opens again on the new connection', async (t: ExecutionContext) => {
  const first = await shadow(t);
  const echo = await echoServer(t);
  let connects = 0;
  let target = first.port;
  const rt = new ReconnectingTunnel({
    label: 'test shadow',
    initialDelayMs: 50,
    connect: () => {
      connects++;
      return SshTunnel.open({ host: '127.0.0.1', port: target, username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public }, readyTimeout: 5000 });
    },
  });
  t.teardown(() => rt.close());
  await rt.start();
  const session = (await rt.udp())!;
  const c = collector(session, '127.0.0.1', echo.port);
  c.flow.send(Buffer.from('before'));
  t.is((await c.next())[0]!.toString(), 'before');
  // The shadow goes away; another one comes up on another port.
  const second = await shadow(t);
  target = second.port;
  const reconnected = new Promise<void>((resolve) => rt.once('reconnected', () => resolve()));
  await first.server.close();
  await reconnected;
  c.flow.send(Buffer.from('after'));
  t.is((await c.next())[0]!.toString(), 'after');
  t.is(connects, 2);
});
