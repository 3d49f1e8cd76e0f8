/**
 * `ktctl exchange` against the lab, as a process in the host namespace with a "laptop" HTTP server
 * on 127.0.0.1: from a client pod, `curl http://web` answers from the laptop while exchanged and
 * from the original pods after SIGINT (selector and scale mode); scale mode restores the replica
 * count; the local server going down gives the cluster client a closed connection and the exchange
 * keeps running; a second exchange fails naming the owner; bad inputs and a read-only context give
 * one sentence, exit 1 and leave nothing behind.
 */
import test from 'ava';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { closeServer, deployWeb, errorSentence, labKtctl, laptopServer, MANAGED, podCurl, webLeftovers, webPodsAnswer } from './helpers/ktctl.js';
import { eventually, fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-exch');
const ktctl = labKtctl(test, 'kt-exch');

const close = closeServer;
const curl = (url: string): ReturnType<typeof podCurl> => podCurl({ namespace: ns, name: 'client' }, [url]);

/** Polls until the client pod's curl gives a body matching `re`. */
async function until(url: string, re: RegExp, what: string): Promise<string> {
  return eventually(async () => {
    const r = await curl(url);
    return r.code === 0 && re.test(r.body) ? r.body : undefined;
  }, what, 20_000);
}

const leftovers = (): Promise<string[]> => webLeftovers(ns, 2);

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'nosel' }, spec: { ports: [{ port: 80 }] } } });
  await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  await deployWeb(ns, 2);
  await waitForReadyPods(ns, 'app=client', 1);
});

