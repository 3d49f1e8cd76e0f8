/**
 * `ktctl birdseye` (KT Connect's name) and the dashboard's cluster half: one row per Service of a
 * namespace (or of all), saying what ktctl does to it now. The question it answers on a shared
 * cluster: "who holds `web` right now, and is that session still alive?"
 *
 * A row is
 * - exchanged: the Service's lock is an exchange (`ktctl/locked-by`, lock.ts); its mode is selector
 *   when it carries `ktctl/original-selector`, scale when a deployment of it carries
 *   `ktctl/original-replicas` (neither: the exchange is starting); by its holders, since its
 *   oldest object was made;
 * - meshed: a mesh lock; auto when a router pod serves it (its version marks, each with its own
 *   holder and beat, mesh.ts), else manual (shadows labelled with the version);
 * - preview: a Service ktctl made with the role preview;
 * - natural: none of these.
 * Every ktctl object that belongs to it (label `ktctl/service`) is listed with its age and
 * heartbeat. A holder is stale as lock.ts `holderStale` decides (its process is gone on this
 * machine, or its beat is older than STALE_AFTER_MINUTES elsewhere); an object is stale when its
 * heartbeat is that old, or its owner's process on this machine is gone.
 *
 * What RBAC does not allow is left out with the sentence that names the missing permission
 * (`missing`); only listing Services is needed for anything to show.
 */
import type { V1ObjectMeta, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Kube } from './api.js';
import { kubeCall, KubeForbiddenError } from './errors.js';
import { holderAge, holderStale, lockOf, ownerAliveHere, ownerIsHere, type Holder } from './lock.js';
import { marksOf } from './mesh.js';
import {
  ANNOTATION_HEARTBEAT,
  ANNOTATION_ORIGINAL_REPLICAS,
  ANNOTATION_ORIGINAL_SELECTOR,
  ANNOTATION_OWNER,
  LABEL_MANAGED_BY,
  LABEL_ROLE,
  LABEL_SERVICE,
  MANAGED_BY,
  MANAGED_SELECTOR,
  STALE_AFTER_MINUTES,
} from './names.js';

export type ServiceState = 'exchanged' | 'meshed' | 'natural' | 'preview';

/** KT Connect's `--sortBy status` order: exchanged, meshed, natural, preview. */
const STATE_ORDER: Record<ServiceState, number> = { exchanged: 0, meshed: 1, natural: 2, preview: 3 };

export interface HolderRow {
  owner: string;
  /** seconds since its last beat (API server time); null when it never beat */
  heartbeatAgeSeconds: number | null;
  stale: boolean;
  /** the owner is a process of this machine */
  here: boolean;
}

export interface ObjectRow {
  kind: 'pod' | 'secret' | 'configmap' | 'service' | 'deployment';
  name: string;
  role: string | null;
  owner: string | null;
  /** seconds since it was made */
  ageSeconds: number;
  heartbeatAgeSeconds: number | null;
  stale: boolean;
}

export interface ServiceRow {
  namespace: string;
  name: string;
  state: ServiceState;
  /** exchange: selector | scale; mesh: auto | manual */
  mode: string | null;
  holders: HolderRow[];
  /** mesh: the version marks (`version=alice`) with their holders */
  marks: Array<{ mark: string } & HolderRow>;
  /** mesh auto: the router pod */
  router: string | null;
  /** when ktctl's hold began (its oldest object for the service), RFC 3339; null for natural */
  since: string | null;
  /** some holder or object of it is stale: `ktctl recover` (or the dashboard's recover) puts it back */
  stale: boolean;
  objects: ObjectRow[];
}

export interface Connector {
  namespace: string;
  pod: string;
  owner: string | null;
  heartbeatAgeSeconds: number | null;
  stale: boolean;
}

export interface Birdseye {
  /** "namespace dev" or "all namespaces" */
  scope: string;
  serverTime: string;
  rows: ServiceRow[];
  /** `connect` shadows and their users (--showConnector) */
  connectors: Connector[];
  /** one sentence per part RBAC did not allow, naming the permission and what is left out */
  missing: string[];
}

export interface BirdseyeOptions {
  /** undefined: every namespace (-A), falling back to the current one when that is not allowed */
  namespace: string | undefined;
  sortBy?: 'status' | 'name';
  hideNaturalService?: boolean;
  staleMinutes?: number;
}

interface Item {
  metadata?: V1ObjectMeta;
}

interface Listed {
  services: V1Service[];
  pods: V1Pod[];
  others: Array<{ kind: 'secret' | 'configmap' | 'deployment'; item: Item }>;
}

