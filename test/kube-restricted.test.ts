/**
 * ktctl in a namespace that enforces the Pod Security Standard `restricted`, as many company
 * clusters do (pod-security.kubernetes.io/enforce=restricted): the lab refuses any pod without the
 * profile's settings with the API server's message (kubectl run, or a pod made through client-node,
 * which ktctl turns into one sentence), and every pod ktctl makes passes: connect (socks and TUN),
 * forward, exchange (selector and scale), mesh (router) and preview all work there.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { CoreV1Api } from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, kubectl, lab, waitForReadyPods } from './lab/fixture.js';
import { closeServer, deployWeb, echoPodSpec, ktctlObjects, labKtctl, laptopServer, podCurl, webLeftovers, webPodsAnswer } from './helpers/ktctl.js';
import { createLabNet } from './lab/net/index.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';
import { join } from 'node:path';
import { Kube } from '../src/kube/api.js';
import { loadKubeConfig } from '../src/kube/config.js';
import { kubeCall, PodSecurityError } from '../src/kube/errors.js';

const ns = fileNamespace(test, 'kt-psa');
const ktctl = labKtctl(test, 'kt-psa');
const curl = (url: string, args: string[] = []): ReturnType<typeof podCurl> => podCurl({ namespace: ns, name: 'client' }, [...args, url]);

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const label = await kubectl(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=restricted', 'pod-security.kubernetes.io/enforce-version=latest', '--overwrite']);
  if (label.exitCode !== 0) throw new Error(`kubectl label: ${label.stderr}`);
  const labels = (await core.readNamespace({ name: ns })).metadata?.labels ?? {};
  if (labels['pod-security.kubernetes.io/enforce'] !== 'restricted') throw new Error(`the namespace ${ns} is not labelled restricted: ${JSON.stringify(labels)}`);
  await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: echoPodSpec(true) } });
  await deployWeb(ns, 2, true);
  await waitForReadyPods(ns, 'app=client', 1);
});

const leftovers = (): Promise<string[]> => webLeftovers(ns, 2);

test.serial('a pod without the restricted settings is refused with the API server\'s PodSecurity message (kubectl run, and ktctl\'s sentence)', async (t) => {
  const name = `plain-${randomBytes(2).toString('hex')}`;
  const r = await kubectl(['run', name, '--image=ktlab/echo', '-n', ns]);
  t.not(r.exitCode, 0);
  t.regex(
    r.stderr,
    new RegExp(`Error from server \\(Forbidden\\): pods "${name}" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false \\(container "${name}" must set securityContext\\.allowPrivilegeEscalation=false\\), unrestricted capabilities \\(container "${name}" must set securityContext\\.capabilities\\.drop=\\["ALL"\\]\\), runAsNonRoot != true \\(pod or container "${name}" must set securityContext\\.runAsNonRoot=true\\), seccompProfile \\(pod or container "${name}" must set securityContext\\.seccompProfile\\.type to "RuntimeDefault" or "Localhost"\\)`),
  );
  // The same refusal through ktctl's own client: one sentence that quotes the checks and says what to do.
  const kube = new Kube(loadKubeConfig({ kubeconfig: lab().kubeconfig, namespace: ns }));
  const error = await t.throwsAsync(
    kubeCall({ verb: 'create', resource: 'pods', namespace: ns, name, server: kube.server }, () =>
      kube.core.createNamespacedPod({ namespace: ns, body: { metadata: { name }, spec: echoPodSpec(false) } }),
    ),
    { instanceOf: PodSecurityError },
  );
  t.regex(error.message, new RegExp(`^the namespace ${ns} enforces the Pod Security level "restricted:latest" and refused the pod ${name}: allowPrivilegeEscalation != false .*; run ktctl in a namespace whose pod-security.kubernetes.io/enforce label allows it, or ask an administrator$`));
  t.false(error.message.includes('\n'));
});

test.serial('connect --mode socks and forward work in a restricted namespace; nothing is left', async (t) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const socks = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', String(port), '-n', ns]);
  await socks.waitFor(/export ALL_PROXY=/, 60_000);
  const viaProxy = await run('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${port}`, 'http://web/socks']);
  t.regex(viaProxy.stdout, /"path":"\/socks"/, viaProxy.stderr);
  await socks.stop(t);

  const fwd = ktctl.start(t, ['forward', 'web', '0:80', '-n', ns]);
  const local = (await fwd.waitFor(/forwarding 127\.0\.0\.1:(\d+) ->/, 60_000))[1];
  const viaForward = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${local}/fwd`]);
  t.regex(viaForward.stdout, /"path":"\/fwd"/, viaForward.stderr);
  await fwd.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('connect in TUN mode works in a restricted namespace (from a laptop namespace)', async (t) => {
  const net = createLabNet({ stateDir: process.env.KTLAB_DIR ?? join(REPO, '.lab') });
  const laptop = `kt-psa-${randomBytes(3).toString('hex')}`;
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  const tun = ktctl.start(t, ['connect', '-n', ns], { netns: laptop });
  await tun.waitFor(/press Ctrl-C to disconnect/, 60_000);
  const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '10', 'http://web/tun']);
  t.regex(r.stdout, /"path":"\/tun"/, r.stderr);
  await tun.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('exchange (selector and scale), mesh and preview work in a restricted namespace; each restores everything', async (t) => {
  const { server, port } = await laptopServer();
  t.teardown(() => closeServer(server));
  t.regex(await webPodsAnswer(async () => (await curl('http://web/before')).body), /"pod":"web-/);
  const laptopAnswers = (url: string, args: string[] = []): Promise<string> =>
    eventually(async () => {
      const r = await curl(url, args);
      return r.code === 0 && r.body.startsWith('laptop ') ? r.body : undefined;
    }, `the laptop answering ${url}`);

  for (const mode of ['selector', 'scale']) {
    const ex = ktctl.start(t, ['exchange', 'web', '--expose', `${port}:80`, '--mode', mode, '-n', ns]);
    await ex.waitFor(/exchanged service \S+ port 80/, 60_000);
    t.is(await laptopAnswers(`http://web/${mode}`), `laptop /${mode}`);
    await ex.stop(t);
    await waitForReadyPods(ns, 'app=web', 2, 60_000);
    t.regex(await webPodsAnswer(async () => (await curl('http://web/after')).body), /"pod":"web-/);
    t.deepEqual(await leftovers(), [], mode);
  }

  const mesh = ktctl.start(t, ['mesh', 'web', '--expose', `${port}:80`, '--versionMark', 'VERSION:psa', '-n', ns]);
  await mesh.waitFor(/meshed service \S+ port 80/, 90_000);
  t.is(await laptopAnswers('http://web/marked', ['-H', 'VERSION: psa']), 'laptop /marked');
  t.regex((await curl('http://web/unmarked')).body, /"pod":"web-/);
  await mesh.stop(t);
  t.regex(await webPodsAnswer(async () => (await curl('http://web/after-mesh')).body), /"pod":"web-/);
  t.deepEqual(await leftovers(), []);

  const preview = ktctl.start(t, ['preview', 'psa-demo', '--expose', `${port}:8088`, '-n', ns]);
  await preview.waitFor(/previewing service \S+\/psa-demo port 8088/, 60_000);
  t.is(await laptopAnswers('http://psa-demo:8088/preview'), 'laptop /preview');
  await preview.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});
