/**
 * ReconnectingTunnel: the shadow goes away and comes back; dials made meanwhile wait and then
 * succeed, remote forwards are asked for again, and a changed host key ends it with 'fatal'.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { bridgeToHost, createNetns, waitForTcp, type Netns } from './helpers/netns.js';
import { ed25519, readAll, shadowCommand, startTargets, PORTS, type KeyPair } from './helpers/ssh-fixtures.js';
import { ReconnectingTunnel } from '../src/ssh/reconnect.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { HostKeyError } from '../src/errors.js';

const SHADOW_PORT = 2222;

function startShadow(ns: Netns, dir: string, host: KeyPair, client: KeyPair): ChildProcess {
  writeFileSync(join(dir, 'host'), host.private, { mode: 0o600 });
  writeFileSync(join(dir, 'client.pub'), client.public + '\n');
  return ns.spawn('node', shadowCommand(), {
    env: { ...process.env, KTCTL_HOST_KEY_FILE: join(dir, 'host'), KTCTL_AUTHORIZED_KEY_FILE: join(dir, 'client.pub'), KTCTL_PORT: String(SHADOW_PORT) },
  });
}

async function stopShadow(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** A shadow in a namespace of the test's own, reached from the host through a Unix socket at `path`. */
interface ShadowFixture {
  ns: Netns;
  host: KeyPair;
  client: KeyPair;
  path: string;
  /** SIGKILL, resolved once it is gone */
  stop(): Promise<void>;
  /** a new shadow process, with `hostKey` (default: the same host key) */
  start(hostKey?: KeyPair): void;
}

async function shadowFixture(t: ExecutionContext): Promise<ShadowFixture> {
  const ns = await createNetns(t);
  const dir = mkdtempSync(join(tmpdir(), 'ktt-reconnect-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const host = ed25519('host');
  const client = ed25519('client');
  let shadow = startShadow(ns, dir, host, client);
  t.teardown(() => shadow.kill('SIGKILL'));
  await waitForTcp(ns, '127.0.0.1', SHADOW_PORT);
  const path = await bridgeToHost(t, ns, SHADOW_PORT);
  return {
    ns,
    host,
    client,
    path,
    stop: () => stopShadow(shadow),
    start: (hostKey = host) => {
      shadow = startShadow(ns, dir, hostKey, client);
    },
  };
}

function echoOnce(stream: NodeJS.ReadWriteStream & { end(data?: string): unknown }, text: string): Promise<string> {
  stream.end(text);
  return readAll(stream).then((b) => b.toString());
}

test('the shadow restarts: a dial made while it is down waits and succeeds, forwards come back', async (t) => {
  const f = await shadowFixture(t);
  const target = await f.ns.addTargetAddress();
  await startTargets(f.ns, target);

  const logs: string[] = [];
  const tunnel = new ReconnectingTunnel({
    label: 'the test shadow',
    connect: () => SshTunnel.open({ sock: net.connect(f.path), username: 'ktctl', privateKey: f.client.private, hostKey: { pinned: f.host.public }, keepaliveInterval: 1000 }),
  });
  tunnel.on('log', (l) => logs.push(l));
  t.teardown(() => tunnel.close());
  await tunnel.start();

  const forwarded: string[] = [];
  const fwd = await tunnel.forwardIn('127.0.0.1', 0, (stream) => {
    readAll(stream).then((b) => forwarded.push(b.toString()), () => undefined);
    stream.end();
  });
  t.true(fwd.port > 0);
  t.is(await echoOnce(await tunnel.dial(target, PORTS.echo), 'before'), 'before');

  await f.stop();
  // A dial while the shadow is down waits for the reconnect instead of failing.
  const pending = tunnel.dial(target, PORTS.echo);
  await new Promise((r) => setTimeout(r, 500));
  f.start();
  const stream = await pending;
  t.is(await echoOnce(stream, 'after'), 'after');
  t.true(logs.some((l) => l.includes('dropped')), logs.join('\n'));
  t.true(logs.some((l) => l.includes('reconnected')), logs.join('\n'));

  // The remote forward was asked for again, on the same port.
  const r = await f.ns.exec('bash', ['-c', `echo -n hi >/dev/tcp/127.0.0.1/${fwd.port}`]);
  t.is(r.code, 0, r.stderr);
  for (const deadline = Date.now() + 10_000; forwarded.length === 0 && Date.now() < deadline; ) await new Promise((res) => setTimeout(res, 20));
  t.deepEqual(forwarded, ['hi']);
});

test('a changed host key on reconnect is fatal: the tunnel gives up and says why', async (t) => {
  const f = await shadowFixture(t);
  const tunnel = new ReconnectingTunnel({
    label: 'the test shadow',
    connect: () => SshTunnel.open({ sock: net.connect(f.path), username: 'ktctl', privateKey: f.client.private, hostKey: { pinned: f.host.public } }),
  });
  t.teardown(() => tunnel.close());
  await tunnel.start();
  const fatal = new Promise<Error>((r) => tunnel.once('fatal', r));
  await f.stop();
  f.start(ed25519('impostor'));
  const error = await fatal;
  t.true(error instanceof HostKeyError);
  await t.throwsAsync(tunnel.dial('127.0.0.1', 1), { message: /tunnel is closed/ });
});
