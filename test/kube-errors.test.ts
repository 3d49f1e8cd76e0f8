/**
 * Errors a person can act on, each one sentence with a non-zero exit and no ktctl object left:
 * read-only context, an image that cannot be pulled, a missing namespace, no kubeconfig, an
 * unreachable API server. `check` against the admin and the read-only contexts. Kubeconfig
 * merging like kubectl's, and heartbeats written with the API server's clock (Date header).
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Kube } from '../src/kube/api.js';
import { loadKubeConfig } from '../src/kube/config.js';
import { Heartbeat } from '../src/kube/heartbeat.js';
import { ktctlObjects, labKtctl, MANAGED } from './helpers/ktctl.js';
import { fileNamespace, kubeConfig, kubectl, lab } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-err');
const dir = mkdtempSync(join(tmpdir(), 'kt-err-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const ktctl = labKtctl(test, 'kt-err');

/** The `ktctl: ...` line: exactly one sentence of error. */
function errorLine(err: string): string {
  const lines = err.split('\n').filter((l) => l.startsWith('ktctl: '));
  return lines.join('\n');
}

async function nothingLeft(t: { deepEqual(a: unknown, b: unknown, m?: string): void; is(a: unknown, b: unknown, m?: string): void }, namespace: string): Promise<void> {
  t.deepEqual(await ktctlObjects(namespace), [], `ktctl objects left in ${namespace}`);
  const k = await kubectl(['get', 'pods,secrets', '-n', namespace, '-l', MANAGED, '-o', 'name']);
  t.is(k.stdout.trim(), '', `kubectl sees ktctl objects in ${namespace}`);
}

const connect = ['connect', '--mode', 'socks', '--proxyPort', '0'];

test.serial('read-only context: names the verb and resource, creates nothing', async (t) => {
  const r = await ktctl.run([...connect, '-n', ns, '--context', lab().contexts.readonly]);
  t.is(r.code, 1);
  t.regex(errorLine(r.stderr), new RegExp(`^ktctl: you may not create (pods|secrets|pods/portforward) in namespace ${ns} \\(RBAC`));
  await nothingLeft(t, ns);
});

test.serial('an image that cannot be pulled: ErrImagePull with the image name, nothing left', async (t) => {
  const r = await ktctl.run([...connect, '-n', ns, '--image', 'nope/nothing:1']);
  t.is(r.code, 1);
  t.regex(errorLine(r.stderr), /^ktctl: the shadow image nope\/nothing:1 cannot be pulled \((ErrImagePull|ImagePullBackOff)/);
  // the kubelet's reason (containerd's words), and the two flags that fix it
  t.regex(errorLine(r.stderr), /pull access denied, repository does not exist .*: give one the cluster can pull with --image, or its pull secret with --imagePullSecret$/);
  t.notRegex(r.stderr, /within \d+ s/); // the pod's own reason, not a timeout
  await nothingLeft(t, ns);
});

test('a namespace that does not exist: one sentence', async (t) => {
  const r = await ktctl.run([...connect, '-n', 'kt-err-no-such-namespace']);
  t.is(r.code, 1);
  t.is(errorLine(r.stderr), 'ktctl: the namespace kt-err-no-such-namespace does not exist: pick an existing one with -n (kubectl get namespaces lists them)');
});

test('no kubeconfig anywhere: names the three places looked', async (t) => {
  const home = join(dir, 'empty-home');
  const r = await ktctl.run(connect, { env: { KUBECONFIG: '', HOME: home } });
  t.is(r.code, 1);
  const line = errorLine(r.stderr);
  t.regex(line, /^ktctl: no kubeconfig found: looked at --kubeconfig/);
  t.regex(line, /\$KUBECONFIG/);
  t.true(line.includes(join(home, '.kube', 'config')));
});

test('an unreachable API server: one sentence naming it', async (t) => {
  const kc = new KubeConfig();
  kc.loadFromFile(lab().kubeconfig);
  const file = join(dir, 'unreachable.yaml');
  // a loopback port nothing listens on
  const port = await new Promise<number>((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'gone', cluster: { server: `https://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'u', user: { token: 'x' } }],
      contexts: [{ name: 'gone', context: { cluster: 'gone', user: 'u' } }],
      'current-context': 'gone',
    }),
  );
  const r = await ktctl.run([...connect, '--kubeconfig', file]);
  t.is(r.code, 1);
  t.is(errorLine(r.stderr), `ktctl: cannot reach the Kubernetes API server at https://127.0.0.1:${port} (connection refused): check the cluster is up and the kubeconfig's server address, or pick another --context`);
});

test('check: all ok for the admin context, RBAC failure for the read-only one', async (t) => {
  const admin = await ktctl.run(['check', '-n', ns]);
  t.is(admin.code, 0, admin.stdout + admin.stderr);
  t.regex(admin.stdout, /^ok +RBAC for connect/m);
  t.regex(admin.stdout, /^ok +API server/m);
  t.notRegex(admin.stdout, /^fail/m);
  const ro = await ktctl.run(['check', '-n', ns, '--context', lab().contexts.readonly]);
  t.is(ro.code, 1);
  t.regex(ro.stdout, /^fail +you may not create pods in namespace \S+ \(RBAC\): deploy\/rbac\/role\.yaml line \d+ grants it: ask a cluster administrator.*\n +connect --mode tun --dnsMode localDNS, .* cannot work without it \(the shadow pod\)$/m);
  // and the YAML that grants what is missing
  t.regex(ro.stdout, /^kind: Role$/m);
});

test('kubeconfig: $KUBECONFIG files are merged, the first one wins, -n beats the context namespace', (t) => {
  const a = join(dir, 'a.yaml');
  const b = join(dir, 'b.yaml');
  const cfg = (ctx: string, server: string, namespace?: string, current?: string): string =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: ctx, cluster: { server } }],
      users: [{ name: ctx, user: { token: 't' } }],
      contexts: [{ name: ctx, context: { cluster: ctx, user: ctx, namespace } }],
      ...(current ? { 'current-context': current } : {}),
    });
  writeFileSync(a, cfg('one', 'https://127.0.0.1:7001', 'ns-one'));
  writeFileSync(b, cfg('two', 'https://127.0.0.1:7002', undefined, 'two'));
  const env = { KUBECONFIG: `${join(dir, 'missing.yaml')}:${a}:${b}` };
  const merged = loadKubeConfig({ env, home: dir });
  t.is(merged.context, 'two');
  t.is(merged.namespace, 'default');
  t.deepEqual(merged.files, [a, b]);
  const one = loadKubeConfig({ env, home: dir, context: 'one' });
  t.is(one.server, 'https://127.0.0.1:7001');
  t.is(one.namespace, 'ns-one');
  t.is(loadKubeConfig({ env, home: dir, context: 'one', namespace: 'mine' }).namespace, 'mine');
  t.throws(() => loadKubeConfig({ env, home: dir, context: 'three' }), { message: /the context "three" is not in/ });
});

