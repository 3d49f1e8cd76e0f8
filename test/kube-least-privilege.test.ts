/**
 * deploy/rbac proven on the lab's RBAC: a service account bound only to deploy/rbac's Role (in the
 * test's namespace) and ClusterRole runs every command and every mode of each; for each rule of the
 * Role, a user without that rule gets `check` naming what is missing, and the command that needs it
 * fails with the same sentence and leaves nothing behind; users that hold only `get`, or only
 * `create`, on pods/portforward hear the same story from check and connect. The lab's audit of the
 * user's requests shows that nothing but the reads deploy/rbac leaves out on purpose was refused.
 *
 * Every ktctl here runs with KTCTL_PERMISSIONS=strict (test/run.ts), so a request outside the
 * command's table would fail the command.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, RbacAuthorizationV1Api, loadAllYaml, type V1ClusterRole, type V1PolicyRule, type V1Role } from '@kubernetes/client-node';
import { closeServer, deployWeb, ktctlObjects, labKtctl, laptopServer, webLeftovers, type KtctlResult } from './helpers/ktctl.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';
import { fileNamespace, kubeConfig } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { request } from './lab/api/client.js';

const ns = fileNamespace(test, 'kt-lp');
const ktctl = labKtctl(test, 'kt-lp');
const dir = mkdtempSync(join(tmpdir(), 'kt-lp-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const rbac = (): RbacAuthorizationV1Api => kubeConfig().makeApiClient(RbacAuthorizationV1Api);
const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);

function deployRbac(): { role: V1Role; cluster: V1ClusterRole } {
  const role = loadAllYaml(readFileSync(join(REPO, 'deploy/rbac/role.yaml'), 'utf8'))[0] as V1Role;
  const cluster = loadAllYaml(readFileSync(join(REPO, 'deploy/rbac/clusterrole.yaml'), 'utf8'))[0] as V1ClusterRole;
  return { role, cluster };
}

interface User {
  name: string;
  /** the user name RBAC and the audit know */
  username: string;
  kubeconfig: string;
}

/**
 * A ServiceAccount bound to a Role with `roleRules` in the test's namespace and a ClusterRole with
 * `clusterRules`, and a kubeconfig with a token for it (TokenRequest, as `kubectl create token`).
 */
