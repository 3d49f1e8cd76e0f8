/**
 * The lab's RBAC (test/lab/api/rbac*.ts): the rule matching of evaluation_helpers.go, the
 * escalation comparator, and then an in-process API server (fake data plane, 127.0.0.1:0, never the
 * shared lab) driven by kubectl and client-node as independent clients: `auth can-i` (subresources,
 * resourceNames, wildcards, group and service account subjects), `auth can-i --list`,
 * `auth whoami`, `create token`, Roles and bindings made with kubectl and used by the bound user,
 * escalation refused and allowed, `view` without secrets, and the authorization audit.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { AuthorizationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { ControlPlane } from './lab/api/lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';
import { CONTEXTS, FILES, makeCredentials, renderKubeconfig, type Tokens } from './lab/api/pki.js';
import { compactRules, compactString, ruleAllows, uncovered, type PolicyRule } from './lab/api/rbac.js';
import type { Attributes } from './lab/api/auth.js';
import type { JsonObject } from './lab/api/json.js';
import { serviceAccountKubeconfig } from './lab/fixture.js';

// ---- rule matching (pkg/apis/rbac/v1/evaluation_helpers.go, rbac.go RuleAllows) ----

const res = (verb: string, group: string, resource: string, subresource?: string, name?: string): Attributes => ({ verb, group, resource, subresource, name, namespace: 'ns' });
const url = (verb: string, p: string): Attributes => ({ verb, group: '', resource: '', path: p, nonResource: true });
const rule = (verbs: string[], apiGroups: string[], resources: string[], resourceNames?: string[]): PolicyRule => ({ verbs, apiGroups, resources, resourceNames });

test('ruleAllows: a subresource needs its own entry; the parent resource does not grant it', (t) => {
  const r = rule(['get'], [''], ['pods']);
  t.true(ruleAllows(res('get', '', 'pods'), r));
  t.false(ruleAllows(res('get', '', 'pods', 'portforward'), r));
  t.true(ruleAllows(res('get', '', 'pods', 'portforward'), rule(['get'], [''], ['pods/portforward'])));
  t.false(ruleAllows(res('get', '', 'pods'), rule(['get'], [''], ['pods/portforward'])));
});

test('ruleAllows: */scale matches the scale of any resource; pods/* is not a wildcard', (t) => {
  const star = rule(['patch'], ['apps'], ['*/scale']);
  t.true(ruleAllows(res('patch', 'apps', 'deployments', 'scale'), star));
  t.true(ruleAllows(res('patch', 'apps', 'replicasets', 'scale'), star));
  t.false(ruleAllows(res('patch', 'apps', 'deployments', 'status'), star));
  t.false(ruleAllows(res('patch', 'apps', 'deployments'), star));
  // ResourceMatches knows `*` and `*/sub`, nothing else: `pods/*` matches only a subresource named "*"
  t.false(ruleAllows(res('create', '', 'pods', 'exec'), rule(['create'], [''], ['pods/*'])));
  t.true(ruleAllows(res('create', '', 'pods', 'exec'), rule(['create'], [''], ['*'])));
});

test('ruleAllows: verbs, groups and resources take *, resourceNames restrict to named requests', (t) => {
  t.true(ruleAllows(res('delete', 'apps', 'deployments'), rule(['*'], ['*'], ['*'])));
  t.false(ruleAllows(res('get', 'apps', 'deployments'), rule(['get'], [''], ['deployments'])), 'the core group is not apps');
  const named = rule(['get', 'list'], [''], ['configmaps'], ['one']);
  t.true(ruleAllows(res('get', '', 'configmaps', undefined, 'one'), named));
  t.false(ruleAllows(res('get', '', 'configmaps', undefined, 'two'), named));
  t.false(ruleAllows(res('list', '', 'configmaps'), named), 'a list has no name, so resourceNames do not allow it');
});

