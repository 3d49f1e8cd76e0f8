/**
 * The one table of what ktctl asks of the API server, per command and mode. Three users read it:
 *
 * - each command, before it makes anything: SelfSubjectAccessReview for every permission it needs
 *   (`preflight`), so a missing one fails at once, in the same sentence `check` prints;
 * - each request as it leaves (requests.ts, `guardRequests`): a request the running command's
 *   table does not list is a ktctl bug (`KTCTL_PERMISSIONS=strict`, set by the test suite, fails it),
 *   so the table and the code cannot drift apart unnoticed;
 * - `ktctl check [COMMAND] [--json]`, and deploy/rbac (rbac-yaml.ts renders it from this table).
 *
 * A permission is either required (the command fails without it) or optional: the command works
 * without it and `lost` says what is missing then (network discovery, DNS, cleaning at start).
 */
import type { RequestAttributes } from './requests.js';

/** Where a permission applies: the command's namespace, every namespace, or one fixed namespace. */
export type Scope = 'namespace' | 'cluster' | { namespace: string };

export interface Permission {
  verb: string;
  /** '' for the core group */
  group: string;
  /** plural, with "/subresource" */
  resource: string;
  scope: Scope;
  /** only these objects (RBAC resourceNames) */
  names?: string[];
}

export interface Need extends Permission {
  /** why ktctl makes the call, for `check --json` and the YAML comments */
  why: string;
  /** set when the command still works without it: what it cannot do then */
  lost?: string;
}

export const COMMANDS = ['connect', 'exchange', 'mesh', 'preview', 'forward', 'recover', 'clean', 'status', 'birdseye', 'dashboard', 'completion'] as const;
export type CommandName = (typeof COMMANDS)[number];

/** The flags that change what a command asks for. */
export interface ProfileFlags {
  /** connect: tun | socks; exchange: selector | scale; mesh: auto | manual */
  mode?: string;
  /** connect --dnsMode: localDNS | hosts | podDNS */
  dnsMode?: string;
  shareShadow?: boolean;
  /** exchange, mesh: --envFile, --envJson or `-- command` (the workload's environment, src/kube/env.ts) */
  env?: boolean;
}

export interface Profile {
  command: CommandName;
  flags: ProfileFlags;
}

const need = (verb: string, resource: string, why: string, o: { group?: string; scope?: Scope; lost?: string; names?: string[] } = {}): Need => ({
  verb,
  group: o.group ?? '',
  resource,
  scope: o.scope ?? 'namespace',
  why,
  ...(o.names ? { names: o.names } : {}),
  ...(o.lost ? { lost: o.lost } : {}),
});
const apps = { group: 'apps' };

/** Reading the namespace: it exists (else one clear sentence before anything is made). */
const NAMESPACE: Need[] = [need('get', 'namespaces', 'checks that the namespace exists before anything is made', { lost: 'a missing namespace is reported by the first create instead' })];

/** What clean.ts's `listKtctlObjects` reads, in one namespace or (`cluster`) in all. */
function listObjects(scope: 'namespace' | 'cluster', why: string, lost?: string): Need[] {
  const o = { scope, lost };
  return [
    need('list', 'pods', why, o),
    need('list', 'secrets', why, o),
    need('list', 'configmaps', why, o),
    need('list', 'services', why, o),
    need('list', 'deployments', why, { ...o, ...apps }),
  ];
}

/** `clean`'s deletions and restores (also `recover`'s, and the clean every shadow command runs at start). */
function cleanUp(lost?: string): Need[] {
  const o = { lost };
  return [
    need('delete', 'pods', 'deletes stale shadow and router pods', o),
    need('get', 'pods', 'waits until a deleted pod is gone', o),
    need('delete', 'secrets', 'deletes the stale shadows\' key Secrets', o),
    need('delete', 'configmaps', 'deletes shadow program ConfigMaps no pod mounts any more', o),
    need('delete', 'services', 'deletes stale preview and mesh (stuntman) Services', o),
    need('get', 'services', 'reads a Service before restoring its selector or lock', o),
    need('patch', 'services', 'restores a Service\'s selector and removes a dead run\'s lock', o),
    need('get', 'deployments', 'reads a deployment a dead exchange scaled to 0', { ...o, ...apps }),
    need('patch', 'deployments', 'removes the dead run\'s annotations from a deployment', { ...o, ...apps }),
    need('patch', 'deployments/scale', 'scales a deployment a dead exchange scaled to 0 back', { ...o, ...apps }),
  ];
}

