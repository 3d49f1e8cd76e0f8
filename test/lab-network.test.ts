/**
 * The lab's network as the API server drives it: pods with their own IPs, services as DNAT that
 * follows selectors and scaling, cluster DNS, all checked from inside a pod (`lab exec`).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api, PatchStrategy, setHeaderOptions, type V1Deployment } from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, lab, labExec, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'lt-net');
const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);
const apps = (): AppsV1Api => kubeConfig().makeApiClient(AppsV1Api);
const client = { namespace: ns, name: 'client' };

function deployment(name: string, replicas: number): V1Deployment {
  return {
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name, tier: 'web' } }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080, name: 'http' }] }] } },
    },
  };
}

async function service(name: string, app: string): Promise<string> {
  const s = await core().createNamespacedService({ namespace: ns, body: { metadata: { name }, spec: { selector: { app }, ports: [{ port: 80, targetPort: 'http' }] } } });
  return s.spec!.clusterIP!;
}

/** curl from the client pod; returns the answering pod's name, or undefined if it failed */
async function whoAnswers(url: string): Promise<string | undefined> {
  const r = await labExec(client, ['curl', '-s', '-m', '3', url]);
  if (r.exitCode !== 0) return undefined;
  return (JSON.parse(r.stdout) as { pod: string }).pod;
}

test.before(async () => {
  await core().createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
  await waitForReadyPods(ns, 'app=client', 1);
});

test('pods answer on their IPs, services on the ClusterIP and on every DNS name', async (t) => {
  await apps().createNamespacedDeployment({ namespace: ns, body: deployment('blue', 2) });
  const ip = await service('front', 'blue');
  const pods = await waitForReadyPods(ns, 'app=blue', 2);
  const names = pods.map((p) => p.metadata!.name!).sort();
  for (const p of pods) {
    t.is(await whoAnswers(`http://${p.status!.podIP}:8080/by-ip`), p.metadata!.name);
  }
  const viaService = await eventually(() => whoAnswers(`http://${ip}/`), 'the service IP to answer');
  t.true(names.includes(viaService));
  for (const host of ['front', `front.${ns}`, `front.${ns}.svc.cluster.local`]) {
    const who = await eventually(() => whoAnswers(`http://${host}/`), `http://${host}/`);
    t.true(names.includes(who), host);
  }
  const podIp = pods[0].status!.podIP!;
  const getent = await labExec(client, ['getent', 'hosts', `${podIp.replace(/\./g, '-')}.${ns}.pod.cluster.local`]);
  t.is(getent.exitCode, 0);
  t.true(getent.stdout.startsWith(podIp));
  const nx = await labExec(client, ['getent', 'hosts', `no-such-service.${ns}.svc.cluster.local`]);
  t.not(nx.exitCode, 0, 'unknown names do not resolve');
});

test('changing a service selector moves the traffic', async (t) => {
  await apps().createNamespacedDeployment({ namespace: ns, body: deployment('old', 1) });
  await apps().createNamespacedDeployment({ namespace: ns, body: deployment('new', 1) });
  await service('moving', 'old');
  const [oldPod] = await waitForReadyPods(ns, 'app=old', 1);
  const [newPod] = await waitForReadyPods(ns, 'app=new', 1);
  t.is(await eventually(() => whoAnswers(`http://moving.${ns}/`), 'the old pod behind the service'), oldPod.metadata!.name!);
  await core().patchNamespacedService(
    { namespace: ns, name: 'moving', body: { spec: { selector: { app: 'new' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  await eventually(async () => ((await whoAnswers(`http://moving.${ns}/`)) === newPod.metadata!.name ? true : undefined), 'the traffic to move to the new pod', 10_000);
  for (let i = 0; i < 3; i++) t.is(await whoAnswers(`http://moving.${ns}/`), newPod.metadata!.name);
  const ep = await core().readNamespacedEndpoints({ namespace: ns, name: 'moving' });
  t.deepEqual(ep.subsets?.[0]?.addresses?.map((a) => a.ip), [newPod.status!.podIP]);
});

test('scale to 0 and back: the service stops answering, then answers again', async (t) => {
  await apps().createNamespacedDeployment({ namespace: ns, body: deployment('scaled', 2) });
  await service('scaled', 'scaled');
  await waitForReadyPods(ns, 'app=scaled', 2);
  t.truthy(await eventually(() => whoAnswers(`http://scaled.${ns}/`), 'the service to answer'));
  const scale = (replicas: number): Promise<unknown> =>
    apps().patchNamespacedDeploymentScale({ namespace: ns, name: 'scaled', body: { spec: { replicas } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await scale(0);
  await eventually(async () => ((await core().listNamespacedPod({ namespace: ns, labelSelector: 'app=scaled' })).items.length === 0 ? true : undefined), 'no pods');
  const ep = await core().readNamespacedEndpoints({ namespace: ns, name: 'scaled' });
  t.falsy(ep.subsets?.length);
  await eventually(async () => ((await whoAnswers(`http://scaled.${ns}/`)) === undefined ? true : undefined), 'the service to stop answering', 10_000);
  await scale(2);
  const pods = await waitForReadyPods(ns, 'app=scaled', 2);
  const who = await eventually(() => whoAnswers(`http://scaled.${ns}/`), 'the service to answer again');
  t.true(pods.some((p) => p.metadata!.name === who));
});

test('`lab exec NAMESPACE/POD -- CMD` runs the command inside the pod', async (t) => {
  const repo = fileURLToPath(new URL('../', import.meta.url));
  const stateDir = path.dirname(lab().kubeconfig);
  const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'test/lab/cli.ts'), 'exec', `${ns}/client`, '--', 'sh', '-c', 'ip -4 -o addr show dev eth0; exit 3'],
      { cwd: repo, env: { ...process.env, KTLAB_DIR: stateDir }, timeout: 30_000 },
      (error, stdout) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout: String(stdout) }),
    );
  });
  const pod = await core().readNamespacedPod({ namespace: ns, name: 'client' });
  t.is(r.code, 3, 'the exit status of the command');
  t.true(r.stdout.includes(`${pod.status!.podIP}/`), r.stdout);
});
