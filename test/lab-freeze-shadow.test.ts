/**
 * The lab's fault `freeze-shadow` (test/lab/api/freeze.ts): ktctl's shadow stopped with SIGSTOP
 * and continued by the lab's daemon.
 *
 * Against the shared lab (npm test's, or `npm run lab -- up` under the lock), with `ktctl connect
 * --mode socks` as a process: a request through the proxy waits while every process of the shadow
 * reads `T (stopped)` and completes once they run again; a shadow deleted while frozen goes away
 * and ktctl's next one is not frozen; the command line's refusals and `--wait`.
 *
 * `lab down` during a freeze cannot run against the shared lab (other files use it), so it runs
 * against a control plane in this process over an isolated data plane of its own (namespaces
 * ktfz<pid>-*, as lab-net.test.ts does), stopped as `lab down` stops the daemon's.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api } from '@kubernetes/client-node';
import { deployWeb, ktctlObjects, labKtctl, MANAGED } from './helpers/ktctl.js';
import { eventually, until } from './helpers/poll.js';
import { fileNamespace, freezeShadow, frozenShadows, kubeConfig, lab, thawShadow, waitForReadyPods, FaultRefused } from './lab/fixture.js';
import { procStat, sameProcess, netnsPids } from './lab/net/procs.js';
import { ControlPlane } from './lab/api/lab.js';
import { FILES, makeCredentials } from './lab/api/pki.js';
import { createLabNet } from './lab/net/index.js';
import { run as runTool } from './lab/net/run.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const ns = fileNamespace(test, 'kt-frz');
const ktctl = labKtctl(test, 'kt-frz');
let webPod = '';

test.before(async () => {
  await deployWeb(ns, 1);
  webPod = (await waitForReadyPods(ns, 'app=web', 1))[0]!.metadata!.name!;
});

// Whatever a failing test left frozen in this file's namespace runs again.
test.after.always(async () => {
  await thawShadow({ namespace: ns }).catch(() => undefined);
});

/** The session id of a process (/proc/PID/stat field 6). */
function session(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[3]);
}

/** The letter of `State:` in /proc/PID/status (T while stopped), or 'gone'. */
function state(pid: number): string {
  try {
    return /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return 'gone';
  }
}

interface Curl {
  done: boolean;
  result: Promise<{ code: number; body: string; stderr: string }>;
}

function curl(proxyPort: number, url: string, maxSeconds = 10): Curl {
  const c: Curl = { done: false, result: Promise.resolve({ code: -1, body: '', stderr: '' }) };
  c.result = new Promise((resolve) => {
    execFile('curl', ['-sS', '-m', String(maxSeconds), '--proxy', `socks5h://127.0.0.1:${proxyPort}`, url], (error, stdout, stderr) => {
      c.done = true;
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, body: String(stdout), stderr: String(stderr) });
    });
  });
  return c;
}

async function answersFromWeb(t: ExecutionContext, proxyPort: number, urlPath: string): Promise<void> {
  const r = await curl(proxyPort, `http://web${urlPath}`).result;
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.body || '{}') as object, { pod: webPod, path: urlPath });
}

async function connectSocks(t: ExecutionContext): Promise<{ run: ReturnType<typeof ktctl.start>; port: number }> {
  const run = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  const port = Number((await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/))[1]);
  return { run, port };
}

async function shadowPods(): Promise<string[]> {
  const pods = await kubeConfig().makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: MANAGED });
  return pods.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => p.metadata!.name!);
}

