/**
 * `--dnsMode hosts`: what of the API server's answer may reach the hosts file, on temporary files.
 * Names the API cannot hold (a bad character, too long) are refused here, where they can be made:
 * services and namespaces must be DNS-1123 labels, addresses must be IPs, and no entry takes a name
 * the machine has already (localhost, its host name, its hosts file's names; not another ktctl
 * block's). The hosts block itself never writes anything that could end a line or a field.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostsFileNames, HostsBlock, isDns1123Label, isHostsAddress, machineHostNames, serviceHostEntries } from '../src/dns/index.js';

function tempDir(t: ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'ktt-hostnames-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('isDns1123Label: lower case letters, digits and inner dashes, at most 63', (t) => {
  for (const ok of ['a', 'web', 'web-1', '1web', 'a'.repeat(63), 'kube-system']) t.true(isDns1123Label(ok), ok);
  for (const bad of ['', 'Web', 'web_1', '-web', 'web-', 'web.dev', 'a'.repeat(64), 'web\n127.0.0.1', 'web dev', 'wéb', 'web#x']) t.false(isDns1123Label(bad), JSON.stringify(bad));
});

test('isHostsAddress: IPv4 and IPv6 only, no zone, no spaces', (t) => {
  for (const ok of ['198.19.0.1', '2001:2::5', '::1']) t.true(isHostsAddress(ok), ok);
  for (const bad of ['', 'None', '198.19.0.256', '198.19.0.1 evil', '198.19.0.1\n', 'fe80::1%eth0', 'web.dev']) t.false(isHostsAddress(bad), JSON.stringify(bad));
});

test('serviceHostEntries leaves out bad names and addresses, each with a reason', (t) => {
  const skipped: [string, string][] = [];
  const services = [
    { namespace: 'dev', name: 'web', ips: ['198.19.0.5', 'None', '198.19.0.9 evil.example', 'fe80::1%eth0'] },
    { namespace: 'dev', name: 'Bad_Name', ips: ['198.19.0.6'] },
    { namespace: 'dev', name: 'x\n198.18.0.1\tevil', ips: ['198.19.0.7'] },
    { namespace: 'Dev', name: 'api', ips: ['198.19.0.8'] },
    { namespace: 'dev', name: 'a'.repeat(64), ips: ['198.19.0.10'] },
  ];
  const entries = serviceHostEntries(services, 'dev', { onSkip: (kind, message) => skipped.push([kind, message]) });
  t.deepEqual(entries, [{ ip: '198.19.0.5', names: ['web', 'web.dev', 'web.dev.svc.cluster.local'] }]);
  t.true(skipped.every(([kind]) => kind === 'invalid'));
  t.is(skipped.length, 7);
  t.true(skipped.some(([, m]) => m === 'hosts: left out address "None" of service dev/web: not an IP address'), JSON.stringify(skipped));
  t.true(skipped.some(([, m]) => m === 'hosts: left out service "Bad_Name" in namespace "dev": its name "Bad_Name" is not a DNS-1123 label'));
  t.true(skipped.some(([, m]) => m === 'hosts: left out service "api" in namespace "Dev": its namespace "Dev" is not a DNS-1123 label'));
  // A newline from the API never reaches a message (or a file) as a newline.
  t.true(skipped.every(([, m]) => !m.includes('\n')));
  // The same input gives the same messages (the caller says each once).
  const again: string[] = [];
  serviceHostEntries(services, 'dev', { onSkip: (_kind, message) => again.push(message) });
  t.deepEqual(again, skipped.map(([, m]) => m));
});

test('serviceHostEntries: names the machine has are not taken; the service keeps its other names', (t) => {
  const taken = machineHostNames('127.0.0.1 localhost\n198.18.255.4 intranet.corp.test intranet # the office\n', 'Box.corp.test');
  const skipped: [string, string][] = [];
  const entries = serviceHostEntries(
    [
      { namespace: 'dev', name: 'localhost', ips: ['198.19.0.1'] },
      { namespace: 'dev', name: 'box', ips: ['198.19.0.2'] },
      { namespace: 'dev', name: 'intranet', ips: ['198.19.0.3'] },
      { namespace: 'corp', name: 'intranet', ips: ['198.19.0.4'] },
      { namespace: 'dev', name: 'web', ips: ['198.19.0.5'] },
    ],
    'dev',
    { taken, onSkip: (kind, message) => skipped.push([kind, message]) },
  );
  t.deepEqual(entries, [
    // `intranet.corp` is not in the hosts file (`intranet.corp.test` is): written.
    { ip: '198.19.0.4', names: ['intranet.corp', 'intranet.corp.svc.cluster.local'] },
    { ip: '198.19.0.2', names: ['box.dev', 'box.dev.svc.cluster.local'] },
    { ip: '198.19.0.3', names: ['intranet.dev', 'intranet.dev.svc.cluster.local'] },
    { ip: '198.19.0.1', names: ['localhost.dev', 'localhost.dev.svc.cluster.local'] },
    { ip: '198.19.0.5', names: ['web', 'web.dev', 'web.dev.svc.cluster.local'] },
  ]);
  t.deepEqual(skipped, [
    ['taken', 'hosts: no entry box for service dev/box: this machine has that name already (localhost, its host name or its hosts file)'],
    ['taken', 'hosts: no entry intranet for service dev/intranet: this machine has that name already (localhost, its host name or its hosts file)'],
    ['taken', 'hosts: no entry localhost for service dev/localhost: this machine has that name already (localhost, its host name or its hosts file)'],
  ]);
  // A service in a namespace named like a taken `svc.ns` keeps the FQDN only.
  const fqdnOnly = serviceHostEntries([{ namespace: 'corp', name: 'intranet', ips: ['198.19.0.4'] }], 'dev', { taken: new Set(['intranet.corp']) });
  t.deepEqual(fqdnOnly, [{ ip: '198.19.0.4', names: ['intranet.corp.svc.cluster.local'] }]);
  // Nothing left: no line at all.
  t.deepEqual(serviceHostEntries([{ namespace: 'dev', name: 'web', ips: ['198.19.0.5'] }], 'dev', { taken: new Set(['web', 'web.dev', 'web.dev.svc.cluster.local']) }), []);
});

test('hostsFileNames / machineHostNames: comments cut, bad lines and ktctl blocks ignored, lower case', (t) => {
  const text = [
    '127.0.0.1\tlocalhost',
    '::1 ip6-localhost ip6-loopback',
    '# 198.18.1.1 commented',
    '198.18.1.2 NAS.Home nas #storage',
    'not-an-ip name-after-garbage',
    '# BEGIN ktctl 123-abcdef (added by ktctl connect --dnsMode hosts, removed when it exits)',
    '198.19.0.5\tweb web.dev web.dev.svc.cluster.local',
    '# END ktctl 123-abcdef',
    'fe80::1%eth0 router',
  ].join('\n');
  t.deepEqual([...hostsFileNames(text)].sort(), ['ip6-localhost', 'ip6-loopback', 'localhost', 'nas', 'nas.home', 'router']);
  const m = machineHostNames('', 'Builder-7.ci.example.');
  t.deepEqual([...m].sort(), ['builder-7', 'builder-7.ci.example', 'localhost']);
});

test('HostsBlock: machineNames from the file as it was; only hosts-file-safe names and addresses are written', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'hosts');
  const original = '127.0.0.1 localhost\n198.18.255.4 intranet\n';
  writeFileSync(path, original);
  const block = HostsBlock.open({ path, stateDir: join(dir, 'state') });
  t.teardown(() => block.remove());
  t.true(block.machineNames.has('intranet'));
  t.true(block.machineNames.has('localhost'));
  block.setHosts([
    { ip: '198.19.0.5', names: ['web', 'evil\n198.18.0.1', 'a b', 'x#y', 'web.dev'] },
    { ip: '198.19.0.6\n198.18.0.2', names: ['api'] },
    { ip: '198.19.0.7', names: ['bad name'] },
  ]);
  const text = readFileSync(path, 'utf8');
  const body = text.slice(original.length).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  t.deepEqual(body, ['198.19.0.5\tweb web.dev']);
  t.true(block.remove().restored);
  t.is(readFileSync(path, 'utf8'), original);
});
