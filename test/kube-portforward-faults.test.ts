/**
 * `ktctl forward` (the built CLI, from the host namespace) against the real lab while the lab's
 * runtime does to its port-forward what clusters do: an idle timeout that pings do not reset, a
 * TCP cut with no close frame (1006), and a runtime that refuses `v4.channel.k8s.io` with a bare
 * 403. Each ends in a reconnect or a retry, never in an error; the forward keeps answering. The
 * lab's switches are set for this file's namespace only (other files run beside it).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { request, type LabEndpoint } from './lab/api/client.js';
import { endpointOf, fileNamespace } from './lab/fixture.js';
import { ktctlObjects, labKtctl, type CliRun } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';

const ns = fileNamespace(test, 'kt-pff');
const lk = labKtctl(test, 'kt-pff');
let echoPod = '';

test.before(async () => {
  echoPod = (await deployEcho(ns, { echo: [{ port: 80, targetPort: 8080, name: 'http' }] })).metadata!.name!;
});

const admin = (): LabEndpoint => endpointOf();

/** The lab runtime's port-forward settings for this file's namespace, put back when the test ends. */
async function runtime(t: ExecutionContext, body: { idleTimeoutMs?: number; refuseProtocols?: string[] }): Promise<void> {
  const path = `/lab/v1/portforward?namespace=${ns}`;
  const before = (await request(admin(), 'GET', path)).body;
  const r = await request(admin(), 'PUT', path, body);
  t.is(r.status, 200, JSON.stringify(r.body));
  t.teardown(async () => {
    await request(admin(), 'PUT', path, before);
  });
}

function curl(url: string): Promise<{ code: number; body: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-m', '10', url], (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, body: String(stdout), stderr: String(stderr) });
    });
  });
}

async function answers(t: ExecutionContext, port: number, path: string): Promise<void> {
  const r = await curl(`http://127.0.0.1:${port}${path}`);
  t.is(r.code, 0, r.stderr);
  const body = JSON.parse(r.body) as { pod: string; path: string };
  t.is(body.pod, echoPod);
  t.is(body.path, path);
}

async function forward(t: ExecutionContext, extra: string[] = []): Promise<{ run: CliRun; port: number }> {
  const run = lk.start(t, ['forward', 'echo', '0:80', '-n', ns, ...extra]);
  const port = Number((await run.waitFor(/^forwarding 127\.0\.0\.1:(\d+) -> /m))[1]);
  return { run, port };
}

/** The log has no line that reads as an error of ktctl. */
function noError(t: ExecutionContext, run: CliRun): void {
  t.notRegex(run.log(), /^ktctl: |cannot reconnect|fatal/m);
  t.is(run.child.exitCode, null, 'the forward keeps running');
}

test.serial('an idle timeout that pings do not reset (ssh keepalive every 10 s, timeout 3 s): the tunnel reconnects and the forward answers', async (t) => {
  await runtime(t, { idleTimeoutMs: 3000 });
  const { run, port } = await forward(t);
  await answers(t, port, '/anything/before-idle');
  await run.waitFor(/dropped \(.*WebSocket code 1006.*\); reconnecting/, 30_000);
  await run.waitFor(/^reconnected to shadow pod/m, 30_000);
  await answers(t, port, '/anything/after-idle');
  noError(t, run);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('fault cut-portforward --abrupt (no close frame, 1006): the tunnel reconnects and the forward answers', async (t) => {
  const { run, port } = await forward(t);
  await answers(t, port, '/anything/before-cut');
  const cut = await request(admin(), 'POST', '/lab/v1/faults/cut-portforward', { abrupt: true, namespace: ns });
  t.is(cut.status, 200);
  t.true((cut.body as { cut: number }).cut >= 1);
  await run.waitFor(/dropped \(.*WebSocket code 1006.*\); reconnecting/, 30_000);
  await run.waitFor(/^reconnected to shadow pod/m, 30_000);
  await answers(t, port, '/anything/after-cut');
  noError(t, run);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('a runtime that refuses v4.channel.k8s.io (bare 403): --debug says so, the retry without a subprotocol carries the forward, also after a cut', async (t) => {
  await runtime(t, { refuseProtocols: ['v4.channel.k8s.io'] });
  const { run, port } = await forward(t, ['--debug']);
  await answers(t, port, '/anything/no-subprotocol');
  t.regex(run.log(), /403 with an empty body: the container runtime refused the subprotocol v4\.channel\.k8s\.io \(not RBAC/);
  const refusals = (): number => run.log().split('\n').filter((l) => /refused the subprotocol v4\.channel\.k8s\.io/.test(l)).length;
  t.is(refusals(), 1);
  // a reconnect asks for no subprotocol at once: no second refusal
  await request(admin(), 'POST', '/lab/v1/faults/cut-portforward', { abrupt: true, namespace: ns });
  await run.waitFor(/^reconnected to shadow pod/m, 30_000);
  await answers(t, port, '/anything/after-reconnect');
  t.is(refusals(), 1);
  noError(t, run);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});
