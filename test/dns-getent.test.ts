/**
 * The resolver with a real client: glibc's `getent`, run inside a namespace of the test's own whose
 * /etc/netns/NAME/resolv.conf is rewritten by ResolvConfChange. Inside the namespace a child
 * process runs the DnsServer + ClusterResolver on 127.0.0.1:53, with an in-script cluster zone as
 * the far side and a plain DNS server on 127.0.0.2:53 as the machine's original resolver.
 * The hosts mode is checked the same way, on the namespace's /etc/netns/NAME/hosts.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostsBlock, listDnsRecords, parseResolvConf, ResolvConfChange, serviceHostNames } from '../src/dns/index.js';
import { createNetns } from './helpers/netns.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DNS_INDEX = fileURLToPath(new URL('../src/dns/index.ts', import.meta.url));

/** argv: upstream servers (comma-separated). */
const CHILD = `
import dgram from 'node:dgram';
import * as dnsPacket from 'dns-packet';
import { ClusterResolver, DnsServer } from ${JSON.stringify(DNS_INDEX)};

const soa = (zone) => ({ type: 'SOA', name: zone, ttl: 5, class: 'IN', data: { mname: 'ns.' + zone, rname: 'h.' + zone, serial: 1, refresh: 60, retry: 60, expire: 600, minimum: 5 } });
function zoneAnswer(records, apex, msg) {
  const q = dnsPacket.decode(msg);
  const question = q.questions[0];
  const ip = records.get(question.name.toLowerCase());
  const answers = ip !== undefined && question.type === 'A' ? [{ type: 'A', name: question.name, ttl: 5, class: 'IN', data: ip }] : [];
  const rcode = ip === undefined ? 3 : 0;
  return dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | rcode, questions: [question], answers, authorities: answers.length ? [] : [soa(apex)] });
}

const cluster = new Map([['web.default.svc.cluster.local', '198.19.1.1'], ['db.other.svc.cluster.local', '198.19.2.2']]);
const outside = new Map([['www.example.test', '198.18.200.1']]);

const up = dgram.createSocket('udp4');
up.on('message', (m, r) => up.send(zoneAnswer(outside, 'example.test', m), r.port, r.address));
await new Promise((r) => up.bind(53, '127.0.0.2', r));

const resolver = new ClusterResolver({
  dialer: { dnsQuery: async (m) => zoneAnswer(cluster, 'cluster.local', m) },
  namespace: 'default',
  upstream: { servers: process.argv[1].split(',') },
  localAddresses: ['127.0.0.1'],
});
const server = new DnsServer(resolver);
await server.listen({ host: '127.0.0.1', port: 53 });
process.stdout.write('ready\\n');
`;

test('getent resolves svc, svc.ns, FQDNs and outside names through the rewritten resolv.conf; restore is byte for byte', async (t) => {
  const ns = await createNetns(t, 'ktdns');
  const state = mkdtempSync(join(tmpdir(), 'ktt-dns-state-'));
  t.teardown(() => rmSync(state, { recursive: true, force: true }));
  const original = '# the laptop\'s resolver\nnameserver 127.0.0.2\nsearch example.test\noptions timeout:1 attempts:1';
  ns.setResolvConf(original);
  const path = join('/etc/netns', ns.name, 'resolv.conf');

  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.1', namespace: 'default', stateDir: state });
  t.deepEqual(change.original.nameservers, ['127.0.0.2']);
  const ours = readFileSync(path);
  t.deepEqual(parseResolvConf(ours.toString('utf8')).search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'example.test']);

  const child = ns.spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD, change.original.nameservers.join(',')], { cwd: ROOT });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (c) => reject(new Error(`resolver child exited with ${c}: ${err}`)));
  });

  const hosts = async (name: string): Promise<string> => (await ns.exec('getent', ['hosts', name], { timeoutMs: 10_000 })).stdout.trim();
  t.regex(await hosts('web'), /^198\.19\.1\.1\s+web\.default\.svc\.cluster\.local$/, 'svc through the search list');
  t.regex(await hosts('db.other'), /^198\.19\.2\.2\s+db\.other$/, 'svc.ns asked as is, owner rewritten');
  t.regex(await hosts('web.default.svc.cluster.local'), /^198\.19\.1\.1\s+web\.default\.svc\.cluster\.local$/);
  t.regex(await hosts('www.example.test'), /^198\.18\.200\.1\s+www\.example\.test$/, 'outside names through the original resolver');
  t.regex(await hosts('www'), /^198\.18\.200\.1\s+www\.example\.test$/, 'the machine\'s search domain still works');
  t.is(await hosts('nothing.default.svc.cluster.local'), '');

  // Without a search list glibc sends the bare name: the answer must carry it as owner, or glibc drops it.
  ns.setResolvConf('nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  t.regex(await hosts('web'), /^198\.19\.1\.1\s+web$/);
  // getaddrinfo (A and AAAA in parallel on one socket) as well as gethostbyname.
  t.regex((await ns.exec('getent', ['ahosts', 'web'])).stdout, /^198\.19\.1\.1\s+STREAM web$/m);
  t.regex((await ns.exec('getent', ['ahosts', 'db.other'])).stdout, /^198\.19\.2\.2\s+STREAM db\.other$/m);

  // Put back what ktctl wrote so that the restore sees its own content, then restore.
  writeFileSync(path, ours);
  const report = change.restore();
  t.true(report.restored, report.note);
  t.is(readFileSync(path, 'utf8'), original);
  t.deepEqual(listDnsRecords(state), []);
});

test('hosts mode: getent finds svc, svc.ns and FQDN entries of the block, replaced and removed', async (t) => {
  const ns = await createNetns(t, 'ktdh');
  const state = mkdtempSync(join(tmpdir(), 'ktt-dns-state-'));
  t.teardown(() => rmSync(state, { recursive: true, force: true }));
  // No DNS server at all: every answer below comes from the hosts file.
  ns.setResolvConf('nameserver 127.0.0.9\noptions timeout:1 attempts:1\n');
  const path = join('/etc/netns', ns.name, 'hosts');
  const original = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n# keep me';
  writeFileSync(path, original);

  const hosts = async (name: string): Promise<string> => (await ns.exec('getent', ['hosts', name], { timeoutMs: 10_000 })).stdout.trim();
  const block = HostsBlock.open({ path, stateDir: state });
  block.setHosts([{ ip: '198.19.1.1', names: serviceHostNames('web', 'default', 'default') }, { ip: '198.19.2.2', names: serviceHostNames('db', 'other', 'default') }]);
  t.regex(await hosts('web'), /^198\.19\.1\.1\s+web\b/);
  t.regex(await hosts('db.other'), /^198\.19\.2\.2\s/);
  t.regex(await hosts('db.other.svc.cluster.local'), /^198\.19\.2\.2\s/);
  t.is(await hosts('db'), '', 'svc alone only for the connected namespace');

  block.setHosts([{ ip: '198.19.9.9', names: serviceHostNames('web', 'default', 'default') }]);
  t.regex(await hosts('web.default.svc.cluster.local'), /^198\.19\.9\.9\s/);
  t.is(await hosts('db.other'), '');

  t.true(block.remove().restored);
  t.is(await hosts('web'), '');
  t.is(readFileSync(path, 'utf8'), original);
  t.deepEqual(listDnsRecords(state), []);
});