test('heartbeat: the value written is the API server\'s Date, not this machine\'s clock', async (t) => {
  // A stand-in API server on loopback whose clock is 7 years behind.
  const serverDate = new Date(Date.UTC(2019, 4, 6, 7, 8, 9));
  const patches: Array<{ url: string; contentType: string; body: string }> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      res.setHeader('Date', serverDate.toUTCString());
      res.setHeader('Content-Type', 'application/json');
      if (req.url === '/version') {
        res.end(JSON.stringify({ major: '1', minor: '30', gitVersion: 'v1.30.0' }));
        return;
      }
      patches.push({ url: req.url ?? '', contentType: String(req.headers['content-type']), body });
      res.end(JSON.stringify({ apiVersion: 'v1', kind: req.url?.includes('/secrets/') ? 'Secret' : 'Pod', metadata: { name: 'x' } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const file = join(dir, 'stand-in.yaml');
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 's', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'u', user: { token: 'x' } }],
      contexts: [{ name: 's', context: { cluster: 's', user: 'u', namespace: 'hb' } }],
      'current-context': 's',
    }),
  );
  const kube = new Kube(loadKubeConfig({ kubeconfig: file }));
  const debug: string[] = [];
  const hb = new Heartbeat(kube, { debug: (l) => debug.push(l) });
  hb.add({ kind: 'pod', namespace: 'hb', name: 'ktctl-a' });
  hb.add({ kind: 'secret', namespace: 'hb', name: 'ktctl-a' });
  await hb.beat();
  t.is(patches.length, 2, debug.join('\n'));
  for (const p of patches) {
    t.is(p.contentType, 'application/merge-patch+json');
    t.deepEqual(JSON.parse(p.body), { metadata: { annotations: { 'ktctl/heartbeat': '2019-05-06T07:08:09Z' } } });
  }
  t.deepEqual(patches.map((p) => p.url).sort(), ['/api/v1/namespaces/hb/pods/ktctl-a', '/api/v1/namespaces/hb/secrets/ktctl-a']);
});

test('heartbeat against the lab: equals the lab\'s Date header to the second', async (t) => {
  const target = loadKubeConfig({ kubeconfig: lab().kubeconfig, namespace: ns });
  const kube = new Kube(target);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const name = 'kt-err-hb';
  await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name }, data: {} } });
  t.teardown(() => core.deleteNamespacedSecret({ name, namespace: ns }).then(() => undefined, () => undefined));
  const hb = new Heartbeat(kube);
  hb.add({ kind: 'secret', namespace: ns, name });
  const before = await kube.serverNow();
  await hb.beat();
  const after = await kube.serverNow();
  const written = Date.parse((await core.readNamespacedSecret({ name, namespace: ns })).metadata?.annotations?.['ktctl/heartbeat'] ?? '');
  t.true(written >= before.getTime() && written <= after.getTime(), `heartbeat ${new Date(written).toISOString()} outside the lab's ${before.toISOString()}..${after.toISOString()}`);
});
