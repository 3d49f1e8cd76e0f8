/**
 * SIGINT at each phase of a Kubernetes start-up, against the lab: the built CLI with `--debug`,
 * the signal sent when the phase shows (a stderr line of ktctl's, or the object appearing in the
 * cluster), then: exit 0 within 20 s, no error sentence and no stack trace, no state record left
 * in the file's KTCTL_STATE_DIR, and nothing labelled app.kubernetes.io/managed-by=ktctl (nor a
 * changed `web` service) left in the file's namespace.
 *
 * Phases: the command's first moment (before any import or local check is done), loading the
 * kubeconfig and checking RBAC, the Secret just made, waiting for the shadow pod, the pod ready
 * (the port-forward and the ssh handshake start). Commands: connect (socks), forward, exchange,
 * mesh, preview. Serial: each checks the whole namespace.
 */
import test, { type ExecutionContext } from 'ava';
import { readdirSync } from 'node:fs';
import { CoreV1Api } from '@kubernetes/client-node';
import { deployWeb, labKtctl, MANAGED, webLeftovers, type CliRun } from './helpers/ktctl.js';
import { fileNamespace, kubeConfig } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-sig');
const lk = labKtctl(test, 'kt-sig');

test.before(async () => {
  await deployWeb(ns, 1);
});

/** How a test knows the phase has come. */
type Phase =
  | { line: RegExp }
  | { cluster: 'secret' | 'pod-ready' };

const FIRST = { line: /^debug: ktctl \S+ \w+, pid \d+: watching/m };
const LOADING = { line: /^debug: kubeconfig .*, API server /m };
const POD_WAIT = { line: /^created the shadow pod /m };

/** Polls the namespace every 25 ms until ktctl's Secret exists, or its pod is Running and Ready. */
async function untilInCluster(what: 'secret' | 'pod-ready', run: CliRun): Promise<void> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (run.child.exitCode !== null) throw new Error(`ktctl exited before ${what}: ${run.log()}`);
    if (Date.now() > deadline) throw new Error(`no ${what} after 60 s: ${run.log()}`);
    if (what === 'secret') {
      if ((await core.listNamespacedSecret({ namespace: ns, labelSelector: MANAGED })).items.length > 0) return;
    } else {
      const pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED })).items;
      if (pods.some((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))) return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function signalAt(t: ExecutionContext, args: string[], phase: Phase): Promise<void> {
  const run = lk.start(t, [...args, '-n', ns, '--debug']);
  if ('line' in phase) await run.waitFor(phase.line, 60_000);
  else await untilInCluster(phase.cluster, run);
  run.child.kill('SIGINT');
  const code = await Promise.race([run.exited, new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGINT'), 20_000))]);
  t.is(code, 0, run.log());
  t.regex(run.log(), /got SIGINT; stopping/);
  t.notRegex(run.log(), /^ktctl: /m, 'no error sentence');
  t.notRegex(run.log(), /^\s+at /m, 'no stack trace');
  t.deepEqual(readdirSync(lk.stateDir), [], 'no state record left');
  t.deepEqual(await webLeftovers(ns, 1), [], 'nothing of ktctl left in the namespace');
  t.log(run.log().split('\n').filter((l) => !l.startsWith('debug: ssh')).slice(-6).join('\n'));
}

const CONNECT = ['connect', '--mode', 'socks', '--proxyPort', '0'];
const CASES: Array<{ name: string; args: string[]; phase: Phase }> = [
  { name: 'connect: the first moment', args: CONNECT, phase: FIRST },
  { name: 'connect: loading the kubeconfig, RBAC checks', args: CONNECT, phase: LOADING },
  { name: 'connect: the Secret just made', args: CONNECT, phase: { cluster: 'secret' } },
  { name: 'connect: waiting for the shadow pod', args: CONNECT, phase: POD_WAIT },
  { name: 'connect: the pod ready, the port-forward starting', args: CONNECT, phase: { cluster: 'pod-ready' } },
  { name: 'forward: the first moment (the service is being looked up)', args: ['forward', 'web', '0:80'], phase: FIRST },
  { name: 'forward: waiting for the shadow pod', args: ['forward', 'web', '0:80'], phase: POD_WAIT },
  { name: 'mesh: the first moment (imports, local checks)', args: ['mesh', 'web', '--expose', '18080:80', '--skipPortChecking'], phase: FIRST },
  { name: 'mesh: the router pod being made', args: ['mesh', 'web', '--expose', '18080:80', '--skipPortChecking'], phase: { cluster: 'secret' } },
  { name: 'exchange: the first moment', args: ['exchange', 'web', '--expose', '18080:80', '--skipPortChecking'], phase: FIRST },
  { name: 'exchange: waiting for the shadow pod', args: ['exchange', 'web', '--expose', '18080:80', '--skipPortChecking'], phase: POD_WAIT },
  { name: 'preview: the first moment', args: ['preview', 'kt-sig-preview', '--expose', '18080:80', '--skipPortChecking'], phase: FIRST },
  { name: 'preview: the pod ready', args: ['preview', 'kt-sig-preview', '--expose', '18080:80', '--skipPortChecking'], phase: { cluster: 'pod-ready' } },
];

for (const c of CASES) {
  test.serial(`SIGINT at ${c.name}: exit 0, nothing left`, (t) => signalAt(t, c.args, c.phase));
}

test.serial('a curl started the instant the proxy port opens is answered once the tunnel is up (lab)', async (t) => {
  const { createServer, connect } = await import('node:net');
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const run = lk.start(t, ['connect', '--mode', 'socks', '--proxyPort', String(port), '-n', ns]);
  // the port accepts long before the shadow pod is ready: the first accepted connection is the curl's moment
  const deadline = Date.now() + 30_000;
  for (;;) {
    const open = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error(`the proxy port never opened: ${run.log()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  // (the port opens in the first second, the shadow pod is ready a second or more later)
  if (/export ALL_PROXY=/.test(run.log())) t.log('the tunnel was already up when the port was first seen open');
  const { run: sh } = await import('./helpers/netns.js');
  const r = await sh('curl', ['-sS', '--max-time', '20', '-x', `socks5h://127.0.0.1:${port}`, 'http://web/instant']);
  t.is(r.code, 0, `${r.stderr}\n${run.log()}`);
  t.regex(r.stdout, /"path":"\/instant"/);
  await run.stop(t);
  t.deepEqual(await webLeftovers(ns, 1), []);
});
