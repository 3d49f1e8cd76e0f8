/**
 * The API's verbs on top of the store: what kube-apiserver's registry does between the HTTP
 * handler and etcd (name generation, defaults, validation, immutable fields, status subresource
 * semantics, graceful deletion, cascading deletion through ownerReferences, namespace lifecycle,
 * ClusterIP and NodePort allocation). Controllers use it too, so their writes follow the same rules.
 */
import { randomBytes } from 'node:crypto';
import { ApiError, badRequest, conflict, invalid, notFound } from './status.js';
import { clone, deepEqual, isObject, type Json, type JsonObject, type ObjectMeta } from './json.js';
import { apiVersionOf, findResource, RESOURCES, type ResourceInfo } from './resources.js';
import { Store, metaOf, type StoreEvent } from './store.js';
import { applyDefaults, validate } from './validate.js';
import { rbacDefaults, roleRefChange } from './rbac-validate.js';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.js';
import { now, timestamp } from './clock.js';
import { admitPod, admitPodTemplate, isSignificantPodUpdate, namespaceLabelErrors, namespaceUpdateWarnings, type ExistingPod, type PodMeta } from './podsecurity.js';

export const R = {
  namespaces: res('', 'namespaces'),
  nodes: res('', 'nodes'),
  pods: res('', 'pods'),
  services: res('', 'services'),
  endpoints: res('', 'endpoints'),
  endpointslices: res('discovery.k8s.io', 'endpointslices'),
  configmaps: res('', 'configmaps'),
  secrets: res('', 'secrets'),
  serviceaccounts: res('', 'serviceaccounts'),
  events: res('', 'events'),
  deployments: res('apps', 'deployments'),
  replicasets: res('apps', 'replicasets'),
  roles: res('rbac.authorization.k8s.io', 'roles'),
  clusterroles: res('rbac.authorization.k8s.io', 'clusterroles'),
  rolebindings: res('rbac.authorization.k8s.io', 'rolebindings'),
  clusterrolebindings: res('rbac.authorization.k8s.io', 'clusterrolebindings'),
};

function res(group: string, name: string): ResourceInfo {
  const info = RESOURCES.find((r) => r.group === group && r.name === name);
  if (!info) throw new Error(`unknown resource ${group}/${name}`);
  return info;
}

export type PatchType = 'merge' | 'strategic' | 'json';

/** Options of the writing verbs; `warnings` collects what the server sends as Warning headers. */
export interface WriteOptions {
  dryRun?: boolean;
  warnings?: string[];
  /**
   * Called with the object to be written (and the stored one on update) before validation, as the
   * rbac storages' escalation checks run before the standard storage (server.ts passes RBAC's).
   */
  admit?: (obj: JsonObject, cur: JsonObject | undefined) => void;
}

export interface DeleteOptions {
  gracePeriodSeconds?: number;
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  preconditions?: { uid?: string; resourceVersion?: string };
  dryRun?: boolean;
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
export function randomSuffix(n = 5): string {
  const bytes = randomBytes(n);
  let s = '';
  for (let i = 0; i < n; i++) s += NAME_CHARS[bytes[i] % NAME_CHARS.length];
  return s;
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);
}
function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
const SVC_BASE = ipToInt('198.19.0.0');
const SVC_SIZE = 65536;

export class Registry {
  readonly store: Store;
  /** uids of owners being deleted with propagationPolicy Foreground */
  readonly #foreground = new Set<string>();
  #nextIp = 11;

  constructor(store: Store) {
    this.store = store;
    store.events.on('event', (ev) => {
      if (ev.type === 'DELETED') queueMicrotask(() => this.#collectGarbage(ev));
    });
  }

  get(info: ResourceInfo, namespace: string, name: string): JsonObject {
    const o = this.store.get(info, info.namespaced ? namespace : '', name);
    if (!o) throw notFound(info.group, info.name, name);
    return o;
  }

  tryGet(info: ResourceInfo, namespace: string, name: string): JsonObject | undefined {
    return this.store.get(info, info.namespaced ? namespace : '', name);
  }

  #checkNamespace(info: ResourceInfo, namespace: string, forCreate: boolean): void {
    if (!info.namespaced) return;
    const ns = this.store.get(R.namespaces, '', namespace);
    if (!ns) throw notFound('', 'namespaces', namespace);
    if (forCreate && metaOf(ns).deletionTimestamp) {
      throw new ApiError(403, 'Forbidden', `${info.name} "${''}" is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`, {
        kind: info.name,
      });
    }
  }