/**
 * Lists what birdseye reads in `ns` (undefined: every namespace). Services are required (a
 * KubeForbiddenError goes to the caller); each other kind that is forbidden is left out with a note.
 */
async function listAll(kube: Kube, ns: string | undefined, missing: string[]): Promise<Listed> {
  const op = (resource: string) => ({ verb: 'list', resource, namespace: ns, server: kube.server });
  const optional = async <T>(resource: string, lost: string, call: () => Promise<{ items: T[] }>): Promise<T[]> => {
    try {
      return (await kubeCall(op(resource), call)).items;
    } catch (error) {
      if (!(error instanceof KubeForbiddenError)) throw error;
      missing.push(`${error.message.replace(/\.$/, '')}; without it, ${lost}`);
      return [];
    }
  };
  const labelSelector = MANAGED_SELECTOR;
  const c = kube.core;
  const services = (
    await kubeCall(op('services'), () => (ns ? c.listNamespacedService({ namespace: ns }) : c.listServiceForAllNamespaces({})))
  ).items;
  const [pods, secrets, configmaps, deployments] = await Promise.all([
    optional('pods', 'shadows, mesh routers and connectors are not shown', () => (ns ? c.listNamespacedPod({ namespace: ns, labelSelector }) : c.listPodForAllNamespaces({ labelSelector }))),
    optional('secrets', 'the shadows\' Secrets are not shown', () => (ns ? c.listNamespacedSecret({ namespace: ns, labelSelector }) : c.listSecretForAllNamespaces({ labelSelector }))),
    optional('configmaps', 'ktctl\'s ConfigMaps are not shown', () => (ns ? c.listNamespacedConfigMap({ namespace: ns, labelSelector }) : c.listConfigMapForAllNamespaces({ labelSelector }))),
    optional('deployments', 'deployments an exchange scaled to 0 are not shown', () =>
      ns ? kube.apps.listNamespacedDeployment({ namespace: ns }) : kube.apps.listDeploymentForAllNamespaces({}),
    ),
  ]);
  return {
    services,
    pods,
    others: [
      ...secrets.map((item) => ({ kind: 'secret' as const, item })),
      ...configmaps.map((item) => ({ kind: 'configmap' as const, item })),
      ...deployments.filter((d) => d.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY || ANNOTATION_ORIGINAL_REPLICAS in (d.metadata?.annotations ?? {})).map((item) => ({ kind: 'deployment' as const, item })),
    ],
  };
}

export async function birdseye(kube: Kube, o: BirdseyeOptions): Promise<Birdseye> {
  const now = await kube.serverNow();
  const staleMs = (o.staleMinutes ?? STALE_AFTER_MINUTES) * 60_000;
  const missing: string[] = [];
  let scope = o.namespace ? `namespace ${o.namespace}` : 'all namespaces';
  let listed: Listed;
  if (o.namespace) listed = await listAll(kube, o.namespace, missing);
  else {
    try {
      listed = await listAll(kube, undefined, missing);
    } catch (error) {
      if (!(error instanceof KubeForbiddenError)) throw error;
      missing.length = 0;
      missing.push(`${error.message.replace(/\.$/, '')}; without it, only namespace ${kube.namespace} is shown`);
      scope = `namespace ${kube.namespace}`;
      listed = await listAll(kube, kube.namespace, missing);
    }
  }
  const rows = buildRows(listed, now, staleMs);
  const shown = o.hideNaturalService ? rows.filter((r) => r.state !== 'natural') : rows;
  sortRows(shown, o.sortBy ?? 'status');
  const connectors = listed.pods
    .filter((p) => p.metadata?.labels?.[LABEL_ROLE] === 'connect')
    .map((p): Connector => {
      const beat = beatAge(p.metadata, now);
      const owner = p.metadata?.annotations?.[ANNOTATION_OWNER] ?? null;
      return { namespace: p.metadata?.namespace ?? '', pod: p.metadata?.name ?? '', owner, heartbeatAgeSeconds: seconds(beat), stale: objectStale(owner, beat, staleMs) };
    })
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.pod.localeCompare(b.pod));
  return { scope, serverTime: now.toISOString(), rows: shown, connectors, missing };
}

export function sortRows(rows: ServiceRow[], by: 'status' | 'name'): void {
  rows.sort((a, b) => (by === 'status' ? STATE_ORDER[a.state] - STATE_ORDER[b.state] : 0) || a.name.localeCompare(b.name) || a.namespace.localeCompare(b.namespace));
}

