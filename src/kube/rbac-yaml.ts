/**
 * deploy/rbac, rendered from the permission table (permissions.ts): a namespaced Role with
 * everything ktctl does in the namespace it works in, the smallest ClusterRole (why each rule is
 * there, and what is lost without it, in its comments), and example bindings. `npm run rbac`
 * writes the files; a test checks that the committed ones are what the table renders, so the
 * Role an administrator applies is the one ktctl checks for.
 *
 * The same renderer gives `check` its YAML snippet for what is missing, and error messages the
 * file and line of the rule that grants a permission.
 */
import { COMMANDS, CHECKED_PROFILES, needsOf, profileLabel, type Need, type Permission } from './permissions.js';

export const RBAC_DIR = 'deploy/rbac';
export const ROLE_FILE = `${RBAC_DIR}/role.yaml`;
export const CLUSTER_ROLE_FILE = `${RBAC_DIR}/clusterrole.yaml`;
export const BINDING_FILE = `${RBAC_DIR}/bindings.yaml`;
export const ROLE_NAME = 'ktctl';
export const CLUSTER_ROLE_NAME = 'ktctl-cluster';

/**
 * Cluster-scope reads deploy/rbac leaves out on purpose: `clean` and `status` without `-n` list
 * ktctl's objects in every namespace, which would need list on Secrets in every namespace. Who
 * cleans up after everyone can be given that separately; everyone else cleans their namespace.
 */
function leftOut(n: Need): string | undefined {
  if (n.scope !== 'cluster') return undefined;
  if (n.verb === 'list' && ['secrets', 'configmaps', 'deployments'].includes(n.resource)) {
    return 'listing Secrets, ConfigMaps and Deployments in every namespace (clean, status, birdseye and dashboard across namespaces) is more than a developer should hold';
  }
  return undefined;
}

interface Rule {
  group: string;
  resource: string;
  names?: string[];
  verbs: Map<string, Need>;
  commands: Set<string>;
}

/** Every permission of every profile, one rule per resource (and resourceNames), verbs merged. */
function rules(which: 'role' | 'clusterrole'): Rule[] {
  const out = new Map<string, Rule>();
  for (const profile of CHECKED_PROFILES) {
    for (const n of needsOf(profile)) {
      const cluster = n.scope !== 'namespace';
      if ((which === 'role') === cluster) continue;
      if (leftOut(n)) continue;
      const key = `${n.group}/${n.resource}/${n.names?.join(',') ?? ''}`;
      let r = out.get(key);
      if (!r) {
        r = { group: n.group, resource: n.resource, names: n.names, verbs: new Map(), commands: new Set() };
        out.set(key, r);
      }
      if (!r.verbs.has(n.verb) || (r.verbs.get(n.verb)!.lost !== undefined && n.lost === undefined)) r.verbs.set(n.verb, n);
      r.commands.add(profile.command);
    }
  }
  const order = (r: Rule): string => `${r.group === '' ? '0' : '1'}${r.group}/${r.resource}`;
  return [...out.values()].sort((a, b) => order(a).localeCompare(order(b)));
}

const VERB_ORDER = ['get', 'list', 'watch', 'create', 'patch', 'update', 'delete'];

function sortedVerbs(r: Rule): string[] {
  return [...r.verbs.keys()].sort((a, b) => VERB_ORDER.indexOf(a) - VERB_ORDER.indexOf(b));
}

function commandsOf(r: Rule): string {
  return COMMANDS.filter((c) => r.commands.has(c)).join(', ');
}

function renderRule(r: Rule, lines: string[], at: Map<string, number>, cluster: boolean, only?: Set<string>): void {
  const verbs = sortedVerbs(r).filter((v) => !only || only.has(v));
  if (verbs.length === 0) return;
  lines.push(`  # ${r.resource}${r.group ? `.${r.group}` : ''}${r.names ? ` ${r.names.join(', ')}` : ''} (${commandsOf(r)}):`);
  for (const v of verbs) {
    const n = r.verbs.get(v)!;
    lines.push(`  #   ${v}: ${n.why}${cluster && n.lost ? `; without it ${n.lost}` : ''}`);
  }
  at.set(ruleKey(r.group, r.resource, r.names), lines.length + 1);
  lines.push(`  - apiGroups: ["${r.group}"]`);
  lines.push(`    resources: ["${r.resource}"]`);
  if (r.names) lines.push(`    resourceNames: [${r.names.map((n) => `"${n}"`).join(', ')}]`);
  lines.push(`    verbs: [${verbs.map((v) => `"${v}"`).join(', ')}]`);
}

function ruleKey(group: string, resource: string, names?: string[]): string {
  return `${group}/${resource}/${names?.join(',') ?? ''}`;
}

export interface RenderedRbac {
  files: Record<string, string>;
  /** "role:" or "clusterrole:" + rule key -> file and line of its "- apiGroups" */
  lines: Map<string, { file: string; line: number }>;
}

const HEADER = (what: string): string[] => [
  `# ${what}`,
  '# Rendered by `npm run rbac` from src/kube/permissions.ts (the table `ktctl check` and every',
  '# command check against); do not edit by hand.',
];