  #checkKind(info: ResourceInfo, body: JsonObject): void {
    const kind = body.kind;
    const apiVersion = body.apiVersion;
    if (kind !== undefined && kind !== '' && kind !== info.kind) {
      throw badRequest(`the server could not find the requested resource (kind ${String(kind)} does not match ${info.kind} of ${info.name})`);
    }
    if (apiVersion !== undefined && apiVersion !== '' && apiVersion !== apiVersionOf(info)) {
      throw badRequest(`the API version in the data (${String(apiVersion)}) does not match the expected API version (${apiVersionOf(info)})`);
    }
  }

  create(info: ResourceInfo, namespace: string, input: JsonObject, opts: WriteOptions = {}): JsonObject {
    this.#checkKind(info, input);
    const body = clone(input);
    body.kind = info.kind;
    body.apiVersion = apiVersionOf(info);
    const meta = (isObject(body.metadata) ? body.metadata : {}) as JsonObject;
    body.metadata = meta;
    if (info.namespaced) {
      if (typeof meta.namespace === 'string' && meta.namespace !== '' && meta.namespace !== namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = namespace;
    } else delete meta.namespace;
    if ((typeof meta.name !== 'string' || meta.name === '') && typeof meta.generateName === 'string' && meta.generateName !== '') {
      meta.name = `${meta.generateName}${randomSuffix()}`;
      for (let i = 0; i < 5 && this.tryGet(info, namespace, meta.name); i++) meta.name = `${meta.generateName}${randomSuffix()}`;
    }
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'selfLink']) delete meta[k];
    rbacDefaults(info, body);
    opts.admit?.(body, undefined);
    const err = validate(info, body);
    if (err) throw err;
    this.#checkNamespace(info, namespace, true);
    applyDefaults(info, body);
    if (info.kind === 'Service') this.#allocateService(body, undefined);
    this.#serviceAccount(info, namespace, body);
    this.#podSecurity(info, namespace, body, undefined, opts.warnings);
    if (opts.dryRun) {
      const out = clone(body);
      const m = out.metadata as JsonObject;
      m.uid = '00000000-0000-0000-0000-000000000000';
      m.creationTimestamp = timestamp();
      return out;
    }
    return this.store.create(info, body);
  }

  /**
   * PUT. For kinds with a status subresource, the main resource keeps the stored status and
   * `subresource: 'status'` changes only the status.
   */
  update(info: ResourceInfo, namespace: string, name: string, input: JsonObject, opts: WriteOptions & { subresource?: 'status' } = {}): JsonObject {
    this.#checkKind(info, input);
    const body = clone(input);
    const meta = (isObject(body.metadata) ? body.metadata : {}) as JsonObject;
    body.metadata = meta;
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    }
    meta.name = name;
    if (info.namespaced) {
      if (typeof meta.namespace === 'string' && meta.namespace !== '' && meta.namespace !== namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = namespace;
    }
    body.kind = info.kind;
    body.apiVersion = apiVersionOf(info);
    const cur = this.get(info, namespace, name);
    let next: JsonObject;
    if (opts.subresource === 'status') {
      next = clone(cur);
      next.status = body.status ?? null;
      const nm = next.metadata as JsonObject;
      if (meta.resourceVersion !== undefined) nm.resourceVersion = meta.resourceVersion;
      else delete nm.resourceVersion;
    } else {
      next = body;
      if (info.statusSubresource) {
        if (cur.status !== undefined) next.status = cur.status;
        else delete next.status;
      }
      rbacDefaults(info, next);
      opts.admit?.(next, cur);
      const err = validate(info, next);
      if (err) throw err;
      this.#checkImmutable(info, cur, next);
      this.#defaultsOnUpdate(info, cur, next);
      const nm = next.metadata as ObjectMeta;
      const cm = cur.metadata as ObjectMeta;
      // metadata the client cannot change through an update
      if (cm.deletionTimestamp) nm.deletionTimestamp = cm.deletionTimestamp;
      else delete nm.deletionTimestamp;
      if (!nm.resourceVersion) delete nm.resourceVersion;
      this.#podSecurity(info, namespace, next, cur, opts.warnings);
    }
    if (opts.dryRun) return next;
    const bump = info.hasSpec && !deepEqual(cur.spec, next.spec);
    const stored = this.store.update(info, next, { bumpGeneration: bump });
    this.#finishFinalizers(info, stored);
    return stored;
  }

  patch(info: ResourceInfo, namespace: string, name: string, type: PatchType, patch: Json, opts: WriteOptions & { subresource?: 'status' } = {}): JsonObject {
    const cur = this.get(info, namespace, name);
    let next: Json;
    if (type === 'json') next = jsonPatch(cur, patch);
    else {
      if (!isObject(patch)) throw badRequest('json: cannot unmarshal array into Go value of type map[string]interface {}');
      next = type === 'merge' ? mergePatch(cur, patch) : strategicMergePatch(cur, patch);
    }
    if (!isObject(next)) throw badRequest('the patch did not produce an object');
    const nm = isObject(next.metadata) ? next.metadata : {};
    if (nm.name !== undefined && nm.name !== name) throw badRequest(`the name of the object (${String(nm.name)}) does not match the name on the URL (${name})`);
    // the patch is against the version we read: a resourceVersion in the patch is a precondition
    if (nm.resourceVersion === undefined) nm.resourceVersion = (cur.metadata as JsonObject).resourceVersion;
    next.metadata = nm;
    return this.update(info, namespace, name, next, opts);
  }

  /**
   * The PodSecurity admission plugin, after validation like kube-apiserver's validating admission
   * (podsecurity.ts has the policy). Pods are refused with 403 when the namespace's enforce level
   * refuses them (on create, and on updates that change images); pods and pod templates of
   * deployments and replica sets get the warn level's Warning. Namespaces: labels that do not
   * parse are refused with 422, and a stricter enforce level warns about the pods already there.
   * Everything the lab's controllers write goes through here too, as their requests do.
   */
  #podSecurity(info: ResourceInfo, namespace: string, obj: JsonObject, cur: JsonObject | undefined, warnings: string[] | undefined): void {
    const meta = obj.metadata as ObjectMeta;
    if (info.kind === 'Namespace') {
      const name = meta.name ?? '';
      const errors = namespaceLabelErrors(meta.labels, cur ? metaOf(cur).labels : undefined, cur !== undefined);
      if (errors.length > 0) {
        throw invalid('', 'Namespace', name, errors.map((e) => ({ field: `metadata.labels[${e.label}]`, type: 'Invalid' as const, value: e.value, detail: e.detail })));
      }
      if (cur) {
        const pods = (): ExistingPod[] => this.store.list(R.pods, name).map((p) => ({ name: metaOf(p).name ?? '', controllerUid: metaOf(p).ownerReferences?.find((r) => r.controller)?.uid, meta: podMeta(metaOf(p)), spec: isObject(p.spec) ? p.spec : {} }));
        warnings?.push(...namespaceUpdateWarnings(name, metaOf(cur).labels, meta.labels, pods));
      }
      return;
    }
    if (info.kind !== 'Pod' && info.kind !== 'Deployment' && info.kind !== 'ReplicaSet') return;
    const ns = this.store.get(R.namespaces, '', namespace);
    const labels = ns ? metaOf(ns).labels : undefined;
    const spec = isObject(obj.spec) ? obj.spec : {};
    if (info.kind === 'Pod') {
      if (cur && !isSignificantPodUpdate(spec, isObject(cur.spec) ? cur.spec : {})) return;
      const decision = admitPod(labels, podMeta(meta), spec);
      if (decision.violation !== undefined) {
        throw new ApiError(403, 'Forbidden', `pods "${meta.name ?? ''}" is forbidden: ${decision.violation}`, { name: meta.name ?? '', kind: 'pods' });
      }
      warnings?.push(...decision.warnings);
      return;
    }
    const template = isObject(spec.template) ? spec.template : undefined;
    if (!template) return;
    const tmeta = (isObject(template.metadata) ? template.metadata : {}) as ObjectMeta;
    const decision = admitPodTemplate(labels, podMeta(tmeta), isObject(template.spec) ? template.spec : {});
    warnings?.push(...decision.warnings);
  }

  /**
   * The ServiceAccount admission plugin (plugin/pkg/admission/serviceaccount/admission.go, Admit):
   * a pod naming a service account that does not exist is refused. The `default` account is left
   * out: the lab's namespace controller makes it a moment after the namespace (a real cluster
   * refuses in that moment too, which would only make tests racy).
   */
  #serviceAccount(info: ResourceInfo, namespace: string, obj: JsonObject): void {
    if (info.kind !== 'Pod') return;
    const spec = isObject(obj.spec) ? obj.spec : {};
    const sa = typeof spec.serviceAccountName === 'string' && spec.serviceAccountName !== '' ? spec.serviceAccountName : 'default';
    if (sa === 'default' || this.tryGet(R.serviceaccounts, namespace, sa)) return;
    const name = String((obj.metadata as JsonObject).name ?? '');
    throw new ApiError(403, 'Forbidden', `pods "${name}" is forbidden: error looking up service account ${namespace}/${sa}: serviceaccount "${sa}" not found`, { name, kind: 'pods' });
  }

  #checkImmutable(info: ResourceInfo, cur: JsonObject, next: JsonObject): void {
    const name = String((cur.metadata as JsonObject).name);
    const roleRef = roleRefChange(info, cur, next);
    if (roleRef) throw roleRef;
    const cs = isObject(cur.spec) ? cur.spec : {};
    const ns = isObject(next.spec) ? next.spec : {};
    if (info.kind === 'Service' && ns.clusterIP !== undefined && ns.clusterIP !== '' && ns.clusterIP !== cs.clusterIP) {
      throw invalid(info.group, info.kind, name, [{ field: 'spec.clusterIPs[0]', type: 'Invalid', value: ns.clusterIP, detail: 'may not change once set' }]);
    }
    if ((info.kind === 'Deployment' || info.kind === 'ReplicaSet') && !deepEqual(cs.selector, ns.selector)) {
      throw invalid(info.group, info.kind, name, [{ field: 'spec.selector', type: 'Invalid', value: ns.selector ?? null, detail: 'field is immutable' }]);
    }
    if (info.kind === 'Pod') {
      const strip = (s: Json | undefined): Json => {
        if (!isObject(s)) return null;
        const c = clone(s);
        if (Array.isArray(c.containers)) for (const x of c.containers) if (isObject(x)) delete x.image;
        delete c.activeDeadlineSeconds;
        delete c.tolerations;
        delete c.terminationGracePeriodSeconds;
        return c;
      };
      const a = clone(cur.spec ?? null);
      const b = clone(next.spec ?? null);
      if (isObject(b) && isObject(a) && b.nodeName === undefined) b.nodeName = a.nodeName ?? null;
      if (isObject(b)) applyDefaults(info, { spec: b } as JsonObject);
      if (!deepEqual(strip(a), strip(b))) {
        throw invalid('', 'Pod', name, [{ field: 'spec', type: 'Forbidden', detail: 'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)' }]);
      }
      next.spec = { ...(a as JsonObject), ...(b as JsonObject) };
    }
  }

  #defaultsOnUpdate(info: ResourceInfo, cur: JsonObject, next: JsonObject): void {
    if (info.kind === 'Pod') return;
    const keepStatus = next.status;
    applyDefaults(info, next);
    if (info.kind === 'Namespace') {
      next.status = cur.status ?? null;
      return;
    }
    if (keepStatus !== undefined) next.status = keepStatus;
    if (info.kind === 'Service') this.#allocateService(next, cur);
  }

  /** ClusterIP (and NodePort) allocation for a new or updated service. */
  #allocateService(svc: JsonObject, cur: JsonObject | undefined): void {
    const spec = svc.spec as JsonObject;
    const curSpec = cur && isObject(cur.spec) ? cur.spec : undefined;
    const name = String((svc.metadata as JsonObject).name);
    if (spec.type === 'ExternalName') return;
    if (curSpec && typeof curSpec.clusterIP === 'string' && (spec.clusterIP === undefined || spec.clusterIP === '')) spec.clusterIP = curSpec.clusterIP;
    const used = new Set<string>();
    for (const o of this.store.peekAll(R.services)) {
      const s = o.spec;
      if (isObject(s) && typeof s.clusterIP === 'string' && (!cur || metaOf(o).uid !== metaOf(cur).uid)) used.add(s.clusterIP);
    }
    if (spec.clusterIP === undefined || spec.clusterIP === '') {
      let ip = '';
      for (let i = 0; i < SVC_SIZE; i++) {
        const n = this.#nextIp;
        this.#nextIp = this.#nextIp + 1 >= SVC_SIZE - 1 ? 11 : this.#nextIp + 1;
        const cand = intToIp(SVC_BASE + n);
        if (n !== 10 && !used.has(cand)) {
          ip = cand;
          break;
        }
      }
      if (!ip) throw new ApiError(500, 'InternalError', 'Internal error occurred: failed to allocate a serviceIP: range is full');
      spec.clusterIP = ip;
    } else if (spec.clusterIP !== 'None' && !curSpec) {
      const ip = String(spec.clusterIP);
      const n = /^\d+\.\d+\.\d+\.\d+$/.test(ip) ? ipToInt(ip) - SVC_BASE : -1;
      if (n <= 0 || n >= SVC_SIZE - 1) {
        throw invalid('', 'Service', name, [{ field: 'spec.clusterIPs', type: 'Invalid', value: [ip], detail: `failed to allocate IP ${ip}: the provided IP (${ip}) is not in the valid range. The range of valid IPs is 198.19.0.0/16` }]);
      }
      if (used.has(ip)) {
        throw invalid('', 'Service', name, [{ field: 'spec.clusterIPs', type: 'Invalid', value: [ip], detail: `failed to allocate IP ${ip}: provided IP is already allocated` }]);
      }
    }
    spec.clusterIPs = [spec.clusterIP as string];
    if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
      const usedPorts = new Set<number>();
      for (const o of this.store.peekAll(R.services)) {
        const s = o.spec;
        if (isObject(s) && Array.isArray(s.ports)) for (const p of s.ports) if (isObject(p) && typeof p.nodePort === 'number') usedPorts.add(p.nodePort);
      }
      for (const p of Array.isArray(spec.ports) ? spec.ports : []) {
        if (!isObject(p) || typeof p.nodePort === 'number') continue;
        const old = curSpec && Array.isArray(curSpec.ports) ? curSpec.ports.find((q) => isObject(q) && q.port === p.port && typeof q.nodePort === 'number') : undefined;
        if (isObject(old)) {
          p.nodePort = old.nodePort;
          continue;
        }
        for (let n = 30000; n <= 32767; n++) {
          if (!usedPorts.has(n)) {
            p.nodePort = n;
            usedPorts.add(n);
            break;
          }
        }
      }
    } else if (Array.isArray(spec.ports)) {
      for (const p of spec.ports) if (isObject(p)) delete p.nodePort;
    }
  }

  /**
   * DELETE. Pods that run are deleted gracefully (deletionTimestamp set; the kubelet removes them
   * once stopped); namespaces go Terminating; objects with finalizers wait for them.
   * Returns the object as the server answers (the last state, or the marked one).
   */
  delete(info: ResourceInfo, namespace: string, name: string, opts: DeleteOptions = {}): { object: JsonObject; finished: boolean } {
    const cur = this.get(info, namespace, name);
    const meta = cur.metadata as ObjectMeta;
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== meta.uid) {
      throw conflict(info.group, info.name, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${meta.uid}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== meta.resourceVersion) {
      throw conflict(info.group, info.name, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${meta.resourceVersion}`);
    }
    if (opts.dryRun) return { object: cur, finished: true };
    const policy = opts.propagationPolicy ?? (info.kind === 'ReplicaSet' || info.kind === 'Deployment' ? 'Background' : 'Background');
    if (policy === 'Orphan') this.#orphanDependents(meta.uid!);

    if (info.kind === 'Namespace') {
      if (!meta.deletionTimestamp) {
        const next = clone(cur);
        (next.metadata as ObjectMeta).deletionTimestamp = timestamp();
        next.status = { phase: 'Terminating' };
        const stored = this.store.update(info, next, { bumpGeneration: false });
        return { object: stored, finished: false };
      }
      return { object: cur, finished: false };
    }

    const finalizers = (meta.finalizers ?? []).filter((f) => f !== 'foregroundDeletion');
    if (policy === 'Foreground' && this.#hasDependents(meta.uid!)) {
      this.#foreground.add(meta.uid!);
      const next = clone(cur);
      const m = next.metadata as ObjectMeta;
      m.deletionTimestamp ??= timestamp();
      m.finalizers = [...new Set([...(m.finalizers ?? []), 'foregroundDeletion'])];
      const stored = this.store.update(info, next, { bumpGeneration: false });
      for (const dep of this.#dependents(meta.uid!)) this.#deleteQuietly(dep.info, dep.namespace, dep.name, { propagationPolicy: 'Foreground' });
      return { object: stored, finished: false };
    }

    if (info.kind === 'Pod') {
      const spec = isObject(cur.spec) ? cur.spec : {};
      const status = isObject(cur.status) ? cur.status : {};
      const grace = opts.gracePeriodSeconds ?? (typeof spec.terminationGracePeriodSeconds === 'number' ? spec.terminationGracePeriodSeconds : 30);
      const phase = status.phase;
      const scheduled = typeof spec.nodeName === 'string' && spec.nodeName !== '';
      if (scheduled && grace > 0 && phase !== 'Succeeded' && phase !== 'Failed') {
        const next = clone(cur);
        const m = next.metadata as ObjectMeta;
        if (!m.deletionTimestamp) {
          m.deletionTimestamp = timestamp(new Date(now().getTime() + grace * 1000));
          m.deletionGracePeriodSeconds = grace;
        }
        const stored = this.store.update(info, next, { bumpGeneration: false });
        return { object: stored, finished: false };
      }
    }

    if (finalizers.length > 0) {
      const next = clone(cur);
      (next.metadata as ObjectMeta).deletionTimestamp ??= timestamp();
      const stored = this.store.update(info, next, { bumpGeneration: false });
      return { object: stored, finished: false };
    }
    return { object: this.store.delete(info, namespace, name), finished: true };
  }

  /** Removes an object for good (the kubelet after the pod stopped, the namespace controller). */
  remove(info: ResourceInfo, namespace: string, name: string): void {
    if (this.tryGet(info, namespace, name)) this.store.delete(info, namespace, name);
  }

  #deleteQuietly(info: ResourceInfo, namespace: string, name: string, opts: DeleteOptions): void {
    try {
      this.delete(info, namespace, name, opts);
    } catch (e) {
      if (!(e instanceof ApiError && e.code === 404)) throw e;
    }
  }

  #finishFinalizers(info: ResourceInfo, stored: JsonObject): void {
    const m = stored.metadata as ObjectMeta;
    if (!m.deletionTimestamp || info.kind === 'Pod' || info.kind === 'Namespace') return;
    if ((m.finalizers ?? []).length === 0) this.remove(info, m.namespace ?? '', m.name!);
  }

  *#dependents(uid: string): Generator<{ info: ResourceInfo; namespace: string; name: string }> {
    for (const info of RESOURCES) {
      for (const o of this.store.peekAll(info)) {
        const m = metaOf(o);
        if (m.ownerReferences?.some((r) => r.uid === uid)) yield { info, namespace: m.namespace ?? '', name: m.name! };
      }
    }
  }

  #hasDependents(uid: string): boolean {
    return !this.#dependents(uid).next().done;
  }

  #orphanDependents(uid: string): void {
    for (const d of [...this.#dependents(uid)]) {
      const o = this.tryGet(d.info, d.namespace, d.name);
      if (!o) continue;
      const m = o.metadata as ObjectMeta;
      m.ownerReferences = (m.ownerReferences ?? []).filter((r) => r.uid !== uid);
      if (m.ownerReferences.length === 0) delete m.ownerReferences;
      delete m.resourceVersion;
      this.store.update(d.info, o, { bumpGeneration: false });
    }
  }

  /** The garbage collector: dependents of a deleted owner go too (background propagation). */
  #collectGarbage(ev: StoreEvent): void {
    const m = metaOf(ev.object);
    const uid = m.uid!;
    for (const d of [...this.#dependents(uid)]) {
      const o = this.tryGet(d.info, d.namespace, d.name);
      if (!o) continue;
      const refs = metaOf(o).ownerReferences ?? [];
      const others = refs.filter((r) => r.uid !== uid);
      if (others.length > 0) continue;
      this.#deleteQuietly(d.info, d.namespace, d.name, { propagationPolicy: 'Background' });
    }
    // owners waiting in foreground deletion for their dependents
    for (const ownerUid of [...this.#foreground]) {
      if (this.#hasDependents(ownerUid)) continue;
      this.#foreground.delete(ownerUid);
      for (const info of RESOURCES) {
        for (const o of this.store.peekAll(info)) {
          const om = metaOf(o);
          if (om.uid !== ownerUid) continue;
          const next = clone(o);
          const nm = next.metadata as ObjectMeta;
          nm.finalizers = (nm.finalizers ?? []).filter((f) => f !== 'foregroundDeletion');
          if (nm.finalizers.length === 0) delete nm.finalizers;
          const stored = this.store.update(info, next, { bumpGeneration: false });
          this.#finishFinalizers(info, stored);
        }
      }
    }
  }
}

function podMeta(m: ObjectMeta): PodMeta {
  return { annotations: m.annotations };
}

export function findResourceOrThrow(group: string, version: string, name: string): ResourceInfo {
  const info = findResource(group, version, name);
  if (!info) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
  return info;
}
