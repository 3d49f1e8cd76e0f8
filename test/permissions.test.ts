/**
 * The permission table (src/kube/permissions.ts) and what is rendered from it: deploy/rbac is what
 * the table renders, every rule line a sentence names is the rule for that resource, and requests
 * map to RBAC attributes as kube-apiserver maps them (requestinfo.go). No cluster here: the lab
 * proof (a user bound to deploy/rbac runs every command; each rule removed fails check and the
 * command) is test/kube-least-privilege.test.ts.
 */
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHECKED_PROFILES, COMMANDS, allows, needsOf, profileLabel } from '../src/kube/permissions.js';
import { renderRbac, snippetFor, whereGranted } from '../src/kube/rbac-yaml.js';
import { requestAttributes } from '../src/kube/requests.js';
import { forbiddenSentence } from '../src/kube/errors.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));

test('deploy/rbac is what the table renders (npm run rbac writes it)', (t) => {
  for (const [file, text] of Object.entries(renderRbac().files)) {
    t.is(fs.readFileSync(path.join(REPO, file), 'utf8'), text, `${file} is stale: run npm run rbac`);
  }
});

test('every permission a command cannot work without is granted by a rule of deploy/rbac, at the line the sentence names', (t) => {
  const files = renderRbac().files;
  for (const profile of CHECKED_PROFILES) {
    for (const n of needsOf(profile)) {
      const at = whereGranted(n);
      if (n.lost === undefined) {
        t.truthy(at && 'line' in at, `${profileLabel(profile)}: ${n.verb} ${n.resource} has no rule`);
      }
      if (!at || !('line' in at)) continue;
      const lines = files[at.file]!.split('\n');
      t.is(lines[at.line - 1], `  - apiGroups: ["${n.group}"]`, `${at.file}:${at.line}`);
      t.is(lines[at.line], `    resources: ["${n.resource}"]`, `${at.file}:${at.line + 1}`);
      const verbs = lines.slice(at.line, at.line + 3).find((l) => l.startsWith('    verbs:')) ?? '';
      t.true(verbs.includes(`"${n.verb}"`), `${at.file}:${at.line} lacks ${n.verb}`);
    }
  }
});

test('the table covers every command, and a command lists each permission once', (t) => {
  t.deepEqual([...new Set(CHECKED_PROFILES.map((p) => p.command))].sort(), [...COMMANDS].sort());
  for (const profile of CHECKED_PROFILES) {
    const keys = needsOf(profile).map((n) => `${n.verb} ${n.resource} ${JSON.stringify(n.scope)} ${n.names ?? ''}`);
    t.is(new Set(keys).size, keys.length, profileLabel(profile));
  }
  // what the modes add
  const has = (label: string, verb: string, resource: string): boolean =>
    needsOf(CHECKED_PROFILES.find((p) => profileLabel(p) === label)!).some((n) => n.verb === verb && n.resource === resource && n.lost === undefined);
  t.true(has('connect --mode tun --dnsMode hosts', 'watch', 'services'));
  t.false(has('connect --mode socks', 'watch', 'services'));
  t.true(has('connect --mode tun --dnsMode localDNS --shareShadow', 'get', 'secrets'));
  t.true(has('exchange --mode scale', 'patch', 'deployments/scale'));
  t.true(has('mesh --mode auto', 'create', 'services'));
  t.false(has('mesh --mode manual', 'create', 'services'));
  t.true(has('forward', 'get', 'pods/portforward'));
  t.true(has('forward', 'create', 'pods/portforward'));
});

test('requests map to RBAC attributes as kube-apiserver maps them (RequestInfoFactory.NewRequestInfo)', (t) => {
  const a = (m: string, u: string) => requestAttributes(m, u);
  t.deepEqual(a('GET', 'https://h/api/v1/namespaces/dev/pods/p1'), { verb: 'get', group: '', resource: 'pods', namespace: 'dev', name: 'p1' });
  t.deepEqual(a('GET', 'https://h/api/v1/namespaces/dev/pods'), { verb: 'list', group: '', resource: 'pods', namespace: 'dev', name: '' });
  t.deepEqual(a('GET', 'https://h/api/v1/services?watch=true&resourceVersion=5'), { verb: 'watch', group: '', resource: 'services', namespace: '', name: '' });
  t.deepEqual(a('GET', 'https://h/api/v1/watch/namespaces/dev/services'), { verb: 'watch', group: '', resource: 'services', namespace: 'dev', name: '' });
  // the namespace itself: its name is the namespace (a RoleBinding there can grant reading it)
  t.deepEqual(a('GET', 'https://h/api/v1/namespaces/dev'), { verb: 'get', group: '', resource: 'namespaces', namespace: 'dev', name: 'dev' });
  t.deepEqual(a('PUT', 'https://h/api/v1/namespaces/dev/finalize'), { verb: 'update', group: '', resource: 'namespaces/finalize', namespace: 'dev', name: 'dev' });
  t.deepEqual(a('PATCH', 'https://h/apis/apps/v1/namespaces/dev/deployments/web/scale'), { verb: 'patch', group: 'apps', resource: 'deployments/scale', namespace: 'dev', name: 'web' });
  t.deepEqual(a('GET', 'wss://h/api/v1/namespaces/dev/pods/s/portforward?ports=2222'), { verb: 'get', group: '', resource: 'pods/portforward', namespace: 'dev', name: 's' });
  t.deepEqual(a('DELETE', 'https://h/api/v1/namespaces/dev/secrets'), { verb: 'deletecollection', group: '', resource: 'secrets', namespace: 'dev', name: '' });
  t.deepEqual(a('POST', 'https://h/apis/authorization.k8s.io/v1/selfsubjectaccessreviews'), { verb: 'create', group: 'authorization.k8s.io', resource: 'selfsubjectaccessreviews', namespace: '', name: '' });
  t.is(a('GET', 'https://h/version'), undefined);
  t.is(a('GET', 'https://h/apis/apps/v1'), undefined);
});

