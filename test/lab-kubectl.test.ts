/**
 * kubectl (a second, independent client) against the lab: where it and the lab disagree, the lab
 * is wrong. Skipped when kubectl is not installed.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { fileNamespace, hasKubectl, kubectl, lab, waitForReadyPods } from './lab/fixture.js';

const run = hasKubectl() ? test : test.skip;
const ns = fileNamespace(test, 'lt-kctl');

run('create deployment, rollout status, expose, scale, get, describe, logs, exec, delete', async (t) => {
  const k = (...args: string[]): ReturnType<typeof kubectl> => kubectl(['-n', ns, ...args]);
  const ok = async (...args: string[]): Promise<string> => {
    const r = await k(...args);
    t.is(r.exitCode, 0, `kubectl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  t.regex(await ok('create', 'deployment', 'hello', '--image=ktlab/echo', '--replicas=2', '--port=8080'), /deployment.apps\/hello created/);
  t.regex(await ok('rollout', 'status', 'deployment/hello', '--timeout=60s'), /successfully rolled out/);
  t.regex(await ok('expose', 'deployment', 'hello', '--port=80', '--target-port=8080'), /service\/hello exposed/);
  t.regex(await ok('scale', 'deployment', 'hello', '--replicas=3'), /scaled/);
  t.regex(await ok('rollout', 'status', 'deployment/hello', '--timeout=60s'), /successfully rolled out/);
  await waitForReadyPods(ns, 'app=hello', 3);

  const pods = await ok('get', 'pods', '-o', 'wide');
  t.regex(pods, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE/);
  t.is(pods.split('\n').filter((l) => /hello-\S+\s+1\/1\s+Running\s+0\s+\S+\s+198\.18\.\d+\.\d+\s+ktlab-node/.test(l)).length, 3);
  t.regex(await ok('get', 'deploy', 'hello'), /hello\s+3\/3\s+3\s+3/);
  t.regex(await ok('get', 'svc', 'hello'), /hello\s+ClusterIP\s+198\.19\.\d+\.\d+\s+<none>\s+80\/TCP/);
  const svcDescribe = await ok('describe', 'svc', 'hello');
  t.regex(svcDescribe, /Endpoints:\s+198\.18\./);
  const deployDescribe = await ok('describe', 'deployment', 'hello');
  t.regex(deployDescribe, /Replicas:\s+3 desired \| 3 updated \| 3 total \| 3 available \| 0 unavailable/);
  t.regex(deployDescribe, /ScalingReplicaSet/);
  const name = (await ok('get', 'pods', '-l', 'app=hello', '-o', 'jsonpath={.items[0].metadata.name}')).trim();
  const podDescribe = await ok('describe', 'pod', name);
  t.regex(podDescribe, /Status:\s+Running/);
  t.regex(podDescribe, /Started container/);
  t.regex(await ok('logs', name), /listening/);

  const exec = await k('exec', name, '--', 'sh', '-c', 'echo to-out; echo to-err >&2; exit 4');
  t.is(exec.exitCode, 4);
  t.is(exec.stdout, 'to-out\n');
  t.regex(exec.stderr, /to-err/);
  const stdin = await kubectl(['-n', ns, 'exec', '-i', name, '--', 'cat'], { input: 'through stdin\n' });
  t.is(stdin.stdout, 'through stdin\n');

  t.regex(await ok('delete', 'deployment', 'hello'), /deleted/);
  t.regex(await ok('delete', 'service', 'hello'), /deleted/);
});

run('apply creates, then patches (with and without --validate=false); get -w streams changes', async (t) => {
  // a stream of JSON objects (what kubectl reads like a multi-document YAML file)
  const manifest = (replicas: number, value: string): string =>
    [
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied', namespace: ns }, data: { value } },
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'applied', namespace: ns },
        spec: {
          replicas,
          selector: { matchLabels: { app: 'applied' } },
          template: { metadata: { labels: { app: 'applied' } }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } },
        },
      },
      { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'applied', namespace: ns }, spec: { hosts: ['applied'] } },
    ]
      .map((o) => JSON.stringify(o))
      .join('\n');
  // validation is left to the server (the lab's /openapi/v3 says it takes fieldValidation)
  const first = await kubectl(['apply', '-f', '-'], { input: manifest(1, 'one') });
  t.is(first.exitCode, 0, first.stderr);
  t.regex(first.stdout, /configmap\/applied created/);
  t.regex(first.stdout, /deployment.apps\/applied created/);
  t.regex(first.stdout, /virtualservice.networking.istio.io\/applied created/);
  const second = await kubectl(['apply', '--validate=false', '-f', '-'], { input: manifest(2, 'two') });
  t.is(second.exitCode, 0, second.stderr);
  t.regex(second.stdout, /configmap\/applied configured/);
  t.regex(second.stdout, /deployment.apps\/applied configured/);
  const value = await kubectl(['-n', ns, 'get', 'cm', 'applied', '-o', 'jsonpath={.data.value}']);
  t.is(value.stdout, 'two');
  await waitForReadyPods(ns, 'app=applied', 2);

  // get -w: the initial list, then a change made while watching
  const watcher = spawn('kubectl', ['-n', ns, 'get', 'configmaps', '-w', '--output-watch-events'], { env: { ...process.env, KUBECONFIG: lab().kubeconfig } });
  t.teardown(() => watcher.kill());
  let out = '';
  watcher.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const seen = (re: RegExp): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`kubectl get -w never printed ${re}: ${out}`)), 20_000);
      const check = (): void => {
        if (re.test(out)) {
          clearTimeout(timer);
          resolve();
        } else setTimeout(check, 100);
      };
      check();
    });
  await seen(/ADDED\s+applied/);
  await kubectl(['-n', ns, 'create', 'configmap', 'while-watching', '--from-literal=a=b']);
  await seen(/ADDED\s+while-watching/);
  await kubectl(['-n', ns, 'delete', 'configmap', 'while-watching']);
  await seen(/DELETED\s+while-watching/);
  t.pass();
});

run('errors: not found, invalid, forbidden for the read-only context', async (t) => {
  const missing = await kubectl(['-n', ns, 'get', 'pod', 'does-not-exist']);
  t.is(missing.exitCode, 1);
  t.regex(missing.stderr, /Error from server \(NotFound\): pods "does-not-exist" not found/);
  const invalid = await kubectl(['-n', ns, 'create', 'configmap', 'Not_Valid']);
  t.not(invalid.exitCode, 0);
  t.regex(invalid.stderr, /is invalid/);
  const ro = await kubectl(['--context', lab().contexts.readonly, '-n', ns, 'create', 'configmap', 'nope']);
  t.not(ro.exitCode, 0);
  t.regex(ro.stderr, /configmaps is forbidden: User "lab-readonly" cannot create resource "configmaps" in API group "" in the namespace/);
  const canI = await kubectl(['--context', lab().contexts.readonly, '-n', ns, 'auth', 'can-i', 'list', 'pods']);
  t.is(canI.stdout.trim(), 'yes');
  const cannot = await kubectl(['--context', lab().contexts.readonly, '-n', ns, 'auth', 'can-i', 'delete', 'pods']);
  t.is(cannot.stdout.trim(), 'no');
});
