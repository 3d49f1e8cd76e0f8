/**
 * The lab refuses what a real node refuses: images that are not in its registry fail to pull with
 * containerd's words (ErrImagePull, then ImagePullBackOff), the Node.js image answers to all its
 * names, a kubelet's runAsNonRoot check (CreateContainerConfigError), Secret/ConfigMap/projected
 * volumes with their items, modes and fsGroup; and the guard: a packet from this machine to the
 * lab's range is refused on the spot instead of following the default route out.
 *
 * Also what ktctl does with it: `--runAsUser auto` on an image whose user is root is refused by
 * the lab as by a kubelet (one sentence, nothing left); the program ConfigMap is shared, listed by
 * `status` and removed by `clean` once no pod uses it.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, type V1Pod, type V1PodSpec } from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, labExec, waitForReadyPods } from './lab/fixture.js';
import { errorSentence, ktctlObjects, labKtctl } from './helpers/ktctl.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';
import { sysBin } from './lab/net/run.js';
import { GUARD_TABLE, LAB } from './lab/net/index.js';
import { NODE_IMAGE } from './lab/images/table.js';
import { DEFAULT_SHADOW_IMAGE } from '../src/kube/names.js';

const ns = fileNamespace(test, 'kt-img');
const ktctl = labKtctl(test, 'kt-img');
const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);
const tag = DEFAULT_SHADOW_IMAGE.split(':').pop()!;

async function createPod(name: string, spec: V1PodSpec): Promise<void> {
  await core().createNamespacedPod({ namespace: ns, body: { metadata: { name, labels: { test: name } }, spec } });
}

/** The pod's container state once `pick` finds what it waits for. */
function waitingState(name: string, pick: (p: V1Pod) => boolean): Promise<V1Pod> {
  return eventually(async () => {
    const p = await core().readNamespacedPod({ name, namespace: ns });
    return pick(p) ? p : undefined;
  }, `pod ${name}`);
}

const sleeper = (image: string, extra: Partial<V1PodSpec['containers'][0]> = {}): V1PodSpec['containers'][0] => ({
  name: 'main',
  image,
  command: ['node', '-e', 'setInterval(() => {}, 1000)'],
  ...extra,
});