test.serial('selector mode: web answers from the laptop, a second exchange names the owner, local server down/up, SIGINT restores', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const { server, port } = await laptopServer();
  let current = server;
  t.teardown(() => close(current));
  // The service answers from its pods once the lab's rules follow the new endpoints.
  t.regex(await webPodsAnswer(async () => (await curl('http://web/before')).body), /"pod":"web-/);

  const run = ktctl.start(t, ['exchange', 'web', '--expose', `${port}:80`, '-n', ns]);
  await run.waitFor(/exchanged service \S+ port 80 \(pods' port 8080\) -> 127\.0\.0\.1:\d+ \(--mode selector\)/);
  t.is(await until('http://web/hello', /^laptop \/hello$/, 'the laptop behind web'), 'laptop /hello');

  // The service: selector on the shadow's unique label, the original saved, the lock held.
  const svc = await core.readNamespacedService({ name: 'web', namespace: ns });
  const a = svc.metadata?.annotations ?? {};
  t.deepEqual(JSON.parse(a['ktctl/original-selector'] ?? '{}'), { app: 'web' });
  t.deepEqual(Object.keys(svc.spec?.selector ?? {}), ['ktctl/backend']);
  t.is(a['ktctl/locked-by'], 'exchange');
  t.regex(a['ktctl/owner'] ?? '', new RegExp(` ${run.child.pid}$`));
  const shadows = (await core.listNamespacedPod({ namespace: ns, labelSelector: `${MANAGED},ktctl/service=web` })).items;
  t.is(shadows.length, 1);
  t.is(shadows[0]?.metadata?.labels?.['ktctl/role'], 'exchange');

  // A second exchange of the same service: one sentence naming the owner and its heartbeat.
  const second = await ktctl.run(['exchange', 'web', '--expose', `${port}:80`, '-n', ns]);
  t.is(second.code, 1);
  t.regex(second.stderr, new RegExp(`^ktctl: the service web in namespace ${ns} is already exchanged by \\S+@\\S+ ${run.child.pid} \\(heartbeat \\d+ s ago\\)`, 'm'));
  t.is((await core.listNamespacedPod({ namespace: ns, labelSelector: `${MANAGED},ktctl/service=web` })).items.length, 1);

  // The local server goes down: the cluster client's connection is closed, the exchange keeps running.
  await close(server);
  const down = await curl('http://web/down');
  t.not(down.code, 0, down.body);
  t.is(run.child.exitCode, null);
  await run.waitFor(/could not reach 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/, 10_000);
  current = (await laptopServer(undefined, port)).server;
  t.is(await until('http://web/up', /^laptop \/up$/, 'the laptop again'), 'laptop /up');

  await run.stop(t);
  t.regex(run.log(), /removed the selector of service/);
  t.regex(await webPodsAnswer(async () => (await curl('http://web/after')).body), /"pod":"web-/);
  t.deepEqual(await leftovers(), []);
});

test.serial('selector mode: someone else changing the selector meanwhile is reported, not fought, and not restored over', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const { server, port } = await laptopServer();
  t.teardown(() => close(server));
  const run = ktctl.start(t, ['exchange', 'web', '--expose', `${port}:80`, '-n', ns]);
  await run.waitFor(/exchanged service/);
  // As a `kubectl apply` of the service's manifest would: the selector back to app=web.
  await core.patchNamespacedService(
    { name: 'web', namespace: ns, body: [{ op: 'replace', path: '/spec/selector', value: { app: 'web', tier: 'front' } }] },
  );
  await run.waitFor(/warning: someone else changed the selector of service \S+ to app=web,tier=front; ktctl leaves it so/, 10_000);
  t.is(run.child.exitCode, null);
  await run.stop(t);
  t.regex(run.log(), /was changed by someone else \(now app=web,tier=front\); left it so instead of restoring app=web/);
  const svc = await core.readNamespacedService({ name: 'web', namespace: ns });
  t.deepEqual(svc.spec?.selector, { app: 'web', tier: 'front' });
  t.is(svc.metadata?.annotations?.['ktctl/original-selector'], undefined);
  await core.patchNamespacedService({ name: 'web', namespace: ns, body: [{ op: 'replace', path: '/spec/selector', value: { app: 'web' } }] });
  t.deepEqual(await leftovers(), []);
});

test.serial('scale mode: the deployment goes to 0 and comes back to 2 ready replicas on SIGINT', async (t) => {
  const apps = kubeConfig().makeApiClient(AppsV1Api);
  const { server, port } = await laptopServer();
  t.teardown(() => close(server));
  const run = ktctl.start(t, ['exchange', 'deploy/web', '--expose', `${port}:8080`, '--mode', 'scale', '-n', ns]);
  await run.waitFor(/exchanged service \S+ port 80 \(pods' port 8080\) -> 127\.0\.0\.1:\d+ \(--mode scale\)/);
  const dep = await apps.readNamespacedDeployment({ name: 'web', namespace: ns });
  t.is(dep.spec?.replicas, 0);
  t.is(dep.metadata?.annotations?.['ktctl/original-replicas'], '2');
  await waitForReadyPods(ns, 'app=web', 1); // only the shadow, which carries app=web
  t.is(await until('http://web/scaled', /^laptop \/scaled$/, 'the laptop behind web'), 'laptop /scaled');

  await run.stop(t);
  t.regex(run.log(), /scaled deployment \S+ back to 2 replica\(s\)/);
  t.regex(run.log(), /2\/2 replica\(s\) ready/);
  const back = await apps.readNamespacedDeployment({ name: 'web', namespace: ns });
  t.is(back.spec?.replicas, 2);
  t.is(back.status?.readyReplicas, 2);
  t.regex(await webPodsAnswer(async () => (await curl('http://web/after')).body), /"pod":"web-/);
  t.deepEqual(await leftovers(), []);
});

test.serial('bad input: one sentence, exit 1, nothing made', async (t) => {
  const { server, port } = await laptopServer();
  t.teardown(() => close(server));
  const closed = await laptopServer();
  await close(closed.server);
  const cases: Array<[string[], RegExp]> = [
    [['exchange', 'nope', '--expose', `${port}:80`], new RegExp(`^ktctl: the service nope does not exist in namespace ${ns}`)],
    [['exchange', 'deploy/nope', '--expose', `${port}:80`], new RegExp(`^ktctl: the deployment nope does not exist in namespace ${ns}`)],
    [['exchange', 'nosel', '--expose', `${port}:80`], /^ktctl: the service nosel in namespace \S+ has no selector/],
    [['exchange', 'web', '--expose', `${port}:81`], /^ktctl: the service web has no port 81: expose one of its ports 80 \(targetPort 8080\)/],
    [['exchange', 'web', '--expose', `${closed.port}:80`], new RegExp(`^ktctl: the local port 127\\.0\\.0\\.1:${closed.port} of --expose cannot take connections \\(nothing listens there\\)`)],
    [['exchange', 'web', '--expose', '80:http:x'], /^ktctl: --expose takes ports from 1 to 65535 as PORT or LOCAL:REMOTE/],
    [['exchange', 'web'], /^ktctl: --expose is required/],
    [['exchange', 'web', '--expose', `${port}:80`, '--mode', 'nope'], /^ktctl: --mode must be selector or scale/],
    [['exchange', 'web', '--expose', `${port}:80`, '--context', lab().contexts.readonly], new RegExp(`^ktctl: you may not \\S+ \\S+ in namespace ${ns} \\(RBAC`)],
  ];
  const results = await Promise.all(cases.map(([args]) => ktctl.run([...args, '-n', ns])));
  results.forEach((r, i) => {
    const [args, re] = cases[i]!;
    t.is(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    t.regex(errorSentence(t, r.stderr), re, args.join(' '));
  });
  // --skipPortChecking starts without a local listener (the right way round).
  const skip = ktctl.start(t, ['exchange', 'web', '--expose', `${closed.port}:80`, '--skipPortChecking', '-n', ns]);
  await skip.waitFor(/exchanged service/);
  await skip.stop(t);
  t.deepEqual(await leftovers(), []);
});
