/**
 * `ktctl connect` (TUN) against the lab with the API server named by host name, in laptop
 * namespaces of the lab, whose resolver is the lab's upstream DNS (198.18.255.3).
 *
 *  - Context `lab-byname` (https://api.example.test:6443) with `--includeIps 198.18.255.0/30`,
 *    which holds the API server (.2) and the laptop's resolver (.3): the address is kept out of
 *    the device's routes (one sentence), the resolver's address is not; ktctl's resolver answers
 *    api.example.test itself (its upstream now lies behind the tunnel, where UDP does not go), so
 *    kubectl in the laptop and ktctl's own port-forward, cut by the lab and opened again, keep
 *    reaching the API server.
 *  - A kubeconfig naming the server `https://api:6443` (tls-server-name api.example.test), found
 *    through the laptop's `search example.test`, while the connected namespace has a Service
 *    `api`: in localDNS mode the stub asks `api.<ns>.svc.cluster.local` first, in hosts mode the
 *    block would write `api`; either way the name must keep resolving to the API server.
 * After SIGINT: no device, no route through it, resolv.conf / hosts as before, no crash record.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { fileNamespace, kubeConfig, lab } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { ktctlObjects, labKtctl, type CliRun } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { run } from './helpers/netns.js';
import { until } from './helpers/poll.js';
import { REPO } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-byname');
const ktctl = labKtctl(test, 'kt-byname');
const LAB_DIR = process.env.KTLAB_DIR ?? join(REPO, '.lab');
const SENTENCE = 'the API server api.example.test (198.18.255.2) lies inside 198.18.255.0/30 (--includeIps): ktctl keeps it out of the tunnel, so it keeps the route it had before';

test.before(async () => {
  await deployEcho(ns, { echo: [{ port: 80, targetPort: 8080 }], api: [{ port: 443, targetPort: 8080 }] });
});

interface Laptop {
  name: string;
  resolvConf: string;
  hostsPath: string;
}

/** A lab laptop with its own hosts file (hosts mode writes there, never the host's) and, if given, its own resolv.conf. */
async function laptop(t: ExecutionContext, resolvConf?: string): Promise<Laptop> {
  const name = `kt-bn-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir: LAB_DIR });
  await net.createLaptop(name);
  t.teardown(() => net.deleteLaptop(name));
  const hostsPath = `/etc/netns/${name}/hosts`;
  writeFileSync(hostsPath, '127.0.0.1\tlocalhost\n');
  const resolvPath = `/etc/netns/${name}/resolv.conf`;
  if (resolvConf !== undefined) writeFileSync(resolvPath, resolvConf);
  return { name, resolvConf: readFileSync(resolvPath, 'utf8'), hostsPath };
}

/** Runs a program inside the laptop. */
function inLaptop(l: Laptop, cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('ip', ['netns', 'exec', l.name, cmd, ...args], { timeoutMs: 30_000 });
}

async function routeDev(l: Laptop, ip: string): Promise<string> {
  const r = await run('ip', ['-n', l.name, '-j', 'route', 'get', ip]);
  return (JSON.parse(r.stdout) as Array<{ dev: string }>)[0]!.dev;
}

async function assertClean(t: ExecutionContext, l: Laptop, hostsBefore: string): Promise<void> {
  const links = await run('ip', ['-n', l.name, '-o', 'link', 'show']);
  t.false(/\bkt\d+:/.test(links.stdout), links.stdout);
  const routes = await run('ip', ['-n', l.name, 'route', 'show', 'table', 'all']);
  t.notRegex(routes.stdout, /dev kt\d/, routes.stdout);
  t.is(readFileSync(`/etc/netns/${l.name}/resolv.conf`, 'utf8'), l.resolvConf);
  t.is(readFileSync(l.hostsPath, 'utf8'), hostsBefore);
  t.deepEqual(readdirSync(ktctl.stateDir).filter((f) => f.startsWith('tun-') || f.startsWith('dns-')), [], 'no crash record left');
  t.deepEqual(await ktctlObjects(ns), []);
}

/** The lab cuts every open port-forward; ktctl's tunnel must come back (it resolves the API server again). */
async function cutPortForward(k: CliRun): Promise<void> {
  const before = (k.log().match(/reconnected to /g) ?? []).length;
  await promisify(execFile)('npx', ['tsx', 'test/lab/cli.ts', 'fault', 'cut-portforward'], { cwd: REPO, env: { ...process.env, KTLAB_DIR: LAB_DIR } });
  await until(() => (k.log().match(/reconnected to /g) ?? []).length > before, { what: () => k.log(), timeoutMs: 30_000 });
}

test.serial('lab-byname: the API server\'s address inside --includeIps stays out of the tunnel, its name is answered by ktctl, API calls go on', async (t) => {
  t.timeout(120_000);
  const l = await laptop(t);
  const k = ktctl.start(t, ['connect', '--context', 'lab-byname', '-n', ns, '--includeIps', '198.18.255.0/30'], { netns: l.name });
  await k.waitFor(/press Ctrl-C to disconnect/);
  t.is(k.log().split(SENTENCE).length - 1, 1, k.log());

  // The route table: .2 keeps the laptop's link, .3 (in the same /30) goes into the device.
  t.is(await routeDev(l, '198.18.255.2'), 'eth0');
  t.regex(await routeDev(l, '198.18.255.3'), /^kt\d+$/);

  // Through ktctl's resolver (localDNS): the name still points at the API server.
  const getent = await inLaptop(l, 'getent', ['ahostsv4', 'api.example.test']);
  t.is(getent.code, 0, getent.stderr);
  t.regex(getent.stdout, /^198\.18\.255\.2\s/);
  // kubectl, an independent client, by name from the laptop.
  const kubectl = await inLaptop(l, 'kubectl', ['--kubeconfig', lab().kubeconfig, '--context', 'lab-byname', 'get', 'service', 'echo', '-n', ns, '-o', 'name']);
  t.is(kubectl.code, 0, kubectl.stderr);
  t.is(kubectl.stdout.trim(), 'service/echo');
  // ktctl's own API traffic: the port-forward is cut and opened again by name, and the tunnel works.
  await cutPortForward(k);
  const curl = await inLaptop(l, 'curl', ['-sS', '--max-time', '10', 'http://echo/byname']);
  t.is(curl.code, 0, curl.stderr);
  t.is((JSON.parse(curl.stdout) as { path: string }).path, '/byname');
  t.is(k.log().split(SENTENCE).length - 1, 1, 'said once');

  await k.stop(t);
  await assertClean(t, l, '127.0.0.1\tlocalhost\n');
});

/** The lab kubeconfig with one more context `api-short`: server https://api:6443, certificate checked for api.example.test. */
function shortNameKubeconfig(t: ExecutionContext): string {
  const kc = new KubeConfig();
  kc.loadFromFile(lab().kubeconfig);
  const cluster = kc.getCluster('lab')!;
  const admin = kubeConfig().getCurrentUser()!;
  const dir = mkdtempSync(join(tmpdir(), 'kt-byname-kc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'kubeconfig');
  writeFileSync(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: api-short',
      '  cluster:',
      '    server: https://api:6443',
      '    tls-server-name: api.example.test',
      `    certificate-authority-data: ${cluster.caData}`,
      'users:',
      '- name: admin',
      '  user:',
      `    token: ${admin.token}`,
      'contexts:',
      '- name: api-short',
      '  context: {cluster: api-short, user: admin}',
      'current-context: api-short',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return file;
}

for (const mode of ['localDNS', 'hosts'] as const) {
  test.serial(`${mode}: the API server named "api", which the connected namespace also has as a Service, keeps resolving to the API server`, async (t) => {
    t.timeout(120_000);
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const svc = await core.readNamespacedService({ name: 'api', namespace: ns });
    t.truthy(svc.spec?.clusterIP);
    const l = await laptop(t, 'nameserver 198.18.255.3\nsearch example.test\n');
    const kubeconfig = shortNameKubeconfig(t);
    const before = await inLaptop(l, 'getent', ['ahostsv4', 'api']);
    t.regex(before.stdout, /^198\.18\.255\.2\s/, 'the laptop finds "api" through its search domain');

    const k = ktctl.start(t, ['connect', '-n', ns, '--dnsMode', mode], { netns: l.name, env: { KUBECONFIG: kubeconfig } });
    await k.waitFor(/press Ctrl-C to disconnect/);
    if (mode === 'hosts') {
      t.regex(k.log(), new RegExp(`DNS: hosts: no entry api for service ${ns}/api: ktctl's own connection to the API server api uses that name`));
      const block = readFileSync(l.hostsPath, 'utf8');
      t.regex(block, new RegExp(`\\secho\\.${ns}\\b`), block);
      t.notRegex(block, /\sapi(\s|$)/m, block);
      t.regex(block, new RegExp(`\\sapi\\.${ns}\\b`), 'the other names of the service are still written');
    } else {
      // The stub tries "api" as api.<ns>.svc.cluster.local first: that expansion is ktctl's own now, but
      // the service keeps its svc.ns name, which ktctl's resolver expands and asks the cluster.
      const short = await inLaptop(l, 'getent', ['ahostsv4', `api.${ns}`]);
      t.regex(short.stdout, new RegExp(`^${svc.spec!.clusterIP!.replace(/\./g, '\\.')}\\s`), short.stdout);
    }
    const during = await inLaptop(l, 'getent', ['ahostsv4', 'api']);
    t.regex(during.stdout, /^198\.18\.255\.2\s/, during.stdout);
    const kubectl = await inLaptop(l, 'kubectl', ['--kubeconfig', kubeconfig, 'get', 'service', 'api', '-n', ns, '-o', 'name']);
    t.is(kubectl.code, 0, kubectl.stderr);
    await cutPortForward(k);
    const curl = await inLaptop(l, 'curl', ['-sS', '--max-time', '10', `http://echo.${ns}/short`]);
    t.is(curl.code, 0, curl.stderr);

    await k.stop(t);
    await assertClean(t, l, '127.0.0.1\tlocalhost\n');
    t.false(existsSync(join(ktctl.stateDir, 'tun-kt0.json')));
  });
}
