/**
 * `ktctl connect` in TUN mode against the lab: ktctl runs in a laptop namespace of the lab (a route
 * to the outside segment only), and a plain curl there reaches `web` by service name, by the short
 * `web.NS` form, by FQDN and by pod IP, with no proxy; `www.example.test` keeps resolving through
 * the laptop's original resolver. SIGINT removes the device, the routes, the DNS change and every
 * ktctl object in the cluster.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';

const CLI = join(REPO, 'dist/cli/main.js');
const ns = fileNamespace(test, 'kt-tun');

test.before(async () => {
  const apps = kubeConfig().makeApiClient(AppsV1Api);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const labels = { app: 'echo' };
  await apps.createNamespacedDeployment({
    namespace: ns,
    body: {
      metadata: { name: 'echo' },
      spec: { replicas: 1, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } },
    },
  });
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'echo' }, spec: { selector: labels, ports: [{ port: 80, targetPort: 8080 }] } } });
  await waitForReadyPods(ns, 'app=echo', 1);
});

test('TUN mode on the lab: curl by name, short name, FQDN and pod IP from a laptop; SIGINT leaves nothing', async (t) => {
  const { kubeconfig } = lab();
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const laptop = `kt-tun-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  const resolvConf = `/etc/netns/${laptop}/resolv.conf`;
  const before = readFileSync(resolvConf);
  const ktState = mkdtempSync(join(tmpdir(), 'kt-tun-state-'));
  t.teardown(() => rmSync(ktState, { recursive: true, force: true }));

  const child: ChildProcess = spawn('ip', ['netns', 'exec', laptop, 'node', CLI, 'connect', '-n', ns], {
    env: { ...process.env, KUBECONFIG: kubeconfig, KTCTL_STATE_DIR: ktState },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 60_000;
  while (!err.includes('press Ctrl-C to disconnect')) {
    if (Date.now() > deadline || child.exitCode !== null) t.fail(`ktctl did not connect: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  const curl = async (url: string): Promise<Record<string, unknown>> => {
    const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '10', url]);
    t.is(r.code, 0, `${url}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  // `echo` alone follows -n; `echo.NS` and the FQDN work from anywhere.
  t.is((await curl('http://echo/a')).namespace, ns);
  t.is((await curl(`http://echo.${ns}/b`)).path, '/b');
  const byFqdn = await curl(`http://echo.${ns}.svc.cluster.local/c`);
  t.is(byFqdn.path, '/c');
  t.is((await curl(`http://${String(byFqdn.ip)}:8080/d`)).path, '/d');
  // The laptop's own resolver still answers names outside the cluster.
  t.is((await curl('http://www.example.test/')).ip, '198.18.255.4');

  child.kill('SIGINT');
  t.is(await exited, 0, err);
  t.true(readFileSync(resolvConf).equals(before), 'resolv.conf restored byte for byte');
  const links = await run('ip', ['-n', laptop, '-o', 'link', 'show']);
  t.false(/\bkt\d+:/.test(links.stdout), links.stdout);
  const routes = await run('ip', ['-n', laptop, 'route', 'show']);
  t.false(routes.stdout.includes('kt'), routes.stdout);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app.kubernetes.io/managed-by=ktctl' });
  const secrets = await core.listNamespacedSecret({ namespace: ns, labelSelector: 'app.kubernetes.io/managed-by=ktctl' });
  t.deepEqual([...pods.items, ...secrets.items].map((o) => o.metadata?.name), []);
  t.false(existsSync(join(ktState, 'tun-kt0.json')));
});