async function boundUser(t: ExecutionContext, name: string, roleRules: V1PolicyRule[], clusterRules: V1PolicyRule[]): Promise<User> {
  const username = `system:serviceaccount:${ns}:${name}`;
  const subject = { kind: 'ServiceAccount', name, namespace: ns };
  await core().createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
  await rbac().createNamespacedRole({ namespace: ns, body: { metadata: { name }, rules: roleRules } });
  await rbac().createNamespacedRoleBinding({ namespace: ns, body: { metadata: { name }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name }, subjects: [subject] } });
  if (clusterRules.length > 0) {
    const cname = `${ns}-${name}`;
    t.teardown(async () => {
      await rbac().deleteClusterRoleBinding({ name: cname }).catch(() => undefined);
      await rbac().deleteClusterRole({ name: cname }).catch(() => undefined);
    });
    await rbac().createClusterRole({ body: { metadata: { name: cname }, rules: clusterRules } });
    await rbac().createClusterRoleBinding({ body: { metadata: { name: cname }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: cname }, subjects: [subject] } });
  }
  const tr = await core().createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
  const token = tr.status?.token;
  if (!token) throw new Error(`no token for ${username}`);
  const cluster = kubeConfig().getCurrentCluster()!;
  const kubeconfig = join(dir, `${name}.kubeconfig`);
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: lab',
      '  cluster:',
      `    server: ${cluster.server}`,
      `    certificate-authority-data: ${cluster.caData}`,
      'users:',
      `- name: ${name}`,
      '  user:',
      `    token: ${token}`,
      'contexts:',
      `- name: ${name}`,
      '  context:',
      '    cluster: lab',
      `    user: ${name}`,
      `    namespace: ${ns}`,
      `current-context: ${name}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return { name, username, kubeconfig };
}

interface AuditEntry {
  verb: string;
  apiGroup: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  allowed: boolean;
}

/** The lab's record of every authorization decision for `username` (admin only). */
async function audit(username: string): Promise<AuditEntry[]> {
  const kc = kubeConfig();
  const cluster = kc.getCurrentCluster()!;
  const ep = { server: cluster.server, ca: Buffer.from(cluster.caData!, 'base64'), token: kc.getCurrentUser()!.token! };
  const r = await request(ep, 'GET', `/lab/v1/audit?user=${encodeURIComponent(username)}`);
  if (r.status !== 200) throw new Error(`audit: ${r.status} ${JSON.stringify(r.body)}`);
  return (r.body as { items: AuditEntry[] }).items;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

interface CheckDoc {
  ok: boolean;
  missing: Array<{ verb: string; group: string; resource: string; scope: unknown; level: string; sentence: string; requiredBy: string[]; optionalFor: string[] }>;
  commands: Array<{ profile: string; ok: boolean }>;
}

async function check(user: User, command?: string): Promise<{ doc: CheckDoc; result: KtctlResult }> {
  const result = await ktctl.run(['check', ...(command ? [command] : []), '--json', '--kubeconfig', user.kubeconfig]);
  return { doc: JSON.parse(result.stdout) as CheckDoc, result };
}

const errorLine = (stderr: string): string => stderr.split('\n').find((l) => l.startsWith('ktctl: ')) ?? stderr;

test.before(() => deployWeb(ns, 2));

test.serial('a user bound only to deploy/rbac runs every command and every mode', async (t) => {
  const { role, cluster } = deployRbac();
  const user = await boundUser(t, 'lp-all', role.rules ?? [], cluster.rules ?? []);
  const k = ['--kubeconfig', user.kubeconfig];

  // check: nothing a command needs is missing; only what deploy/rbac leaves out on purpose
  const { doc, result } = await check(user);
  t.is(result.code, 0, result.stdout + result.stderr);
  t.true(doc.commands.every((c) => c.ok), JSON.stringify(doc.commands.filter((c) => !c.ok)));
  for (const m of doc.missing) {
    t.is(m.level, 'warn', m.sentence);
    t.deepEqual(m.scope, 'cluster', m.sentence);
    t.true(['secrets', 'configmaps', 'deployments'].includes(m.resource), m.sentence);
  }

  // connect --mode socks (and --shareShadow): the proxy reaches web
  for (const extra of [[], ['--shareShadow']]) {
    const proxyPort = await freePort();
    const c = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', String(proxyPort), ...extra, ...k]);
    await c.waitFor(/ALL_PROXY=/, 60_000);
    const r = await run('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://web.${ns}/socks`]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /"pod":"web-/);
    await c.stop(t);
  }

  // connect in TUN mode, each DNS mode, from a laptop namespace
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const laptop = `kt-lp-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  for (const dnsMode of ['localDNS', 'hosts', 'podDNS']) {
    const c = ktctl.start(t, ['connect', '--dnsMode', dnsMode, ...k], { netns: laptop });
    await c.waitFor(/press Ctrl-C to disconnect/, 60_000);
    const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '10', `http://web.${ns}.svc.cluster.local/tun`]);
    t.is(r.code, 0, `${dnsMode}: ${r.stderr}`);
    t.regex(r.stdout, /"pod":"web-/, dnsMode);
    await c.stop(t);
    t.notRegex(c.log(), /ktctl bug|RBAC does not allow/, dnsMode);
  }

  // exchange (both modes), mesh (both modes), preview, forward
  const { server, port } = await laptopServer();
  t.teardown(() => closeServer(server));
  const serving: Array<[string[], RegExp]> = [
    [['exchange', 'web', '--expose', `${port}:80`], /exchanged service \S+ port 80/],
    [['exchange', 'web', '--expose', `${port}:80`, '--mode', 'scale'], /exchanged service \S+ port 80/],
    [['mesh', 'web', '--expose', `${port}:80`, '--versionMark', 'VERSION:lp'], /meshed service .*web port 80/],
    [['mesh', 'web', '--expose', `${port}:80`, '--mode', 'manual', '--versionMark', 'version:lp'], /meshed service .*web port 80 \(--mode manual\)/],
    [['preview', 'lp-preview', '--expose', `${port}:80`], /previewing service \S+\/lp-preview port 80/],
    [['forward', 'web', '0:80'], /^forwarding 127\.0\.0\.1:\d+ -> /m],
  ];
  for (const [args, ready] of serving) {
    const c = ktctl.start(t, [...args, ...k]);
    await c.waitFor(ready, 90_000);
    await c.stop(t);
    t.notRegex(c.log(), /ktctl bug/, args.join(' '));
  }

  // the one-shot commands
  for (const args of [['recover', 'web'], ['clean'], ['status'], ['status', '--json'], ['birdseye'], ['birdseye', '-A', '--json', '--showConnector']]) {
    const r = await ktctl.run([...args, ...k]);
    t.is(r.code, 0, `${args.join(' ')}: ${r.log}`);
  }
  t.deepEqual(await webLeftovers(ns, 2), []);

  // birdseye with deploy/rbac: every row, and across namespaces a note for each kind the ClusterRole leaves out
  const birds = JSON.parse((await ktctl.run(['birdseye', '-A', '--json', ...k])).stdout) as { rows: Array<{ namespace: string; name: string }>; missing: string[] };
  t.true(birds.rows.some((r) => r.namespace === ns && r.name === 'web'));
  t.deepEqual(birds.missing.map((m) => /^you may not list (\S+) at cluster scope/.exec(m)?.[1]).sort(), ['configmaps', 'deployments.apps', 'secrets']);

  // the lab refused nothing but the cluster-wide lists clean, status and birdseye -A try before their namespace's
  const refused = (await audit(user.username)).filter((e) => !e.allowed);
  for (const e of refused) {
    t.true(e.verb === 'list' && !e.namespace && ['secrets', 'configmaps', 'deployments'].includes(e.resource), `refused: ${JSON.stringify(e)}`);
  }
});

