/**
 * `ktctl preview` (alias `run`) against the lab: a new Service reachable by name from a client pod,
 * answered by a server on this machine; labelled for clean/recover; removed on SIGINT. A name that
 * exists already, and a read-only context, give one sentence and make nothing.
 */
import test from 'ava';
import type http from 'node:http';
import { CoreV1Api } from '@kubernetes/client-node';
import { closeServer, ktctlObjects, labKtctl, laptopServer, podCurl } from './helpers/ktctl.js';
import { eventually, fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-prev');
const ktctl = labKtctl(test, 'kt-prev');

let laptop: http.Server;
let laptopPort = 0;

const curl = (url: string): ReturnType<typeof podCurl> => podCurl({ namespace: ns, name: 'client' }, [url]);

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'taken' }, spec: { selector: { app: 'client' }, ports: [{ port: 80, targetPort: 8080 }] } } });
  ({ server: laptop, port: laptopPort } = await laptopServer());
  await waitForReadyPods(ns, 'app=client', 1);
});

test.after.always(() => (laptop ? closeServer(laptop) : undefined));

test.serial('run (preview): a new service answered by this machine, reachable by name from a pod, removed on SIGINT', async (t) => {
  const run = ktctl.start(t, ['run', 'demo', '--expose', `${laptopPort}:8088`, '-n', ns]);
  await run.waitFor(/previewing service \S+\/demo port 8088 -> 127\.0\.0\.1:\d+/);

  const core = kubeConfig().makeApiClient(CoreV1Api);
  const svc = await core.readNamespacedService({ name: 'demo', namespace: ns });
  t.is(svc.metadata?.labels?.['ktctl/role'], 'preview');
  t.is(svc.metadata?.labels?.['ktctl/service'], 'demo');
  t.is(svc.metadata?.labels?.['app.kubernetes.io/managed-by'], 'ktctl');
  t.is(svc.spec?.type, 'ClusterIP');
  t.deepEqual(svc.spec?.ports?.map((p) => [p.port, p.targetPort]), [[8088, 8088]]);
  for (const url of ['http://demo:8088/a', `http://demo.${ns}.svc.cluster.local:8088/b`]) {
    const body = await eventually(async () => {
      const r = await curl(url);
      return r.code === 0 ? r.body : undefined;
    }, `curl ${url}`);
    t.is(body, `laptop /${url.slice(-1)}`, url);
  }

  await run.stop(t);
  t.regex(run.log(), /removed service \S+\/demo/);
  t.deepEqual(await ktctlObjects(ns), []);
  const gone = await curl('http://demo:8088/c');
  t.not(gone.code, 0);
});

// The shadow runs as a non-root user: it can listen on port 80 only because ktctl asks for the pod
// sysctl net.ipv4.ip_unprivileged_port_start=0 (a lab started before it applied pod sysctls fails here).
test.serial('preview on a remote port below 1024: the service port 80 answers from this machine', async (t) => {
  const run = ktctl.start(t, ['preview', 'low', '--expose', `${laptopPort}:80`, '-n', ns]);
  await run.waitFor(/previewing service \S+\/low port 80 -> 127\.0\.0\.1:\d+/);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const svc = await core.readNamespacedService({ name: 'low', namespace: ns });
  t.deepEqual(svc.spec?.ports?.map((p) => [p.port, p.targetPort]), [[80, 80]]);
  const shadow = (await core.listNamespacedPod({ namespace: ns, labelSelector: 'ktctl/service=low' })).items[0];
  t.deepEqual(shadow?.spec?.securityContext?.sysctls?.map((s) => ({ name: s.name, value: s.value })), [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }]);
  const body = await eventually(async () => {
    const r = await curl('http://low/below-1024');
    return r.code === 0 ? r.body : undefined;
  }, 'curl http://low/ from the client pod').catch((error: unknown) => {
    throw new Error(`${String(error)}; ktctl said: ${run.log()}`);
  });
  t.is(body, 'laptop /below-1024');
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test('an existing name, a read-only context: one sentence, nothing made', async (t) => {
  const [exists, ro] = await Promise.all([
    ktctl.run(['preview', 'taken', '--expose', `${laptopPort}:80`, '-n', ns]),
    ktctl.run(['preview', 'other', '--expose', `${laptopPort}:80`, '-n', ns, '--context', lab().contexts.readonly]),
  ]);
  t.is(exists.code, 1);
  t.regex(exists.stderr, new RegExp(`^ktctl: a service taken exists already in namespace ${ns}: pick another name`, 'm'));
  t.is(ro.code, 1);
  t.regex(ro.stderr, new RegExp(`^ktctl: you may not \\S+ \\S+ in namespace ${ns} \\(RBAC`, 'm'));
  t.deepEqual(await ktctlObjects(ns), []);
});