function beatAge(meta: V1ObjectMeta | undefined, now: Date): number | undefined {
  const beat = Date.parse(meta?.annotations?.[ANNOTATION_HEARTBEAT] ?? '');
  return Number.isNaN(beat) ? undefined : now.getTime() - beat;
}

function seconds(ms: number | undefined): number | null {
  return ms === undefined || !Number.isFinite(ms) ? null : Math.max(0, Math.round(ms / 1000));
}

/** An object is stale when its owner's process on this machine is gone, or its heartbeat is old. */
function objectStale(owner: string | null, beatAgeMs: number | undefined, staleMs: number): boolean {
  if (owner && ownerIsHere(owner)) return !ownerAliveHere(owner);
  return beatAgeMs === undefined || beatAgeMs >= staleMs;
}

function holderRow(h: Holder, now: Date, staleMs: number, fallback?: Date): HolderRow {
  return { owner: h.owner, heartbeatAgeSeconds: seconds(holderAge(h, now, fallback)), stale: holderStale(h, now, staleMs, fallback), here: ownerIsHere(h.owner) };
}

function buildRows(listed: Listed, now: Date, staleMs: number): ServiceRow[] {
  const key = (ns: string | undefined, name: string | undefined): string => `${ns ?? ''}/${name ?? ''}`;
  // ktctl's objects by the service they belong to
  const belongs = new Map<string, Array<{ kind: ObjectRow['kind']; item: Item }>>();
  const add = (kind: ObjectRow['kind'], item: Item): void => {
    const svc = item.metadata?.labels?.[LABEL_SERVICE] ?? item.metadata?.annotations?.[LABEL_SERVICE];
    if (!svc) return;
    const k = key(item.metadata?.namespace, svc);
    belongs.set(k, [...(belongs.get(k) ?? []), { kind, item }]);
  };
  for (const p of listed.pods) add('pod', p);
  for (const o of listed.others) add(o.kind, o.item);
  const madeByKtctl = (s: V1Service): boolean => s.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY;
  for (const s of listed.services) if (madeByKtctl(s)) add('service', s);

  const rows: ServiceRow[] = [];
  for (const s of listed.services) {
    const meta = s.metadata ?? {};
    const role = meta.labels?.[LABEL_ROLE];
    // ktctl's own Services other than a preview (the mesh's stuntman) show under the service they serve
    if (madeByKtctl(s) && role !== 'preview') continue;
    const ns = meta.namespace ?? '';
    const name = meta.name ?? '';
    const mine = (belongs.get(key(ns, name)) ?? []).filter((o) => !(o.kind === 'service' && o.item.metadata?.name === name));
    const objects = mine.map(({ kind, item }): ObjectRow => {
      const m = item.metadata ?? {};
      const beat = beatAge(m, now);
      const owner = m.annotations?.[ANNOTATION_OWNER] ?? null;
      const created = m.creationTimestamp ? new Date(m.creationTimestamp).getTime() : now.getTime();
      return { kind, name: m.name ?? '', role: m.labels?.[LABEL_ROLE] ?? null, owner, ageSeconds: seconds(now.getTime() - created) ?? 0, heartbeatAgeSeconds: seconds(beat), stale: objectStale(owner, beat, staleMs) };
    });
    objects.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
    const oldest = mine.map((o) => o.item.metadata?.creationTimestamp).filter((t): t is Date => t !== undefined).map((t) => new Date(t).getTime());
    const row: ServiceRow = { namespace: ns, name, state: 'natural', mode: null, holders: [], marks: [], router: null, since: null, stale: false, objects };
    const lock = lockOf(s);
    if (role === 'preview' && madeByKtctl(s)) {
      row.state = 'preview';
      const owner = meta.annotations?.[ANNOTATION_OWNER];
      const beat = beatAge(meta, now);
      if (owner) row.holders = [{ owner, heartbeatAgeSeconds: seconds(beat), stale: objectStale(owner, beat, staleMs), here: ownerIsHere(owner) }];
      if (meta.creationTimestamp) oldest.push(new Date(meta.creationTimestamp).getTime());
    } else if (lock?.role === 'exchange') {
      row.state = 'exchanged';
      // selector: the Service keeps its original selector; scale: a deployment its replicas; neither yet: starting
      const scaled = mine.some((o) => o.kind === 'deployment' && ANNOTATION_ORIGINAL_REPLICAS in (o.item.metadata?.annotations ?? {}));
      row.mode = ANNOTATION_ORIGINAL_SELECTOR in (meta.annotations ?? {}) ? 'selector' : scaled ? 'scale' : null;
      row.holders = lock.holders.map((h) => holderRow(h, now, staleMs, lock.heartbeat));
    } else if (lock?.role === 'mesh') {
      row.state = 'meshed';
      row.holders = lock.holders.map((h) => holderRow(h, now, staleMs, lock.heartbeat));
      const router = mine.find((o) => o.kind === 'pod' && o.item.metadata?.labels?.[LABEL_ROLE] === 'router');
      if (router) {
        row.mode = 'auto';
        row.router = router.item.metadata?.name ?? null;
        const rbeat = Date.parse(router.item.metadata?.annotations?.[ANNOTATION_HEARTBEAT] ?? '');
        row.marks = Object.entries(marksOf(router.item as V1Pod)).map(([mark, h]) => ({ mark, ...holderRow(h, now, staleMs, Number.isNaN(rbeat) ? undefined : new Date(rbeat)) }));
      } else {
        row.mode = 'manual';
        row.marks = mine
          .filter((o) => o.kind === 'pod' && o.item.metadata?.labels?.[LABEL_ROLE] === 'mesh')
          .map((o) => {
            const m = o.item.metadata ?? {};
            const owner = m.annotations?.[ANNOTATION_OWNER] ?? '';
            const beat = beatAge(m, now);
            return { mark: `version=${m.labels?.version ?? '?'}`, owner, heartbeatAgeSeconds: seconds(beat), stale: objectStale(owner, beat, staleMs), here: ownerIsHere(owner) };
          });
      }
      row.marks.sort((a, b) => a.mark.localeCompare(b.mark));
    }
    if (row.state !== 'natural') {
      row.since = oldest.length > 0 ? new Date(Math.min(...oldest)).toISOString() : null;
      row.stale = row.holders.some((h) => h.stale) || row.marks.some((m) => m.stale) || objects.some((x) => x.stale);
    }
    rows.push(row);
  }
  return rows;
}

