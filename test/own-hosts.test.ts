/**
 * ktctl's own hosts (the API server, the `--via` ssh server) in the TUN mode, without the lab:
 * resolution at the start through the real system resolver (a network namespace whose /etc/hosts,
 * as `ip netns exec` shows it, names one host with two IPv4 and two IPv6 addresses), the one
 * sentence per address, the resolver's pinned answers (the cluster side is an in-test function that
 * records every question it gets: it must get none for a pinned name), and the hosts block leaving
 * the names out.
 */
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as dnsPacket from 'dns-packet';
import { ClusterResolver, PinnedNames, PINNED_TTL, serviceHostEntries } from '../src/dns/index.js';
import { KeptOutNotice, keptOutSentence, neverRouted, pinnedNames, type ResolvedHost } from '../src/connect/tun/own-hosts.js';
import { formatCidr, parseCidr } from '../src/tun/cidr.js';
import { planRoutes } from '../src/tun/ip.js';
import { createNetns } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';

function query(name: string, type: dnsPacket.RecordType = 'A', id = 0x4242): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
}

const data = (r: dnsPacket.Answer): unknown => (r as { data?: unknown }).data;
const ttl = (r: dnsPacket.Answer): unknown => (r as { ttl?: unknown }).ttl;
const rcodeOf = (msg: Buffer): number => msg.readUInt16BE(2) & 0xf;

const API: ResolvedHost = { host: 'api.corp.test', what: 'the API server', addresses: ['198.18.255.2', '198.18.255.7', 'fd00:77::2'] };

test('resolveOwnHosts asks the system resolver for every address of a name, IPv4 and IPv6, and takes an IP as it is', async (t) => {
  if (process.getuid?.() !== 0) return t.pass('needs root for a network namespace');
  const ns = await createNetns(t, 'ktoh');
  mkdirSync(join('/etc/netns', ns.name), { recursive: true });
  writeFileSync(join('/etc/netns', ns.name, 'hosts'), '127.0.0.1 localhost\n198.18.255.2 api.corp.test\n198.18.255.7 api.corp.test\nfd00:77::2 api.corp.test\nfd00:77::3 api.corp.test\n');
  const module = join(REPO, 'src/connect/tun/own-hosts.ts');
  const code = `import(${JSON.stringify(module)}).then(async (m) => {
    const lines = [];
    const hosts = await m.resolveOwnHosts([{ host: 'api.corp.test', what: 'the API server' }, { host: '[fd00:77::9]', what: 'the ssh server' }, { host: 'nowhere.invalid', what: 'the ssh server' }], (l) => lines.push(l));
    console.log(JSON.stringify({ hosts, lines }));
  });`;
  const r = await ns.exec('node', ['--import', 'tsx', '-e', code], { timeoutMs: 30_000 });
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { hosts: ResolvedHost[]; lines: string[] };
  t.deepEqual(out.hosts[0]!.addresses.slice().sort(), ['198.18.255.2', '198.18.255.7', 'fd00:77::2', 'fd00:77::3']);
  t.deepEqual(out.hosts[1], { host: 'fd00:77::9', what: 'the ssh server', addresses: ['fd00:77::9'] });
  t.deepEqual(out.hosts[2]!.addresses, []);
  t.is(out.lines.length, 1);
  t.regex(out.lines[0]!, /^cannot resolve the ssh server nowhere\.invalid \(ENOTFOUND|EAI_AGAIN\): its addresses may be routed through the tunnel$/);
});

test('the sentence for an own address inside a routed range names host, address and range, once per address', (t) => {
  const lines: string[] = [];
  const notice = new KeptOutNotice([API], (l) => lines.push(l));
  const plan = planRoutes({ discovered: [], include: [parseCidr('198.18.255.0/29')], never: neverRouted([API]), existing: [] });
  t.deepEqual(plan.routes.map(formatCidr), ['198.18.255.0/31', '198.18.255.3/32', '198.18.255.4/31', '198.18.255.6/32']);
  notice.tell(plan.keptOut);
  // LateRoutes plans again with the same never list: nothing said twice.
  notice.tell(planRoutes({ discovered: [parseCidr('198.18.255.2/32')], never: neverRouted([API]), existing: [] }).keptOut);
  t.deepEqual(lines, [
    'the API server api.corp.test (198.18.255.2) lies inside 198.18.255.0/29 (--includeIps): ktctl keeps it out of the tunnel, so it keeps the route it had before',
    'the API server api.corp.test (198.18.255.7) lies inside 198.18.255.0/29 (--includeIps): ktctl keeps it out of the tunnel, so it keeps the route it had before',
  ]);
  t.is(
    keptOutSentence([{ host: '10.0.0.5', what: 'the ssh server', addresses: ['10.0.0.5'] }], '10.0.0.5', '10.0.0.0/16', false),
    'the ssh server 10.0.0.5 lies inside 10.0.0.0/16 (found in the cluster): ktctl keeps it out of the tunnel, so it keeps the route it had before',
  );
});

