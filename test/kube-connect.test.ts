/**
 * `ktctl connect --mode socks` against the lab, as a process: the shadow pod is made, curl through
 * the proxy reaches `web` by name, name.namespace, service IP and pod IP; a deleted shadow pod is
 * made again and serves; `status --json` shows the run; SIGINT removes every ktctl object.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { CoreV1Api } from '@kubernetes/client-node';
import { deployWeb, ktctlObjects, labKtctl, MANAGED } from './helpers/ktctl.js';
import { fileNamespace, kubeConfig, kubectl, waitForReadyPods } from './lab/fixture.js';
import { DEFAULT_SHADOW_IMAGE } from '../src/kube/names.js';

const ns = fileNamespace(test, 'kt-conn');
const ktctl = labKtctl(test, 'kt-conn');

function curl(proxyPort: number, url: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-s', '-m', '5', '--proxy', `socks5h://127.0.0.1:${proxyPort}`, url], (error, stdout) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, body: String(stdout) });
    });
  });
}

test.before(() => deployWeb(ns, 1));

test.serial('connect --mode socks: web by name, name.namespace, service IP and pod IP; a deleted shadow comes back; SIGINT leaves nothing', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const webPod = (await waitForReadyPods(ns, 'app=web', 1))[0]!;
  const svc = await core.readNamespacedService({ name: 'web', namespace: ns });
  const run = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  const m = await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  const port = Number(m[1]);
  t.regex(run.log(), /created the shadow pod/);

  for (const url of ['http://web/a', `http://web.${ns}/b`, `http://${svc.spec!.clusterIP}/c`, `http://${webPod.status!.podIP}:8080/d`]) {
    const r = await curl(port, url);
    t.is(r.code, 0, `curl ${url}`);
    t.is((JSON.parse(r.body) as { pod: string }).pod, webPod.metadata!.name!, url);
  }

  // The shadow pod, its Secret: labelled, annotated, keys in a Secret (the only ConfigMap holds the
  // program, nothing secret), non-root, on the stock Node.js image.
  const pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED })).items;
  t.is(pods.length, 1);
  const shadow = pods[0]!;
  t.is(shadow.metadata?.labels?.['ktctl/role'], 'connect');
  t.regex(shadow.metadata?.annotations?.['ktctl/heartbeat'] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.regex(shadow.metadata?.annotations?.['ktctl/owner'] ?? '', new RegExp(` ${run.child.pid ?? 'none'}$`));
  t.is(shadow.spec?.securityContext?.runAsNonRoot, true);
  t.truthy(shadow.spec?.containers[0]?.readinessProbe?.tcpSocket);
  t.is(shadow.spec?.containers[0]?.volumeMounts?.[0]?.readOnly, true);
  const secret = await core.readNamespacedSecret({ name: shadow.spec!.volumes![0]!.secret!.secretName!, namespace: ns });
  t.notRegex(Buffer.from(secret.data?.authorized_key ?? '', 'base64').toString(), /PRIVATE/);
  const configMaps = (await core.listNamespacedConfigMap({ namespace: ns })).items.filter((c) => c.metadata?.labels?.['app.kubernetes.io/managed-by']);
  t.deepEqual(configMaps.map((c) => [c.metadata?.labels?.['ktctl/role'], Object.keys(c.data ?? {})]), [['program', ['shadow.mjs']]]);
  t.is(shadow.spec?.volumes?.find((v) => v.configMap)?.configMap?.name, configMaps[0]?.metadata?.name);
  t.is(shadow.spec?.containers[0]?.image, DEFAULT_SHADOW_IMAGE);

  // status --json shows this run.
  const status = (await ktctl.run(['status', '--json', '-n', ns])).stdout;
  const st = JSON.parse(status) as { processes: Array<{ pid: number; mode: string; namespace: string; shadow: string; state: string; proxy: string }>; cluster: Array<{ kind: string; name: string }> };
  const mine = st.processes.find((p) => p.pid === run.child.pid);
  t.truthy(mine, status);
  t.is(mine?.state, 'running');
  t.is(mine?.mode, 'socks');
  t.is(mine?.namespace, ns);
  t.is(mine?.shadow, `${ns}/${shadow.metadata!.name}`);
  t.true(st.cluster.some((o) => o.kind === 'pod' && o.name === shadow.metadata!.name));

  // The shadow pod is deleted: a new one is made and serves within 10 s.
  await core.deleteNamespacedPod({ name: shadow.metadata!.name!, namespace: ns });
  const deadline = Date.now() + 10_000;
  let back = false;
  while (Date.now() < deadline && !back) {
    const r = await curl(port, 'http://web/again');
    back = r.code === 0 && r.body.includes(webPod.metadata!.name!);
    if (!back) await new Promise((r2) => setTimeout(r2, 200));
  }
  t.true(back, `no answer within 10 s after the shadow was deleted; ktctl said:\n${run.log()}`);
  t.regex(run.log(), /is gone; creating/);

  // SIGINT: exit 0, everything removed and said so.
  await run.stop(t);
  t.regex(run.log(), /removed pod/);
  t.regex(run.log(), /removed secret/);
  t.deepEqual(await ktctlObjects(ns), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.exitCode, 0, k.stderr);
  t.is(k.stdout.trim(), '');
  // and its local record is gone
  const after = (await ktctl.run(['status', '--json', '-n', ns])).stdout;
  t.false((JSON.parse(after) as { processes: Array<{ pid: number }> }).processes.some((p) => p.pid === run.child.pid));
});

test.serial('kill -9 leaves the shadow behind; clean --thresholdInMinus 0 removes it (and --dryRun only lists)', async (t) => {
  const r = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  await r.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  r.child.kill('SIGKILL');
  await r.exited;
  const left = await ktctlObjects(ns);
  t.is(left.length, 2, left.join(', '));

  const cleanRun = (args: string[]): ReturnType<typeof ktctl.run> => ktctl.run(['clean', ...args]);
  // a fresh heartbeat is not stale with the default threshold
  const fresh = await cleanRun(['-n', ns]);
  t.is(fresh.code, 0, fresh.log);
  t.is((await ktctlObjects(ns)).length, 2);
  // the dead process's local record goes at once
  t.regex(fresh.log, new RegExp(`removed the local record of ktctl process ${r.child.pid}`));
  const dry = await cleanRun(['--thresholdInMinus', '0', '--dryRun', '-n', ns]);
  t.is(dry.code, 0, dry.log);
  t.regex(dry.log, /would delete pod/);
  t.regex(dry.log, /would delete secret/);
  t.is((await ktctlObjects(ns)).length, 2);
  const real = await cleanRun(['--thresholdInMinus', '0', '-n', ns]);
  t.is(real.code, 0, real.log);
  t.regex(real.log, /deleted pod/);
  t.regex(real.log, /deleted secret/);
  t.deepEqual(await ktctlObjects(ns), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.stdout.trim(), '');
});

test.serial('a second SIGINT during cleanup is refused with a message; cleanup still completes', async (t) => {
  const r = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  await r.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  r.child.kill('SIGINT');
  await r.waitFor(/got SIGINT; stopping/, 10_000);
  r.child.kill('SIGINT');
  t.is(await r.exited, 0, r.log());
  t.regex(r.log(), /cleaning up, please wait/);
  t.deepEqual(await ktctlObjects(ns), []);
});
