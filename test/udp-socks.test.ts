/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §4, §7) through the proxy, whose Dialer is a real SshTunnel to a
 * real ShadowServer on 127.0.0.1; the targets are UDP servers on 127.0.0.1. The client is the
 * test's own (helpers/socks5-udp.ts), written from the RFC.
 */
import test from 'ava';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ProxyServer } from '../src/proxy/server.js';
import { ShadowServer } from '../src/shadow/server.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { MeshRouter } from '../src/shadow/router.js';
import { ed25519 } from './helpers/ssh-fixtures.js';
import { socksUdpAssociate } from './helpers/socks5-udp.js';

const hostKey = ed25519('udp-socks-host');
const userKey = ed25519('udp-socks-user');

interface Teardown {
  teardown(fn: () => unknown): void;
}

async function proxyOverShadow(t: Teardown, router?: MeshRouter): Promise<{ port: number; proxy: ProxyServer }> {
  const server = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', router });
  t.teardown(() => server.close());
  const { port: sshPort } = await server.listen();
  const tunnel = await SshTunnel.open({ host: '127.0.0.1', port: sshPort, username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public } });
  t.teardown(() => tunnel.close());
  const proxy = new ProxyServer({ dialer: tunnel, host: '127.0.0.1', port: 0 });
  t.teardown(() => proxy.close());
  const { port } = await proxy.listen();
  return { port, proxy };
}

async function echoServer(t: Teardown): Promise<number> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  socket.on('message', (msg, rinfo) => socket.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.teardown(() => socket.close());
  return (socket.address() as AddressInfo).port;
}

test('UDP ASSOCIATE: echo of 1, 1400 and 8000 bytes intact, the reply names the relay on the proxy\'s address', async (t) => {
  const { port } = await proxyOverShadow(t);
  const echo = await echoServer(t);
  const a = await socksUdpAssociate('127.0.0.1', port);
  t.teardown(() => a.close());
  t.is(a.code, 0);
  t.is(a.relay.host, '127.0.0.1');
  t.not(a.relay.port, 0);
  for (const size of [1, 1400, 8000]) {
    const data = randomBytes(size);
    a.send('127.0.0.1', echo, data);
    const back = await a.next();
    t.true(back.data.equals(data), `${size} bytes`);
    t.is(back.host, '127.0.0.1');
    t.is(back.port, echo);
  }
});

test('UDP ASSOCIATE: 1000 datagrams in flight come back in order; a name is resolved on the far side', async (t) => {
  const { port } = await proxyOverShadow(t);
  const echo = await echoServer(t);
  const a = await socksUdpAssociate('127.0.0.1', port);
  t.teardown(() => a.close());
  for (let i = 0; i < 1000; i++) {
    const d = Buffer.alloc(32);
    d.writeUInt32BE(i, 0);
    a.send('127.0.0.1', echo, d);
  }
  const seq: number[] = [];
  for (let i = 0; i < 1000; i++) seq.push((await a.next()).data.readUInt32BE(0));
  t.deepEqual(seq, Array.from({ length: 1000 }, (_, i) => i));
  a.send('localhost', echo, Buffer.from('by name'));
  const back = await a.next();
  t.is(back.data.toString(), 'by name');
  t.is(back.host, 'localhost', 'the answer names the destination as the client named it');
});

test('UDP ASSOCIATE: FRAG != 0 and datagrams from another port than the one named are dropped', async (t) => {
  const { port } = await proxyOverShadow(t);
  const echo = await echoServer(t);
  // A port of our own, named in the request: only datagrams from it are relayed.
  const probe = createSocket('udp4');
  await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
  const named = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const a = await socksUdpAssociate('127.0.0.1', port, { from: { host: '127.0.0.1', port: named }, bindPort: named });
  t.teardown(() => a.close());
  a.send('127.0.0.1', echo, Buffer.from('fragment'), 1);
  // From another socket (another port): dropped.
  const other = createSocket('udp4');
  t.teardown(() => other.close());
  let otherGot = 0;
  other.on('message', () => otherGot++);
  await new Promise<void>((resolve) => other.bind(0, '127.0.0.1', resolve));
  const header = Buffer.from([0, 0, 0, 1, 127, 0, 0, 1, echo >> 8, echo & 0xff]);
  other.send(Buffer.concat([header, Buffer.from('intruder')]), a.relay.port, a.relay.host);
  // Then a good one: the first answer that comes is its answer, nothing for the two before.
  a.send('127.0.0.1', echo, Buffer.from('whole'));
  t.is((await a.next()).data.toString(), 'whole');
  await new Promise((r) => setTimeout(r, 200));
  t.is(a.received.length, 1);
  t.is(otherGot, 0);
});

test('UDP ASSOCIATE: the association ends with its TCP connection (the relay port closes)', async (t) => {
  const { port } = await proxyOverShadow(t);
  const a = await socksUdpAssociate('127.0.0.1', port);
  const relay = a.relay;
  await a.close();
  // A socket connected to the relay port gets ECONNREFUSED (ICMP port unreachable) once it is closed.
  const s = createSocket('udp4');
  t.teardown(() => s.close());
  const refused = new Promise<string>((resolve) => s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')));
  await new Promise<void>((resolve) => s.connect(relay.port, relay.host, resolve));
  const timer = setInterval(() => s.send(Buffer.from('x')), 100);
  t.is(await refused, 'ECONNREFUSED');
  clearInterval(timer);
});

test('UDP ASSOCIATE over a server without UDP: reply 7 (command not supported)', async (t) => {
  const router = new MeshRouter({ ports: [{ port: 1, protocol: 'tcp' }], upstream: '127.0.0.1' });
  t.teardown(() => router.close());
  const { port } = await proxyOverShadow(t, router);
  const a = await socksUdpAssociate('127.0.0.1', port);
  t.teardown(() => a.close());
  t.is(a.code, 7);
});
