/**
 * Serving commands on a kubeconfig whose user logs in through an exec plugin with short-lived
 * tokens (the lab's `lab-exec`, TTL 6 s, heartbeats every 2 s), against the lab: `connect --mode
 * socks`, `connect --mode tun` (in a laptop namespace) and `exchange` each live through at least
 * three token expiries with traffic flowing and an abrupt port-forward cut (1006) in between; the
 * heartbeat annotation keeps advancing (read as admin), the plugin's log shows the renewals, and
 * SIGINT still removes everything. A plugin that fails at the start: its stderr's first line,
 * exit 1, nothing made. A plugin that starts failing mid-session while tokens expire: the session
 * ends, says what it could not remove and which command removes it later.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { eventually, execKubeconfig, fileNamespace, kubeConfig, kubectl, waitForReadyPods, type ExecKubeconfig } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { closeServer, deployWeb, errorSentence, ktctlObjects, labKtctl, laptopServer, MANAGED, podCurl, webLeftovers, type CliRun } from './helpers/ktctl.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-exec');
const ktctl = labKtctl(test, 'kt-exec');
const TTL_SECONDS = 6;
/** Heartbeats every 2 s, so each token lifetime sees some (src/kube/heartbeat.ts). */
const FAST_BEATS = { KTCTL_HEARTBEAT_SECONDS: '2' };

test.before(async () => {
  await kubeConfig().makeApiClient(CoreV1Api).createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  await deployWeb(ns, 1);
  await waitForReadyPods(ns, 'app=client', 1);
});

/** `npm run lab -- fault cut-portforward --abrupt`: every port-forward of the lab ends with 1006. */
function cutPortForwards(): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', join(REPO, 'test/lab/cli.ts'), 'fault', 'cut-portforward', '--abrupt'], { cwd: REPO }, (e, stdout, stderr) =>
      e ? reject(new Error(`lab fault: ${stderr}`)) : resolve(stdout),
    ),
  );
}

/** The `ktctl/heartbeat` annotation of a pod, read by kubectl as the lab's admin. */
async function heartbeatOf(pod: string): Promise<string> {
  const r = await kubectl(['get', 'pod', pod, '-n', ns, '-o', 'json']);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.['ktctl/heartbeat'] ?? '';
}

async function shadowPod(role: string): Promise<string> {
  return eventually(async () => {
    const pods = (await kubeConfig().makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: `${MANAGED},ktctl/role=${role}` })).items;
    const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
    return live.length === 1 ? live[0]!.metadata!.name! : undefined;
  }, `one ${role} shadow pod`);
}

/**
 * Three token lifetimes and more: in each round traffic must flow (`traffic` retries inside the
 * reconnect's window), then the test waits for the plugin's next run; after the first round the
 * port-forward is cut. The heartbeat must advance from round to round.
 */
async function acrossExpiries(t: ExecutionContext, ek: ExecKubeconfig, pod: string, traffic: (round: number) => Promise<void>, child: CliRun): Promise<void> {
  const startRuns = ek.runs().length;
  let beat = await heartbeatOf(pod);
  for (let round = 0; round < 4; round++) {
    if (round === 1) t.regex(await cutPortForwards(), /cut [1-9]\d* port-forward stream/);
    await traffic(round);
    const runs = ek.runs().length;
    await eventually(async () => (ek.runs().length > runs ? true : undefined), `a renewal after round ${round} (plugin runs: ${runs})`, TTL_SECONDS * 3000);
    const next = await eventually(async () => {
      const b = await heartbeatOf(pod);
      return b > beat ? b : undefined;
    }, `the heartbeat of ${pod} advancing past ${beat}`, 10_000);
    beat = next;
    t.is(child.child.exitCode, null, child.log());
  }
  t.true(ek.runs().length - startRuns >= 3, `renewals: ${ek.runs().length - startRuns}`);
  t.regex(child.log(), /reconnected to shadow pod/, 'the cut port-forward came back');
}

test.serial('kubectl with the lab-exec context lists pods (it runs the plugin itself); once the plugin fails, so does kubectl', async (t) => {
  // kubectl auth whoami needs SelfSubjectReview, which the RBAC part of the lab brings: not tested here.
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('kubectl', ['--kubeconfig', ek.kubeconfig, 'get', 'pods', '-n', ns, '-o', 'name'], (e, stdout, stderr) => resolve({ code: e ? 1 : 0, stdout, stderr })),
  );
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes('pod/client'), r.stdout);
  t.is(ek.runs().length, 1);
  ek.setFailing(true);
  const f = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile('kubectl', ['--kubeconfig', ek.kubeconfig, 'get', 'pods', '-n', ns], (e, _stdout, stderr) => resolve({ code: e ? 1 : 0, stderr })),
  );
  t.is(f.code, 1);
  t.regex(f.stderr, /error: the lab refuses to issue tokens/);
});

