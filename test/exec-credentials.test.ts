/**
 * Exec credential plugins whose tokens expire (issue 13, part 4), against an in-process control
 * plane (fake data plane, 127.0.0.1:0, never the shared lab): the lab's plugin and its tokens
 * (accepted until expiry, then 401 with kube-apiserver's Status on every path), kubectl running
 * the plugin itself, and ktctl's credential layer (src/kube/credentials.ts): KUBERNETES_EXEC_INFO,
 * renewal at expiry, one plugin run for many overlapping calls, a 401 before the expiry (the lab's
 * key rotated) renewed and retried once, and a failing or missing plugin in one sentence.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ControlPlane } from './lab/api/lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';
import { readExecKey, signExecToken, ExecTokenVerifier, EXEC_GROUPS, EXEC_USER } from './lab/api/exec-token.js';
import { CONTEXTS, FILES, makeCredentials, renderKubeconfig } from './lab/api/pki.js';
import { execKubeconfig } from './lab/fixture.js';
import { Kube } from '../src/kube/api.js';
import { loadKubeConfig } from '../src/kube/config.js';
import { ExecCredentialError, retryUnauthorized } from '../src/kube/credentials.js';
import { kubeCall, KubeNotFoundError, KubeUnauthorizedError } from '../src/kube/errors.js';
import { openPortForward } from '../src/kube/portforward.js';

interface LocalLab {
  cp: ControlPlane;
  dir: string;
  kubeconfig: string;
  server: string;
  ca: Buffer;
  keyFile: string;
}

let local: LocalLab | undefined;

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-execauth-'));
  const { tokens } = await makeCredentials(dir);
  const keyFile = path.join(dir, FILES.execKey);
  const cp = new ControlPlane({
    net: new FakeLabNet(),
    tokens,
    tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) },
    demo: false,
    execTokenKey: readExecKey(keyFile),
  });
  const { port } = await cp.start('127.0.0.1', 0);
  const server = `https://127.0.0.1:${port}`;
  const ca = fs.readFileSync(path.join(dir, FILES.caCert));
  const kubeconfig = path.join(dir, 'kubeconfig-local');
  fs.writeFileSync(kubeconfig, renderKubeconfig(ca, tokens, server, { keyFile, plugin: path.join(dir, FILES.execPlugin) }), { mode: 0o600 });
  local = { cp, dir, kubeconfig, server, ca, keyFile };
});

test.after.always(async () => {
  if (!local) return;
  await local.cp.stop();
  fs.rmSync(local.dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function get(urlPath: string, token: string): Promise<{ status: number; body: string }> {
  const l = local!;
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(urlPath, l.server), { ca: l.ca, headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Runs the plugin of `kubeconfig`'s lab-exec user as kubectl would (KUBERNETES_EXEC_INFO set). */
function runPlugin(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const l = local!;
  return new Promise((resolve) =>
    execFile(
      path.join(l.dir, FILES.execPlugin),
      ['token'],
      { env: { ...process.env, KTLAB_EXEC_KEY: l.keyFile, KUBERNETES_EXEC_INFO: JSON.stringify({ kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', spec: { interactive: false } }), ...env } },
      (e, stdout, stderr) => resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr }),
    ),
  );
}

function kubectl(kubeconfig: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile('kubectl', ['--kubeconfig', kubeconfig, ...args], { timeout: 30_000 }, (e, stdout, stderr) =>
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr }),
    ),
  );
}