test('ruleAllows: non-resource URLs match exactly, by a trailing * prefix, or *; resource rules never match them', (t) => {
  const r: PolicyRule = { verbs: ['get'], nonResourceURLs: ['/api', '/apis/*', '/version'] };
  t.true(ruleAllows(url('get', '/api'), r));
  t.false(ruleAllows(url('get', '/api/v1'), r));
  t.true(ruleAllows(url('get', '/apis/apps/v1'), r));
  t.false(ruleAllows(url('post', '/version'), r));
  t.true(ruleAllows(url('post', '/anything'), { verbs: ['*'], nonResourceURLs: ['*'] }));
  t.false(ruleAllows(url('get', '/api'), rule(['*'], ['*'], ['*'])));
});

test('Covers + CompactRules: the missing rules broken down, merged by verb, printed as CompactString', (t) => {
  const owner = [rule(['get', 'list'], [''], ['pods', 'configmaps']), rule(['*'], [''], ['*/scale'])];
  const wanted = [rule(['get', 'delete'], [''], ['pods', 'secrets']), rule(['patch'], [''], ['replicationcontrollers/scale']), { verbs: ['get'], nonResourceURLs: ['/metrics'] }];
  const missing = compactRules(uncovered(owner, wanted)).map(compactString).sort();
  t.deepEqual(missing, [
    '{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}',
    '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}',
    '{NonResourceURLs:["/metrics"], Verbs:["get"]}',
  ]);
  t.deepEqual(uncovered([rule(['get'], [''], ['configmaps'])], [rule(['get'], [''], ['configmaps'], ['x'])]), [], 'a rule without names covers a named one');
  t.is(uncovered([rule(['get'], [''], ['configmaps'], ['x'])], [rule(['get'], [''], ['configmaps'])]).length, 1, 'a named rule does not cover all names');
});

// ---- through the API server: an in-process control plane on 127.0.0.1:0 with the fake data plane ----

interface Lab {
  cp: ControlPlane;
  dir: string;
  kubeconfig: string;
  server: string;
  tokens: Tokens;
  ca: Buffer;
}

let apiLab: Lab | undefined;

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-rbac-'));
  const { tokens } = await makeCredentials(dir);
  const cp = new ControlPlane({
    net: new FakeLabNet(),
    tokens,
    tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) },
    demo: false,
  });
  const { port } = await cp.start('127.0.0.1', 0);
  const server = `https://127.0.0.1:${port}`;
  const ca = fs.readFileSync(path.join(dir, FILES.caCert));
  const kubeconfig = path.join(dir, 'kubeconfig-local');
  fs.writeFileSync(kubeconfig, renderKubeconfig(ca, tokens, server), { mode: 0o600 });
  apiLab = { cp, dir, kubeconfig, server, tokens, ca };
});

test.after.always(async () => {
  if (!apiLab) return;
  await apiLab.cp.stop();
  fs.rmSync(apiLab.dir, { recursive: true, force: true });
});