const CLEAN_AT_START = 'stale objects of crashed runs in the namespace are not removed at start (run ktctl clean)';

/** A shadow pod of this run: its Secret, its program ConfigMap, the pod, the port-forward, heartbeats. */
function shadow(flags: ProfileFlags): Need[] {
  const own: Need[] = [
    need('create', 'secrets', 'the shadow\'s ssh keys'),
    need('patch', 'secrets', 'the heartbeat on the shadow\'s Secret'),
    need('delete', 'secrets', 'removes the shadow\'s Secret on exit'),
    need('create', 'pods', 'the shadow pod'),
    need('get', 'pods', 'waits until the shadow is ready; makes it again when it is gone'),
    need('patch', 'pods', 'the heartbeat on the shadow pod'),
    need('delete', 'pods', 'removes the shadow pod on exit'),
    need('get', 'pods/log', 'quotes the last lines of a shadow that crashed', { lost: 'a crashed shadow is reported without its last log lines' }),
    need('create', 'configmaps', 'the shadow program (made once per build and namespace)'),
    need('get', 'configmaps', 'reuses the shadow program of the same build'),
    need('patch', 'configmaps', 'marks the shadow program as used'),
    // a WebSocket upgrade is a GET: authorized as get, and from Kubernetes 1.35 also as create
    need('get', 'pods/portforward', 'the tunnel to the shadow (WebSocket upgrade)'),
    need('create', 'pods/portforward', 'the tunnel to the shadow (Kubernetes 1.35 and later also check create)'),
  ];
  if (flags.shareShadow) own.push(need('get', 'secrets', 'reads the keys of the shared shadow another run made'));
  return own;
}

/** TUN mode: the cluster's ranges (network.ts `discoverNetwork`). */
function network(dnsMode: string): Need[] {
  const cluster = { scope: 'cluster' as const };
  const all: Need[] = [
    need('list', 'nodes', 'routes the nodes\' pod CIDRs', { ...cluster, lost: 'the nodes\' pod CIDRs are not routed: only the addresses of pods and services that exist when connect starts' }),
    need('list', 'pods', 'routes the pod IPs of every namespace', { ...cluster, lost: 'only the pods of the namespace are routed' }),
    need('list', 'services', 'routes the service IPs of every namespace', { ...cluster, lost: 'only the services of the namespace are routed' }),
    need('list', 'pods', 'routes the namespace\'s pod IPs (when pods of every namespace may not be listed)', { lost: 'no pod IP is routed (unless the nodes\' pod CIDRs are)' }),
    need('list', 'services', 'routes the namespace\'s service IPs (when services of every namespace may not be listed)', { lost: 'no service IP is routed' }),
  ];
  all.push(
    need('get', 'services', 'the cluster DNS service\'s address (kube-system/kube-dns)', {
      scope: { namespace: 'kube-system' },
      names: ['kube-dns'],
      ...(dnsMode === 'podDNS' ? {} : { lost: 'nothing in this DNS mode (--dnsMode podDNS needs it, or --dnsServer)' }),
    }),
  );
  if (dnsMode === 'hosts') {
    all.push(
      need('list', 'services', '--dnsMode hosts: the services of every namespace in /etc/hosts', { ...cluster, lost: 'only the namespace\'s services are in /etc/hosts' }),
      need('watch', 'services', '--dnsMode hosts: keeps /etc/hosts current for every namespace', { ...cluster, lost: 'only the namespace\'s services are in /etc/hosts' }),
      need('list', 'services', '--dnsMode hosts: the namespace\'s services in /etc/hosts'),
      need('watch', 'services', '--dnsMode hosts: keeps /etc/hosts current'),
    );
  }
  return all;
}

/** exchange and mesh: the target, its lock and heartbeat, and `recover` of a dead run's changes. */
function takeover(): Need[] {
  return [
    need('get', 'services', 'reads the target service'),
    need('list', 'services', 'finds the service of deploy/NAME'),
    need('patch', 'services', 'the lock and heartbeat on the service'),
    need('get', 'deployments', 'reads the deployment behind the service', apps),
    need('list', 'deployments', 'finds the deployment whose pods the service selects', apps),
    // recover of a dead run's changes (recover.ts), before this run takes the service
    ...listObjects('namespace', 'finds what a dead run left on the service before taking it over'),
    need('delete', 'pods', 'removes a dead run\'s shadow'),
    need('delete', 'secrets', 'removes a dead run\'s shadow Secret'),
    need('delete', 'configmaps', 'removes a dead run\'s ConfigMaps'),
    need('delete', 'services', 'removes a dead run\'s stuntman Service'),
    need('patch', 'deployments', 'removes a dead run\'s annotations from a deployment', apps),
    need('patch', 'deployments/scale', 'scales back a deployment a dead exchange scaled to 0', apps),
  ];
}