test.serial('freeze-shadow: a request through the SOCKS proxy waits while the shadow reads T, completes after SIGCONT, and the proxy serves on', async (t) => {
  const { run, port } = await connectSocks(t);
  await answersFromWeb(t, port, '/before');
  const [shadow] = await shadowPods();

  t.teardown(() => thawShadow({ namespace: ns }).then(() => undefined));
  const f = await freezeShadow(5, { namespace: ns });
  t.is(f.seconds, 5);
  t.deepEqual(f.frozen.map((p) => `${p.namespace}/${p.name}`), [`${ns}/${shadow}`], 'only the ktctl pod, not web');
  const pids = f.frozen[0]!.pids;
  t.true(pids.length >= 1);
  t.deepEqual(pids.map(state), pids.map(() => 'T'), 'every process of the shadow is stopped when the call returns');
  t.deepEqual((await frozenShadows({ namespace: ns })).map((p) => p.name), [shadow]);

  // A request while it is stopped: it must not complete as long as the shadow reads T.
  const during = curl(port, 'http://web/during', 60);
  let waitedWhileFrozen = false;
  for (;;) {
    const finished = during.done;
    if (!pids.some((p) => state(p) === 'T')) break;
    t.false(finished, 'the request completed while the shadow was stopped');
    if (finished) break;
    waitedWhileFrozen = true;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.true(waitedWhileFrozen, 'the request was sent while the shadow was stopped');

  // The daemon continued it: running or sleeping again, the request done with web's answer.
  const r = await during.result;
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.body || '{}') as object, { pod: webPod, path: '/during' });
  for (const p of pids) t.regex(state(p), /^[SR]$/, `pid ${p} after the continue`);
  t.deepEqual(await frozenShadows({ namespace: ns }), []);
  t.deepEqual(await shadowPods(), [shadow], 'the same shadow, not a new one');
  await answersFromWeb(t, port, '/after');

  t.notRegex(run.log(), /^ktctl: |fatal/m);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('a shadow deleted while frozen goes away (SIGKILL after its grace period); the freeze is forgotten and the next shadow runs', async (t) => {
  const { run, port } = await connectSocks(t);
  await answersFromWeb(t, port, '/before-delete');
  t.teardown(() => thawShadow({ namespace: ns }).then(() => undefined));
  const f = await freezeShadow(600, { namespace: ns });
  t.is(f.frozen.length, 1);
  const frozen = f.frozen[0]!;
  const starts = frozen.pids.map((p) => [p, procStat(p)!.startTime] as const);
  t.true(starts.every(([p]) => state(p) === 'T'));

  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.deleteNamespacedPod({ name: frozen.name, namespace: ns });
  // its processes end (pid and start time: never mistaken for a process that reused a pid) ...
  await until(() => starts.every(([p, s]) => !sameProcess(p, s)), { timeoutMs: 60_000, what: () => `the frozen shadow's processes to end: ${starts.map(([p]) => `${p}=${state(p)}`).join(' ')}` });
  // ... and the pod object goes
  await eventually(async () => {
    try {
      await core.readNamespacedPod({ name: frozen.name, namespace: ns });
      return undefined;
    } catch (e) {
      return (e as { code?: number }).code === 404 ? true : undefined;
    }
  }, `pod ${frozen.name} to be gone`, 60_000);
  t.deepEqual(await frozenShadows({ namespace: ns }), [], 'the lab forgets a frozen pod that is gone');

  // ktctl makes a new shadow; it is not frozen (a freeze holds pods, not names or labels)
  const back = await eventually(async () => {
    const r = await curl(port, 'http://web/after-delete').result;
    return r.code === 0 ? r.body : undefined;
  }, 'the proxy serving through a new shadow', 60_000);
  t.like(JSON.parse(back) as object, { pod: webPod });
  const now = await shadowPods();
  t.is(now.length, 1);
  t.not(now[0], frozen.name);
  t.deepEqual(await frozenShadows({ namespace: ns }), []);
  t.deepEqual(await thawShadow({ namespace: ns }), [], 'nothing left to continue');

  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

// ---------------------------------------------------------------------------------------------
// the command line

const STATE_DIR = process.env.KTLAB_DIR ?? path.dirname(lab().kubeconfig);

function labCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(REPO, 'test/lab/cli.ts'), 'fault', ...args], { cwd: REPO, env: { ...process.env, KTLAB_DIR: STATE_DIR }, timeout: 60_000 }, (e, stdout, stderr) =>
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    ),
  );
}