function uniq(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

function kc(context: 'admin' | 'readonly' | 'dev' = 'admin'): KubeConfig {
  const k = new KubeConfig();
  k.loadFromFile(apiLab!.kubeconfig);
  k.setCurrentContext(CONTEXTS[context]);
  return k;
}

/** A raw HTTPS request with a bearer token (or none), the answer parsed when it is JSON. */
function request(method: string, urlPath: string, token: string | undefined, body?: unknown): Promise<{ status: number; json: JsonObject; text: string }> {
  const l = apiLab!;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (token !== undefined) headers.Authorization = `Bearer ${token}`;
    const req = https.request(new URL(urlPath, l.server), { method, ca: l.ca, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        let json: JsonObject = {};
        try {
          json = JSON.parse(text) as JsonObject;
        } catch {
          // text/plain answers (healthz)
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl against the in-process lab: the lab's kubeconfig and `--context`, or another kubeconfig. */
function kubectl(args: string[], opts: { context?: 'admin' | 'readonly' | 'dev'; kubeconfig?: string; input?: string } = {}): Promise<Run> {
  const base = opts.kubeconfig ? ['--kubeconfig', opts.kubeconfig] : ['--kubeconfig', apiLab!.kubeconfig, '--context', CONTEXTS[opts.context ?? 'admin']];
  return new Promise((resolve) => {
    const child = execFile('kubectl', [...base, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

let kubectlChecked: boolean | undefined;
async function hasKubectl(t: ExecutionContext): Promise<boolean> {
  kubectlChecked ??= (await kubectl(['version', '--client'])).code === 0;
  if (!kubectlChecked) t.log('kubectl is not installed: skipping the kubectl half');
  return kubectlChecked;
}

/** A namespace for one test, deleted afterwards (also on failure). */
async function namespace(t: ExecutionContext): Promise<string> {
  const name = uniq('rbac');
  const r = await request('POST', '/api/v1/namespaces', apiLab!.tokens.admin, { metadata: { name } });
  if (r.status !== 201) throw new Error(`namespace create: ${r.status} ${r.text}`);
  t.teardown(async () => {
    await request('DELETE', `/api/v1/namespaces/${name}`, apiLab!.tokens.admin);
  });
  return name;
}

/** Asks `kubectl auth can-i` and returns yes/no (exit 0/1). */
async function canI(args: string[], opts: Parameters<typeof kubectl>[1]): Promise<string> {
  const r = await kubectl(['auth', 'can-i', ...args], opts);
  if (r.code > 1) throw new Error(`kubectl auth can-i ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

test('kubectl auth whoami: lab-dev, the admin in system:masters, and a service account (SelfSubjectReview)', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const dev = await kubectl(['auth', 'whoami'], { context: 'dev' });
  t.is(dev.code, 0, dev.stderr);
  t.regex(dev.stdout, /^Username\s+lab-dev$/m);
  t.regex(dev.stdout, /^Groups\s+\[system:authenticated\]$/m);
  const admin = await kubectl(['auth', 'whoami', '-o', 'json'], { context: 'admin' });
  t.like(JSON.parse(admin.stdout), { kind: 'SelfSubjectReview', apiVersion: 'authentication.k8s.io/v1', status: { userInfo: { username: 'lab-admin', groups: ['system:masters', 'system:authenticated'] } } });
  const ns = await namespace(t);
  const sa = await serviceAccountKubeconfig(ns, 'who', { adminKubeConfig: kc() });
  t.teardown(sa.cleanup);
  const me = await kubectl(['auth', 'whoami'], { kubeconfig: sa.kubeconfig });
  t.regex(me.stdout, new RegExp(`^Username\\s+system:serviceaccount:${ns}:who$`, 'm'));
  t.regex(me.stdout, new RegExp(`^Groups\\s+\\[system:serviceaccounts system:serviceaccounts:${ns} system:authenticated\\]$`, 'm'));
});

test('lab-dev has no rights but discovery and self-review until a binding gives it some', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  t.is(await canI(['list', 'pods', '-n', ns], { context: 'dev' }), 'no');
  t.is(await canI(['create', 'selfsubjectaccessreviews.authorization.k8s.io'], { context: 'dev' }), 'yes');
  t.is(await canI(['get', '/api'], { context: 'dev' }), 'yes');
  t.is(await canI(['get', '/logs'], { context: 'dev' }), 'no');
  const get = await kubectl(['get', 'pods', '-n', ns], { context: 'dev' });
  t.is(get.code, 1);
  t.is(get.stderr.trim(), `Error from server (Forbidden): pods is forbidden: User "lab-dev" cannot list resource "pods" in API group "" in the namespace "${ns}"`);
  const raw = await kubectl(['get', '--raw', '/logs'], { context: 'dev' });
  t.is(raw.stderr.trim(), 'Error from server (Forbidden): forbidden: User "lab-dev" cannot get path "/logs"');
});

test('a Role and RoleBinding made with kubectl: can-i follows subresources, resourceNames and */scale', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  const made = await kubectl(['-n', ns, 'create', 'role', 'fwd', '--verb=get,create', '--resource=pods/portforward', '--resource-name=web-0']);
  t.is(made.code, 0, made.stderr);
  // kubectl create role --resource='*/scale' puts it in the core group only; the YAML names apps
  const scaler = `apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: scaler, namespace: ${ns}}\nrules:\n- apiGroups: [apps]\n  resources: ['*/scale']\n  verbs: [patch]\n`;
  t.is((await kubectl(['apply', '-f', '-'], { input: scaler })).code, 0);
  t.is((await kubectl(['-n', ns, 'create', 'rolebinding', 'fwd', '--role=fwd', '--user=lab-dev'])).code, 0);
  t.is((await kubectl(['-n', ns, 'create', 'rolebinding', 'scaler', '--role=scaler', '--user=lab-dev'])).code, 0);
  const dev = { context: 'dev' as const };
  t.is(await canI(['create', 'pods/web-0', '--subresource=portforward', '-n', ns], dev), 'yes');
  t.is(await canI(['get', 'pods/web-0', '--subresource=portforward', '-n', ns], dev), 'yes');
  t.is(await canI(['create', 'pods/web-1', '--subresource=portforward', '-n', ns], dev), 'no', 'another pod name');
  t.is(await canI(['get', 'pods/web-0', '-n', ns], dev), 'no', 'the pod itself is not granted');
  t.is(await canI(['patch', 'deployments.apps', '--subresource=scale', '-n', ns], dev), 'yes');
  t.is(await canI(['patch', 'replicasets.apps', '--subresource=scale', '-n', ns], dev), 'yes');
  t.is(await canI(['patch', 'deployments.apps', '-n', ns], dev), 'no');
  t.is(await canI(['patch', 'deployments.apps', '--subresource=scale', '-n', 'default'], dev), 'no', 'a RoleBinding grants only its namespace');
  const list = await kubectl(['auth', 'can-i', '--list', '-n', ns], dev);
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, /^pods\/portforward\s+\[\]\s+\[web-0\]\s+\[get create\]$/m);
  t.regex(list.stdout, /^\*\.apps\/scale\s+\[\]\s+\[\]\s+\[patch\]$/m);
  t.regex(list.stdout, /^selfsubjectreviews\.authentication\.k8s\.io\s+\[\]\s+\[\]\s+\[create\]$/m);
  t.regex(list.stdout, /^\s+\[\/api\/\*\]\s+\[\]\s+\[get\]$/m);
});

test('SelfSubjectAccessReview gives the real reasons: ClusterRoleBinding to Group, RoleBinding to User, to ServiceAccount', async (t) => {
  const ns = await namespace(t);
  const review = async (k: KubeConfig, resourceAttributes: Record<string, string>): Promise<{ allowed: boolean; reason?: string }> => {
    const r = await k.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({ body: { spec: { resourceAttributes } } });
    return { allowed: r.status?.allowed ?? false, reason: r.status?.reason };
  };
  t.deepEqual(await review(kc('admin'), { verb: 'delete', resource: 'nodes' }), {
    allowed: true,
    reason: 'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters"',
  });
  t.deepEqual(await review(kc('readonly'), { verb: 'list', resource: 'pods', namespace: ns }), {
    allowed: true,
    reason: 'RBAC: allowed by ClusterRoleBinding "lab-readonly-view" of ClusterRole "view" to User "lab-readonly"',
  });
  t.deepEqual(await review(kc('dev'), { verb: 'list', resource: 'pods', namespace: ns }), { allowed: false, reason: undefined });

  const sa = await serviceAccountKubeconfig(ns, 'reader', {
    adminKubeConfig: kc(),
    roles: [`apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: cm-reader\nrules:\n- apiGroups: [""]\n  resources: [configmaps]\n  verbs: [get, list]\n`],
  });
  t.teardown(sa.cleanup);
  const saKc = new KubeConfig();
  saKc.loadFromFile(sa.kubeconfig);
  t.deepEqual(await review(saKc, { verb: 'list', resource: 'configmaps', namespace: ns }), {
    allowed: true,
    reason: `RBAC: allowed by RoleBinding "cm-reader-reader/${ns}" of Role "cm-reader" to ServiceAccount "reader/${ns}"`,
  });
  t.false((await review(saKc, { verb: 'list', resource: 'configmaps', namespace: 'default' })).allowed);

  // a Group subject: every service account of the namespace, through system:serviceaccounts:NS
  const group = await request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, apiLab!.tokens.admin, {
    metadata: { name: 'all-sas' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'view' },
    subjects: [{ kind: 'Group', name: `system:serviceaccounts:${ns}` }],
  });
  t.is(group.status, 201, group.text);
  t.deepEqual(await review(saKc, { verb: 'list', resource: 'services', namespace: ns }), {
    allowed: true,
    reason: `RBAC: allowed by RoleBinding "all-sas/${ns}" of ClusterRole "view" to Group "system:serviceaccounts:${ns}"`,
  });

  // non-resource attributes
  const nr = await kc('dev').makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({ body: { spec: { nonResourceAttributes: { verb: 'get', path: '/openapi/v3' } } } });
  t.is(nr.status?.reason, 'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" to Group "system:authenticated"');
});

test('a binding whose role does not exist: denied, with RBAC\'s resolution error in the 403', async (t) => {
  const ns = await namespace(t);
  const b = await request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, apiLab!.tokens.admin, {
    metadata: { name: 'dangling' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'gone' },
    subjects: [{ kind: 'User', name: 'lab-dev' }],
  });
  t.is(b.status, 201, b.text);
  const r = await request('GET', `/api/v1/namespaces/${ns}/configmaps`, apiLab!.tokens.dev);
  t.is(r.status, 403);
  t.is(r.json.message, `configmaps is forbidden: User "lab-dev" cannot list resource "configmaps" in API group "" in the namespace "${ns}": RBAC: role.rbac.authorization.k8s.io "gone" not found`);
});

test('client-node as the bound user: a Role made with kubectl allows reads, and the rest is 403 with the real message', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  t.is((await kubectl(['-n', ns, 'create', 'configmap', 'seen', '--from-literal=a=b'])).code, 0);
  const yaml = [
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: Role',
    `metadata: {name: cm-read, namespace: ${ns}}`,
    'rules:',
    '- apiGroups: [""]',
    '  resources: [configmaps]',
    '  verbs: [get, list, watch]',
    '---',
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: RoleBinding',
    `metadata: {name: cm-read, namespace: ${ns}}`,
    'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-read}',
    'subjects:',
    '- {kind: User, name: lab-dev, apiGroup: rbac.authorization.k8s.io}',
    '',
  ].join('\n');
  const applied = await kubectl(['apply', '-f', '-'], { input: yaml });
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /role\.rbac\.authorization\.k8s\.io\/cm-read created/);
  t.regex(applied.stdout, /rolebinding\.rbac\.authorization\.k8s\.io\/cm-read created/);
  const got = await kubectl(['get', 'rolebinding', 'cm-read', '-n', ns]);
  t.regex(got.stdout, /^cm-read\s+Role\/cm-read\s+\d+s$/m);

  const core = kc('dev').makeApiClient(CoreV1Api);
  t.is((await core.readNamespacedConfigMap({ namespace: ns, name: 'seen' })).data?.a, 'b');
  t.true((await core.listNamespacedConfigMap({ namespace: ns })).items.some((c) => c.metadata?.name === 'seen'));
  const err = await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'nope' } } }).then(
    () => undefined,
    (e: unknown) => e as { code?: number; body?: string },
  );
  t.is(err?.code, 403);
  const status = JSON.parse(err?.body ?? '{}') as JsonObject;
  t.like(status, {
    kind: 'Status',
    status: 'Failure',
    reason: 'Forbidden',
    code: 403,
    details: { kind: 'configmaps' },
    message: `configmaps is forbidden: User "lab-dev" cannot create resource "configmaps" in API group "" in the namespace "${ns}"`,
  });
  const secrets = await core.listNamespacedSecret({ namespace: ns }).then(() => 200, (e: { code?: number }) => e.code);
  t.is(secrets, 403);

  const deleted = await kubectl(['delete', 'rolebinding', 'cm-read', '-n', ns]);
  t.is(deleted.code, 0, deleted.stderr);
  const after = await core.listNamespacedConfigMap({ namespace: ns }).then(() => 200, (e: { code?: number }) => e.code);
  t.is(after, 403, 'deleting the binding takes the right away at once');
});

test('view (lab-readonly) reads pods, configmaps and deployments but not secrets, and writes nothing', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  const ro = { context: 'readonly' as const };
  t.is(await canI(['list', 'pods', '-n', ns], ro), 'yes');
  t.is(await canI(['get', 'configmaps', '-n', ns], ro), 'yes');
  t.is(await canI(['watch', 'deployments.apps', '-n', ns], ro), 'yes');
  t.is(await canI(['get', 'pods', '--subresource=log', '-n', ns], ro), 'yes');
  t.is(await canI(['get', 'secrets', '-n', ns], ro), 'no');
  t.is(await canI(['list', 'nodes'], ro), 'no', 'view has no cluster-scoped resources but namespaces');
  t.is(await canI(['create', 'pods/portforward', '-n', ns], ro), 'no');
  t.is(await canI(['delete', 'configmaps', '-n', ns], ro), 'no');
  const r = await kubectl(['get', 'secrets', '-n', ns], ro);
  t.is(r.stderr.trim(), `Error from server (Forbidden): secrets is forbidden: User "lab-readonly" cannot list resource "secrets" in API group "" in the namespace "${ns}"`);
});

test('escalation: lab-dev with admin in a namespace may grant what it holds, not more; system:masters may', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  t.is((await kubectl(['-n', ns, 'create', 'rolebinding', 'dev-admin', '--clusterrole=admin', '--user=lab-dev'])).code, 0);
  const role = (name: string, resources: string, verbs: string): string =>
    `apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: ${name}, namespace: ${ns}}\nrules:\n- apiGroups: [""]\n  resources: [${resources}]\n  verbs: [${verbs}]\n`;
  const ok = await kubectl(['create', '-f', '-'], { context: 'dev', input: role('held', 'secrets, pods/portforward', 'get, create') });
  t.is(ok.code, 0, ok.stderr);
  const esc = await kubectl(['create', '-f', '-'], { context: 'dev', input: role('more', 'nodes, secrets', 'get, list, escalate') });
  t.is(esc.code, 1);
  t.is(
    esc.stderr.trim(),
    `Error from server (Forbidden): error when creating "STDIN": roles.rbac.authorization.k8s.io "more" is forbidden: user "lab-dev" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n` +
      '{APIGroups:[""], Resources:["nodes"], Verbs:["get" "list" "escalate"]}\n' +
      '{APIGroups:[""], Resources:["secrets"], Verbs:["escalate"]}',
  );
  const bind = await kubectl(['-n', ns, 'create', 'rolebinding', 'grab', '--clusterrole=cluster-admin', '--user=lab-dev'], { context: 'dev' });
  t.is(bind.code, 1);
  t.is(
    bind.stderr.trim(),
    `error: failed to create rolebinding: rolebindings.rbac.authorization.k8s.io "grab" is forbidden: user "lab-dev" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n` +
      '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n{NonResourceURLs:["*"], Verbs:["*"]}',
  );
  t.is((await kubectl(['-n', ns, 'create', 'rolebinding', 'share-view', '--clusterrole=view', '--user=someone'], { context: 'dev' })).code, 0, 'view is within admin');
  t.is((await kubectl(['get', 'role', 'more', '-n', ns])).code, 1, 'nothing was left behind');

  // the `bind` verb on one role lets lab-dev bind it without holding it; `escalate` on roles lets it write any Role
  const grants = `apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: delegate, namespace: ${ns}}\nrules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n  verbs: [bind]\n  resourceNames: [cluster-admin]\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles]\n  verbs: [escalate]\n`;
  t.is((await kubectl(['apply', '-f', '-'], { input: grants })).code, 0);
  t.is((await kubectl(['-n', ns, 'create', 'rolebinding', 'delegate', '--role=delegate', '--user=lab-dev'])).code, 0);
  const bound = await kubectl(['-n', ns, 'create', 'rolebinding', 'grab', '--clusterrole=cluster-admin', '--user=lab-dev'], { context: 'dev' });
  t.is(bound.code, 0, bound.stderr);
  t.is(await canI(['delete', 'nodes'], { context: 'dev' }), 'no', 'a RoleBinding of cluster-admin still grants only its namespace');
  t.is(await canI(['delete', 'pods', '-n', ns], { context: 'dev' }), 'yes');

  const adminMade = await kubectl(['create', '-f', '-'], { input: role('admin-made', 'nodes', 'get') });
  t.is(adminMade.code, 0, 'system:masters may grant anything');
});

test('validation: the real 422s for rules, roleRef, subjects, and roleRef cannot change', async (t) => {
  const ns = await namespace(t);
  const admin = apiLab!.tokens.admin;
  const role = await request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`, admin, {
    metadata: { name: 'bad' },
    rules: [{ apiGroups: [''], resources: ['pods'], verbs: [] }, { nonResourceURLs: ['/healthz'], verbs: ['get'] }, { verbs: ['get'] }],
  });
  t.is(role.status, 422);
  t.is(
    role.json.message,
    'Role.rbac.authorization.k8s.io "bad" is invalid: [rules[0].verbs: Required value: verbs must contain at least one value, ' +
      'rules[1].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs, ' +
      'rules[2].apiGroups: Required value: resource rules must supply at least one api group, ' +
      'rules[2].resources: Required value: resource rules must supply at least one resource]',
  );
  const cr = await request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', admin, { metadata: { name: uniq('nr') }, rules: [{ nonResourceURLs: ['/healthz'], verbs: ['get'], resources: ['pods'] }] });
  t.is(cr.status, 422);
  t.regex(String(cr.json.message), /rules\[0\]\.nonResourceURLs: Invalid value: \[\]string\{"\/healthz"\}: rules cannot apply to both regular resources and non-resource URLs$/);
  const binding = await request('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', admin, {
    metadata: { name: 'bad' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Robot', name: 'view' },
    subjects: [{ kind: 'ServiceAccount', name: 'x' }, { kind: 'Team', name: 'y' }, { kind: 'User', name: 'z', apiGroup: 'example.com' }],
  });
  t.is(binding.status, 422);
  t.is(
    binding.json.message,
    'ClusterRoleBinding.rbac.authorization.k8s.io "bad" is invalid: [roleRef.kind: Unsupported value: "Robot": supported values: "Role", "ClusterRole", ' +
      'subjects[0].namespace: Required value, subjects[1].kind: Unsupported value: "Team": supported values: "ServiceAccount", "User", "Group", ' +
      'subjects[2].apiGroup: Unsupported value: "example.com": supported values: "rbac.authorization.k8s.io"]',
  );
  const rb = await request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, admin, {
    metadata: { name: 'fixed' },
    roleRef: { kind: 'ClusterRole', name: 'view' },
    subjects: [{ kind: 'User', name: 'u' }],
  });
  t.is(rb.status, 201, rb.text);
  t.like(rb.json, { roleRef: { apiGroup: 'rbac.authorization.k8s.io' }, subjects: [{ apiGroup: 'rbac.authorization.k8s.io' }] }, 'defaults as on decode');
  const put = await request('PUT', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings/fixed`, admin, { ...rb.json, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' } });
  t.is(put.status, 422);
  t.is(put.json.message, 'RoleBinding.rbac.authorization.k8s.io "fixed" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"edit"}: cannot change roleRef');
});

test.serial('kubectl create token: the token authenticates as the service account, then 401 once expired or once the account is gone', async (t) => {
  if (!(await hasKubectl(t))) return t.pass();
  const ns = await namespace(t);
  t.is((await kubectl(['-n', ns, 'create', 'serviceaccount', 'bot'])).code, 0);
  const short = await kubectl(['-n', ns, 'create', 'token', 'bot', '--duration=5m']);
  t.is(short.code, 1);
  t.is(short.stderr.trim(), 'error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes');
  const made = await kubectl(['-n', ns, 'create', 'token', 'bot', '--duration=10m']);
  t.is(made.code, 0, made.stderr);
  const token = made.stdout.trim();
  const who = await request('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', token, { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });
  t.is(who.status, 201, who.text);
  t.like(who.json, { status: { userInfo: { username: `system:serviceaccount:${ns}:bot`, groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'] } } });
  t.is((await request('GET', `/api/v1/namespaces/${ns}/pods`, token)).status, 403, 'a fresh service account may do nothing');
  const unauthorized = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 };

  // the lab's clock moves past the expiry (set back afterwards, also on failure)
  t.teardown(() => request('PUT', '/lab/v1/clock', apiLab!.tokens.admin, { skewSeconds: 0 }).then(() => undefined));
  t.is((await request('PUT', '/lab/v1/clock', apiLab!.tokens.admin, { skewSeconds: 9 * 60 })).status, 200);
  t.is((await request('GET', '/api', token)).status, 200, 'still valid after 9 minutes');
  t.is((await request('PUT', '/lab/v1/clock', apiLab!.tokens.dev, { skewSeconds: 3600 })).status, 403, 'only system:masters moves the clock');
  await request('PUT', '/lab/v1/clock', apiLab!.tokens.admin, { skewSeconds: 10 * 60 + 1 });
  const expired = await request('GET', '/api', token);
  t.is(expired.status, 401);
  t.deepEqual(expired.json, unauthorized);
  await request('PUT', '/lab/v1/clock', apiLab!.tokens.admin, { skewSeconds: 0 });

  const again = (await kubectl(['-n', ns, 'create', 'token', 'bot'])).stdout.trim();
  t.is((await request('GET', '/api', again)).status, 200);
  t.is((await kubectl(['-n', ns, 'delete', 'serviceaccount', 'bot'])).code, 0);
  const gone = await request('GET', '/api', again);
  t.is(gone.status, 401, 'a token of a deleted service account no longer authenticates');
  t.deepEqual(gone.json, unauthorized);
  t.is((await kubectl(['-n', ns, 'create', 'serviceaccount', 'bot'])).code, 0);
  t.is((await request('GET', '/api', again)).status, 401, 'nor after a new account of the same name (another uid)');
  const wrongAudience = (await kubectl(['-n', ns, 'create', 'token', 'bot', '--audience=https://vault.example'])).stdout.trim();
  t.is((await request('GET', '/api', wrongAudience)).status, 401, 'a token for another audience is not for the API server');
});

test('anonymous: health and version only (system:public-info-viewer); a bad token is 401 everywhere', async (t) => {
  t.is((await request('GET', '/healthz', undefined)).status, 200);
  t.is((await request('GET', '/version', undefined)).status, 200);
  t.is((await request('GET', '/api', undefined)).status, 401);
  t.is((await request('GET', '/healthz', 'not-a-token')).status, 401);
});

test('the authorization audit: every decision of a user in order, denials included; admin only; DELETE empties it', async (t) => {
  const ns = await namespace(t);
  const sa = await serviceAccountKubeconfig(ns, 'audited', { adminKubeConfig: kc() });
  t.teardown(sa.cleanup);
  const admin = apiLab!.tokens.admin;
  const q = `/lab/v1/audit?user=${encodeURIComponent(sa.user)}`;
  t.is((await request('DELETE', q, admin)).status, 200);
  await request('GET', '/api', sa.token);
  await request('GET', `/api/v1/namespaces/${ns}/pods/web-0`, sa.token);
  await request('GET', `/api/v1/namespaces/${ns}/configmaps?watch=true&fieldSelector=metadata.name%3Dx&timeoutSeconds=1`, sa.token);
  const log = await request('GET', q, admin);
  t.is(log.status, 200);
  t.deepEqual(log.json.items, [
    { verb: 'get', apiGroup: '', resource: '', subresource: '', namespace: '', name: '', path: '/api', allowed: true },
    { verb: 'get', apiGroup: '', resource: 'pods', subresource: '', namespace: ns, name: 'web-0', path: `/api/v1/namespaces/${ns}/pods/web-0`, allowed: false },
    { verb: 'watch', apiGroup: '', resource: 'configmaps', subresource: '', namespace: ns, name: 'x', path: `/api/v1/namespaces/${ns}/configmaps`, allowed: false },
  ]);
  t.is((await request('GET', q, apiLab!.tokens.dev)).status, 403);
  t.is((await request('GET', '/lab/v1/audit', admin)).status, 400);
  t.is((await request('DELETE', q, admin)).status, 200);
  t.deepEqual((await request('GET', q, admin)).json.items, []);
});
