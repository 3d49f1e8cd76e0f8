/**
 * UDP beyond DNS against the lab, as a user meets it: a pod runs a UDP echo server and a DNS server
 * on its pod IP (helpers/udp-lab.ts).
 * - TUN mode, ktctl in a laptop namespace: from there, a plain `node` client's datagrams of 1, 1400
 *   and 8000 bytes (the last leaves the laptop's kernel as six IPv4 fragments, and comes back as
 *   six) return intact, 1000 in flight all return in order, `dig @<pod IP>` gets its answer, and a
 *   flood of 100,000 datagrams leaves ktctl's RSS within FLOOD_RSS_BOUND of what it was; after the
 *   lab cuts the port-forward, UDP goes on over the new connection.
 * - socks mode, ktctl on the host: the same through SOCKS5 UDP ASSOCIATE (helpers/socks5-udp.ts),
 *   and a DNS query to the pod's port 53 through it.
 * dig comes from Debian's bind9-dnsutils.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { request, type LabEndpoint } from './lab/api/client.js';
import { fileNamespace, kubeConfig } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { ktctlObjects, labKtctl } from './helpers/ktctl.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';
import { socksUdpAssociate } from './helpers/socks5-udp.js';
import { CLIENT_SCRIPT, UDP_DNS_ANSWER, UDP_ECHO_PORT, deployUdpTarget } from './helpers/udp-lab.js';

const ns = fileNamespace(test, 'kt-udp');
const ktctl = labKtctl(test, 'kt-udp');

/**
 * How much ktctl's RSS may grow under a flood of 100,000 datagrams of 1,000 bytes (100 MB offered
 * as fast as the laptop's kernel takes them). What ktctl holds for UDP is bounded at 4 MiB queued on
 * the channel (src/ssh/udp.ts), 256 KiB waiting for a channel, 1 MiB of fragments (src/netstack/
 * fragment.ts) and the flow tables; the rest of the allowance is V8's: the young generation and
 * the garbage of 100,000 frames between two collections. Without the bounds the flood alone would
 * add up to 100 MB.
 */
const FLOOD_RSS_BOUND = 64 << 20;

let podIP = '';
test.before(async () => {
  podIP = await deployUdpTarget(ns);
});

/** The lab closes every port-forward stream to this namespace's pods, as a dropped connection would. */
async function cutPortForwards(): Promise<void> {
  const kc = kubeConfig();
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (!cluster?.caData || !user?.token) throw new Error('the lab kubeconfig lacks CA data or a token');
  const admin: LabEndpoint = { server: cluster.server, ca: Buffer.from(cluster.caData, 'base64'), token: user.token };
  const r = await request(admin, 'POST', '/lab/v1/faults/cut-portforward', { namespace: ns });
  if (r.status !== 200) throw new Error(`the lab refused the fault (${r.status}): ${JSON.stringify(r.body)}`);
}

function vmRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function hasDig(): boolean {
  try {
    execFileSync('dig', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test.serial('TUN mode: echo 1/1400/8000 bytes, 1000 in flight in order, dig @pod IP, a flood leaves RSS bounded, UDP goes on after a cut port-forward', async (t) => {
  t.true(hasDig(), 'dig is missing: apt-get install bind9-dnsutils');
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const laptop = `kt-udp-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));

  const child = ktctl.start(t, ['connect', '-n', ns], { netns: laptop });
  await child.waitFor(/press Ctrl-C to disconnect/);
  t.notRegex(child.log(), /UDP beyond DNS is not carried/);
  const client = async (mode: string, n: number, size: string): Promise<Record<string, unknown>> => {
    const r = await run('ip', ['netns', 'exec', laptop, 'node', '-e', CLIENT_SCRIPT, podIP, String(UDP_ECHO_PORT), mode, String(n), size], { timeoutMs: 60_000 });
    t.is(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };

  t.deepEqual(await client('echo', 0, '1,1400,8000'), { ok: [true, true, true] });
  const burst = await client('burst', 1000, '200');
  t.deepEqual(burst, { got: 1000, inOrder: true, missing: 0 });

  const dig = await run('ip', ['netns', 'exec', laptop, 'dig', '+short', '+time=2', '+tries=3', `@${podIP}`, 'anything.udp.test', 'A']);
  t.is(dig.code, 0, dig.stderr);
  t.is(dig.stdout.trim(), UDP_DNS_ANSWER);

  const pid = child.child.pid!;
  const before = vmRss(pid);
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, vmRss(pid))), 20);
  const flood = await client('flood', 100_000, '1000');
  clearInterval(sampler);
  peak = Math.max(peak, vmRss(pid));
  t.log(`flood: sent ${String(flood.sent)}, ${String(flood.got)} came back; ktctl RSS ${(before / 2 ** 20).toFixed(1)} MiB -> peak ${(peak / 2 ** 20).toFixed(1)} MiB`);
  t.is(flood.sent, 100_000);
  t.true(peak - before <= FLOOD_RSS_BOUND, `RSS grew by ${((peak - before) / 2 ** 20).toFixed(1)} MiB`);
  // Still carrying after the flood.
  t.deepEqual(await client('echo', 0, '1400'), { ok: [true] });

  // The tunnel drops (the lab cuts the port-forward) and comes back: UDP goes on over the new
  // connection (the echo client sends its first datagram again until answered, up to 10 s).
  const reconnectsBefore = (child.log().match(/reconnected to/g) ?? []).length;
  await cutPortForwards();
  await child.waitFor(new RegExp(`(?:reconnected to[\\s\\S]*){${reconnectsBefore + 1}}`), 30_000);
  t.deepEqual(await client('echo', 0, '1,8000'), { ok: [true, true] });

  await child.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('socks mode: UDP ASSOCIATE echoes 1/1400/8000 bytes, 1000 in flight in order, DNS to the pod IP', async (t) => {
  const r = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  const m = await r.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  const a = await socksUdpAssociate('127.0.0.1', Number(m[1]));
  t.teardown(() => a.close());
  t.is(a.code, 0);
  for (const [i, size] of [1, 1400, 8000].entries()) {
    const data = randomBytes(size);
    a.send(podIP, UDP_ECHO_PORT, data);
    // The first may find the pod's servers still binding (UDP loses it): sent again until answered.
    const retry = i === 0 ? setInterval(() => a.send(podIP, UDP_ECHO_PORT, data), 300) : undefined;
    try {
      const back = await a.next();
      t.true(back.data.equals(data), `${size} bytes`);
      t.is(back.host, podIP);
      t.is(back.port, UDP_ECHO_PORT);
    } finally {
      clearInterval(retry);
    }
  }
  for (let i = 0; i < 1000; i++) {
    const d = Buffer.alloc(200);
    d.writeUInt32BE(i, 0);
    a.send(podIP, UDP_ECHO_PORT, d);
  }
  const seq: number[] = [];
  for (let i = 0; i < 1000; i++) seq.push((await a.next()).data.readUInt32BE(0));
  t.deepEqual(seq, Array.from({ length: 1000 }, (_, i) => i));

  const query = dnsPacket.encode({ type: 'query', id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'anything.udp.test' }] });
  a.send(podIP, 53, query);
  const answer = dnsPacket.decode((await a.next()).data);
  t.is(answer.id, 4242);
  t.deepEqual(answer.answers?.map((x) => (x as { data: string }).data), [UDP_DNS_ANSWER]);

  await a.close();
  await r.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});