/** What birdseye.ts reads: every Service (required), ktctl's objects beside them; -A at cluster scope. */
function birdseyeReads(): Need[] {
  const why = 'shows each service and what ktctl does to it';
  const objects = 'shows the age and heartbeat of ktctl\'s objects of each service';
  const everywhere = '-A shows only the current namespace';
  return [
    need('list', 'services', why),
    need('list', 'services', `${why} in every namespace (-A)`, { scope: 'cluster', lost: everywhere }),
    need('list', 'pods', objects, { lost: 'shadows, mesh routers and connectors are not shown' }),
    need('list', 'secrets', objects, { lost: 'the shadows\' Secrets are not shown' }),
    need('list', 'configmaps', objects, { lost: 'ktctl\'s ConfigMaps are not shown' }),
    need('list', 'deployments', objects, { ...apps, lost: 'deployments an exchange scaled to 0 are not shown' }),
    ...listObjects('cluster', `${objects} in every namespace (-A)`, everywhere),
  ];
}

/** The dashboard's actions: optional, each lost alone (the page says which permission it lacks). */
function asActions(needs: Need[], lost: string): Need[] {
  return needs.map((n) => ({ ...n, lost }));
}

/** exchange and mesh with --envFile/--envJson/-- command: what makeEnvironmentVariables reads (src/kube/env.ts). */
function workloadEnv(): Need[] {
  return [
    need('list', 'pods', 'finds a running pod of the service to read its environment from'),
    need('get', 'configmaps', 'the environment\'s configMapKeyRef and envFrom configMapRef values'),
    need('get', 'secrets', 'the environment\'s secretKeyRef and envFrom secretRef values'),
    need('list', 'services', 'the service link variables (NAME_SERVICE_HOST, ...) the kubelet adds'),
    need('get', 'nodes', 'a resourceFieldRef limit the container does not set is the node\'s allocatable', {
      scope: 'cluster',
      lost: 'a resourceFieldRef to a limit the container does not set fails with a sentence',
    }),
  ];
}