test('pinned names: A and AAAA from the start addresses, other types empty, any case and trailing dot; short names also with the search domains', (t) => {
  const pins = new PinnedNames(pinnedNames([API, { host: 'kube', what: 'the API server', addresses: ['198.18.255.2'] }, { host: '10.1.1.1', what: 'x', addresses: ['10.1.1.1'] }]), {
    searchDomains: ['ns1.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'corp.test'],
    ndots: 1,
  });
  const raw = pins.answer(query('API.corp.test.'))!;
  t.is(rcodeOf(raw), 0);
  const a = dnsPacket.decode(raw);
  t.is(a.id, 0x4242);
  t.is(a.type, 'response');
  t.deepEqual(a.questions, [{ name: 'API.corp.test', type: 'A', class: 'IN' }]);
  t.deepEqual(a.answers?.map((r) => [r.name, r.type, ttl(r), data(r)]), [['API.corp.test', 'A', PINNED_TTL, '198.18.255.2'], ['API.corp.test', 'A', PINNED_TTL, '198.18.255.7']]);
  const aaaa = dnsPacket.decode(pins.answer(query('api.corp.test', 'AAAA'))!);
  t.deepEqual(aaaa.answers?.map(data), ['fd00:77::2']);
  const mx = pins.answer(query('api.corp.test', 'MX'))!;
  t.is(rcodeOf(mx), 0);
  t.deepEqual(dnsPacket.decode(mx).answers, []);
  // `kube` has no dot (< ndots): the stub asks kube.ns1.svc.cluster.local first, which is pinned too.
  t.deepEqual(pins.addresses('kube.ns1.svc.cluster.local'), ['198.18.255.2']);
  t.deepEqual(pins.addresses('kube.corp.test'), ['198.18.255.2']);
  // api.corp.test has enough dots: asked as is first, so its expansions are the cluster's.
  t.is(pins.addresses('api.corp.test.cluster.local'), undefined);
  t.is(pins.answer(query('web.ns1.svc.cluster.local')), undefined);
  t.is(pins.addresses('10.1.1.1'), undefined);
});

test('the resolver answers a pinned name itself: the cluster and the upstream never see it, even under the cluster domain', async (t) => {
  const clusterAsked: string[] = [];
  const upstreamAsked: string[] = [];
  const answerWith = (ip: string) => async (msg: Buffer): Promise<Buffer> => {
    const q = dnsPacket.decode(msg);
    return dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED, questions: q.questions, answers: [{ type: 'A', name: q.questions![0]!.name, ttl: 30, class: 'IN', data: ip }] });
  };
  const cluster = answerWith('198.19.0.1');
  const resolver = new ClusterResolver({
    dialer: { dnsQuery: async (m: Buffer) => { clusterAsked.push(dnsPacket.decode(m).questions![0]!.name); return cluster(m); } },
    namespace: 'default',
    upstream: { servers: ['127.0.0.1'], query: async (m) => { upstreamAsked.push(dnsPacket.decode(m).questions![0]!.name); return answerWith('203.0.113.1')(m); } },
    pinned: new PinnedNames([{ name: 'kubernetes.default.svc.cluster.local', addresses: ['198.18.255.2'] }, { name: 'api.prod', addresses: ['198.18.255.9'] }]),
  });
  t.deepEqual(resolver.route('kubernetes.default.svc.cluster.local'), { kind: 'pinned', addresses: ['198.18.255.2'] });
  for (const [name, ip] of [['kubernetes.default.svc.cluster.local', '198.18.255.2'], ['api.prod', '198.18.255.9']] as const) {
    const a = dnsPacket.decode((await resolver.answer(query(name)))!);
    t.deepEqual(a.answers?.map(data), [ip], name);
  }
  t.deepEqual(clusterAsked, []);
  t.deepEqual(upstreamAsked, []);
  t.is(resolver.counters.pinned, 2);
  // Other names still go where they went.
  const web = dnsPacket.decode((await resolver.answer(query('web.default.svc.cluster.local')))!);
  t.deepEqual(web.answers?.map(data), ['198.19.0.1']);
  t.deepEqual(clusterAsked, ['web.default.svc.cluster.local']);
});

test('the hosts block leaves out the names of ktctl own hosts, with one reason each', (t) => {
  const skipped: string[] = [];
  const entries = serviceHostEntries(
    [{ namespace: 'prod', name: 'api', ips: ['198.19.4.4'] }, { namespace: 'default', name: 'kubernetes', ips: ['198.19.0.1'] }],
    'default',
    { own: new Map([['api.prod', 'the API server api.prod'], ['kubernetes.default.svc.cluster.local', 'the API server kubernetes.default.svc.cluster.local']]), onSkip: (kind, m) => skipped.push(`${kind}: ${m}`) },
  );
  t.deepEqual(entries, [
    { ip: '198.19.0.1', names: ['kubernetes', 'kubernetes.default'] },
    { ip: '198.19.4.4', names: ['api.prod.svc.cluster.local'] },
  ]);
  t.deepEqual(skipped, [
    "own: hosts: no entry kubernetes.default.svc.cluster.local for service default/kubernetes: ktctl's own connection to the API server kubernetes.default.svc.cluster.local uses that name, which keeps the address it had at the start",
    "own: hosts: no entry api.prod for service prod/api: ktctl's own connection to the API server api.prod uses that name, which keeps the address it had at the start",
  ]);
});
