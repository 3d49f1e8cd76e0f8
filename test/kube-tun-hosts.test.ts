/**
 * `ktctl connect --dnsMode hosts` against the lab, in a laptop namespace of the lab. /etc/hosts is
 * not per network namespace, so the laptop gets its own: `ip netns exec` bind-mounts
 * /etc/netns/NAME/hosts over /etc/hosts for the programs it starts (ktctl, curl, `ktctl clean`),
 * and ktctl, which cannot rename over a mount point, writes that file in place. The host's
 * /etc/hosts is compared byte for byte at the end.
 *
 * Checked: the block holds `svc`, `svc.ns` and the FQDN of the connected namespace's services and
 * `svc.ns` + FQDN of other namespaces' (kube-dns); curl by the short name works through the TUN
 * device; a service created after connect appears (and is routed when its IP lies outside the
 * ranges routed at the start), a deleted one goes; SIGINT removes the block byte for byte; after
 * kill -9 `ktctl clean` removes it. Services named `localhost`, like the machine's host name, or
 * like a name the laptop's hosts file has already get no short name (said once in the log); their
 * `svc.ns` and FQDN are still written.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { HostsBlock, serviceHostEntries } from '../src/dns/index.js';
import { eventually, fileNamespace, kubeConfig } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { labKtctl, type CliRun } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-hosts');
const HOST_HOSTS = readFileSync('/etc/hosts');
/** The laptop's own hosts file: no newline at the end, so "byte for byte" means something. */
const LAPTOP_HOSTS = '127.0.0.1\tlocalhost\n# the laptop\'s own entries\n198.18.255.4\twww.example.test intranet';
/** The machine's host name as a Service name (undefined when it cannot be one: that case is left to test/dns-hosts-names.test.ts). */
const HOST_SERVICE = ((): string | undefined => {
  const h = hostname().split('.')[0]!.toLowerCase();
  return /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(h) && !['echo', 'old', 'late', 'localhost', 'intranet'].includes(h) ? h : undefined;
})();
/** Services whose short name the machine has already. */
const TAKEN = ['localhost', 'intranet', ...(HOST_SERVICE !== undefined ? [HOST_SERVICE] : [])];

test.before(async () => {
  const port = [{ port: 80, targetPort: 8080 }];
  await deployEcho(ns, { echo: port, old: port, ...Object.fromEntries(TAKEN.map((n) => [n, port])) });
});

test.after.always(() => {
  // The whole point of the laptop's own file: the host's must never change.
  if (!readFileSync('/etc/hosts').equals(HOST_HOSTS)) throw new Error('the host\'s /etc/hosts changed');
});

interface Laptop {
  name: string;
  hostsPath: string;
  stateDir: string;
}