/** Everything `profile` asks of the API server. */
export function needsOf(profile: Profile): Need[] {
  const f = profile.flags;
  switch (profile.command) {
    case 'connect': {
      const base = [...NAMESPACE, ...listObjects('namespace', 'cleans crashed runs\' objects at start', CLEAN_AT_START), ...cleanUp(CLEAN_AT_START), ...shadow(f)];
      return dedupe(f.mode === 'socks' ? base : [...base, ...network(f.dnsMode ?? 'localDNS')]);
    }
    case 'exchange': {
      const base = [...NAMESPACE, ...takeover(), ...listObjects('namespace', 'cleans crashed runs\' objects at start', CLEAN_AT_START), ...cleanUp(CLEAN_AT_START), ...shadow(f)];
      base.push(need('watch', 'services', 'notices when someone else changes the service\'s selector'));
      if (f.mode === 'scale') {
        base.push(
          need('patch', 'deployments/scale', 'scales the deployment to 0 and back', apps),
          need('patch', 'deployments', 'the heartbeat on the scaled deployment', apps),
        );
      }
      if (f.env) base.push(...workloadEnv());
      return dedupe(base);
    }
    case 'mesh': {
      const base = [...NAMESPACE, ...takeover(), ...listObjects('namespace', 'cleans crashed runs\' objects at start', CLEAN_AT_START), ...cleanUp(CLEAN_AT_START), ...shadow(f)];
      if (f.mode !== 'manual') {
        base.push(
          need('create', 'services', 'the stuntman Service the router sends the original traffic to'),
          need('delete', 'services', 'removes the stuntman Service when the last mesh user leaves'),
          need('get', 'secrets', 'reads the router\'s keys that its users share'),
          need('watch', 'services', 'notices when someone else changes the service\'s selector'),
        );
      }
      if (f.env) base.push(...workloadEnv());
      return dedupe(base);
    }
    case 'preview':
      return dedupe([
        ...NAMESPACE,
        need('get', 'services', 'checks that no Service of that name exists'),
        need('create', 'services', 'the preview Service'),
        need('patch', 'services', 'the heartbeat on the preview Service'),
        need('delete', 'services', 'removes the preview Service on exit'),
        ...listObjects('namespace', 'cleans crashed runs\' objects at start', CLEAN_AT_START),
        ...cleanUp(CLEAN_AT_START),
        ...shadow(f),
      ]);
    case 'forward':
      // the stream runs through a shadow, as connect --mode socks does
      return dedupe([
        ...NAMESPACE,
        need('get', 'services', 'resolves svc/NAME to its DNS name and port'),
        need('get', 'pods', 'resolves pod/NAME to its IP and port'),
        ...listObjects('namespace', 'cleans crashed runs\' objects at start', CLEAN_AT_START),
        ...cleanUp(CLEAN_AT_START),
        ...shadow(f),
      ]);
    case 'recover':
      return dedupe([
        ...listObjects('namespace', 'finds what ktctl changed or made for the service'),
        need('get', 'services', 'reads the service and its lock'),
        ...cleanUp(),
      ]);
    case 'clean':
      return dedupe([
        ...listObjects('cluster', 'finds ktctl\'s objects in every namespace (without -n)', 'without -n, only the current namespace is cleaned'),
        ...listObjects('namespace', 'finds ktctl\'s objects in the namespace'),
        ...cleanUp(),
      ]);
    case 'birdseye':
      return dedupe(birdseyeReads());
    case 'dashboard':
      return dedupe([
        ...birdseyeReads(),
        ...asActions(needsOf({ command: 'recover', flags: {} }), 'the dashboard cannot recover a service'),
        ...asActions(needsOf({ command: 'clean', flags: {} }), 'the dashboard cannot clean stale objects'),
      ]);
    case 'completion':
      // ktctl __complete (src/cli/completion.ts): names for a TAB, nothing without them but the names
      return dedupe([
        need('list', 'services', 'completes service names (exchange, mesh, forward, recover)', { lost: 'service names are not completed' }),
        need('list', 'deployments', 'completes deploy/NAME (exchange, mesh)', { ...apps, lost: 'deployment names are not completed' }),
      ]);
    case 'status':
      return dedupe([
        ...listObjects('cluster', 'lists ktctl\'s objects in every namespace (without -n)', 'without -n, only the current namespace is listed'),
        ...listObjects('namespace', 'lists ktctl\'s objects in the namespace'),
      ]);
  }
}

/** One entry per permission: a required one wins over an optional one. */
function dedupe(needs: Need[]): Need[] {
  const out = new Map<string, Need>();
  for (const n of needs) {
    const key = permissionKey(n);
    const had = out.get(key);
    if (!had) out.set(key, n);
    else if (had.lost !== undefined && n.lost === undefined) {
      // required after all: it takes the required one's place (and why), so a command's preflight
      // names the first thing it cannot work without in the order its table reads
      out.delete(key);
      out.set(key, n);
    }
  }
  return [...out.values()].map((n) => (n.lost === undefined ? omitLost(n) : n));
}

function omitLost(n: Need): Need {
  const { lost: _lost, ...rest } = n;
  return rest;
}

function scopeKey(s: Scope): string {
  return typeof s === 'string' ? s : `ns:${s.namespace}`;
}

export function permissionKey(p: Permission): string {
  return `${p.verb} ${p.resource}.${p.group} ${scopeKey(p.scope)}${p.names ? ` ${p.names.join(',')}` : ''}`;
}

/** The profiles `check` reports: every command, and every mode that asks for something else. */
export const CHECKED_PROFILES: Profile[] = [
  { command: 'connect', flags: { mode: 'tun', dnsMode: 'localDNS' } },
  { command: 'connect', flags: { mode: 'tun', dnsMode: 'hosts' } },
  { command: 'connect', flags: { mode: 'tun', dnsMode: 'podDNS' } },
  { command: 'connect', flags: { mode: 'socks' } },
  { command: 'connect', flags: { mode: 'tun', dnsMode: 'localDNS', shareShadow: true } },
  { command: 'exchange', flags: { mode: 'selector' } },
  { command: 'exchange', flags: { mode: 'scale' } },
  { command: 'mesh', flags: { mode: 'auto' } },
  { command: 'mesh', flags: { mode: 'manual' } },
  { command: 'exchange', flags: { mode: 'selector', env: true } },
  { command: 'exchange', flags: { mode: 'scale', env: true } },
  { command: 'mesh', flags: { mode: 'auto', env: true } },
  { command: 'mesh', flags: { mode: 'manual', env: true } },
  { command: 'preview', flags: {} },
  { command: 'forward', flags: {} },
  { command: 'recover', flags: {} },
  { command: 'clean', flags: {} },
  { command: 'status', flags: {} },
  { command: 'birdseye', flags: {} },
  { command: 'dashboard', flags: {} },
  { command: 'completion', flags: {} },
];

