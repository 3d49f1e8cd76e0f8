/**
 * `ktctl mesh --mode auto` when things go wrong, against the lab: a colleague on another machine
 * whose process died (a lock holder and a mark with an old beat of their own, written here
 * directly) is taken over / dropped with a warning and does not keep the router alive; the router
 * pod deleted while meshing ends the run with one sentence and puts the service back; a mesh killed
 * with -9 is cleaned up by `ktctl recover <svc>`; a read-only context and a bad --versionMark are
 * refused with one sentence and nothing made.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { CoreV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { openKube } from '../src/kube/session.js';
import { restoreSelector } from '../src/kube/selector.js';
import { closeServer, deployWeb, errorSentence, labKtctl, laptopServer, ktctlObjects, podCurl, webLeftovers, webPodsAnswer } from './helpers/ktctl.js';
import { eventually, fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-meshf');
const ktctl = labKtctl(test, 'kt-meshf');
const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** A colleague on a machine that is not this one. */
const FAR = 'bob@far-away-laptop 4242';

/** Everything a mesh of `web` may leave: ktctl's objects, `ktctl/*` annotations, another selector. */
const leftovers = (): Promise<string[]> => webLeftovers(ns, 1);

/** A laptop server on 127.0.0.1 answering `laptop-<who> <path>`. */
async function laptop(t: ExecutionContext, who: string): Promise<number> {
  const { server, port } = await laptopServer((req, res) => res.end(`laptop-${who} ${req.url ?? ''}`));
  t.teardown(() => closeServer(server));
  return port;
}

async function curl(args: string[]): Promise<string> {
  const r = await podCurl({ namespace: ns, name: 'client' }, args);
  return r.code === 0 ? r.body : `curl exit ${r.code}: ${r.stderr}`;
}

async function routerPod(): Promise<string> {
  const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'app.kubernetes.io/managed-by=ktctl,ktctl/role=router' });
  const live = pods.items.filter((p) => !p.metadata?.deletionTimestamp);
  if (live.length !== 1) throw new Error(`expected one router pod, found ${live.length}`);
  return live[0]!.metadata?.name ?? '';
}

async function annotate(kind: 'pod' | 'service', name: string, annotations: Record<string, string>): Promise<void> {
  const body = { metadata: { annotations } };
  if (kind === 'pod') await core().patchNamespacedPod({ name, namespace: ns, body }, mergePatch);
  else await core().patchNamespacedService({ name, namespace: ns, body }, mergePatch);
}

/** One object's changes as `kubectl get --watch` reports them: event type, resourceVersion, deleting, selector. */
interface Change {
  type: string;
  rv: number;
  deleting: boolean;
  selector: string;
}

/**
 * Records the changes of one object (kubectl --watch, stopped at teardown). The lab, like etcd,
 * numbers every write of every object with one counter, so resourceVersions order changes across
 * objects: no timing involved.
 */