test.serial('lab fault freeze-shadow: bad input and unknown pods are one sentence and exit 2, and freeze nothing', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['freeze-shadow'], /needs one SECONDS/],
    [['freeze-shadow', 'soon', '-n', ns], /"soon" is not a number of seconds/],
    [['freeze-shadow', '-5', '-n', ns], /SECONDS must be more than 0 and at most 3600 \(got -5\)/],
    [['freeze-shadow', '0', '-n', ns], /SECONDS must be more than 0/],
    [['freeze-shadow', '3601', '-n', ns], /at most 3600 \(got 3601\)/],
    [['freeze-shadow', '5', '-n', ns, '--pod', 'no-such-pod'], new RegExp(`pods "no-such-pod" not found in namespace ${ns}`)],
    [['freeze-shadow', '5', '-n', ns], new RegExp(`no ktctl pod \\(label app.kubernetes.io/managed-by=ktctl\\) in namespace ${ns}`)],
    [['freeze-shadow', '5', '-n', 'Bad_NS'], /-n needs a namespace name/],
    [['freeze-shadow', '5', '--frobnicate'], /unknown option --frobnicate/],
  ];
  for (const [args, sentence] of cases) {
    const r = await labCli(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, sentence, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1, `one sentence: ${r.stderr}`);
    t.regex(r.stderr, /^lab: fault freeze-shadow: /);
    t.is(r.stdout, '');
  }
  t.deepEqual(await frozenShadows({ namespace: ns }), []);
});

test.serial('lab fault freeze-shadow --pod NAME --wait returns after the continue; thaw-shadow continues at once', async (t) => {
  t.teardown(() => thawShadow({ namespace: ns }).then(() => undefined));
  const waited = await labCli(['freeze-shadow', '1.5', '-n', ns, '--pod', webPod, '--wait']);
  t.is(waited.code, 0, waited.stderr);
  const m = new RegExp(`^froze 1 pod\\(s\\) for 1\\.5 s \\(SIGSTOP\\); the lab continues them \\(SIGCONT\\) at \\S+:\\n  ${ns}/${webPod}  pids ([\\d ]+)\\ncontinued ${ns}/${webPod}\\n$`).exec(waited.stdout);
  t.truthy(m, waited.stdout);
  const pids = (m?.[1] ?? '').split(' ').map(Number);
  t.true(pids.length >= 1);
  for (const p of pids) t.regex(state(p), /^[SR]$/, `pid ${p} after --wait`);

  const held = await labCli(['freeze-shadow', '600', '-n', ns, '--pod', webPod]);
  t.is(held.code, 0, held.stderr);
  const heldPids = (/pids ([\d ]+)/.exec(held.stdout)?.[1] ?? '').split(' ').map(Number);
  t.deepEqual(heldPids.map(state), heldPids.map(() => 'T'), 'returns at once, the pod still stopped');
  const thawed = await labCli(['thaw-shadow', '-n', ns]);
  t.is(thawed.code, 0, thawed.stderr);
  t.is(thawed.stdout, `continued 1 frozen pod(s)\n  ${ns}/${webPod}\n`);
  await until(() => heldPids.every((p) => /^[SR]$/.test(state(p))), { what: () => heldPids.map((p) => `${p}=${state(p)}`).join(' ') });
  t.deepEqual(await frozenShadows({ namespace: ns }), []);
});

test.serial('freezeShadow (the fixture) refuses with the lab\'s sentence', async (t) => {
  const e = await t.throwsAsync(freezeShadow(5, { namespace: ns, pod: 'no-such-pod' }), { instanceOf: FaultRefused });
  t.is(e?.status, 404);
  t.is(e?.message, `pods "no-such-pod" not found in namespace ${ns}`);
  const bad = await t.throwsAsync(freezeShadow(3601, { namespace: ns }), { instanceOf: FaultRefused });
  t.is(bad?.status, 400);
});

// ---------------------------------------------------------------------------------------------
// `lab down` during a freeze, on a control plane of this process over an isolated data plane

const PREFIX = `ktfz${process.pid.toString(36)}-`;

/** Isolated data planes of test processes that died (ktfz<pid36>-*, pid gone): removed first. */
async function sweepStale(): Promise<void> {
  const prefixes = new Set<string>();
  for (const line of (await runTool('ip', ['netns', 'list'])).stdout.split('\n')) {
    const m = /^(ktfz([0-9a-z]+)-)/.exec(line.trim());
    if (!m) continue;
    try {
      process.kill(parseInt(m[2]!, 36), 0);
    } catch {
      prefixes.add(m[1]!);
    }
  }
  for (const prefix of prefixes) await createLabNet({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'ktfz-sweep-')), prefix }).down();
}