/** `connect --mode socks`, `exchange --mode scale`, `connect --dnsMode hosts --shareShadow`. */
export function profileLabel(p: Profile): string {
  const f = p.flags;
  const parts: string[] = [p.command];
  if (p.command === 'connect') {
    parts.push(`--mode ${f.mode ?? 'tun'}`);
    if ((f.mode ?? 'tun') === 'tun') parts.push(`--dnsMode ${f.dnsMode ?? 'localDNS'}`);
  } else if (f.mode !== undefined) parts.push(`--mode ${f.mode}`);
  if (f.shareShadow) parts.push('--shareShadow');
  if (f.env) parts.push('--envFile');
  return parts.join(' ');
}

function groupSuffix(p: Permission): string {
  return p.group ? `.${p.group}` : '';
}

/** "create pods in namespace default", "list nodes (every namespace)", "get services kube-dns in namespace kube-system". */
export function describePermission(p: Permission, namespace: string): string {
  const names = p.names ? ` ${p.names.join(', ')}` : '';
  const where = p.scope === 'cluster' ? 'at cluster scope' : `in namespace ${typeof p.scope === 'string' ? namespace : p.scope.namespace}`;
  return `${p.verb} ${p.resource}${groupSuffix(p)}${names} ${where}`;
}

/** The namespace an SSAR asks about ('' for cluster scope). */
function namespaceOf(p: Permission, namespace: string): string {
  if (p.scope === 'cluster') return '';
  return typeof p.scope === 'string' ? namespace : p.scope.namespace;
}

/** Does `p` allow the request `a` of a command working in `namespace`? */
export function allows(p: Permission, a: RequestAttributes, namespace: string): boolean {
  if (p.verb !== a.verb || p.group !== a.group || p.resource !== a.resource) return false;
  if (p.names && !p.names.includes(a.name)) return false;
  if (p.scope === 'cluster') return true;
  return a.namespace !== '' && a.namespace === namespaceOf(p, namespace);
}

/** Requests every authenticated user may make (the bootstrap role system:basic-user). */
const ALWAYS: Array<Pick<RequestAttributes, 'group' | 'resource'>> = [
  { group: 'authorization.k8s.io', resource: 'selfsubjectaccessreviews' },
  { group: 'authorization.k8s.io', resource: 'selfsubjectrulesreviews' },
  { group: 'authentication.k8s.io', resource: 'selfsubjectreviews' },
];

export class PermissionDrift extends Error {}

let active: { profile: Profile; debug: (line: string) => void } | undefined;

/** The running command and its flags: every `Kube` made from now on checks its requests against it. */
export function useProfile(profile: Profile, debug: (line: string) => void = () => undefined): void {
  active = { profile, debug };
}

export function activeProfile(): Profile | undefined {
  return active?.profile;
}

/**
 * The check each request of a `Kube` working in `namespace` passes (see the top of this file), or
 * undefined when no command is running (library use). Outside the table: a debug line, or with
 * KTCTL_PERMISSIONS=strict an error that fails the request.
 */
export function requestGuard(namespace: () => string): ((a: RequestAttributes) => void) | undefined {
  if (!active) return undefined;
  const { profile, debug } = active;
  const needs = needsOf(profile);
  const strict = process.env.KTCTL_PERMISSIONS === 'strict';
  const seen = new Set<string>();
  return (a) => {
    if (ALWAYS.some((x) => x.group === a.group && x.resource === a.resource)) return;
    if (needs.some((n) => allows(n, a, namespace()))) return;
    const what = `${a.verb} ${a.resource}${a.group ? `.${a.group}` : ''}${a.name ? ` ${a.name}` : ''} ${a.namespace ? `in namespace ${a.namespace}` : 'at cluster scope'}`;
    const line = `ktctl bug: ${profileLabel(profile)} made a request its permission table (src/kube/permissions.ts) does not list: ${what}`;
    if (strict) {
      process.stderr.write(`${line}\n`);
      throw new PermissionDrift(line);
    }
    if (!seen.has(line)) debug(line);
    seen.add(line);
  };
}