function recordChanges(t: ExecutionContext, what: string): () => Change[] {
  const format = '{.type} {.object.metadata.resourceVersion} {.object.metadata.deletionTimestamp} {.object.spec.selector}{"\\n"}';
  const child = spawn('kubectl', ['-n', ns, 'get', what, '--watch', '--output-watch-events', '-o', `jsonpath=${format}`], {
    env: { ...process.env, KUBECONFIG: lab().kubeconfig },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  t.teardown(() => void child.kill());
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return () =>
    out
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => {
        const [type = '', rv = '', ...rest] = l.split(' ');
        const deleting = type === 'DELETED' || /^\d{4}-/.test(rest[0] ?? '');
        return { type, rv: Number(rv), deleting, selector: rest.filter((x) => x.startsWith('{')).join(' ') };
      });
}

/** RFC 3339 (seconds) `minutes` ago: the lab's API server runs on this machine's clock. */
const minutesAgo = (minutes: number): string => new Date(Date.now() - minutes * 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z');

test.before(async () => {
  await core().createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  await deployWeb(ns, 1);
  await waitForReadyPods(ns, 'app=client', 1);
});

test.serial('a colleague gone on another machine: their lock entry and mark (old beats of their own) are taken over with warnings, and do not keep the router alive', async (t) => {
  const portA = await laptop(t, 'A');
  const portB = await laptop(t, 'B');
  const a = ktctl.start(t, ['mesh', 'web', '-n', ns, '--expose', `${portA}:80`, '--versionMark', 'VERSION:alice']);
  await a.waitFor(/meshed service .*web port 80/, 90_000);
  const router = await routerPod();
  // Each holder carries its own beat.
  const pod = await core().readNamespacedPod({ name: router, namespace: ns });
  const marks = JSON.parse(pod.metadata?.annotations?.['ktctl/mesh-marks'] ?? '{}') as Record<string, { owner?: string; beat?: string }>;
  t.regex(marks['version=alice']?.owner ?? '', new RegExp(` ${a.child.pid}$`));
  t.regex(marks['version=alice']?.beat ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const svc = await core().readNamespacedService({ name: 'web', namespace: ns });
  const holders = JSON.parse(svc.metadata?.annotations?.['ktctl/lock-holders'] ?? '[]') as Array<{ owner?: string; beat?: string }>;
  t.is(holders.length, 1);
  t.regex(holders[0]?.beat ?? '', /Z$/);

  // Bob, on another machine, died 10 minutes ago with the mark "bob" and a share of the lock; alice
  // stays alive, and so does the heartbeat of the objects: only Bob's own beat is old.
  const old = minutesAgo(10);
  await annotate('service', 'web', { 'ktctl/lock-holders': JSON.stringify([...holders, { owner: FAR, beat: old }]) });
  await annotate('pod', router, {
    'ktctl/mesh-marks': JSON.stringify({ ...marks, 'version=bob': { owner: FAR, beat: old } }),
    'ktctl/users': '2',
  });

  // B takes the mark "bob": Bob's entries are dropped with a warning each.
  const b = ktctl.start(t, ['mesh', 'web', '-n', ns, '--expose', `${portB}:80`, '--versionMark', 'VERSION:bob']);
  await b.waitFor(/meshed service .*web port 80/, 90_000);
  t.regex(b.log(), new RegExp(`warning: taking over the lock on service \\S+/web from ${FAR} \\(mesh, heartbeat 10 min ago; no heartbeat for 5 min or more\\)`));
  t.regex(b.log(), new RegExp(`warning: dropped the mark version=bob of ${FAR} from the mesh router \\S+ \\(heartbeat 10 min ago; no heartbeat for 5 min or more\\)`));
  t.regex(b.log(), /joined the mesh router .* \(2 users\)/);
  t.regex(await eventually(async () => { const r = await curl(['-H', 'VERSION: bob', 'http://web/b']); return r.startsWith('laptop-B') ? r : undefined; }, 'bob reaches laptop B'), /^laptop-B \/b$/);

  // A stale entry written while both run is dropped by whoever leaves next, never blocks the last one out.
  await annotate('service', 'web', {
    'ktctl/lock-holders': JSON.stringify([
      ...(JSON.parse((await core().readNamespacedService({ name: 'web', namespace: ns })).metadata?.annotations?.['ktctl/lock-holders'] ?? '[]') as unknown[]),
      { owner: FAR, beat: old },
    ]),
  });
  await a.stop(t);
  t.regex(a.log(), new RegExp(`warning: dropped ${FAR} \\(heartbeat 10 min ago; no heartbeat for 5 min or more\\) from the lock on service`));
  t.regex(a.log(), /left the mesh router .* \(1 users remain\)/);
  await t.notThrowsAsync(core().readNamespacedSecret({ name: router, namespace: ns }), 'the router keeps its Secret while B uses it');
  const podChanges = recordChanges(t, `pod/${router}`);
  const webChanges = recordChanges(t, 'service/web');
  await eventually(async () => (podChanges().length > 0 && webChanges().length > 0 ? true : undefined), 'the watches started');
  await b.stop(t);
  t.regex(b.log(), /deleted the mesh router .* \(last user\)/);
  // The service's clients went back to the original pods before the router began to go.
  const deleted = await eventually(async () => podChanges().find((c) => c.deleting), 'the router pod deletion seen');
  const restored = webChanges().find((c) => c.type === 'MODIFIED' && c.selector === '{"app":"web"}');
  t.truthy(restored, JSON.stringify(webChanges()));
  t.true((restored?.rv ?? Infinity) < deleted.rv, `selector restored at ${restored?.rv}, router deleted at ${deleted.rv}`);
  t.deepEqual(await leftovers(), []);
  t.regex(await webPodsAnswer(() => curl(['-H', 'VERSION: bob', 'http://web/after'])), /"pod":"web-/);
});

test.serial('the router pod deleted while meshing: one sentence, exit non-zero, the selector back, nothing left', async (t) => {
  const port = await laptop(t, 'D');
  const run = ktctl.start(t, ['mesh', 'web', '-n', ns, '--expose', `${port}:80`, '--versionMark', 'VERSION:dora']);
  await run.waitFor(/meshed service .*web port 80/, 90_000);
  const router = await routerPod();
  await core().deleteNamespacedPod({ name: router, namespace: ns });
  t.not(await run.exited, 0);
  t.regex(errorSentence(t, run.log()), new RegExp(`^ktctl: the mesh router ${ns}/${router} \\(pod ${ns}/${router}\\) is gone; start again`));
  t.deepEqual(await leftovers(), []);
  t.regex(await webPodsAnswer(() => curl(['-H', 'VERSION: dora', 'http://web/after'])), /"pod":"web-/);
});

test.serial('kill -9 of a mesh, then recover: router, stuntman and Secret removed, the selector and the lock back', async (t) => {
  const port = await laptop(t, 'K');
  const run = ktctl.start(t, ['mesh', 'web', '-n', ns, '--expose', `${port}:80`, '--versionMark', 'VERSION:kim']);
  await run.waitFor(/meshed service .*web port 80/, 90_000);
  run.child.kill('SIGKILL');
  await run.exited;
  t.deepEqual((await ktctlObjects(ns)).map((o) => o.replace(/^(\w+)\/.*-ktctl-(router|stuntman)$/, '$1/$2')).sort(), ['pod/router', 'secret/router', 'service/stuntman']);
  const r = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(r.code, 0, r.log);
  t.regex(r.log, /restored the selector of service \S+\/web to app=web/);
  t.regex(r.log, /deleted pod \S+\/web-ktctl-router/);
  t.regex(r.log, /deleted secret \S+\/web-ktctl-router/);
  t.regex(r.log, /deleted service \S+\/web-ktctl-stuntman/);
  t.regex(r.log, new RegExp(`removed the mesh lock of \\S+ ${run.child.pid} from service`));
  t.deepEqual(await leftovers(), []);
  t.regex(await webPodsAnswer(() => curl(['http://web/after'])), /"pod":"web-/);
});

test.serial('refused before anything is made: a read-only context, a bad --versionMark', async (t) => {
  const port = await laptop(t, 'R');
  const cases: Array<[string[], RegExp]> = [
    [['--context', lab().contexts.readonly], new RegExp(`^ktctl: you may not \\S+ \\S+ in namespace ${ns} \\(RBAC`)],
    [['--versionMark', 'VER SION:x'], /^ktctl: --versionMark takes HEADER:VALUE \(e\.g\. VERSION:alice\): the header name "VER SION" is not an HTTP token/],
    [['--versionMark', 'VERSION:a,b'], /^ktctl: --versionMark takes HEADER:VALUE \(e\.g\. VERSION:alice\): the value "a,b" must be 1 to 128 visible ASCII characters without commas/],
  ];
  const results = await Promise.all(cases.map(([extra]) => ktctl.run(['mesh', 'web', '-n', ns, '--expose', `${port}:80`, ...extra])));
  results.forEach((r, i) => {
    const [extra, re] = cases[i]!;
    t.is(r.code, 1, `${extra.join(' ')}: ${r.log}`);
    t.regex(errorSentence(t, r.stderr), re, extra.join(' '));
  });
  t.deepEqual(await leftovers(), []);
});

test.serial('the last user of an old router restoring while a new router already took the service: the saved original stays', async (t) => {
  // A join-while-the-last-leaves race: the selector now points at a new router (a ktctl/ label), not the old one.
  await core().patchNamespacedService(
    { name: 'web', namespace: ns, body: { metadata: { annotations: { 'ktctl/original-selector': '{"app":"web"}' } }, spec: { selector: { app: null, 'ktctl/router': 'new-router' } } } },
    mergePatch,
  );
  t.teardown(() =>
    core().patchNamespacedService(
      { name: 'web', namespace: ns, body: { metadata: { annotations: { 'ktctl/original-selector': null } }, spec: { selector: { app: 'web', 'ktctl/router': null } } } },
      mergePatch,
    ),
  );
  const lines: string[] = [];
  const kube = openKube({ kubeconfig: lab().kubeconfig, namespace: ns });
  t.is(await restoreSelector(kube, ns, 'web', { expected: { 'ktctl/router': 'old-router' }, log: (l) => lines.push(l) }), undefined);
  const svc = await core().readNamespacedService({ name: 'web', namespace: ns });
  t.deepEqual(svc.spec?.selector, { 'ktctl/router': 'new-router' });
  t.is(svc.metadata?.annotations?.['ktctl/original-selector'], '{"app":"web"}');
  t.regex(lines.join('\n'), /now selects another ktctl pod \(ktctl\/router=new-router\); left it so, its original selector app=web stays saved/);
  // Someone else's selector (no ktctl/ label) is left too, but the annotation goes: it is not ktctl's to restore any more.
  await core().patchNamespacedService({ name: 'web', namespace: ns, body: { spec: { selector: { 'ktctl/router': null, app: 'other' } } } }, mergePatch);
  await restoreSelector(kube, ns, 'web', { expected: { 'ktctl/router': 'old-router' } });
  const after = await core().readNamespacedService({ name: 'web', namespace: ns });
  t.deepEqual(after.spec?.selector, { app: 'other' });
  t.is(after.metadata?.annotations?.['ktctl/original-selector'], undefined);
});
