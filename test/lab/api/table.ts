/**
 * Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for on `get`:
 * `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`.
 */
import { isObject, type Json, type JsonObject, type ObjectMeta } from './json.js';
import type { ResourceInfo } from './resources.js';
import { now } from './clock.js';
import { selectorString } from './selectors.js';

export function wantsTable(accept: string | undefined): boolean {
  if (!accept) return false;
  const first = accept.split(',')[0];
  return /as=Table/.test(first) && /g=meta\.k8s\.io/.test(first);
}

/** kubectl's duration.HumanDuration */
export function age(ts: string | undefined): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((now().getTime() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

type Col = [name: string, type: string, priority: number, cell: (o: JsonObject) => Json];

function obj(v: Json | undefined): JsonObject {
  return isObject(v) ? v : {};
}
function arr(v: Json | undefined): Json[] {
  return Array.isArray(v) ? v : [];
}
function meta(o: JsonObject): ObjectMeta {
  return obj(o.metadata) as ObjectMeta;
}
const nameCol: Col = ['Name', 'string', 0, (o) => meta(o).name ?? ''];
const ageCol: Col = ['Age', 'string', 0, (o) => age(meta(o).creationTimestamp)];

function podStatus(o: JsonObject): string {
  if (meta(o).deletionTimestamp) return 'Terminating';
  const st = obj(o.status);
  let reason = typeof st.phase === 'string' ? st.phase : 'Pending';
  if (typeof st.reason === 'string') reason = st.reason;
  for (const c of arr(st.containerStatuses)) {
    const s = obj(obj(c).state);
    if (isObject(s.waiting) && typeof s.waiting.reason === 'string') reason = s.waiting.reason;
    else if (isObject(s.terminated) && typeof s.terminated.reason === 'string') reason = s.terminated.reason;
  }
  for (const c of arr(st.conditions)) {
    const cc = obj(c);
    if (cc.type === 'PodScheduled' && cc.status === 'False' && typeof cc.reason === 'string' && reason === 'Pending') reason = 'Pending';
  }
  return reason;
}

// pkg/printers/internalversion printRole/printClusterRole (CREATED AT) and printRoleBinding/printClusterRoleBinding
const createdAtCol: Col = ['Created At', 'date', 0, (o) => meta(o).creationTimestamp ?? ''];
const subjectsOf = (o: JsonObject, kind: string): string =>
  arr(o.subjects).filter((s) => obj(s).kind === kind).map((s) => (kind === 'ServiceAccount' ? `${String(obj(s).namespace ?? '')}/${String(obj(s).name)}` : String(obj(s).name))).join(', ');
const bindingCols: Col[] = [
  nameCol,
  ['Role', 'string', 0, (o) => `${String(obj(o.roleRef).kind ?? '')}/${String(obj(o.roleRef).name ?? '')}`],
  ageCol,
  ['Users', 'string', 1, (o) => subjectsOf(o, 'User')],
  ['Groups', 'string', 1, (o) => subjectsOf(o, 'Group')],
  ['ServiceAccounts', 'string', 1, (o) => subjectsOf(o, 'ServiceAccount')],
];

const COLUMNS: Record<string, Col[]> = {
  Role: [nameCol, createdAtCol],
  ClusterRole: [nameCol, createdAtCol],
  RoleBinding: bindingCols,
  ClusterRoleBinding: bindingCols,
  Pod: [
    nameCol,
    ['Ready', 'string', 0, (o) => {
      const cs = arr(obj(o.status).containerStatuses);
      return `${cs.filter((c) => obj(c).ready === true).length}/${arr(obj(o.spec).containers).length}`;
    }],
    ['Status', 'string', 0, podStatus],
    ['Restarts', 'string', 0, (o) => String(arr(obj(o.status).containerStatuses).reduce((a: number, c) => a + Number(obj(c).restartCount ?? 0), 0))],
    ageCol,
    ['IP', 'string', 1, (o) => String(obj(o.status).podIP ?? '<none>')],
    ['Node', 'string', 1, (o) => String(obj(o.spec).nodeName ?? '<none>')],
    ['Nominated Node', 'string', 1, () => '<none>'],
    ['Readiness Gates', 'string', 1, () => '<none>'],
  ],
  Deployment: [
    nameCol,
    ['Ready', 'string', 0, (o) => `${Number(obj(o.status).readyReplicas ?? 0)}/${Number(obj(o.spec).replicas ?? 0)}`],
    ['Up-to-date', 'integer', 0, (o) => Number(obj(o.status).updatedReplicas ?? 0)],
    ['Available', 'integer', 0, (o) => Number(obj(o.status).availableReplicas ?? 0)],
    ageCol,
    ['Containers', 'string', 1, (o) => arr(obj(obj(obj(o.spec).template).spec).containers).map((c) => String(obj(c).name)).join(',')],
    ['Images', 'string', 1, (o) => arr(obj(obj(obj(o.spec).template).spec).containers).map((c) => String(obj(c).image)).join(',')],
    ['Selector', 'string', 1, (o) => selectorString(obj(o.spec).selector as never)],
  ],
  ReplicaSet: [
    nameCol,
    ['Desired', 'integer', 0, (o) => Number(obj(o.spec).replicas ?? 0)],
    ['Current', 'integer', 0, (o) => Number(obj(o.status).replicas ?? 0)],
    ['Ready', 'integer', 0, (o) => Number(obj(o.status).readyReplicas ?? 0)],
    ageCol,
  ],
  Service: [
    nameCol,
    ['Type', 'string', 0, (o) => String(obj(o.spec).type ?? 'ClusterIP')],
    ['Cluster-IP', 'string', 0, (o) => String(obj(o.spec).clusterIP ?? '<none>')],
    ['External-IP', 'string', 0, (o) => {
      const ing = arr(obj(obj(o.status).loadBalancer).ingress).map((i) => String(obj(i).ip ?? obj(i).hostname ?? ''));
      if (ing.length > 0) return ing.join(',');
      return obj(o.spec).type === 'LoadBalancer' ? '<pending>' : '<none>';
    }],
    ['Port(s)', 'string', 0, (o) => {
      const ports = arr(obj(o.spec).ports).map((p) => {
        const pp = obj(p);
        return `${String(pp.port)}${pp.nodePort ? `:${String(pp.nodePort)}` : ''}/${String(pp.protocol ?? 'TCP')}`;
      });
      return ports.length > 0 ? ports.join(',') : '<none>';
    }],
    ageCol,
    ['Selector', 'string', 1, (o) => {
      const s = obj(obj(o.spec).selector);
      const e = Object.entries(s).map(([k, v]) => `${k}=${String(v)}`);
      return e.length > 0 ? e.join(',') : '<none>';
    }],
  ],
  Namespace: [nameCol, ['Status', 'string', 0, (o) => String(obj(o.status).phase ?? 'Active')], ageCol],
  Endpoints: [
    nameCol,
    ['Endpoints', 'string', 0, (o) => {
      const eps: string[] = [];
      for (const s of arr(o.subsets)) {
        const ss = obj(s);
        for (const a of arr(ss.addresses)) for (const p of arr(ss.ports)) eps.push(`${String(obj(a).ip)}:${String(obj(p).port)}`);
      }
      if (eps.length === 0) return '<none>';
      return eps.length > 3 ? `${eps.slice(0, 3).join(',')} + ${eps.length - 3} more...` : eps.join(',');
    }],
    ageCol,
  ],
  Node: [
    nameCol,
    ['Status', 'string', 0, (o) => (arr(obj(o.status).conditions).some((c) => obj(c).type === 'Ready' && obj(c).status === 'True') ? 'Ready' : 'NotReady')],
    ['Roles', 'string', 0, (o) => Object.keys(meta(o).labels ?? {}).filter((k) => k.startsWith('node-role.kubernetes.io/')).map((k) => k.split('/')[1]).join(',') || '<none>'],
    ageCol,
    ['Version', 'string', 0, (o) => String(obj(obj(o.status).nodeInfo).kubeletVersion ?? '')],
  ],
  Event: [
    ['Last Seen', 'string', 0, (o) => age(String(o.lastTimestamp ?? o.eventTime ?? meta(o).creationTimestamp))],
    ['Type', 'string', 0, (o) => String(o.type ?? '')],
    ['Reason', 'string', 0, (o) => String(o.reason ?? '')],
    ['Object', 'string', 0, (o) => `${String(obj(o.involvedObject).kind ?? '').toLowerCase()}/${String(obj(o.involvedObject).name ?? '')}`],
    ['Message', 'string', 0, (o) => String(o.message ?? '')],
  ],
  Secret: [nameCol, ['Type', 'string', 0, (o) => String(o.type ?? 'Opaque')], ['Data', 'string', 0, (o) => String(Object.keys(obj(o.data)).length)], ageCol],
  ConfigMap: [nameCol, ['Data', 'string', 0, (o) => String(Object.keys(obj(o.data)).length + Object.keys(obj(o.binaryData)).length)], ageCol],
  ServiceAccount: [nameCol, ['Secrets', 'string', 0, (o) => String(arr(o.secrets).length)], ageCol],
};

export function toTable(info: ResourceInfo, items: JsonObject[], resourceVersion: string, _single = false): JsonObject {
  const cols = COLUMNS[info.kind] ?? [nameCol, ageCol];
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: cols.map(([name, type, priority]) => ({
      name,
      type,
      format: name === 'Name' ? 'name' : '',
      description: name === 'Name' ? 'Name must be unique within a namespace.' : name,
      priority,
    })),
    rows: items.map((o) => ({
      cells: cols.map(([, , , cell]) => cell(o)),
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata ?? {} },
    })),
  };
}