test.serial('the lab plugin prints an ExecCredential whose token the API server takes until its expiry, then 401 with the real Status on every path', async (t) => {
  const r = await runPlugin({ KTLAB_TOKEN_TTL_SECONDS: '2' });
  t.is(r.code, 0, r.stderr);
  const cred = JSON.parse(r.stdout) as { apiVersion: string; kind: string; status: { token: string; expirationTimestamp: string } };
  t.is(cred.apiVersion, 'client.authentication.k8s.io/v1');
  t.is(cred.kind, 'ExecCredential');
  t.regex(cred.status.expirationTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.deepEqual(new ExecTokenVerifier(readExecKey(local!.keyFile)).verify(cred.status.token), { name: EXEC_USER, groups: EXEC_GROUPS });
  t.is((await get('/api/v1/namespaces', cred.status.token)).status, 200);
  await sleep(Date.parse(cred.status.expirationTimestamp) - Date.now() + 50);
  for (const p of ['/api/v1/namespaces', '/version', '/api/v1/namespaces/default/pods?watch=true']) {
    const res = await get(p, cred.status.token);
    t.is(res.status, 401, p);
    // filters.Unauthorized: apierrors.NewUnauthorized("Unauthorized")
    t.deepEqual(JSON.parse(res.body), { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
  }
  // A token signed with another key, or naming another expiry than it was signed for, is no token.
  const forged = signExecToken(randomBytes(32), { name: EXEC_USER, groups: EXEC_GROUPS }, Math.floor(Date.now() / 1000) + 60);
  t.is((await get('/api/v1/namespaces', forged)).status, 401);
  // Without a token /version stays public (system:public-info-viewer).
  t.is((await new Promise<number>((resolve, reject) => https.get(new URL('/version', local!.server), { ca: local!.ca }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject))), 200);
});

test.serial('the plugin refuses without KUBERNETES_EXEC_INFO, and fails while the control folder has a file "fail"', async (t) => {
  const noInfo = await runPlugin({ KUBERNETES_EXEC_INFO: '' });
  t.is(noInfo.code, 1);
  t.regex(noInfo.stderr, /^error: KUBERNETES_EXEC_INFO is not set/);
  const control = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-exec-ctl-'));
  t.teardown(() => fs.rmSync(control, { recursive: true, force: true }));
  fs.writeFileSync(path.join(control, 'fail'), '');
  const failing = await runPlugin({ KTLAB_EXEC_CONTROL_DIR: control });
  t.is(failing.code, 1);
  t.regex(failing.stderr, /^error: the lab refuses to issue tokens/);
  t.false(fs.existsSync(path.join(control, 'runs.log')), 'a failed run issues nothing');
});

test.serial('kubectl with the lab-exec context runs the plugin itself (interactive false, TTL from the kubeconfig copy)', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: 30, source: local!.kubeconfig });
  const r = await kubectl(ek.kubeconfig, ['get', 'namespaces', '-o', 'name']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes('namespace/default'), r.stdout);
  const runs = ek.runs();
  t.true(runs.length >= 1);
  t.is(runs[0]!.interactive, false);
  const ttl = (Date.parse(runs[0]!.expirationTimestamp) - Date.parse(runs[0]!.at)) / 1000;
  t.true(ttl > 28 && ttl <= 30, `ttl ${ttl}`);
  // the base kubeconfig keeps the default lifetime and names lab-exec as a context
  t.true(fs.readFileSync(local!.kubeconfig, 'utf8').includes(`- name: ${CONTEXTS.exec}`));
  // each kubectl process runs the plugin anew: a failing plugin fails it, with the plugin's words
  ek.setFailing(true);
  const failing = await kubectl(ek.kubeconfig, ['get', 'namespaces', '--request-timeout=5s']);
  t.not(failing.code, 0);
  t.regex(failing.stderr, /error: the lab refuses to issue tokens/);
});

test.serial('ktctl: the token is renewed when it expires, one plugin run for twenty overlapping calls, KUBERNETES_EXEC_INFO set', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: 3, source: local!.kubeconfig });
  const kube = new Kube(loadKubeConfig({ kubeconfig: ek.kubeconfig }));
  const list = (): Promise<unknown> => kubeCall({ verb: 'list', resource: 'namespaces', server: kube.server }, () => kube.core.listNamespace());
  await Promise.all(Array.from({ length: 20 }, list));
  t.is(ek.runs().length, 1, 'one run for twenty calls made at once');
  t.is(ek.runs()[0]!.interactive, false, 'KUBERNETES_EXEC_INFO carried spec.interactive');
  await list();
  t.is(ek.runs().length, 1, 'the cached token is used while it is valid');
  const firstExpiry = Date.parse(ek.runs()[0]!.expirationTimestamp);
  // past the renewal point (a fifth of the lifetime before the expiry) but before the expiry
  await sleep(firstExpiry - Date.now() + 100);
  await Promise.all(Array.from({ length: 20 }, list));
  t.is(ek.runs().length, 2, 'one renewal for twenty calls');
  for (let i = 0; i < 2; i++) {
    await sleep(Date.parse(ek.runs().at(-1)!.expirationTimestamp) - Date.now() + 100);
    await list();
  }
  t.is(ek.runs().length, 4, 'one renewal per expiry');
});