/** "3 s", "4 min", "2 h": an age for people. */
export function describeSeconds(s: number | null): string {
  if (s === null) return '-';
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

/** The text of `ktctl birdseye`: one line per service, then its ktctl objects indented. */
export function describeBirdseye(b: Birdseye, o: { showConnector: boolean; allNamespaces: boolean }): string[] {
  const out: string[] = [];
  const name = (r: { namespace: string; name: string }): string => (o.allNamespaces ? `${r.namespace}/${r.name}` : r.name);
  const who = (h: HolderRow): string => `${h.owner} (heartbeat ${describeSeconds(h.heartbeatAgeSeconds)} ago${h.stale ? ', STALE' : ''})`;
  out.push(`services in ${b.scope} (${b.rows.length}):`);
  for (const r of b.rows) {
    let what: string;
    switch (r.state) {
      case 'exchanged':
        what = `exchanged (${r.mode ? `--mode ${r.mode}` : 'starting'}) by ${r.holders.map(who).join(', ') || 'unknown user'}`;
        break;
      case 'meshed':
        what = `meshed (--mode ${r.mode})${r.router ? ` through router ${r.router}` : ''}: ${r.marks.map((m) => `${m.mark} by ${who(m)}`).join(', ') || r.holders.map(who).join(', ') || 'no marks'}`;
        break;
      case 'preview':
        what = `preview by ${r.holders.map(who).join(', ') || 'unknown user'}`;
        break;
      default:
        what = 'natural';
    }
    const since = r.since ? `, since ${r.since}` : '';
    out.push(`  ${name(r)}  ${what}${since}${r.stale ? '  [stale: ktctl recover ' + r.name + (o.allNamespaces ? ` -n ${r.namespace}` : '') + ' puts it back]' : ''}`);
    for (const x of r.objects) {
      out.push(`      ${x.kind} ${x.name}  role ${x.role ?? '-'}  age ${describeSeconds(x.ageSeconds)}  heartbeat ${describeSeconds(x.heartbeatAgeSeconds)} ago${x.stale ? '  STALE' : ''}`);
    }
  }
  if (o.showConnector) {
    out.push(`connected (${b.connectors.length}):`);
    for (const c of b.connectors) out.push(`  ${c.owner ?? 'unknown user'}  shadow ${o.allNamespaces ? `${c.namespace}/` : ''}${c.pod}  heartbeat ${describeSeconds(c.heartbeatAgeSeconds)} ago${c.stale ? '  STALE' : ''}`);
  }
  for (const m of b.missing) out.push(`note: ${m}`);
  return out;
}