export function renderRbac(): RenderedRbac {
  const lines = new Map<string, { file: string; line: number }>();
  const role: string[] = [
    ...HEADER(`Role "${ROLE_NAME}": everything ktctl does in the namespace it works in (apply it with -n NAMESPACE).`),
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: Role',
    'metadata:',
    `  name: ${ROLE_NAME}`,
    '  labels:',
    '    app.kubernetes.io/name: ktctl',
    'rules:',
  ];
  const at = new Map<string, number>();
  for (const r of rules('role')) renderRule(r, role, at, false);
  for (const [k, line] of at) lines.set(`role:${k}`, { file: ROLE_FILE, line });
  role.push('');

  const clusterAt = new Map<string, number>();
  const cluster: string[] = [
    ...HEADER(`ClusterRole "${CLUSTER_ROLE_NAME}": the few reads ktctl makes outside its namespace.`),
    '# Each is optional: without this ClusterRole every command works, with what each comment says is lost. Left out on',
    '# purpose: list Secrets, ConfigMaps and Deployments in every namespace (clean, status, birdseye and dashboard across namespaces);',
    '# without them those commands cover the current namespace.',
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: ClusterRole',
    'metadata:',
    `  name: ${CLUSTER_ROLE_NAME}`,
    '  labels:',
    '    app.kubernetes.io/name: ktctl',
    'rules:',
  ];
  for (const r of rules('clusterrole')) renderRule(r, cluster, clusterAt, true);
  for (const [k, line] of clusterAt) lines.set(`clusterrole:${k}`, { file: CLUSTER_ROLE_FILE, line });
  cluster.push('');

  const bindings = [
    '# Example bindings: replace jane@example.com with the user `kubectl auth whoami` names (or use a',
    '# Group or ServiceAccount subject), and dev with the namespace ktctl works in.',
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: RoleBinding',
    'metadata:',
    '  name: ktctl-jane',
    '  namespace: dev',
    'roleRef:',
    '  apiGroup: rbac.authorization.k8s.io',
    '  kind: Role',
    `  name: ${ROLE_NAME}`,
    'subjects:',
    '  - apiGroup: rbac.authorization.k8s.io',
    '    kind: User',
    '    name: jane@example.com',
    '---',
    'apiVersion: rbac.authorization.k8s.io/v1',
    'kind: ClusterRoleBinding',
    'metadata:',
    '  name: ktctl-cluster-jane',
    'roleRef:',
    '  apiGroup: rbac.authorization.k8s.io',
    '  kind: ClusterRole',
    `  name: ${CLUSTER_ROLE_NAME}`,
    'subjects:',
    '  - apiGroup: rbac.authorization.k8s.io',
    '    kind: User',
    '    name: jane@example.com',
    '',
  ];
  return { files: { [ROLE_FILE]: role.join('\n'), [CLUSTER_ROLE_FILE]: cluster.join('\n'), [BINDING_FILE]: bindings.join('\n') }, lines };
}

let rendered: RenderedRbac | undefined;

/** "deploy/rbac/role.yaml line 40" for the rule that grants `p`, or why deploy/rbac leaves it out. */
export function whereGranted(p: Permission): { file: string; line: number } | { leftOut: string } | undefined {
  rendered ??= renderRbac();
  const n = p as Need;
  const out = leftOut({ ...n, why: n.why ?? '' });
  if (out) return { leftOut: out };
  return rendered.lines.get(`${p.scope === 'namespace' ? 'role' : 'clusterrole'}:${ruleKey(p.group, p.resource, p.names)}`);
}

/**
 * The YAML to apply for `missing`: the deploy/rbac rules that grant them, verbs limited to the
 * missing ones, as a Role (namespace) and a ClusterRole (cluster scope and fixed namespaces).
 */
export function snippetFor(missing: Permission[], namespace: string): string {
  const role = missing.filter((p) => p.scope === 'namespace');
  const cluster = missing.filter((p) => p.scope !== 'namespace' && !leftOut({ ...p, why: '' }));
  const out: string[] = [];
  const emit = (which: 'role' | 'clusterrole', ps: Permission[]): void => {
    if (ps.length === 0) return;
    const wanted = new Map<string, Set<string>>();
    for (const p of ps) {
      const k = ruleKey(p.group, p.resource, p.names);
      if (!wanted.has(k)) wanted.set(k, new Set());
      wanted.get(k)!.add(p.verb);
    }
    if (out.length > 0) out.push('---');
    out.push('apiVersion: rbac.authorization.k8s.io/v1');
    out.push(which === 'role' ? 'kind: Role' : 'kind: ClusterRole');
    out.push('metadata:');
    out.push(`  name: ${which === 'role' ? ROLE_NAME : CLUSTER_ROLE_NAME}`);
    if (which === 'role') out.push(`  namespace: ${namespace}`);
    out.push('rules:');
    const ignore = new Map<string, number>();
    for (const r of rules(which)) {
      const only = wanted.get(ruleKey(r.group, r.resource, r.names));
      if (only) renderRule(r, out, ignore, which === 'clusterrole', only);
    }
  };
  emit('role', role);
  emit('clusterrole', cluster);
  return out.join('\n');
}

/** For `check --json` and the README: each profile's table. */
export function tableOfProfiles(): Array<{ profile: string; needs: Need[] }> {
  return CHECKED_PROFILES.map((p) => ({ profile: profileLabel(p), needs: needsOf(p) }));
}