test.serial('lab down while a shadow is frozen: the control plane continues it, deletes it, and the data plane leaves nothing', async (t) => {
  await sweepStale();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktfz-'));
  const net = createLabNet({ stateDir: dir, prefix: PREFIX });
  let cp: ControlPlane | undefined;
  t.teardown(async () => {
    await cp?.stop().catch(() => undefined);
    await net.down();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await net.up();
  const { tokens } = await makeCredentials(dir);
  const log: string[] = [];
  cp = new ControlPlane({ net, tokens, tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) }, demo: false, log: (l) => log.push(l) });
  const { port } = await cp.start('127.0.0.1', 0);
  const ca = fs.readFileSync(path.join(dir, FILES.caCert));
  const api = (method: string, urlPath: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const req = https.request(new URL(urlPath, `https://127.0.0.1:${port}`), { method, ca, headers: { Authorization: `Bearer ${tokens.admin}`, 'Content-Type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> }));
      });
      req.setTimeout(15_000, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });

  t.is((await api('POST', '/api/v1/namespaces', { metadata: { name: 'frz' } })).status, 201);
  // the namespace controller makes the default service account a moment later
  await eventually(async () => {
    const r = await api('POST', '/api/v1/namespaces/frz/pods', {
      metadata: { name: 'shadow', labels: { 'app.kubernetes.io/managed-by': 'ktctl' } },
      spec: { terminationGracePeriodSeconds: 30, containers: [{ name: 'main', image: 'ktlab/echo' }] },
    });
    return r.status === 201 ? true : undefined;
  }, 'the pod to be created');
  // a second ktctl-labelled pod whose container is a process tree: a shell, a child, and a child
  // that left the container's session (setsid): a signal to the process group would miss it
  t.is((await api('POST', '/api/v1/namespaces/frz/pods', {
    metadata: { name: 'tree', labels: { 'app.kubernetes.io/managed-by': 'ktctl' } },
    spec: { terminationGracePeriodSeconds: 30, containers: [{ name: 'main', image: 'ktlab/echo', command: ['sh', '-c', 'sleep 600 & setsid sleep 600 & wait'] }] },
  })).status, 201);
  for (const name of ['shadow', 'tree']) {
    await eventually(async () => ((await api('GET', `/api/v1/namespaces/frz/pods/${name}`)).json.status as { phase?: string } | undefined)?.phase === 'Running' || undefined, `pod ${name} to run`);
  }
  const podNetns = fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${PREFIX}p-`));
  t.is(podNetns.length, 2);
  await until(() => podNetns.reduce((n, x) => n + netnsPids(x).length, 0) >= 4, { what: 'the tree pod\'s three processes' });

  const frozen = await api('POST', '/lab/v1/faults/freeze-shadow', { seconds: 600, namespace: 'frz' });
  t.is(frozen.status, 200, JSON.stringify(frozen.json));
  const byName = new Map((frozen.json.frozen as Array<{ name: string; pids: number[] }>).map((p) => [p.name, p.pids]));
  t.deepEqual([...byName.keys()].sort(), ['shadow', 'tree']);
  const tree = byName.get('tree')!;
  t.is(tree.length, 3, 'sh and both sleeps');
  t.is(new Set(tree.map(session)).size, 2, 'one of them in a session of its own');
  const pids = [...byName.values()].flat().sort((a, b) => a - b);
  t.deepEqual(pids.map(state), pids.map(() => 'T'));
  t.deepEqual(podNetns.flatMap((n) => netnsPids(n)).sort((a, b) => a - b), pids, 'the processes it stopped are those of the pods\' namespaces');
  const starts = pids.map((p) => [p, procStat(p)!.startTime] as const);

  // what `lab down` does: SIGTERM to the daemon, whose stop() is cp.stop(); then the data plane's down()
  await cp.stop();
  cp = undefined;
  for (const name of ['shadow', 'tree']) t.true(log.some((l) => new RegExp(`fault freeze-shadow: continued frz/${name} \\(the lab stops; pids \\d`).test(l)), `${name} continued before its SIGTERM, not left to its 30 s grace period`);
  t.true(starts.every(([p, s]) => !sameProcess(p, s)), `the pod's processes end with the control plane: ${starts.map(([p]) => `${p}=${state(p)}`).join(' ')}`);
  await net.down();
  const left = (await runTool('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(PREFIX));
  t.deepEqual(left, []);
});
