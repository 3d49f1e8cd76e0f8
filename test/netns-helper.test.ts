import test from 'ava';
import net from 'node:net';
import { createNetns, linkNetns, bridgeToHost, waitForTcp, run } from './helpers/netns.js';

test('two namespaces linked by a veth reach each other, and the host reaches a server inside through a unix bridge', async (t) => {
  const a = await createNetns(t);
  const b = await createNetns(t);
  const { aIp, bIp } = await linkNetns(t, a, b);
  t.regex(aIp, /^198\.18\.(1[2-8]\d|19[01])\./);
  const ping = await a.exec('ping', ['-c', '1', '-W', '2', bIp]);
  t.is(ping.code, 0, ping.stdout + ping.stderr);

  const target = await b.addTargetAddress();
  const server = b.spawn('node', ['-e', `require('node:net').createServer((c) => { c.on('error', () => {}); c.end('hello from ' + '${target}'); }).listen(7000, '${target}')`]);
  t.teardown(() => server.kill('SIGKILL'));
  await waitForTcp(b, target, 7000);
  // The address exists only inside b: the host has no route to it.
  const hostRoute = await run('ip', ['route', 'get', target]);
  t.false(hostRoute.stdout.includes('dev kv'), 'the host must have no route into the test namespace');

  const path = await bridgeToHost(t, b, 7000, target);
  const reply = await new Promise<string>((resolve, reject) => {
    const c = net.connect(path);
    let out = '';
    c.on('data', (d) => (out += d.toString()));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
  t.is(reply, `hello from ${target}`);
});

test('destroy removes the namespace and kills what runs inside', async (t) => {
  const holder: Array<() => unknown> = [];
  const ns = await createNetns({ teardown: (fn) => holder.push(fn) });
  const child = ns.spawn('sleep', ['600']);
  await new Promise((r) => setTimeout(r, 100));
  await ns.destroy();
  const list = await run('ip', ['netns', 'list']);
  t.false(list.stdout.includes(ns.name));
  // Its exit reaches this process as an event: wait for it (up to 10 s), not a fixed 100 ms.
  const ended = (): boolean => child.exitCode !== null || child.signalCode !== null;
  if (!ended()) await Promise.race([new Promise((r) => child.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))]);
  t.true(ended(), 'the process inside must be gone');
});