test('the Node.js image runs under every name a registry answers to; unknown images and tags fail to pull as containerd says', async (t) => {
  const names = [`node:${tag}`, `docker.io/library/node:${tag}`, `index.docker.io/library/node:${tag}`, DEFAULT_SHADOW_IMAGE, `node@${NODE_IMAGE.digests[0]}`];
  await Promise.all(names.map((image, i) => createPod(`node-${i}`, { containers: [sleeper(image)] })));
  for (let i = 0; i < names.length; i++) await waitForReadyPods(ns, `test=node-${i}`, 1);
  const id = await labExec({ namespace: ns, name: 'node-0' }, ['id', '-u']);
  t.is(id.stdout.trim(), '0', 'the image\'s own user is root');

  await createPod('unknown', { containers: [sleeper('some/unknown:1')] });
  await createPod('notag', { containers: [sleeper('node:99')] });
  const pulled = (p: V1Pod): string | undefined => p.status?.containerStatuses?.[0]?.state?.waiting?.message;
  const unknown = await waitingState('unknown', (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ErrImagePull');
  t.is(
    pulled(unknown),
    'rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/some/unknown:1": failed to resolve reference "docker.io/some/unknown:1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed',
  );
  const notag = await waitingState('notag', (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ErrImagePull');
  t.is(pulled(notag), 'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/node:99": failed to resolve reference "docker.io/library/node:99": docker.io/library/node:99: not found');
  const backoff = await waitingState('unknown', (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ImagePullBackOff');
  t.is(pulled(backoff), 'Back-off pulling image "some/unknown:1"');
});

test('runAsNonRoot: refused as a kubelet refuses it when the user would be root; a user the image has runs', async (t) => {
  await createPod('nonroot-image', { securityContext: { runAsNonRoot: true }, containers: [sleeper(DEFAULT_SHADOW_IMAGE)] });
  await createPod('nonroot-zero', { securityContext: { runAsNonRoot: true }, containers: [sleeper(DEFAULT_SHADOW_IMAGE, { securityContext: { runAsUser: 0 } })] });
  await createPod('nonroot-1000', { securityContext: { runAsNonRoot: true, runAsUser: 1000 }, containers: [sleeper(DEFAULT_SHADOW_IMAGE)] });
  const config = (p: V1Pod): boolean => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'CreateContainerConfigError';
  const image = await waitingState('nonroot-image', config);
  t.is(image.status?.containerStatuses?.[0]?.state?.waiting?.message, `container has runAsNonRoot and image will run as root (pod: "nonroot-image_${ns}(${image.metadata?.uid})", container: main)`);
  const zero = await waitingState('nonroot-zero', config);
  t.is(zero.status?.containerStatuses?.[0]?.state?.waiting?.message, `container's runAsUser breaks non-root policy (pod: "nonroot-zero_${ns}(${zero.metadata?.uid})", container: main)`);
  await waitForReadyPods(ns, 'test=nonroot-1000', 1);
  t.is((await labExec({ namespace: ns, name: 'nonroot-1000' }, ['id', '-u'])).stdout.trim(), '1000');
});

test('volumes: Secret, ConfigMap and projected with items, modes and fsGroup, as the kubelet writes them', async (t) => {
  const suffix = randomBytes(2).toString('hex');
  await core().createNamespacedSecret({ namespace: ns, body: { metadata: { name: `s-${suffix}` }, stringData: { a: 'secret-a', b: 'secret-b' } } });
  await core().createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: `c-${suffix}` }, data: { x: 'config-x', y: 'config-y' } } });
  const volumes: V1PodSpec['volumes'] = [
    { name: 'sec', secret: { secretName: `s-${suffix}`, items: [{ key: 'a', path: 'renamed-a', mode: 0o400 }], defaultMode: 0o440 } },
    { name: 'cm', configMap: { name: `c-${suffix}`, defaultMode: 0o444 } },
    { name: 'proj', projected: { defaultMode: 0o440, sources: [{ secret: { name: `s-${suffix}`, items: [{ key: 'b', path: 'sb' }] } }, { configMap: { name: `c-${suffix}`, items: [{ key: 'y', path: 'cy' }] } }] } },
  ];
  const mounts = [
    { name: 'sec', mountPath: `/etc/ktimg-${suffix}/sec`, readOnly: true },
    { name: 'cm', mountPath: `/etc/ktimg-${suffix}/cm`, readOnly: true },
    { name: 'proj', mountPath: `/etc/ktimg-${suffix}/proj`, readOnly: true },
  ];
  const script = `cd /etc/ktimg-${suffix}; for f in sec/renamed-a cm/x cm/y proj/sb proj/cy; do echo "$f $(stat -c '%a %g' $f) $(cat $f 2>/dev/null || echo unreadable)"; done; ls sec`;
  await createPod('vol-fsgroup', { securityContext: { runAsUser: 1000, fsGroup: 2000 }, volumes, containers: [sleeper(DEFAULT_SHADOW_IMAGE, { volumeMounts: mounts })] });
  await createPod('vol-plain', { securityContext: { runAsUser: 1000 }, volumes, containers: [sleeper(DEFAULT_SHADOW_IMAGE, { volumeMounts: mounts })] });
  await waitForReadyPods(ns, 'test=vol-fsgroup', 1);
  await waitForReadyPods(ns, 'test=vol-plain', 1);
  const withGroup = await labExec({ namespace: ns, name: 'vol-fsgroup' }, ['sh', '-c', script]);
  // fsGroup: every file group-owned by it, group-readable (SetVolumeOwnership adds 0440 on read-only volumes)
  t.deepEqual(withGroup.stdout.trim().split('\n'), ['sec/renamed-a 440 2000 secret-a', 'cm/x 444 2000 config-x', 'cm/y 444 2000 config-y', 'proj/sb 440 2000 secret-b', 'proj/cy 440 2000 config-y', 'renamed-a']);
  const plain = await labExec({ namespace: ns, name: 'vol-plain' }, ['sh', '-c', script]);
  t.deepEqual(plain.stdout.trim().split('\n'), ['sec/renamed-a 400 0 unreadable', 'cm/x 444 0 config-x', 'cm/y 444 0 config-y', 'proj/sb 440 0 unreadable', 'proj/cy 440 0 unreadable', 'renamed-a']);
});

test('the guard: a packet from this machine to a lab address is refused on the spot and never leaves by another interface', async (t) => {
  const counters = async (): Promise<Record<string, number>> => {
    const r = await run(sysBin('nft'), ['-j', 'list', 'table', 'inet', GUARD_TABLE]);
    t.is(r.code, 0, `the lab's guard table must exist before anything is sent: ${r.stderr}`);
    const out: Record<string, number> = {};
    for (const item of (JSON.parse(r.stdout) as { nftables: Array<{ counter?: { name: string; packets: number } }> }).nftables) if (item.counter) out[item.counter.name] = item.counter.packets;
    return out;
  };
  const before = await counters();
  t.is(before.leaked, 0);
  // The cluster DNS service address: this machine has no route to it but its default route.
  const started = Date.now();
  const r = await run('curl', ['-sS', '--max-time', '5', `http://${LAB.clusterDnsIp}/`]);
  const ms = Date.now() - started;
  t.not(r.code, 0, r.stdout);
  t.true(ms < 4000, `curl failed at once (${ms} ms), not after a timeout: ${r.stderr}`);
  const after = await counters();
  t.true((after.refused ?? 0) > (before.refused ?? 0), JSON.stringify(after));
  t.is(after.leaked, 0, 'nothing for the lab range went out of another interface');
});

test.serial('ktctl --runAsUser auto on an image whose user is root: the kubelet\'s sentence and what to do, nothing left', async (t) => {
  const r = await ktctl.run(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--runAsUser', 'auto', '--podCreationTimeout', '30']);
  t.is(r.code, 1);
  t.regex(errorSentence(t, r.stderr), /^ktctl: the shadow pod \S+ cannot start its container \(CreateContainerConfigError: container has runAsNonRoot and image will run as root .*\): give a non-root user id that the image has with --runAsUser$/);
  t.deepEqual(await ktctlObjects(ns), []);
  const bad = await ktctl.run(['connect', '--mode', 'socks', '-n', ns, '--runAsUser', '0']);
  t.is(bad.code, 1);
  t.regex(errorSentence(t, bad.stderr), /^ktctl: --runAsUser takes a user id other than 0/);
  const quota = await ktctl.run(['connect', '--mode', 'socks', '-n', ns, '--podQuota', 'lots']);
  t.regex(errorSentence(t, quota.stderr), /^ktctl: --podQuota CPU "lots" is neither/);
  // a service account that does not exist: the ServiceAccount admission's refusal, and the flag to fix
  const sa = await ktctl.run(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--serviceAccount', 'nobody']);
  t.is(sa.code, 1);
  t.regex(errorSentence(t, sa.stderr), new RegExp(`^ktctl: the API server refused to create pods in namespace ${ns}: error looking up service account ${ns}/nobody: serviceaccount "nobody" not found: name one that exists in namespace ${ns} with --serviceAccount, or leave the flag out$`));
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('an installation without the shadow program: one sentence naming the build step, before anything is made', async (t) => {
  // A copy of this installation without dist/shadow.mjs (its node_modules linked, not copied).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-img-install-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(path.join(REPO, 'dist'), path.join(dir, 'dist'), { recursive: true, filter: (src) => !src.endsWith('shadow.mjs') });
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  const r = await run('env', [...Object.entries(ktctl.env).map(([k, v]) => `${k}=${v}`), process.execPath, path.join(dir, 'dist/cli/main.js'), 'connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  t.is(r.code, 1);
  t.regex(errorSentence(t, r.stderr), /^ktctl: the shadow program \S+\/dist\/shadow\.mjs is missing from this installation: build it with npm run build/);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('the program ConfigMap: shared by runs, kept while a pod mounts it, listed by status, removed by clean once unused', async (t) => {
  const programs = async (): Promise<string[]> => (await core().listNamespacedConfigMap({ namespace: ns, labelSelector: 'ktctl/role=program' })).items.map((c) => c.metadata!.name!);
  await core().createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'robot' } } });
  const a = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--podQuota', '0.5c,128m', '--forceUpdate', '--serviceAccount', 'robot']);
  await a.waitFor(/export ALL_PROXY=/, 60_000);
  // the shadow flags reach the pod
  const [shadow] = (await core().listNamespacedPod({ namespace: ns, labelSelector: 'ktctl/role=connect' })).items;
  t.deepEqual(JSON.parse(JSON.stringify(shadow?.spec?.containers[0]?.resources)), { requests: { cpu: '500m', memory: '128Mi' }, limits: { cpu: '500m', memory: '128Mi' } });
  t.is(shadow?.spec?.containers[0]?.imagePullPolicy, 'Always');
  t.is(shadow?.spec?.serviceAccountName, 'robot');
  const [name] = await programs();
  t.regex(name ?? '', /^ktctl-shadow-[0-9a-f]{12}$/);
  // clean while a pod mounts it (even at threshold 0): kept
  const kept = await ktctl.run(['clean', '--thresholdInMinus', '0', '-n', ns]);
  t.is(kept.code, 0, kept.log);
  t.deepEqual(await programs(), [name]);
  const status = await ktctl.run(['status', '--json', '-n', ns]);
  t.true((JSON.parse(status.stdout) as { cluster: Array<{ kind: string; name: string }> }).cluster.some((o) => o.kind === 'configmap' && o.name === name), status.stdout);
  await a.stop(t);
  t.deepEqual(await programs(), [name], 'left for the next run');
  const cleaned = await ktctl.run(['clean', '--thresholdInMinus', '0', '-n', ns]);
  t.regex(cleaned.log, new RegExp(`deleted configmap ${ns}/${name}`));
  t.deepEqual(await programs(), []);
});