test.serial('ktctl: a 401 before the expiry (the lab rotated its key) runs the plugin again and retries once; a second 401 is the error', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: 60, source: local!.kubeconfig });
  const kube = new Kube(loadKubeConfig({ kubeconfig: ek.kubeconfig }));
  const list = (): Promise<unknown> => kubeCall({ verb: 'list', resource: 'namespaces', server: kube.server }, () => kube.core.listNamespace());
  await list();
  t.is(ek.runs().length, 1);
  const oldKey = fs.readFileSync(local!.keyFile);
  t.teardown(() => {
    fs.writeFileSync(local!.keyFile, oldKey);
    local!.cp.execTokens!.rotate(readExecKey(local!.keyFile));
  });
  const fresh = randomBytes(32);
  fs.writeFileSync(local!.keyFile, `${fresh.toString('hex')}\n`);
  local!.cp.execTokens!.rotate(fresh);
  await Promise.all(Array.from({ length: 10 }, list));
  t.is(ek.runs().length, 2, 'the ten 401s made one new run');
  // The server refuses even fresh tokens (signed with a key it does not have): one retry, then the 401 sentence.
  local!.cp.execTokens!.rotate(randomBytes(32));
  const e = await t.throwsAsync(list);
  t.true(e instanceof KubeUnauthorizedError, String(e));
  t.is(ek.runs().length, 3);
});

test.serial('ktctl: a failing plugin is one sentence with its stderr\'s first line and its name; a missing one gives its installHint', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: 5, source: local!.kubeconfig });
  ek.setFailing(true);
  const kube = new Kube(loadKubeConfig({ kubeconfig: ek.kubeconfig }));
  const e = await t.throwsAsync(kubeCall({ verb: 'list', resource: 'namespaces', server: kube.server }, () => kube.core.listNamespace()));
  t.true(e instanceof ExecCredentialError, String(e));
  t.regex(e!.message, /^the credential plugin \/.*exec-plugin\.mjs of user lab-exec failed with exit code 1: error: the lab refuses to issue tokens/);

  // the same kubeconfig with a command that does not exist
  const missing = path.join(path.dirname(ek.kubeconfig), 'missing.json');
  const doc = JSON.parse(fs.readFileSync(ek.kubeconfig, 'utf8')) as { users: Array<{ name: string; user: { exec?: { command: string } } }> };
  doc.users.find((u) => u.name === EXEC_USER)!.user.exec!.command = '/nonexistent/ktlab-plugin';
  fs.writeFileSync(missing, JSON.stringify(doc));
  const k2 = new Kube(loadKubeConfig({ kubeconfig: missing }));
  const e2 = await t.throwsAsync(k2.serverNow());
  t.true(e2 instanceof ExecCredentialError, String(e2));
  t.is(e2!.message, "the credential plugin /nonexistent/ktlab-plugin of user lab-exec is not installed (no such file, or not on PATH): the lab's exec plugin is written by npm run lab -- up (into the state folder, .lab)");
});

test.serial('ktctl: a 401 on the port-forward upgrade renews the token and upgrades again (as the transport reconnects)', async (t) => {
  const ek = execKubeconfig(t, { ttlSeconds: 60, source: local!.kubeconfig });
  const kube = new Kube(loadKubeConfig({ kubeconfig: ek.kubeconfig }));
  await kube.serverNow();
  t.is(ek.runs().length, 1);
  const oldKey = fs.readFileSync(local!.keyFile);
  t.teardown(() => {
    fs.writeFileSync(local!.keyFile, oldKey);
    local!.cp.execTokens!.rotate(readExecKey(local!.keyFile));
  });
  const fresh = randomBytes(32);
  fs.writeFileSync(local!.keyFile, `${fresh.toString('hex')}\n`);
  local!.cp.execTokens!.rotate(fresh);
  const open = (): Promise<unknown> => openPortForward({ kc: kube.kc, namespace: 'default', pod: 'nosuchpod', port: 2222, timeoutMs: 5000 });
  // without the retry: the cached (now refused) token gives the 401 sentence
  t.true((await t.throwsAsync(open)) instanceof KubeUnauthorizedError);
  // with it (src/kube/transport.ts's connect): one new plugin run, and the upgrade gets past authentication to the pod lookup
  const e = await t.throwsAsync(retryUnauthorized(open, (x) => x instanceof KubeUnauthorizedError));
  t.true(e instanceof KubeNotFoundError, String(e));
  t.is(ek.runs().length, 2);
});
