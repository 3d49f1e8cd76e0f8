/**
 * `ktctl connect --mode socks` against the lab, as a process: the shadow pod is made, curl through
 * the proxy reaches `web` by name, name.namespace, service IP and pod IP; a deleted shadow pod is
 * made again and serves; `status --json` shows the run; SIGINT removes every ktctl object.
 */
import test from 'ava';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, kubectl, lab, waitForReadyPods } from './lab/fixture.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const CLI = join(REPO, 'dist/cli/main.js');
const ns = fileNamespace(test, 'kt-conn');
const stateDir = mkdtempSync(join(tmpdir(), 'kt-conn-state-'));
const MANAGED = 'app.kubernetes.io/managed-by=ktctl';

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
}

function ktctl(args: string[]): Run {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    out: () => out,
    err: () => err,
    exited,
    waitFor: (re, ms = 45_000) =>
      eventually(async () => re.exec(out + err) ?? undefined, `${re} in ktctl's output (stdout: ${out} stderr: ${err})`, ms),
  };
}

function curl(proxyPort: number, url: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-s', '-m', '5', '--proxy', `socks5h://127.0.0.1:${proxyPort}`, url], (error, stdout) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, body: String(stdout) });
    });
  });
}

async function ktctlObjects(): Promise<string[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED });
  const secrets = await core.listNamespacedSecret({ namespace: ns, labelSelector: MANAGED });
  return [...pods.items.map((p) => `pod/${p.metadata?.name}`), ...secrets.items.map((s) => `secret/${s.metadata?.name}`)];
}

let run: Run | undefined;
test.after.always(async () => {
  if (run && run.child.exitCode === null) {
    run.child.kill('SIGINT');
    await Promise.race([run.exited, new Promise((r) => setTimeout(r, 15_000))]);
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
  }
  rmSync(stateDir, { recursive: true, force: true });
});

test.before(async () => {
  const apps = kubeConfig().makeApiClient(AppsV1Api);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await apps.createNamespacedDeployment({
    namespace: ns,
    body: {
      metadata: { name: 'web', labels: { app: 'web' } },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'web' } },
        template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } },
      },
    },
  });
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } } });
  await waitForReadyPods(ns, 'app=web', 1);
});

test.serial('connect --mode socks: web by name, name.namespace, service IP and pod IP; a deleted shadow comes back; SIGINT leaves nothing', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const webPod = (await waitForReadyPods(ns, 'app=web', 1))[0]!;
  const svc = await core.readNamespacedService({ name: 'web', namespace: ns });
  run = ktctl(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  const m = await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  const port = Number(m[1]);
  t.regex(run.err(), /created the shadow pod/);

  for (const url of ['http://web/a', `http://web.${ns}/b`, `http://${svc.spec!.clusterIP}/c`, `http://${webPod.status!.podIP}:8080/d`]) {
    const r = await curl(port, url);
    t.is(r.code, 0, `curl ${url}`);
    t.is((JSON.parse(r.body) as { pod: string }).pod, webPod.metadata!.name!, url);
  }

  // The shadow pod, its Secret: labelled, annotated, keys in a Secret (no ConfigMap), non-root.
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
  t.is((await core.listNamespacedConfigMap({ namespace: ns })).items.filter((c) => c.metadata?.labels?.['app.kubernetes.io/managed-by']).length, 0);

  // status --json shows this run.
  const status = await new Promise<string>((resolve) =>
    execFile(process.execPath, [CLI, 'status', '--json', '-n', ns], { env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir } }, (_e, stdout) => resolve(String(stdout))),
  );
  const st = JSON.parse(status) as { processes: Array<{ pid: number; mode: string; namespace: string; shadow: string; state: string; proxy: string }>; cluster: Array<{ kind: string; name: string }> };
  const mine = st.processes.find((p) => p.pid === run!.child.pid);
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
  t.true(back, `no answer within 10 s after the shadow was deleted; ktctl said:\n${run.err()}`);
  t.regex(run.err(), /is gone; creating/);

  // SIGINT: exit 0, everything removed and said so.
  run.child.kill('SIGINT');
  t.is(await run.exited, 0, run.err());
  t.regex(run.err(), /removed pod/);
  t.regex(run.err(), /removed secret/);
  t.deepEqual(await ktctlObjects(), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.exitCode, 0, k.stderr);
  t.is(k.stdout.trim(), '');
  // and its local record is gone
  const after = await new Promise<string>((resolve) =>
    execFile(process.execPath, [CLI, 'status', '--json', '-n', ns], { env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir } }, (_e, stdout) => resolve(String(stdout))),
  );
  t.false((JSON.parse(after) as { processes: Array<{ pid: number }> }).processes.some((p) => p.pid === run!.child.pid));
});

test.serial('kill -9 leaves the shadow behind; clean --thresholdInMinus 0 removes it (and --dryRun only lists)', async (t) => {
  const r = ktctl(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  run = r;
  await r.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  r.child.kill('SIGKILL');
  await r.exited;
  const left = await ktctlObjects();
  t.is(left.length, 2, left.join(', '));

  const env = { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir };
  const cleanRun = (args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((resolve) =>
      execFile(process.execPath, [CLI, 'clean', ...args], { env }, (e, stdout, stderr) => resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, out: String(stdout) + String(stderr) })),
    );
  // a fresh heartbeat is not stale with the default threshold
  const fresh = await cleanRun(['-n', ns]);
  t.is(fresh.code, 0, fresh.out);
  t.is((await ktctlObjects()).length, 2);
  // the dead process's local record goes at once
  t.regex(fresh.out, new RegExp(`removed the local record of ktctl process ${r.child.pid}`));
  const dry = await cleanRun(['--thresholdInMinus', '0', '--dryRun', '-n', ns]);
  t.is(dry.code, 0, dry.out);
  t.regex(dry.out, /would delete pod/);
  t.regex(dry.out, /would delete secret/);
  t.is((await ktctlObjects()).length, 2);
  const real = await cleanRun(['--thresholdInMinus', '0', '-n', ns]);
  t.is(real.code, 0, real.out);
  t.regex(real.out, /deleted pod/);
  t.regex(real.out, /deleted secret/);
  t.deepEqual(await ktctlObjects(), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.stdout.trim(), '');
});

test.serial('a second SIGINT during cleanup is refused with a message; cleanup still completes', async (t) => {
  const r = ktctl(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  run = r;
  await r.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  r.child.kill('SIGINT');
  await r.waitFor(/got SIGINT; stopping/, 10_000);
  r.child.kill('SIGINT');
  t.is(await r.exited, 0, r.err());
  t.regex(r.err(), /cleaning up, please wait/);
  t.deepEqual(await ktctlObjects(), []);
});