/** A command of each profile that fails at its preflight (so no laptop server or TUN is needed). */
function argsOf(profile: string, port: number): string[] | undefined {
  const expose = ['--expose', `${port}:80`, '--skipPortChecking'];
  const table: Record<string, string[]> = {
    'connect --mode socks': ['connect', '--mode', 'socks', '--proxyPort', String(port)],
    'exchange --mode selector': ['exchange', 'web', ...expose],
    'exchange --mode scale': ['exchange', 'web', '--mode', 'scale', ...expose],
    'mesh --mode auto': ['mesh', 'web', '--versionMark', 'VERSION:lp', ...expose],
    'mesh --mode manual': ['mesh', 'web', '--mode', 'manual', '--versionMark', 'version:lp', ...expose],
    preview: ['preview', 'lp-preview', ...expose],
    forward: ['forward', 'web', `${port}:80`],
    recover: ['recover', 'web'],
    clean: ['clean'],
  };
  return table[profile];
}

test.serial('each rule of the Role removed: check names it, the command that needs it fails with the same sentence and leaves nothing', async (t) => {
  const { role, cluster } = deployRbac();
  const rules = role.rules ?? [];
  t.true(rules.length >= 8);
  for (const [i, rule] of rules.entries()) {
    const resource = rule.resources![0]!;
    const group = rule.apiGroups![0]!;
    const user = await boundUser(t, `lp-r${i}`, rules.filter((_, j) => j !== i), cluster.rules ?? []);
    const { doc } = await check(user);
    const named = doc.missing.filter((m) => m.resource === resource && m.group === group && m.scope === 'namespace');
    // check names every verb of the rule that the ClusterRole does not grant in every namespace anyway
    const everywhere = (v: string): boolean => (cluster.rules ?? []).some((c) => !c.resourceNames && c.apiGroups?.includes(group) && c.resources?.includes(resource) && c.verbs.includes(v));
    t.deepEqual(named.map((m) => m.verb).sort(), rule.verbs.filter((v) => !everywhere(v)).sort(), `${resource}: ${JSON.stringify(doc.missing.map((m) => m.sentence))}`);
    const required = named.filter((m) => m.level === 'fail' || m.requiredBy.length > 0);
    if (required.length === 0) {
      // a rule only some part of a command needs (pods/log, namespaces): warned about, nothing fails
      t.true(named.every((m) => m.level === 'warn' && m.optionalFor.length > 0), resource);
      continue;
    }
    const sentences = new Set(required.map((m) => `ktctl: ${m.sentence}`));
    const profile = [...new Set(required.flatMap((m) => m.requiredBy))].find((p) => argsOf(p, 1) !== undefined);
    t.truthy(profile, `${resource}: no command to run for ${JSON.stringify(required.map((m) => m.requiredBy))}`);
    const args = argsOf(profile!, await freePort())!;
    const r = await ktctl.run([...args, '--kubeconfig', user.kubeconfig]);
    t.is(r.code, 1, `${resource}: ${args.join(' ')}: ${r.log}`);
    t.true(sentences.has(errorLine(r.stderr)), `${resource}: ${args.join(' ')} said\n${errorLine(r.stderr)}\ncheck said\n${[...sentences].join('\n')}`);
    // the same command's own check fails too
    const own = await check(user, args[0]);
    t.is(own.result.code, 1, `${resource}: check ${args[0]}`);
    t.deepEqual(await ktctlObjects(ns), [], resource);
    t.deepEqual(await webLeftovers(ns, 2), [], resource);
  }
});

for (const only of ['get', 'create'] as const) {
  test.serial(`pods/portforward with only ${only}: check and connect tell the same story`, async (t) => {
    const { role, cluster } = deployRbac();
    const rules = (role.rules ?? []).map((r) => (r.resources?.[0] === 'pods/portforward' ? { ...r, verbs: [only] } : r));
    const user = await boundUser(t, `lp-pf-${only}`, rules, cluster.rules ?? []);
    const lacking = only === 'get' ? 'create' : 'get';
    const { doc, result } = await check(user, 'connect');
    t.is(result.code, 1);
    const named = doc.missing.filter((m) => m.resource === 'pods/portforward');
    t.deepEqual(named.map((m) => m.verb), [lacking]);
    t.regex(named[0]!.sentence, new RegExp(`^you may not ${lacking} pods/portforward in namespace ${ns} \\(RBAC\\): deploy/rbac/role\\.yaml line \\d+ grants it`));
    const r = await ktctl.run(['connect', '--mode', 'socks', '--proxyPort', String(await freePort()), '--kubeconfig', user.kubeconfig]);
    t.is(r.code, 1, r.log);
    t.is(errorLine(r.stderr), `ktctl: ${named[0]!.sentence}`);
    t.deepEqual(await ktctlObjects(ns), []);
  });
}