async function laptop(t: ExecutionContext): Promise<Laptop> {
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const name = `kt-hosts-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(name);
  t.teardown(() => net.deleteLaptop(name));
  const hostsPath = `/etc/netns/${name}/hosts`;
  writeFileSync(hostsPath, LAPTOP_HOSTS);
  const ktState = mkdtempSync(join(tmpdir(), 'kt-hosts-state-'));
  t.teardown(() => rmSync(ktState, { recursive: true, force: true }));
  return { name, hostsPath, stateDir: ktState };
}

const lk = labKtctl(test, 'kt-hosts');

/** ktctl in the laptop, with a state directory of the laptop's own. */
function inLaptop(t: ExecutionContext, l: Laptop, args: string[]): CliRun {
  return lk.start(t, args, { netns: l.name, env: { KTCTL_STATE_DIR: l.stateDir } });
}

/** The lines of ktctl's block in the laptop's hosts file. */
function block(l: Laptop): string[] {
  const text = readFileSync(l.hostsPath, 'utf8');
  const m = /^# BEGIN ktctl .*\n([\s\S]*?)^# END ktctl .*$/m.exec(text);
  return m ? m[1]!.split('\n').filter((x) => x !== '') : [];
}

async function serviceIp(namespace: string, name: string): Promise<string> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  return (await core.readNamespacedService({ namespace, name })).spec!.clusterIP!;
}

test('the block for a list of services: sorted, short names for the connected namespace only, no entry without a cluster IP; an unchanged list leaves the file alone', async (t) => {
  const services = [
    { namespace: 'other', name: 'db', ips: ['198.19.0.7'] },
    { namespace: 'dev', name: 'web', ips: ['198.19.0.5', '2001:2::5'] },
    { namespace: 'dev', name: 'headless', ips: [] },
    { namespace: 'dev', name: 'api', ips: ['198.19.0.6'] },
  ];
  t.deepEqual(serviceHostEntries(services, 'dev', { clusterDomain: 'corp.local' }), [
    { ip: '198.19.0.6', names: ['api', 'api.dev', 'api.dev.svc.corp.local'] },
    { ip: '198.19.0.5', names: ['web', 'web.dev', 'web.dev.svc.corp.local'] },
    { ip: '2001:2::5', names: ['web', 'web.dev', 'web.dev.svc.corp.local'] },
    { ip: '198.19.0.7', names: ['db.other', 'db.other.svc.corp.local'] },
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'kt-hosts-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'hosts');
  writeFileSync(path, LAPTOP_HOSTS);
  const hosts = HostsBlock.open({ path, stateDir: join(dir, 'state') });
  hosts.setHosts(serviceHostEntries(services, 'dev'));
  const written = statSync(path, { bigint: true });
  await new Promise((r) => setTimeout(r, 20));
  hosts.setHosts(serviceHostEntries([...services].reverse(), 'dev'));
  t.is(statSync(path, { bigint: true }).mtimeNs, written.mtimeNs, 'the same entries are not written again');
  hosts.setHosts(serviceHostEntries(services.slice(1), 'dev'));
  t.notRegex(readFileSync(path, 'utf8'), /db\.other/);
  hosts.remove();
  t.is(readFileSync(path, 'utf8'), LAPTOP_HOSTS);
});

test.serial('hosts mode: entries for the services, kept current by a watch; curl by short name; SIGINT restores the file byte for byte', async (t) => {
  const l = await laptop(t);
  const k = inLaptop(t, l, ['connect', '-n', ns, '--dnsMode', 'hosts']);
  await k.waitFor(/press Ctrl-C to disconnect/);
  t.regex(k.log(), new RegExp(`DNS: hosts \\(entries in /etc/hosts\\): svc, svc\\.${ns} and svc\\.${ns}\\.svc\\.cluster\\.local for namespace ${ns}, svc\\.ns and svc\\.ns\\.svc\\.cluster\\.local for the other namespaces, kept current by a watch of services`));
  const echoIp = await serviceIp(ns, 'echo');
  const dnsIp = await serviceIp('kube-system', 'kube-dns');
  t.true(block(l).includes(`${echoIp}\techo echo.${ns} echo.${ns}.svc.cluster.local`), block(l).join('\n'));
  t.true(block(l).includes(`${dnsIp}\tkube-dns.kube-system kube-dns.kube-system.svc.cluster.local`), 'other namespaces: no short name');
  t.true(readFileSync(l.hostsPath, 'utf8').startsWith(LAPTOP_HOSTS + '\n# BEGIN ktctl '), 'the original bytes stay in front of the block');
  if (HOST_SERVICE === undefined) t.log(`the host name "${hostname()}" cannot be a Service name: only localhost and the hosts file's name are checked here`);
  for (const name of TAKEN) {
    const ip = await serviceIp(ns, name);
    t.true(block(l).includes(`${ip}\t${name}.${ns} ${name}.${ns}.svc.cluster.local`), `${name}: svc.ns and the FQDN, no short name\n${block(l).join('\n')}`);
  }
  t.false(block(l).some((x) => x.split(/\s+/).slice(1).some((n) => TAKEN.includes(n))), 'no line takes a name the machine has');

  // Programs in the laptop find the name in the hosts file; the TUN device carries the connection.
  const r = await run('ip', ['netns', 'exec', l.name, 'curl', '-sS', '--max-time', '10', 'http://echo/anything/hosts']);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as { path: string }).path, '/anything/hosts');

  // A service made now, with an IP far from the ranges routed at the start: its entry appears and
  // its IP gets a route of its own.
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const lateIp = `198.19.${200 + (randomBytes(1)[0]! % 50)}.${1 + (randomBytes(1)[0]! % 250)}`;
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'late' }, spec: { clusterIP: lateIp, selector: { app: 'echo' }, ports: [{ port: 81, targetPort: 8080 }] } } });
  await eventually(async () => (block(l).includes(`${lateIp}\tlate late.${ns} late.${ns}.svc.cluster.local`) ? true : undefined), 'the new service in the hosts file');
  await eventually(async () => (k.log().includes(`routing through kt0: ${lateIp}/32 (services made after the start)`) ? true : undefined), 'a route for the new service');
  const late = await run('ip', ['netns', 'exec', l.name, 'curl', '-sS', '--max-time', '10', 'http://late:81/anything/late']);
  t.is(late.code, 0, late.stderr);
  t.is((JSON.parse(late.stdout) as { path: string }).path, '/anything/late');
  await core.deleteNamespacedService({ namespace: ns, name: 'old' });
  await eventually(async () => (block(l).some((x) => x.includes(` old.${ns} `)) ? undefined : true), 'the deleted service gone from the hosts file');
  await core.deleteNamespacedService({ namespace: ns, name: 'late' });
  await eventually(async () => (block(l).some((x) => x.includes(` late.${ns} `)) ? undefined : true), 'the deleted service gone from the hosts file');
  t.true(block(l).some((x) => x.includes(` echo.${ns} `)));
  // Said once, though the watch delivered the list again after each change since.
  for (const name of TAKEN) {
    const said = k.log().split('\n').filter((x) => x.includes(`DNS: hosts: no entry ${name} for service ${ns}/${name}: this machine has that name already`));
    t.is(said.length, 1, `${name}:\n${k.log()}`);
  }

  await k.stop(t);
  t.is(readFileSync(l.hostsPath, 'utf8'), LAPTOP_HOSTS, 'the laptop\'s hosts file is back byte for byte');
  const routes = await run('ip', ['-n', l.name, 'route', 'show', 'table', 'all']);
  t.notRegex(routes.stdout, /dev kt\d/);
  t.regex(k.log(), /removed the watch of services/);
});

test.serial('hosts mode after kill -9: ktctl clean removes the block', async (t) => {
  const l = await laptop(t);
  const k = inLaptop(t, l, ['connect', '-n', ns, '--dnsMode', 'hosts']);
  await k.waitFor(/press Ctrl-C to disconnect/);
  t.true(block(l).length > 0);
  k.child.kill('SIGKILL');
  await k.exited;
  t.not(readFileSync(l.hostsPath, 'utf8'), LAPTOP_HOSTS, 'the block outlives kill -9');
  const clean = inLaptop(t, l, ['clean', '-n', ns, '--thresholdInMinus', '0']);
  t.is(await clean.exited, 0, clean.log());
  t.regex(clean.log(), /cleaned up after ktctl process \d+ \(gone\): restored \/etc\/hosts/);
  t.is(readFileSync(l.hostsPath, 'utf8'), LAPTOP_HOSTS);
});