test('a permission allows exactly its requests: verb, group, resource, scope and names', (t) => {
  const get = { verb: 'get', group: '', resource: 'services', scope: 'namespace' as const };
  const req = (o: Partial<{ verb: string; group: string; resource: string; namespace: string; name: string }>) => ({ verb: 'get', group: '', resource: 'services', namespace: 'dev', name: 'web', ...o });
  t.true(allows(get, req({}), 'dev'));
  t.false(allows(get, req({ namespace: 'other' }), 'dev'));
  t.false(allows(get, req({ namespace: '' }), 'dev'));
  t.false(allows(get, req({ verb: 'list' }), 'dev'));
  t.false(allows(get, req({ group: 'apps' }), 'dev'));
  t.true(allows({ ...get, verb: 'list', scope: 'cluster' }, req({ verb: 'list', namespace: '', name: '' }), 'dev'));
  const dns = { ...get, scope: { namespace: 'kube-system' }, names: ['kube-dns'] };
  t.true(allows(dns, req({ namespace: 'kube-system', name: 'kube-dns' }), 'dev'));
  t.false(allows(dns, req({ namespace: 'kube-system', name: 'other' }), 'dev'));
});

test('the sentence for a missing permission names verb, resource, namespace and the rule; the snippet grants only what is missing', (t) => {
  const p = { verb: 'create', group: '', resource: 'pods', scope: 'namespace' as const };
  const at = whereGranted(p);
  t.truthy(at && 'line' in at);
  t.is(
    forbiddenSentence(p, 'dev'),
    `you may not create pods in namespace dev (RBAC): deploy/rbac/role.yaml line ${(at as { line: number }).line} grants it: ask a cluster administrator to apply it in namespace dev and bind it to you (deploy/rbac/bindings.yaml), or use a context that has it`,
  );
  const nodes = { verb: 'list', group: '', resource: 'nodes', scope: 'cluster' as const };
  t.regex(forbiddenSentence(nodes, 'dev'), /^you may not list nodes at cluster scope \(RBAC\): deploy\/rbac\/clusterrole\.yaml line \d+ grants it/);
  const snippet = snippetFor([p, { ...p, verb: 'delete' }, nodes], 'dev');
  t.regex(snippet, /kind: Role\nmetadata:\n {2}name: ktctl\n {2}namespace: dev\nrules:/);
  t.regex(snippet, /resources: \["pods"\]\n {4}verbs: \["create", "delete"\]/);
  t.regex(snippet, /kind: ClusterRole[\s\S]*resources: \["nodes"\]\n {4}verbs: \["list"\]/);
  t.notRegex(snippet, /secrets/);
});

test('exchange and mesh read ConfigMaps, Secrets and pods for the environment only with --envFile/--envJson/-- command', (t) => {
  const has = (label: string, verb: string, resource: string): boolean =>
    needsOf(CHECKED_PROFILES.find((p) => profileLabel(p) === label)!).some((n) => n.verb === verb && n.resource === resource && n.lost === undefined);
  for (const base of ['exchange --mode selector', 'exchange --mode scale', 'mesh --mode auto', 'mesh --mode manual']) {
    t.true(has(`${base} --envFile`, 'get', 'secrets'), base);
    t.true(has(`${base} --envFile`, 'get', 'configmaps'), base);
    t.true(has(`${base} --envFile`, 'list', 'pods'), base);
  }
  t.false(has('exchange --mode selector', 'get', 'secrets'));
  t.false(has('mesh --mode manual', 'get', 'secrets'));
  // get nodes only for a resourceFieldRef limit the container leaves unset: optional, at cluster scope
  const nodes = needsOf({ command: 'exchange', flags: { mode: 'selector', env: true } }).find((n) => n.verb === 'get' && n.resource === 'nodes');
  t.is(nodes?.scope, 'cluster');
  t.truthy(nodes?.lost);
});
