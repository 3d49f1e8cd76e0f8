/**
 * `ktctl dashboard`'s doors (issue 14), against an in-process API server (fake data plane on
 * 127.0.0.1:0, never the shared lab), with the built CLI as a process and real HTTP requests:
 * - no token, a wrong token, a Host other than 127.0.0.1:PORT / localhost:PORT: 403;
 * - no CORS header on any answer; a preflight gets 403;
 * - an action needs a POST with the token header, from the dashboard's own origin, with JSON;
 *   a cross-origin page in a real browser (chromium) that even knows the token is refused;
 * - with a context that may only read (lab-readonly), the page's state says why recover and clean
 *   are not available (the sentence the CLI prints) and the actions answer 403 with it, while the
 *   services still show;
 * - `--open` starts $BROWSER on the URL (chromium, headless, which loads the page with its token);
 * - a taken --port is one sentence and exit 1.
 */
import test, { type ExecutionContext } from 'ava';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { ControlPlane } from './lab/api/lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';
import { CONTEXTS, FILES, makeCredentials, renderKubeconfig } from './lab/api/pki.js';
import type { DashboardState } from '../src/dashboard/server.js';
import { CLI, startCli, type CliRun } from './helpers/cli-process.js';
import { listenLocal } from './helpers/local-server.js';
import { artifactsDir, CHROMIUM, launchBrowser } from './helpers/browser.js';
import { until } from './helpers/poll.js';

interface Lab {
  cp: ControlPlane;
  dir: string;
  kubeconfig: string;
}
let lab: Lab | undefined;
const NS = 'dash-sec';

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktt-dash-sec-'));
  const { tokens } = await makeCredentials(dir);
  const cp = new ControlPlane({ net: new FakeLabNet(), tokens, tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) }, demo: false });
  const { port } = await cp.start('127.0.0.1', 0);
  const kubeconfig = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfig, renderKubeconfig(fs.readFileSync(path.join(dir, FILES.caCert)), tokens, `https://127.0.0.1:${port}`), { mode: 0o600 });
  lab = { cp, dir, kubeconfig };
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } } });
});

test.after.always(async () => {
  if (!lab) return;
  await lab.cp.stop();
  fs.rmSync(lab.dir, { recursive: true, force: true });
});

/** `ktctl dashboard -n NS` (strict permissions, a state directory of its own); its URL, port and token. */
async function dashboard(t: ExecutionContext, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ run: CliRun; url: string; port: number; token: string }> {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'ktt-dash-state-'));
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const run = startCli(t, ['dashboard', '-n', NS, ...args], { env: { KUBECONFIG: lab!.kubeconfig, KTCTL_STATE_DIR: state, KTCTL_PERMISSIONS: 'strict', ...env } });
  t.teardown(() => run.child.kill('SIGINT'));
  const m = await run.waitFor(/^(http:\/\/127\.0\.0\.1:(\d+)\/\?token=([A-Za-z0-9_-]+))$/m, 30_000);
  return { run, url: m[1]!, port: Number(m[2]), token: m[3]! };
}

function runKtctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, KUBECONFIG: lab!.kubeconfig, KTCTL_PERMISSIONS: 'strict' }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(port: number, o: { method?: string; path: string; host?: string; headers?: Record<string, string>; body?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: o.method ?? 'GET', path: o.path, headers: { Host: o.host ?? `127.0.0.1:${port}`, ...o.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const noCors = (t: ExecutionContext, a: Answer, what: string): void => {
  t.deepEqual(Object.keys(a.headers).filter((h) => h.startsWith('access-control-')), [], `${what}: no CORS header`);
};

test('token, Host, CORS and action checks', async (t) => {
  const { port, token, run } = await dashboard(t);
  // the token with its last character changed (appending a fixed 'x' was the token itself 1 time in 64)
  const wrongToken = (tk: string): string => `${tk.slice(0, -1)}${tk.endsWith('x') ? 'y' : 'x'}`;
  await run.waitFor(new RegExp(`ktctl dashboard on 127\\.0\\.0\\.1:${port}; the URL above carries its token`));
  t.true(token.length >= 32);

  const page = await request(port, { path: `/?token=${token}` });
  t.is(page.status, 200);
  t.regex(page.headers['content-type'] ?? '', /^text\/html/);
  t.regex(String(page.headers['content-security-policy'] ?? ''), /default-src 'none'; script-src 'nonce-[^']+'; .*connect-src 'self'.*frame-ancestors 'none'/);
  t.is(page.headers['referrer-policy'], 'no-referrer');
  t.notRegex(page.body, /\b(?:src|href)\s*=\s*["']?(?:https?:)?\/\/|url\(\s*["']?(?:https?:)?\/\/|@import/, 'nothing loaded from elsewhere');
  noCors(t, page, 'the page');
  t.is((await request(port, { path: `/?token=${token}`, host: `localhost:${port}` })).status, 200);

  for (const [what, o] of [
    ['no token', { path: '/' }],
    ['a wrong token', { path: `/?token=${wrongToken(token)}` }],
    ['a longer token', { path: `/?token=${token}x` }],
    ['no token on the events', { path: '/events' }],
    ['no token on the state', { path: '/api/state' }],
    ['a rebinding Host', { path: `/?token=${token}`, host: `evil.example:${port}` }],
    ['another port in Host', { path: `/?token=${token}`, host: `127.0.0.1:${port + 1}` }],
    ['no port in Host', { path: `/?token=${token}`, host: '127.0.0.1' }],
  ] as const) {
    const a = await request(port, o);
    t.is(a.status, 403, what);
    noCors(t, a, what);
  }

  const state = JSON.parse((await request(port, { path: `/api/state?token=${token}` })).body) as DashboardState;
  t.like(state, { clusterError: null, sessions: [], actions: { recover: null, clean: null } });
  t.deepEqual(state.birdseye!.rows.map((r) => `${r.name} ${r.state}`), ['web natural']);

  const json = { 'Content-Type': 'application/json' };
  const preflight = await request(port, { method: 'OPTIONS', path: `/api/clean?token=${token}`, headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'x-ktctl-token,content-type' } });
  t.is(preflight.status, 403);
  noCors(t, preflight, 'the preflight');
  const refused = [
    ['a token in the query only', { path: `/api/clean?token=${token}`, headers: json }],
    ['another Origin', { path: '/api/clean', headers: { ...json, 'X-Ktctl-Token': token, Origin: 'http://evil.example' } }],
    ['a cross-site fetch', { path: '/api/clean', headers: { ...json, 'X-Ktctl-Token': token, 'Sec-Fetch-Site': 'cross-site' } }],
    ['no token', { path: '/api/clean', headers: json }],
  ] as const;
  for (const [what, o] of refused) t.is((await request(port, { method: 'POST', body: '{}', ...o })).status, 403, what);
  t.is((await request(port, { method: 'POST', path: '/api/clean', body: '{}', headers: { 'X-Ktctl-Token': token, 'Content-Type': 'text/plain' } })).status, 415, 'a form\'s content type');
  t.is((await request(port, { method: 'GET', path: `/api/clean?token=${token}` })).status, 404, 'no action by GET');

  const own = { 'X-Ktctl-Token': token, 'Content-Type': 'application/json', Origin: `http://127.0.0.1:${port}` };
  const clean = await request(port, { method: 'POST', path: '/api/clean', body: '{}', headers: own });
  t.is(clean.status, 200, clean.body);
  t.deepEqual(JSON.parse(clean.body), { ok: true, lines: ['nothing to clean (no ktctl object older than 5 min)'] });
  const recover = await request(port, { method: 'POST', path: '/api/recover', body: JSON.stringify({ namespace: NS, service: 'web' }), headers: own });
  t.deepEqual(JSON.parse(recover.body), { ok: true, lines: [`service ${NS}/web has nothing of ktctl's to recover (no saved selector, no scaled deployment, no ktctl objects, no lock)`] });
  const nope = await request(port, { method: 'POST', path: '/api/recover', body: JSON.stringify({ namespace: NS, service: 'nope' }), headers: own });
  t.is(nope.status, 409);
  t.is((JSON.parse(nope.body) as { error: string }).error, `the service nope does not exist in namespace ${NS} and ktctl made nothing for it there: nothing to recover`, 'the sentence ktctl recover prints');
  t.is((await request(port, { method: 'POST', path: '/api/recover', body: '{"service":"../x"}', headers: own })).status, 400);
  t.is((await request(port, { method: 'POST', path: '/api/recover', body: 'not json', headers: own })).status, 400);

  // a real browser on another origin, that even knows the token: the preflight is refused
  const evil = http.createServer((_req, res) => res.end('<!doctype html><title>evil</title>'));
  const evilPort = await listenLocal(t, evil);
  const browser = await launchBrowser();
  t.teardown(() => browser.close());
  const tab = await browser.newPage();
  await tab.goto(`http://127.0.0.1:${evilPort}/`);
  const outcome = await tab.evaluate(
    async ([p, tok]) => {
      try {
        const r = await fetch(`http://127.0.0.1:${p}/api/clean`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Ktctl-Token': tok }, body: '{}' });
        return `status ${r.status}`;
      } catch (e) {
        return `refused: ${String(e)}`;
      }
    },
    [port, token] as const,
  );
  t.regex(outcome, /^refused: TypeError/);
  // a simple (no-preflight) cross-origin POST, as a form would send: refused too
  const simple = await tab.evaluate(async ([p, tok]) => {
    try {
      const r = await fetch(`http://127.0.0.1:${p}/api/clean?token=${tok}`, { method: 'POST', mode: 'no-cors', body: '{}' });
      return `opaque ${r.type}`;
    } catch (e) {
      return `refused: ${String(e)}`;
    }
  }, [port, token] as const);
  t.regex(simple, /^opaque opaque$|^refused/);
  await tab.screenshot({ path: path.join(artifactsDir(), 'dashboard-cross-origin.png') });
});

test('a context that may only read: services show, the actions say which permission they lack', async (t) => {
  const { port, token } = await dashboard(t, ['--context', CONTEXTS.readonly]);
  const state = JSON.parse((await request(port, { path: `/api/state?token=${token}` })).body) as DashboardState;
  t.deepEqual(state.birdseye!.rows.map((r) => `${r.name} ${r.state}`), ['web natural']);
  // view (the lab's readonly) may not read Secrets: birdseye leaves them out and says so, the rest shows
  t.is(state.birdseye!.missing.length, 1, JSON.stringify(state.birdseye!.missing));
  t.regex(state.birdseye!.missing[0]!, /^you may not list secrets in namespace dash-sec \(RBAC\): deploy\/rbac\/role\.yaml line \d+ grants it: .*; without it, the shadows' Secrets are not shown$/);
  // the actions name the first permission they lack, in the sentence the commands print
  t.regex(state.actions.recover ?? '', /^you may not (list secrets|delete pods) in namespace dash-sec \(RBAC\): deploy\/rbac\/role\.yaml line \d+ grants it/);
  t.regex(state.actions.clean ?? '', /^you may not (list secrets|delete pods) in namespace dash-sec \(RBAC\)/);
  const recoverCli = await runKtctl(['recover', 'web', '-n', NS, '--context', CONTEXTS.readonly]);
  t.is(recoverCli.code, 1);
  t.is(recoverCli.stderr, `ktctl: ${state.actions.recover}\n`, 'the page says what ktctl recover says');
  const own = { 'X-Ktctl-Token': token, 'Content-Type': 'application/json' };
  const r = await request(port, { method: 'POST', path: '/api/recover', body: JSON.stringify({ service: 'web' }), headers: own });
  t.is(r.status, 403);
  t.is((JSON.parse(r.body) as { error: string }).error, state.actions.recover ?? 'a sentence');
});

test('--open starts $BROWSER on the URL; a taken --port is one sentence', async (t) => {
  const shot = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ktt-dash-open-')), 'open.png');
  t.teardown(() => fs.rmSync(path.dirname(shot), { recursive: true, force: true }));
  // everything but loopback goes to a closed loopback port (no lookups, no traffic beyond this machine)
  const browserCmd = `${CHROMIUM} --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update --proxy-server=http://127.0.0.1:9 --window-size=1000,600 --screenshot=${shot}`;
  const opened = await dashboard(t, ['--open', '--debug'], { BROWSER: browserCmd });
  await until(() => fs.existsSync(shot) && fs.statSync(shot).size > 0, { timeoutMs: 60_000, what: 'the browser $BROWSER started to write its screenshot' });
  // the browser had the token: the page, then its event stream (which its script opens)
  t.regex(opened.run.log(), /^debug: dashboard: GET \/ 200$/m);
  await opened.run.waitFor(/^debug: dashboard: GET \/events 200$/m, 20_000);

  const { port } = await dashboard(t);
  const taken = startCli(t, ['dashboard', '-n', NS, '--port', String(port)], { env: { KUBECONFIG: lab!.kubeconfig } });
  t.is(await taken.exited, 1);
  t.is(taken.log(), `ktctl: port ${port} on 127.0.0.1 is in use: pick another with --port, or leave --port out for a free one\n`);
});