test.serial('connect --mode socks lives through token expiries and a port-forward cut; SIGINT leaves nothing', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  const child = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--kubeconfig', ek.kubeconfig], { env: FAST_BEATS });
  const port = Number((await child.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/))[1]);
  const pod = await shadowPod('connect');
  const curl = (url: string): Promise<{ code: number; body: string }> =>
    new Promise((resolve) =>
      execFile('curl', ['-s', '-m', '5', '--proxy', `socks5h://127.0.0.1:${port}`, url], (e, stdout) => resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, body: stdout })),
    );
  await acrossExpiries(
    t,
    ek,
    pod,
    async (round) => {
      const body = await eventually(async () => {
        const r = await curl(`http://web/round-${round}`);
        return r.code === 0 ? r.body : undefined;
      }, `web through the proxy in round ${round}`, 20_000);
      t.regex(body, new RegExp(`"path":"/round-${round}"`));
    },
    child,
  );
  await child.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('connect --mode tun (in a laptop namespace) lives through token expiries and a port-forward cut; SIGINT removes device, routes and objects', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const laptop = `kt-exec-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  const child = ktctl.start(t, ['connect', '-n', ns, '--kubeconfig', ek.kubeconfig], { netns: laptop, env: FAST_BEATS });
  await child.waitFor(/press Ctrl-C to disconnect/);
  const pod = await shadowPod('connect');
  await acrossExpiries(
    t,
    ek,
    pod,
    async (round) => {
      const body = await eventually(async () => {
        const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '5', `http://web/round-${round}`]);
        return r.code === 0 ? r.stdout : undefined;
      }, `web through the TUN device in round ${round}`, 20_000);
      t.regex(body, new RegExp(`"path":"/round-${round}"`));
    },
    child,
  );
  await child.stop(t);
  const links = await run('ip', ['-n', laptop, '-o', 'link', 'show']);
  t.false(/\bkt\d+:/.test(links.stdout), links.stdout);
  const routes = await run('ip', ['-n', laptop, 'route', 'show']);
  t.false(routes.stdout.includes('kt'), routes.stdout);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('exchange lives through token expiries and a port-forward cut, the cluster reaching the laptop; SIGINT restores web', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  const { server, port } = await laptopServer();
  t.teardown(() => closeServer(server));
  const child = ktctl.start(t, ['exchange', 'web', '--expose', `${port}:80`, '-n', ns, '--kubeconfig', ek.kubeconfig], { env: FAST_BEATS });
  await child.waitFor(/exchanged service \S+ port 80/);
  const pod = await shadowPod('exchange');
  await acrossExpiries(
    t,
    ek,
    pod,
    async (round) => {
      const body = await eventually(async () => {
        const r = await podCurl({ namespace: ns, name: 'client' }, [`http://web/round-${round}`]);
        return r.code === 0 && r.body.startsWith('laptop') ? r.body : undefined;
      }, `the laptop behind web in round ${round}`, 20_000);
      t.is(body, `laptop /round-${round}`);
    },
    child,
  );
  await child.stop(t);
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('a plugin that fails at the start: its first stderr line, exit 1, nothing made', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  ek.setFailing(true);
  const r = await ktctl.run(['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--kubeconfig', ek.kubeconfig]);
  t.is(r.code, 1, r.log);
  t.log(r.stderr.trim());
  t.regex(errorSentence(t, r.stderr), /^ktctl: the credential plugin \/\S+exec-plugin\.mjs of user lab-exec failed with exit code 1: error: the lab refuses to issue tokens/);
  t.deepEqual(await ktctlObjects(ns), []);
  t.deepEqual(readdirSync(ktctl.stateDir).filter((f) => f.endsWith('.json')), [], 'no local state record');

  const x = await ktctl.run(['exchange', 'web', '--expose', '8080:80', '--skipPortChecking', '-n', ns, '--kubeconfig', ek.kubeconfig]);
  t.is(x.code, 1, x.log);
  t.regex(errorSentence(t, x.stderr), /error: the lab refuses to issue tokens/);
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('a plugin that starts failing mid-session: the session ends and names what is left and the command that removes it', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: TTL_SECONDS });
  const child = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, '--kubeconfig', ek.kubeconfig], { env: FAST_BEATS });
  await child.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/);
  const pod = await shadowPod('connect');
  // What the run could not remove is removed by the admin afterwards (also when the test fails).
  t.teardown(async () => {
    ek.setFailing(false);
    const core = kubeConfig().makeApiClient(CoreV1Api);
    await core.deleteNamespacedPod({ name: pod, namespace: ns, gracePeriodSeconds: 0 }).catch(() => undefined);
    await core.deleteNamespacedSecret({ name: pod.replace(/-\d+$/, ''), namespace: ns }).catch(() => undefined);
  });
  ek.setFailing(true);
  const code = await Promise.race([child.exited, new Promise<string>((r) => setTimeout(() => r('still running'), TTL_SECONDS * 1000 + 20_000))]);
  t.is(code, 1, child.log());
  const sentence = errorSentence(t, child.log());
  t.log(sentence);
  t.regex(sentence, /^ktctl: the credential plugin \S+ of user lab-exec failed with exit code 1: error: the lab refuses to issue tokens/);
  t.regex(sentence, new RegExp(`ktctl could not undo .*pod ${ns}/${pod}.*: run ktctl clean once your credentials work again`));
  // exactly what the sentence names is left in the cluster; nothing local
  t.deepEqual((await ktctlObjects(ns)).sort(), [`pod/${pod}`, `secret/${pod}`].sort());
  t.false(existsSync(join(ktctl.stateDir, `connect-${child.child.pid}.json`)), "the local state record is removed");
});
