/**
 * ClusterResolver over a real tunnel: the shadow (a real process in a namespace of the test's own,
 * reached through a unix-socket bridge) answers cluster names with the namespace's DNS server,
 * through the DNS subsystem of SshTunnel. Here the "cluster domain" is the test zone
 * (test/helpers/ssh-fixtures.ts): web.<zone> exists, big.<zone> is truncated over UDP, silent.<zone>
 * is never answered. Other names go to a DNS server of the test's own on 127.0.0.1.
 */
import test from 'ava';
import dgram from 'node:dgram';
import { connect } from 'node:net';
import * as dnsPacket from 'dns-packet';
import { ClusterResolver, DnsServer } from '../src/dns/index.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { bridgeToHost, createNetns } from './helpers/netns.js';
import { collectJsonLines, ed25519, REPO, shadowCommand, startTargets, TeardownList, ZONE } from './helpers/ssh-fixtures.js';

const hooks = new TeardownList();
let tunnel: SshTunnel;
let targetAddr: string;
let upstream: string;
let openTunnel: () => Promise<SshTunnel>;

test.before(async () => {
  const ns = await createNetns(hooks, 'ktdt');
  targetAddr = await ns.addTargetAddress();
  ns.setResolvConf(`nameserver ${targetAddr}\noptions timeout:1 attempts:1\n`);
  await startTargets(ns, targetAddr);
  const hostKey = ed25519('shadow-host');
  const userKey = ed25519('ktctl-user');
  const env = { ...process.env, KTCTL_HOST_KEY: hostKey.private, KTCTL_AUTHORIZED_KEY: userKey.public, KTCTL_PORT: '2222' };
  const child = ns.spawn('node', shadowCommand(), { cwd: REPO, env });
  hooks.teardown(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const log = collectJsonLines(child);
  await Promise.race([log.waitFor((l) => l.event === 'listen'), new Promise<never>((_, reject) => child.once('exit', (c) => reject(new Error(`the shadow exited with ${c}: ${stderr}`))))]);
  const bridge = await bridgeToHost(hooks, ns, 2222);
  openTunnel = async () => {
    const tun = new SshTunnel({ sock: connect(bridge), username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public }, serverLabel: 'the test shadow' });
    hooks.teardown(() => tun.close());
    await tun.connect();
    return tun;
  };
  tunnel = await openTunnel();

  // The machine's original resolver: knows www.example.test only.
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    const known = question.name.toLowerCase() === 'www.example.test';
    const answers: dnsPacket.Answer[] = known && question.type === 'A' ? [{ type: 'A', name: question.name, ttl: 60, data: '198.18.200.1' }] : [];
    udp.send(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | (known ? 0 : 3), questions: [question], answers }), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  hooks.teardown(() => udp.close());
  upstream = `127.0.0.1:${udp.address().port}`;
});

test.after.always(() => hooks.run());

function query(name: string, id = 0x2222): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] });
}

function rcode(m: Buffer): number {
  return m.readUInt16BE(2) & 0xf;
}

function addresses(m: Buffer): string[] {
  return (dnsPacket.decode(m).answers ?? []).flatMap((a) => (a.type === 'A' ? [a.data] : []));
}

/** 5 s for the far side's answers: they come at once, but must not miss the timeout on a loaded machine. */
function resolver(extra: Partial<ConstructorParameters<typeof ClusterResolver>[0]> = {}): ClusterResolver {
  return new ClusterResolver({ dialer: tunnel, namespace: 'default', clusterDomain: ZONE, upstream: { servers: [upstream] }, tunnelTimeoutMs: 5000, ...extra });
}

test('cluster names are answered by the far side through the tunnel; others by the original resolver', async (t) => {
  const r = resolver();
  const web = (await r.answer(query(`web.${ZONE}`, 0x0101)))!;
  t.is(web.readUInt16BE(0), 0x0101);
  t.deepEqual(addresses(web), [targetAddr]);
  const big = (await r.answer(query(`big.${ZONE}`)))!;
  t.is(addresses(big).length, 40, 'the shadow retried over TCP; the tunnel carries all of it');
  t.is(rcode((await r.answer(query(`nosuch.${ZONE}`)))!), 3);
  t.deepEqual(addresses((await r.answer(query('www.example.test')))!), ['198.18.200.1']);
  t.is(r.counters.tunnel, 3);
  t.is(r.counters.upstream, 1);
});

test('a cluster name the far side never answers gets SERVFAIL with the asker\'s id', async (t) => {
  const r = resolver({ tunnelTimeoutMs: 500 });
  const a = (await r.answer(query(`silent.${ZONE}`, 0x7777)))!;
  t.is(a.readUInt16BE(0), 0x7777);
  t.is(rcode(a), 2);
});

test('through a DnsServer: a UDP client gets TC for the big answer and all of it over TCP', async (t) => {
  const server = new DnsServer(resolver());
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close());
  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  const udpAnswer = await new Promise<Buffer>((resolve) => {
    client.once('message', (m) => resolve(m));
    client.send(query(`big.${ZONE}`, 5), port, '127.0.0.1');
  });
  t.true(Boolean(udpAnswer.readUInt16BE(2) & 0x0200));
  // The TCP retry of a real client: curl/glibc do the same.
  const tcpAnswer = await new Promise<Buffer>((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    s.on('error', reject);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    const q = query(`big.${ZONE}`, 6);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(q.length);
    s.write(Buffer.concat([len, q]));
  });
  t.is(addresses(tcpAnswer).length, 40);
});

test('after the tunnel closes, cluster names get SERVFAIL and other names still work', async (t) => {
  const own = await openTunnel();
  const r = resolver({ dialer: own });
  t.deepEqual(addresses((await r.answer(query(`web.${ZONE}`)))!), [targetAddr]);
  r.clearCache();
  await own.close();
  t.is(rcode((await r.answer(query(`web.${ZONE}`)))!), 2);
  t.deepEqual(addresses((await r.answer(query('www.example.test')))!), ['198.18.200.1']);
});
