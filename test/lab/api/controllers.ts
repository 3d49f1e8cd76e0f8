/**
 * The controllers of the lab: namespace lifecycle, deployment -> replicaset -> pods, a one-node
 * scheduler + kubelet that runs pods through the data plane (LabNet) and reports their status,
 * endpoints from service selectors, and the sync of services and DNS records into the data plane.
 */
import { createHash, randomBytes } from 'node:crypto';
import { ApiError } from './status.js';
import {
  clone,
  deepEqual,
  isObject,
  stableStringify,
  type Condition,
  type Container,
  type ContainerState,
  type ContainerStatus,
  type Deployment,
  type Endpoints,
  type JsonObject,
  type KeyToPath,
  type KObject,
  type Pod,
  type PodStatus,
  type ReplicaSet,
  type Service,
} from './json.js';
import { R, randomSuffix, type Registry } from './registry.js';
import { RESOURCES } from './resources.js';
import { matchesSelector, matchRequirements, selectorRequirements } from './selectors.js';
import { metaOf, type StoreEvent } from './store.js';
import { now, timestamp } from './clock.js';
import { LAB, type ContainerRuntimeSpec, type LabNet, type PodRuntimeSpec, type ServiceRuntimeSpec } from '../net/types.js';
import { lookupImage } from '../images/table.js';

export const NODE_NAME = LAB.nodeNetns;
export const NODE_IP = LAB.apiServerIp;
export const NODE_LABELS: Record<string, string> = {
  'kubernetes.io/hostname': NODE_NAME,
  'kubernetes.io/os': 'linux',
  'kubernetes.io/arch': 'amd64',
  'beta.kubernetes.io/os': 'linux',
  'beta.kubernetes.io/arch': 'amd64',
  'node-role.kubernetes.io/control-plane': '',
};

const HASH_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** pod-template-hash: a short safe string of the template's content */
export function templateHash(template: unknown): string {
  // nulls are absent values (Go clients send `creationTimestamp: null`): they must not change the hash
  const digest = createHash('sha256').update(stableStringify(dropNulls(template))).digest();
  let n = digest.readUInt32BE(0) * 65536 + digest.readUInt16BE(4);
  let s = '';
  while (s.length < 10) {
    s += HASH_CHARS[n % HASH_CHARS.length];
    n = Math.floor(n / HASH_CHARS.length) || digest[s.length + 6];
  }
  return s;
}

function dropNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropNulls);
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== null) out[k] = dropNulls(x);
    return out;
  }
  return v;
}

function asT<T>(o: JsonObject): T {
  return o as unknown as T;
}
function toJ(o: unknown): JsonObject {
  return o as JsonObject;
}

function isPodReady(p: Pod): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}
function isTerminating(o: KObject): boolean {
  return o.metadata.deletionTimestamp !== undefined;
}
function controllerOf(o: KObject): string | undefined {
  return o.metadata.ownerReferences?.find((r) => r.controller)?.uid;
}

/** A de-duplicating work queue drained on the next turn of the event loop. */
class Queue {
  readonly #pending = new Map<string, () => void>();
  #scheduled = false;
  readonly #onError: (e: unknown) => void;
  constructor(onError: (e: unknown) => void) {
    this.#onError = onError;
  }
  add(key: string, fn: () => void): void {
    this.#pending.set(key, fn);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#drain());
    }
  }
  #drain(): void {
    this.#scheduled = false;
    const work = [...this.#pending.values()];
    this.#pending.clear();
    for (const fn of work) {
      try {
        fn();
      } catch (e) {
        this.#onError(e);
      }
    }
  }
}

interface ContainerRuntime {
  name: string;
  image: string;
  state: ContainerState;
  lastState: ContainerState;
  ready: boolean;
  started: boolean;
  restartCount: number;
}

interface PodRuntime {
  uid: string;
  namespace: string;
  name: string;
  podIP?: string;
  startTime?: string;
  created: boolean;
  creating: boolean;
  stopping: boolean;
  containers: Map<string, ContainerRuntime>;
  /** set while the pod waits for a secret/configmap */
  blocked?: { reason: string; message: string };
  backoffTimer?: NodeJS.Timeout;
}

class ResolveError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

export interface ControllerOptions {
  registry: Registry;
  net: LabNet;
  log?: (line: string) => void;
}

export class Controllers {
  readonly #reg: Registry;
  readonly #net: LabNet;
  readonly #log: (line: string) => void;
  readonly #queue: Queue;
  readonly #pods = new Map<string, PodRuntime>();
  #syncTimer: NodeJS.Timeout | undefined;
  #lastServices = '';
  #lastDns = '';
  #retryTimer: NodeJS.Timeout | undefined;
  /** replica sets whose last pod create was refused: uid -> next delay and the retry timer */
  readonly #createBackoff = new Map<string, { delayMs: number; timer: NodeJS.Timeout; error: string; due: boolean }>();
  #stopped = false;
  readonly #onStoreEvent = (ev: StoreEvent): void => this.#route(ev);

  constructor(opts: ControllerOptions) {
    this.#reg = opts.registry;
    this.#net = opts.net;
    this.#log = opts.log ?? (() => undefined);
    this.#queue = new Queue((e) => this.#log(`controller error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
  }

  start(): void {
    this.#reg.store.events.on('event', this.#onStoreEvent);
    this.#net.events.on('containerStarted', this.#onStarted);
    this.#net.events.on('containerReady', this.#onReady);
    this.#net.events.on('containerExited', this.#onExited);
    this.#net.events.on('imagePullFailed', this.#onPullFailed);
    this.#net.events.on('containerWaiting', this.#onWaiting);
    this.#retryTimer = setInterval(() => this.#retryBlocked(), 2000);
    // pick up what exists already
    for (const info of [R.namespaces, R.deployments, R.replicasets, R.pods]) {
      for (const o of this.#reg.store.list(info)) this.#route({ type: 'ADDED', resource: `${info.group}/${info.name}`, rv: 0, object: o });
    }
    this.#scheduleSync();
  }

  /** Stops reacting and deletes every pod through the data plane. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#reg.store.events.off('event', this.#onStoreEvent);
    this.#net.events.off('containerStarted', this.#onStarted);
    this.#net.events.off('containerReady', this.#onReady);
    this.#net.events.off('containerExited', this.#onExited);
    this.#net.events.off('imagePullFailed', this.#onPullFailed);
    this.#net.events.off('containerWaiting', this.#onWaiting);
    if (this.#retryTimer) clearInterval(this.#retryTimer);
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    for (const b of this.#createBackoff.values()) clearTimeout(b.timer);
    this.#createBackoff.clear();
    const all = [...this.#pods.values()];
    for (const p of all) if (p.backoffTimer) clearTimeout(p.backoffTimer);
    await Promise.allSettled(all.filter((p) => p.created || p.creating).map((p) => this.#net.deletePod(p.uid)));
    this.#pods.clear();
  }

  #route(ev: StoreEvent): void {
    if (this.#stopped) return;
    const m = metaOf(ev.object);
    const ns = m.namespace ?? '';
    switch (ev.resource) {
      case '/namespaces':
        this.#queue.add(`ns:${m.name}`, () => this.#reconcileNamespace(m.name!));
        break;
      case 'apps/deployments':
        this.#queue.add(`deploy:${ns}/${m.name}`, () => this.#reconcileDeployment(ns, m.name!));
        break;
      case 'apps/replicasets': {
        this.#queue.add(`rs:${ns}/${m.name}`, () => this.#reconcileReplicaSet(ns, m.name!));
        const owner = m.ownerReferences?.find((r) => r.controller && r.kind === 'Deployment');
        if (owner) this.#queue.add(`deploy:${ns}/${owner.name}`, () => this.#reconcileDeployment(ns, owner.name));
        break;
      }
      case '/pods': {
        const owner = m.ownerReferences?.find((r) => r.controller && r.kind === 'ReplicaSet');
        if (owner) this.#queue.add(`rs:${ns}/${owner.name}`, () => this.#reconcileReplicaSet(ns, owner.name));
        this.#kubelet(ev);
        this.#scheduleSync();
        const nsObj = this.#reg.tryGet(R.namespaces, '', ns);
        if (nsObj && metaOf(nsObj).deletionTimestamp) this.#queue.add(`ns:${ns}`, () => this.#reconcileNamespace(ns));
        break;
      }
      case '/services':
      case '/endpoints':
        this.#scheduleSync();
        break;
      case '/secrets':
      case '/configmaps':
        if (ev.type !== 'DELETED') this.#queue.add(`retry:${ns}`, () => this.#retryBlocked(ns));
        break;
    }
    if (ev.type === 'DELETED' && ns !== '' && ev.resource !== '/pods') {
      const nsObj = this.#reg.tryGet(R.namespaces, '', ns);
      if (nsObj && metaOf(nsObj).deletionTimestamp) this.#queue.add(`ns:${ns}`, () => this.#reconcileNamespace(ns));
    }
  }

  // ---- events (the Event kind) ----

  #record(involved: KObject, type: 'Normal' | 'Warning', reason: string, message: string, component = 'kubelet'): void {
    const ns = involved.metadata.namespace ?? 'default';
    const ts = timestamp();
    try {
      this.#reg.create(R.events, ns, {
        metadata: { name: `${involved.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: ns },
        involvedObject: {
          kind: involved.kind,
          namespace: ns,
          name: involved.metadata.name,
          uid: involved.metadata.uid,
          apiVersion: involved.apiVersion,
          resourceVersion: involved.metadata.resourceVersion,
        },
        reason,
        message,
        source: { component, host: component === 'kubelet' ? NODE_NAME : undefined } as JsonObject,
        firstTimestamp: ts,
        lastTimestamp: ts,
        count: 1,
        type,
        eventTime: null,
        reportingComponent: component,
        reportingInstance: component === 'kubelet' ? NODE_NAME : '',
      });
    } catch {
      // the namespace may be terminating: events are best effort
    }
  }

  // ---- namespaces ----

  #reconcileNamespace(name: string): void {
    const o = this.#reg.tryGet(R.namespaces, '', name);
    if (!o) return;
    const m = metaOf(o);
    if (!m.deletionTimestamp) {
      if (!this.#reg.tryGet(R.serviceaccounts, name, 'default')) {
        try {
          this.#reg.create(R.serviceaccounts, name, { metadata: { name: 'default' } });
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 409)) throw e;
        }
      }
      return;
    }
    let left = 0;
    for (const info of RESOURCES) {
      if (!info.namespaced) continue;
      for (const obj of this.#reg.store.list(info, name)) {
        left++;
        if (!metaOf(obj).deletionTimestamp) {
          try {
            this.#reg.delete(info, name, metaOf(obj).name!, { propagationPolicy: 'Background' });
          } catch (e) {
            if (!(e instanceof ApiError && e.code === 404)) throw e;
          }
        }
      }
    }
    if (left === 0) this.#reg.remove(R.namespaces, '', name);
    else setTimeout(() => this.#queue.add(`ns:${name}`, () => this.#reconcileNamespace(name)), 500).unref();
  }

  // ---- deployments ----

  #reconcileDeployment(ns: string, name: string): void {
    const o = this.#reg.tryGet(R.deployments, ns, name);
    if (!o) return;
    const d = asT<Deployment>(o);
    if (isTerminating(d)) return;
    const desired = d.spec.replicas ?? 1;
    const hash = templateHash(d.spec.template);
    const owned = this.#reg.store
      .list(R.replicasets, ns)
      .map((x) => asT<ReplicaSet>(x))
      .filter((rs) => controllerOf(rs) === d.metadata.uid && !isTerminating(rs));
    let newRs = owned.find((rs) => rs.metadata.labels?.['pod-template-hash'] === hash);
    const maxRevision = Math.max(0, ...owned.map((rs) => Number(rs.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? '0')));
    let revision = newRs ? Number(newRs.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? '1') : maxRevision + 1;
    if (!d.spec.paused) {
      if (!newRs) {
        const tmpl = clone(d.spec.template);
        tmpl.metadata = { ...(tmpl.metadata ?? {}), labels: { ...(tmpl.metadata?.labels ?? {}), 'pod-template-hash': hash } };
        const sel = clone(d.spec.selector);
        sel.matchLabels = { ...(sel.matchLabels ?? {}), 'pod-template-hash': hash };
        const created = this.#reg.create(R.replicasets, ns, {
          metadata: {
            name: `${name}-${hash}`,
            labels: toJ(tmpl.metadata.labels),
            annotations: {
              'deployment.kubernetes.io/revision': String(revision),
              'deployment.kubernetes.io/desired-replicas': String(desired),
              'deployment.kubernetes.io/max-replicas': String(desired + Math.ceil(desired * 0.25)),
            },
            ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name, uid: d.metadata.uid, controller: true, blockOwnerDeletion: true }],
          },
          spec: toJ({ replicas: desired, selector: sel, template: tmpl }),
        });
        newRs = asT<ReplicaSet>(created);
        this.#record(d, 'Normal', 'ScalingReplicaSet', `Scaled up replica set ${newRs.metadata.name} from 0 to ${desired}`, 'deployment-controller');
      } else if ((newRs.spec.replicas ?? 0) !== desired || newRs.metadata.annotations?.['deployment.kubernetes.io/revision'] !== String(revision)) {
        const from = newRs.spec.replicas ?? 0;
        const next = clone(newRs);
        next.spec.replicas = desired;
        if (revision <= maxRevision && owned.some((rs) => rs !== newRs && (rs.spec.replicas ?? 0) > 0)) revision = maxRevision + 1;
        next.metadata.annotations = { ...(next.metadata.annotations ?? {}), 'deployment.kubernetes.io/revision': String(revision), 'deployment.kubernetes.io/desired-replicas': String(desired) };
        delete (next.metadata as { resourceVersion?: string }).resourceVersion;
        newRs = asT<ReplicaSet>(this.#reg.update(R.replicasets, ns, newRs.metadata.name, toJ(next)));
        if (from !== desired) {
          this.#record(d, 'Normal', 'ScalingReplicaSet', `Scaled ${desired > from ? 'up' : 'down'} replica set ${newRs.metadata.name} from ${from} to ${desired}`, 'deployment-controller');
        }
      }
      // old replica sets go to 0 once the new one is available (surge-style rollout)
      const newAvailable = newRs.status?.availableReplicas ?? 0;
      if (newAvailable >= desired || desired === 0) {
        for (const rs of owned) {
          if (rs.metadata.uid === newRs.metadata.uid || (rs.spec.replicas ?? 0) === 0) continue;
          const from = rs.spec.replicas ?? 0;
          const next = clone(rs);
          next.spec.replicas = 0;
          delete (next.metadata as { resourceVersion?: string }).resourceVersion;
          this.#reg.update(R.replicasets, ns, rs.metadata.name, toJ(next));
          this.#record(d, 'Normal', 'ScalingReplicaSet', `Scaled down replica set ${rs.metadata.name} from ${from} to 0`, 'deployment-controller');
        }
      }
      // keep revisionHistoryLimit old replica sets
      const rhl = (d.spec as unknown as JsonObject).revisionHistoryLimit;
      const limit = typeof rhl === 'number' ? rhl : 10;
      const old = owned
        .filter((rs) => rs.metadata.uid !== newRs!.metadata.uid && (rs.spec.replicas ?? 0) === 0 && (rs.status?.replicas ?? 0) === 0)
        .sort((a, b) => Number(a.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? 0) - Number(b.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? 0));
      for (const rs of old.slice(0, Math.max(0, old.length - limit))) this.#reg.delete(R.replicasets, ns, rs.metadata.name, {});
    }

    // status
    const all = this.#reg.store
      .list(R.replicasets, ns)
      .map((x) => asT<ReplicaSet>(x))
      .filter((rs) => controllerOf(rs) === d.metadata.uid);
    const sum = (f: (rs: ReplicaSet) => number | undefined): number => all.reduce((a, rs) => a + (f(rs) ?? 0), 0);
    const replicas = sum((rs) => rs.status?.replicas);
    const ready = sum((rs) => rs.status?.readyReplicas);
    const available = sum((rs) => rs.status?.availableReplicas);
    const cur = newRs ? all.find((rs) => rs.metadata.uid === newRs!.metadata.uid) : undefined;
    const updated = cur?.status?.replicas ?? 0;
    const maxUnavailable = Math.floor(desired * 0.25);
    const prev = d.status?.conditions ?? [];
    const cond = (type: string, status: 'True' | 'False', reason: string, message: string): Condition => {
      const old = prev.find((c) => c.type === type);
      const ts = timestamp();
      const changed = !old || old.status !== status;
      const same = old && old.status === status && old.reason === reason && old.message === message;
      return {
        type,
        status,
        lastUpdateTime: same ? old.lastUpdateTime : ts,
        lastTransitionTime: changed ? ts : old.lastTransitionTime,
        reason,
        message,
      };
    };
    const complete = updated === desired && replicas === desired && available >= desired;
    const rsName = newRs?.metadata.name ?? name;
    const status: Deployment['status'] = {
      observedGeneration: d.metadata.generation,
      replicas,
      updatedReplicas: updated,
      readyReplicas: ready,
      availableReplicas: available,
      conditions: [
        available >= desired - maxUnavailable
          ? cond('Available', 'True', 'MinimumReplicasAvailable', 'Deployment has minimum availability.')
          : cond('Available', 'False', 'MinimumReplicasUnavailable', 'Deployment does not have minimum availability.'),
        complete
          ? cond('Progressing', 'True', 'NewReplicaSetAvailable', `ReplicaSet "${rsName}" has successfully progressed.`)
          : cond('Progressing', 'True', 'ReplicaSetUpdated', `ReplicaSet "${rsName}" is progressing.`),
      ],
    };
    // deployment sync.go calculateStatus: the replica sets' ReplicaFailure is the deployment's too
    const failure = [...(cur ? [cur] : []), ...all].flatMap((rs) => rs.status?.conditions ?? []).find((c) => c.type === 'ReplicaFailure');
    if (failure) status.conditions!.push(cond('ReplicaFailure', 'True', failure.reason ?? 'FailedCreate', failure.message ?? ''));
    if (replicas - available > 0) status.unavailableReplicas = replicas - available;
    for (const k of ['replicas', 'updatedReplicas', 'readyReplicas', 'availableReplicas'] as const) if (status[k] === 0) delete status[k];
    const fresh = asT<Deployment>(this.#reg.get(R.deployments, ns, name));
    const annotations = { ...(fresh.metadata.annotations ?? {}) };
    const wantRev = newRs ? (newRs.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? String(revision)) : undefined;
    if (wantRev && annotations['deployment.kubernetes.io/revision'] !== wantRev) {
      annotations['deployment.kubernetes.io/revision'] = wantRev;
      const next = clone(fresh);
      next.metadata.annotations = annotations;
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#reg.store.update(R.deployments, toJ(next), { bumpGeneration: false });
    }
    const after = asT<Deployment>(this.#reg.get(R.deployments, ns, name));
    if (!deepEqual(stripTimes(after.status), stripTimes(status))) {
      const next = clone(after);
      next.status = status;
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#reg.store.update(R.deployments, toJ(next), { bumpGeneration: false });
    }
  }

  // ---- replica sets ----

  #reconcileReplicaSet(ns: string, name: string): void {
    const o = this.#reg.tryGet(R.replicasets, ns, name);
    if (!o) return;
    const rs = asT<ReplicaSet>(o);
    if (isTerminating(rs)) return;
    const desired = rs.spec.replicas ?? 1;
    const pods = this.#reg.store
      .list(R.pods, ns)
      .map((x) => asT<Pod>(x))
      .filter((p) => controllerOf(p) === rs.metadata.uid);
    const active = pods.filter((p) => !isTerminating(p) && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed');
    const uid = rs.metadata.uid;
    // the error of the last refused create while its backoff runs (manageReplicasErr)
    const backoff = this.#createBackoff.get(uid);
    let createError = backoff?.error;
    if (active.length >= desired && backoff) {
      clearTimeout(backoff.timer);
      this.#createBackoff.delete(uid);
      createError = undefined;
    }
    if (active.length < desired && (!backoff || backoff.due)) {
      for (let i = active.length; i < desired; i++) {
        const tmpl = clone(rs.spec.template);
        let created: JsonObject;
        try {
          created = this.#reg.create(R.pods, ns, {
            metadata: {
              generateName: `${name}-`,
              labels: toJ(tmpl.metadata?.labels ?? {}),
              annotations: toJ(tmpl.metadata?.annotations ?? {}),
              ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name, uid, controller: true, blockOwnerDeletion: true }],
            },
            spec: toJ(tmpl.spec),
          });
        } catch (e) {
          // kube-controller-manager's RealPodControl.createPods: a refused create is a Warning
          // event on the ReplicaSet (not while the namespace terminates), the rest of the batch
          // waits, and the ReplicaSet is synced again after a backoff.
          if (!(e instanceof ApiError)) throw e;
          if (!(e.code === 403 && e.message.includes('because it is being terminated'))) {
            this.#record(rs, 'Warning', 'FailedCreate', `Error creating: ${e.message}`, 'replicaset-controller');
          }
          createError = e.message;
          this.#backOffCreate(ns, name, uid, e.message);
          break;
        }
        if (backoff) {
          clearTimeout(backoff.timer);
          this.#createBackoff.delete(uid);
          createError = undefined;
        }
        active.push(asT<Pod>(created));
        this.#record(rs, 'Normal', 'SuccessfulCreate', `Created pod: ${metaOf(created).name}`, 'replicaset-controller');
      }
    } else if (active.length > desired) {
      const rank = (p: Pod): number => (!p.spec.nodeName ? 0 : p.status?.phase === 'Pending' ? 1 : !isPodReady(p) ? 2 : 3);
      const victims = [...active]
        .sort((a, b) => rank(a) - rank(b) || b.metadata.creationTimestamp.localeCompare(a.metadata.creationTimestamp))
        .slice(0, active.length - desired);
      for (const p of victims) {
        try {
          this.#reg.delete(R.pods, ns, p.metadata.name, {});
          this.#record(rs, 'Normal', 'SuccessfulDelete', `Deleted pod: ${p.metadata.name}`, 'replicaset-controller');
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 404)) throw e;
        }
        active.splice(active.indexOf(p), 1);
      }
    }
    const reqs = selectorRequirements(rs.spec.selector);
    const ready = active.filter(isPodReady).length;
    const status: ReplicaSet['status'] = {
      replicas: active.length,
      fullyLabeledReplicas: active.filter((p) => matchRequirements(reqs, p.metadata.labels)).length,
      readyReplicas: ready,
      availableReplicas: ready,
      observedGeneration: rs.metadata.generation,
    };
    for (const k of ['fullyLabeledReplicas', 'readyReplicas', 'availableReplicas'] as const) if (status[k] === 0) delete status[k];
    // replica_set_utils.go calculateStatus: ReplicaFailure while creating fails, gone after
    const failure = rs.status?.conditions?.find((c) => c.type === 'ReplicaFailure');
    if (createError !== undefined && active.length < desired) {
      status.conditions = [failure ?? { type: 'ReplicaFailure', status: 'True', lastTransitionTime: timestamp(), reason: 'FailedCreate', message: createError }];
    }
    const fresh = this.#reg.get(R.replicasets, ns, name);
    if (!deepEqual(fresh.status, status)) {
      const next = clone(fresh);
      next.status = toJ(status);
      delete (next.metadata as JsonObject).resourceVersion;
      this.#reg.store.update(R.replicasets, next, { bumpGeneration: false });
    }
  }

  /**
   * The replica set controller's rate-limited requeue after a failed sync. kube-controller-manager
   * starts at 5 ms and doubles up to 1000 s; the lab starts at 1 s and stops doubling at 60 s, so a
   * refused pod makes one FailedCreate event now and a few more later, not dozens per second.
   */
  #backOffCreate(ns: string, name: string, uid: string, error: string): void {
    const prev = this.#createBackoff.get(uid);
    if (prev) clearTimeout(prev.timer);
    const delayMs = prev ? Math.min(prev.delayMs * 2, 60_000) : 1000;
    const timer = setTimeout(() => {
      const cur = this.#createBackoff.get(uid);
      if (cur) cur.due = true;
      if (!this.#reg.tryGet(R.replicasets, ns, name)) this.#createBackoff.delete(uid);
      else this.#queue.add(`rs:${ns}/${name}`, () => this.#reconcileReplicaSet(ns, name));
    }, delayMs);
    timer.unref();
    this.#createBackoff.set(uid, { delayMs, timer, error, due: false });
  }

  // ---- scheduler + kubelet ----

  #kubelet(ev: StoreEvent): void {
    const pod = asT<Pod>(ev.object);
    const uid = pod.metadata.uid;
    if (ev.type === 'DELETED') {
      const rt = this.#pods.get(uid);
      if (rt) {
        this.#pods.delete(uid);
        if (rt.backoffTimer) clearTimeout(rt.backoffTimer);
        if (rt.created || rt.creating) this.#net.deletePod(uid).catch((e: unknown) => this.#log(`deletePod ${uid}: ${String(e)}`));
      }
      return;
    }
    this.#queue.add(`pod:${uid}`, () => this.#syncPod(pod.metadata.namespace ?? '', pod.metadata.name, uid));
  }

  #syncPod(ns: string, name: string, uid: string): void {
    const o = this.#reg.tryGet(R.pods, ns, name);
    if (!o || metaOf(o).uid !== uid) return;
    const pod = asT<Pod>(o);
    let rt = this.#pods.get(uid);
    if (isTerminating(pod)) {
      if (rt?.stopping) return;
      if (!rt || (!rt.created && !rt.creating)) {
        this.#pods.delete(uid);
        this.#reg.remove(R.pods, ns, name);
        return;
      }
      rt.stopping = true;
      if (rt.backoffTimer) clearTimeout(rt.backoffTimer);
      for (const c of pod.spec.containers) this.#record(pod, 'Normal', 'Killing', `Stopping container ${c.name}`);
      const wait = rt.creating ? new Promise((r) => setTimeout(r, 200)) : Promise.resolve();
      void wait
        .then(() => this.#net.deletePod(uid))
        .catch((e: unknown) => this.#log(`deletePod ${uid}: ${String(e)}`))
        .finally(() => {
          this.#pods.delete(uid);
          const cur = this.#reg.tryGet(R.pods, ns, name);
          if (cur && metaOf(cur).uid === uid) this.#reg.remove(R.pods, ns, name);
        });
      return;
    }
    if (!pod.spec.nodeName) {
      this.#schedule(pod);
      return;
    }
    if (!rt) {
      rt = {
        uid,
        namespace: ns,
        name,
        created: false,
        creating: false,
        stopping: false,
        containers: new Map(
          pod.spec.containers.map((c) => [
            c.name,
            { name: c.name, image: c.image, state: { waiting: { reason: 'ContainerCreating' } }, lastState: {}, ready: false, started: false, restartCount: 0 },
          ]),
        ),
      };
      this.#pods.set(uid, rt);
      this.#startPod(pod, rt);
    }
  }

  #schedule(pod: Pod): void {
    const sel = pod.spec.nodeSelector ?? {};
    const fits = Object.entries(sel).every(([k, v]) => NODE_LABELS[k] === v);
    const ns = pod.metadata.namespace ?? '';
    if (!fits) {
      const already = pod.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable');
      if (already) return;
      const message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
      const next = clone(pod);
      next.status = {
        ...(next.status ?? {}),
        phase: 'Pending',
        conditions: [{ type: 'PodScheduled', status: 'False', lastProbeTime: null, lastTransitionTime: timestamp(), reason: 'Unschedulable', message }],
      };
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
      this.#record(pod, 'Warning', 'FailedScheduling', message, 'default-scheduler');
      return;
    }
    const next = clone(pod);
    next.spec.nodeName = NODE_NAME;
    next.status = {
      ...(next.status ?? {}),
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: timestamp() }],
    };
    delete (next.metadata as { resourceVersion?: string }).resourceVersion;
    this.#reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
    this.#record(pod, 'Normal', 'Scheduled', `Successfully assigned ${ns}/${pod.metadata.name} to ${NODE_NAME}`, 'default-scheduler');
  }

  #startPod(pod: Pod, rt: PodRuntime): void {
    let spec: PodRuntimeSpec;
    try {
      spec = this.#runtimeSpec(pod);
      rt.blocked = undefined;
    } catch (e) {
      if (!(e instanceof ResolveError)) throw e;
      const first = rt.blocked === undefined;
      rt.blocked = { reason: e.reason, message: e.message };
      for (const c of rt.containers.values()) c.state = { waiting: e.reason === 'ContainerCreating' ? { reason: e.reason } : { reason: e.reason, message: e.message } };
      this.#writeStatus(rt);
      if (first) this.#record(pod, 'Warning', e.reason === 'ContainerCreating' ? 'FailedMount' : 'Failed', e.reason === 'ContainerCreating' ? `MountVolume.SetUp failed: ${e.message}` : `Error: ${e.message}`);
      return;
    }
    rt.creating = true;
    rt.startTime = timestamp();
    this.#writeStatus(rt);
    this.#net.createPod(spec).then(
      ({ podIP }) => {
        rt.creating = false;
        rt.created = true;
        rt.podIP = podIP;
        if (this.#pods.get(rt.uid) !== rt || rt.stopping) return;
        this.#writeStatus(rt);
      },
      (e: unknown) => {
        rt.creating = false;
        this.#log(`createPod ${pod.metadata.namespace}/${pod.metadata.name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        if (this.#pods.get(rt.uid) !== rt || rt.stopping) return;
        this.#record(pod, 'Warning', 'FailedCreatePodSandBox', `Failed to create pod sandbox: ${e instanceof Error ? e.message : String(e)}`);
        // try again later like the kubelet does
        this.#pods.delete(rt.uid);
        setTimeout(() => this.#queue.add(`pod:${rt.uid}`, () => this.#syncPod(rt.namespace, rt.name, rt.uid)), 2000).unref();
      },
    );
  }

  #retryBlocked(ns?: string): void {
    if (this.#stopped) return;
    for (const rt of this.#pods.values()) {
      if (!rt.blocked || (ns !== undefined && rt.namespace !== ns)) continue;
      const o = this.#reg.tryGet(R.pods, rt.namespace, rt.name);
      if (!o || isTerminating(asT<Pod>(o))) continue;
      this.#startPod(asT<Pod>(o), rt);
    }
  }

  #runtimeSpec(pod: Pod): PodRuntimeSpec {
    const ns = pod.metadata.namespace ?? '';
    const secret = (name: string, optional: boolean | undefined, reason: string): Record<string, Buffer> | undefined => {
      const s = this.#reg.tryGet(R.secrets, ns, name);
      if (!s) {
        if (optional) return undefined;
        throw new ResolveError(reason, `secret "${name}" not found`);
      }
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(isObject(s.data) ? s.data : {})) out[k] = Buffer.from(String(v), 'base64');
      return out;
    };
    const configMap = (name: string, optional: boolean | undefined, reason: string): Record<string, Buffer> | undefined => {
      const c = this.#reg.tryGet(R.configmaps, ns, name);
      if (!c) {
        if (optional) return undefined;
        throw new ResolveError(reason, `configmap "${name}" not found`);
      }
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(isObject(c.data) ? c.data : {})) out[k] = Buffer.from(String(v));
      for (const [k, v] of Object.entries(isObject(c.binaryData) ? c.binaryData : {})) out[k] = Buffer.from(String(v), 'base64');
      return out;
    };
    // Secret, ConfigMap and projected volumes as the kubelet's volume plugins write them
    // (pkg/volume/secret, configmap, projected: MakePayload): `items` pick and rename keys, each
    // file gets its item's mode, else the volume's defaultMode, else 0644
    // (SecretVolumeSourceDefaultMode / ConfigMapVolumeSourceDefaultMode).
    interface VolumeFiles {
      files: Record<string, Buffer>;
      modes: Record<string, number>;
    }
    const DEFAULT_MODE = 0o644;
    const payload = (into: VolumeFiles, data: Record<string, Buffer>, items: KeyToPath[] | undefined, defaultMode: number, what: string): void => {
      if (!items) {
        for (const [k, v] of Object.entries(data)) {
          into.files[k] = v;
          into.modes[k] = defaultMode;
        }
        return;
      }
      for (const it of items) {
        if (data[it.key] === undefined) throw new ResolveError('ContainerCreating', `${what} references non-existent ${what === 'configmap' ? 'config' : 'secret'} key: ${it.key}`);
        into.files[it.path] = data[it.key]!;
        into.modes[it.path] = it.mode ?? defaultMode;
      }
    };
    const volumes = new Map<string, VolumeFiles>();
    for (const v of pod.spec.volumes ?? []) {
      const vf: VolumeFiles = { files: {}, modes: {} };
      if (v.secret) payload(vf, secret(v.secret.secretName, v.secret.optional, 'ContainerCreating') ?? {}, v.secret.items, v.secret.defaultMode ?? DEFAULT_MODE, 'secret');
      else if (v.configMap) payload(vf, configMap(v.configMap.name, v.configMap.optional, 'ContainerCreating') ?? {}, v.configMap.items, v.configMap.defaultMode ?? DEFAULT_MODE, 'configmap');
      else if (v.projected) {
        const mode = v.projected.defaultMode ?? DEFAULT_MODE;
        for (const src of v.projected.sources ?? []) {
          if (src.secret) payload(vf, secret(src.secret.name, src.secret.optional, 'ContainerCreating') ?? {}, src.secret.items, mode, 'secret');
          else if (src.configMap) payload(vf, configMap(src.configMap.name, src.configMap.optional, 'ContainerCreating') ?? {}, src.configMap.items, mode, 'configmap');
        }
      }
      volumes.set(v.name, vf);
    }
    const portOf = (c: Container, p: number | string): number => {
      if (typeof p === 'number') return p;
      const found = (c.ports ?? []).find((x) => x.name === p);
      return found ? found.containerPort : Number(p);
    };
    const containers: ContainerRuntimeSpec[] = pod.spec.containers.map((c) => {
      const user = this.#effectiveUser(pod, c);
      const env: ContainerRuntimeSpec['env'] = [];
      for (const from of c.envFrom ?? []) {
        const data = from.secretRef ? secret(from.secretRef.name, false, 'CreateContainerConfigError') : from.configMapRef ? configMap(from.configMapRef.name, false, 'CreateContainerConfigError') : undefined;
        for (const [k, v] of Object.entries(data ?? {})) env.push({ name: `${from.prefix ?? ''}${k}`, value: v.toString() });
      }
      for (const e of c.env ?? []) {
        if (e.valueFrom?.secretKeyRef) {
          const ref = e.valueFrom.secretKeyRef;
          const data = secret(ref.name, ref.optional, 'CreateContainerConfigError');
          if (data && data[ref.key] === undefined && !ref.optional) throw new ResolveError('CreateContainerConfigError', `couldn't find key ${ref.key} in Secret ${ns}/${ref.name}`);
          if (data && data[ref.key] !== undefined) env.push({ name: e.name, value: data[ref.key].toString() });
        } else if (e.valueFrom?.configMapKeyRef) {
          const ref = e.valueFrom.configMapKeyRef;
          const data = configMap(ref.name, ref.optional, 'CreateContainerConfigError');
          if (data && data[ref.key] === undefined && !ref.optional) throw new ResolveError('CreateContainerConfigError', `couldn't find key ${ref.key} in ConfigMap ${ns}/${ref.name}`);
          if (data && data[ref.key] !== undefined) env.push({ name: e.name, value: data[ref.key].toString() });
        } else if (e.valueFrom?.fieldRef) {
          env.push({ name: e.name, fieldPath: e.valueFrom.fieldRef.fieldPath });
        } else {
          env.push({ name: e.name, value: e.value ?? '' });
        }
      }
      const probe = c.readinessProbe;
      let readinessProbe: ContainerRuntimeSpec['readinessProbe'];
      if (probe?.tcpSocket) readinessProbe = { tcpSocket: { port: portOf(c, probe.tcpSocket.port) } };
      else if (probe?.httpGet) readinessProbe = { httpGet: { port: portOf(c, probe.httpGet.port), path: probe.httpGet.path ?? '/' } };
      return {
        name: c.name,
        image: c.image,
        command: c.command,
        args: c.args,
        env,
        ports: (c.ports ?? []).map((p) => ({ containerPort: p.containerPort, name: p.name, protocol: p.protocol === 'UDP' ? 'UDP' : 'TCP' })),
        volumeMounts: (c.volumeMounts ?? []).map((m) => {
          let { files, modes } = volumes.get(m.name) ?? { files: {}, modes: {} };
          if (m.subPath) {
            files = files[m.subPath] !== undefined ? { [m.subPath]: files[m.subPath]! } : {};
            modes = modes[m.subPath] !== undefined ? { [m.subPath]: modes[m.subPath]! } : {};
          }
          return { mountPath: m.mountPath, readOnly: m.readOnly ?? false, files, modes };
        }),
        readinessProbe,
        runAsUser: user.uid,
        runAsGroup: user.gid,
      };
    });
    return {
      uid: pod.metadata.uid,
      namespace: ns,
      name: pod.metadata.name,
      containers,
      restartPolicy: pod.spec.restartPolicy ?? 'Always',
      terminationGracePeriodSeconds: pod.spec.terminationGracePeriodSeconds ?? 30,
      sysctls: pod.spec.securityContext?.sysctls,
      fsGroup: pod.spec.securityContext?.fsGroup,
    };
  }

  /**
   * The user a container runs as: its securityContext's, else the pod's, else the image's own
   * (the lab's image table); refused as a kubelet refuses it when runAsNonRoot is set and the
   * user would be root (pkg/kubelet/kuberuntime/security_context_others.go, verifyRunAsNonRoot;
   * the pod named as format.Pod writes it: name_namespace(uid)).
   */
  #effectiveUser(pod: Pod, c: Container): { uid: number; gid: number } {
    const sc = c.securityContext;
    const psc = pod.spec.securityContext;
    const found = lookupImage(c.image);
    const imageUid = 'image' in found ? found.image.uid : 0;
    const runAsUser = sc?.runAsUser ?? psc?.runAsUser;
    const runAsNonRoot = sc?.runAsNonRoot ?? psc?.runAsNonRoot;
    const where = `(pod: "${pod.metadata.name}_${pod.metadata.namespace ?? ''}(${pod.metadata.uid})", container: ${c.name})`;
    if (runAsNonRoot === true) {
      if (runAsUser === 0) throw new ResolveError('CreateContainerConfigError', `container's runAsUser breaks non-root policy ${where}`);
      if (runAsUser === undefined && imageUid === 0) throw new ResolveError('CreateContainerConfigError', `container has runAsNonRoot and image will run as root ${where}`);
    }
    const uid = runAsUser ?? imageUid;
    // without runAsGroup: the user's primary group from the image's /etc/passwd (in the lab's
    // images each user's group has its uid), else 0, as containerd does for an unknown uid
    const known = 'image' in found && Object.values(found.image.users).includes(uid);
    return { uid, gid: sc?.runAsGroup ?? psc?.runAsGroup ?? (known ? uid : 0) };
  }

  #podFor(uid: string): { rt: PodRuntime; pod: Pod } | undefined {
    const rt = this.#pods.get(uid);
    if (!rt || rt.stopping) return undefined;
    const o = this.#reg.tryGet(R.pods, rt.namespace, rt.name);
    if (!o || metaOf(o).uid !== uid) return undefined;
    return { rt, pod: asT<Pod>(o) };
  }

  readonly #onStarted = (uid: string, container: string, startedAt: Date, restartCount: number): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const first = !c.started && restartCount === 0;
    c.state = { running: { startedAt: timestamp(shift(startedAt)) } };
    c.started = true;
    c.restartCount = restartCount;
    c.ready = false;
    this.#writeStatus(f.rt);
    if (first) {
      const spec = f.pod.spec.containers.find((x) => x.name === container);
      this.#record(f.pod, 'Normal', 'Pulled', `Container image "${spec?.image ?? ''}" already present on machine`);
      this.#record(f.pod, 'Normal', 'Created', `Created container: ${container}`);
      this.#record(f.pod, 'Normal', 'Started', `Started container ${container}`);
    }
  };

  readonly #onReady = (uid: string, container: string, ready: boolean): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    c.ready = ready && c.state.running !== undefined;
    this.#writeStatus(f.rt);
  };

  readonly #onExited = (uid: string, container: string, exitCode: number, reason: string, finishedAt: Date): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const policy = f.pod.spec.restartPolicy ?? 'Always';
    const terminated = {
      exitCode,
      reason: reason || (exitCode === 0 ? 'Completed' : 'Error'),
      startedAt: c.state.running?.startedAt,
      finishedAt: timestamp(shift(finishedAt)),
    };
    if (terminated.startedAt === undefined) delete terminated.startedAt;
    c.ready = false;
    const restarts = policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0);
    if (restarts) {
      c.lastState = { terminated };
      c.state = { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${Math.min(300, 10 * 2 ** c.restartCount)}s restarting failed container=${container} pod=${f.pod.metadata.name}_${f.pod.metadata.namespace}(${uid})` } };
      this.#record(f.pod, 'Warning', 'BackOff', `Back-off restarting failed container ${container} in pod ${f.pod.metadata.name}_${f.pod.metadata.namespace}(${uid})`);
    } else {
      c.state = { terminated };
    }
    this.#writeStatus(f.rt);
  };

  readonly #onWaiting = (uid: string, container: string, reason: string, message: string): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    c.state = { waiting: { reason, message } };
    c.ready = false;
    this.#writeStatus(f.rt);
  };

  readonly #onPullFailed = (uid: string, container: string, image: string, message: string): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const wasPulling = c.state.waiting?.reason === 'ErrImagePull';
    c.state = { waiting: { reason: wasPulling ? 'ImagePullBackOff' : 'ErrImagePull', message: wasPulling ? `Back-off pulling image "${image}"` : message } };
    c.ready = false;
    this.#writeStatus(f.rt);
    if (!wasPulling) {
      this.#record(f.pod, 'Warning', 'Failed', `Failed to pull image "${image}": ${message}`);
      this.#record(f.pod, 'Warning', 'Failed', 'Error: ErrImagePull');
      if (f.rt.backoffTimer) clearTimeout(f.rt.backoffTimer);
      f.rt.backoffTimer = setTimeout(() => {
        const g = this.#podFor(uid);
        const cc = g?.rt.containers.get(container);
        if (!g || !cc || cc.state.waiting?.reason !== 'ErrImagePull') return;
        cc.state = { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${image}"` } };
        this.#writeStatus(g.rt);
        this.#record(g.pod, 'Normal', 'BackOff', `Back-off pulling image "${image}"`);
      }, 2000);
      f.rt.backoffTimer.unref();
    }
  };

  /** Derives the pod's status (phase, conditions, containerStatuses) from the runtime state. */
  #writeStatus(rt: PodRuntime): void {
    const o = this.#reg.tryGet(R.pods, rt.namespace, rt.name);
    if (!o || metaOf(o).uid !== rt.uid) return;
    const pod = asT<Pod>(o);
    const prev = pod.status ?? {};
    const cs: ContainerStatus[] = [...rt.containers.values()].map((c) => ({
      name: c.name,
      state: c.state,
      lastState: c.lastState,
      ready: c.ready,
      restartCount: c.restartCount,
      image: c.image,
      imageID: c.started ? `ktlab/${c.image}@sha256:${createHash('sha256').update(c.image).digest('hex')}` : '',
      containerID: c.started ? `ktlab://${createHash('sha256').update(`${rt.uid}/${c.name}/${c.restartCount}`).digest('hex')}` : undefined,
      started: c.state.running !== undefined,
    }));
    for (const s of cs) if (s.containerID === undefined) delete s.containerID;
    const all = [...rt.containers.values()];
    const policy = pod.spec.restartPolicy ?? 'Always';
    let phase: PodStatus['phase'] = 'Pending';
    const allTerminated = all.every((c) => c.state.terminated !== undefined);
    if (rt.podIP && allTerminated) phase = all.every((c) => c.state.terminated!.exitCode === 0) ? 'Succeeded' : 'Failed';
    else if (rt.podIP && all.some((c) => c.started || c.restartCount > 0 || c.lastState.terminated)) phase = 'Running';
    if (policy === 'Always' && phase !== 'Running' && phase !== 'Pending') phase = 'Running';
    const containersReady = rt.podIP !== undefined && all.every((c) => c.ready);
    const prevConds = prev.conditions ?? [];
    const cond = (type: string, ok: boolean, reason?: string, message?: string): Condition => {
      const old = prevConds.find((c) => c.type === type);
      const status = ok ? 'True' : 'False';
      const c: Condition = { type, status, lastProbeTime: null, lastTransitionTime: old && old.status === status ? old.lastTransitionTime : timestamp() };
      if (!ok && reason) c.reason = reason;
      if (!ok && message) c.message = message;
      return c;
    };
    const notReady = all.filter((c) => !c.ready).map((c) => c.name);
    const notReadyMsg = `containers with unready status: [${notReady.join(' ')}]`;
    const status: PodStatus = {
      phase,
      conditions: [
        cond('PodReadyToStartContainers', rt.podIP !== undefined),
        cond('Initialized', true),
        cond('Ready', containersReady, 'ContainersNotReady', notReadyMsg),
        cond('ContainersReady', containersReady, 'ContainersNotReady', notReadyMsg),
        cond('PodScheduled', true),
      ],
      hostIP: NODE_IP,
      hostIPs: [{ ip: NODE_IP }],
      startTime: rt.startTime,
      containerStatuses: cs,
      qosClass: prev.qosClass ?? 'BestEffort',
    };
    if (rt.podIP) {
      status.podIP = rt.podIP;
      status.podIPs = [{ ip: rt.podIP }];
    }
    if (deepEqual(stripTimes(prev), stripTimes(status))) return;
    const next = clone(pod);
    next.status = status;
    delete (next.metadata as { resourceVersion?: string }).resourceVersion;
    this.#reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
  }

  // ---- endpoints, services and DNS into the data plane ----

  #scheduleSync(): void {
    if (this.#syncTimer || this.#stopped) return;
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = undefined;
      try {
        this.#syncEndpoints();
        this.#pushToNet();
      } catch (e) {
        this.#log(`sync error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
    }, 30);
  }

  #syncEndpoints(): void {
    const services = this.#reg.store.list(R.services).map((x) => asT<Service>(x));
    for (const svc of services) {
      const sel = svc.spec.selector;
      if (!sel || Object.keys(sel).length === 0) continue;
      const ns = svc.metadata.namespace ?? '';
      const pods = this.#reg.store
        .list(R.pods, ns)
        .map((x) => asT<Pod>(x))
        .filter((p) => p.status?.podIP && !isTerminating(p) && matchesSelector({ matchLabels: sel }, p.metadata.labels));
      const groups = new Map<string, NonNullable<Endpoints['subsets']>[number]>();
      for (const p of pods) {
        const ports: Array<{ name?: string; port: number; protocol: string }> = [];
        for (const sp of svc.spec.ports ?? []) {
          const port = resolveTargetPort(p, sp.targetPort ?? sp.port);
          if (port === undefined) continue;
          const e: { name?: string; port: number; protocol: string } = { port, protocol: sp.protocol ?? 'TCP' };
          if (sp.name) e.name = sp.name;
          ports.push(e);
        }
        if (ports.length === 0 && (svc.spec.ports ?? []).length > 0) continue;
        const key = stableStringify(ports);
        let g = groups.get(key);
        if (!g) {
          g = { ports };
          groups.set(key, g);
        }
        const addr = {
          ip: p.status!.podIP!,
          nodeName: p.spec.nodeName,
          targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name, uid: p.metadata.uid },
        };
        if (isPodReady(p)) (g.addresses ??= []).push(addr);
        else (g.notReadyAddresses ??= []).push(addr);
      }
      const subsets = [...groups.values()].map((g) => {
        g.addresses?.sort((a, b) => a.ip.localeCompare(b.ip));
        g.notReadyAddresses?.sort((a, b) => a.ip.localeCompare(b.ip));
        const ordered: JsonObject = {};
        if (g.addresses) ordered.addresses = toJ(g.addresses);
        if (g.notReadyAddresses) ordered.notReadyAddresses = toJ(g.notReadyAddresses);
        if (g.ports && g.ports.length > 0) ordered.ports = toJ(g.ports);
        return ordered;
      });
      this.#syncSlice(svc, pods);
      const cur = this.#reg.tryGet(R.endpoints, ns, svc.metadata.name);
      if (!cur) {
        try {
          this.#reg.create(R.endpoints, ns, { metadata: { name: svc.metadata.name, labels: toJ(svc.metadata.labels ?? {}) }, subsets: subsets.length > 0 ? subsets : null } as JsonObject);
        } catch (e) {
          if (!(e instanceof ApiError && (e.code === 409 || e.code === 403 || e.code === 404))) throw e;
        }
      } else if (!deepEqual(cur.subsets ?? [], subsets)) {
        const next = clone(cur);
        if (subsets.length > 0) next.subsets = subsets;
        else delete next.subsets;
        delete (next.metadata as JsonObject).resourceVersion;
        this.#reg.store.update(R.endpoints, next, { bumpGeneration: false });
      }
    }
    // endpoints of services that are gone (only the ones a selector made)
    for (const ep of this.#reg.store.list(R.endpoints)) {
      const m = metaOf(ep);
      const svc = services.find((s) => s.metadata.namespace === m.namespace && s.metadata.name === m.name);
      if (!svc) this.#reg.remove(R.endpoints, m.namespace ?? '', m.name!);
    }
  }

  /** One EndpointSlice per selector service (kubectl describe service reads these). */
  #syncSlice(svc: Service, pods: Pod[]): void {
    const ns = svc.metadata.namespace ?? '';
    const existing = this.#reg.store
      .list(R.endpointslices, ns)
      .find((s) => metaOf(s).labels?.['kubernetes.io/service-name'] === svc.metadata.name && metaOf(s).ownerReferences?.some((r) => r.uid === svc.metadata.uid));
    const first = pods[0];
    const ports = (svc.spec.ports ?? [])
      .map((sp) => {
        const port = first ? resolveTargetPort(first, sp.targetPort ?? sp.port) : undefined;
        const p: JsonObject = { name: sp.name ?? '', protocol: sp.protocol ?? 'TCP' };
        if (port !== undefined) p.port = port;
        return p;
      });
    const endpoints = pods.map((p) => {
      const ready = isPodReady(p);
      return {
        addresses: [p.status!.podIP!],
        conditions: { ready, serving: ready, terminating: false },
        nodeName: p.spec.nodeName ?? NODE_NAME,
        targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name, uid: p.metadata.uid },
      };
    });
    const body: JsonObject = {
      addressType: 'IPv4',
      endpoints: toJ(endpoints),
      ports: first ? ports : null,
    };
    if (!existing) {
      try {
        this.#reg.create(R.endpointslices, ns, {
          metadata: {
            generateName: `${svc.metadata.name}-`,
            labels: { ...(svc.metadata.labels ?? {}), 'kubernetes.io/service-name': svc.metadata.name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
            ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: svc.metadata.name, uid: svc.metadata.uid, controller: true, blockOwnerDeletion: true }],
          },
          ...body,
        });
      } catch (e) {
        if (!(e instanceof ApiError && (e.code === 409 || e.code === 403 || e.code === 404))) throw e;
      }
    } else if (!deepEqual({ addressType: existing.addressType, endpoints: existing.endpoints, ports: existing.ports ?? null }, body)) {
      const next = { ...clone(existing), ...body };
      delete (next.metadata as JsonObject).resourceVersion;
      this.#reg.store.update(R.endpointslices, next, { bumpGeneration: false });
    }
  }

  #pushToNet(): void {
    const services = this.#reg.store.list(R.services).map((x) => asT<Service>(x));
    const out: ServiceRuntimeSpec[] = [];
    const dnsServices: Array<{ namespace: string; name: string; clusterIP: string }> = [];
    for (const svc of services) {
      const ip = svc.spec.clusterIP;
      if (!ip || ip === 'None') continue;
      const ns = svc.metadata.namespace ?? '';
      dnsServices.push({ namespace: ns, name: svc.metadata.name, clusterIP: ip });
      // the cluster DNS address is served by the data plane itself, not by DNAT
      if (ip === LAB.clusterDnsIp) continue;
      const ep = this.#reg.tryGet(R.endpoints, ns, svc.metadata.name);
      const subsets = ep ? (asT<Endpoints>(ep).subsets ?? []) : [];
      const ports = (svc.spec.ports ?? [])
        .filter((p) => p.protocol !== 'SCTP')
        .map((sp) => {
          const endpoints: Array<{ ip: string; port: number }> = [];
          for (const s of subsets) {
            const epPort = (s.ports ?? []).find((p) => (p.name ?? '') === (sp.name ?? '') && p.protocol === (sp.protocol ?? 'TCP')) ?? ((s.ports ?? []).length === 1 && (svc.spec.ports ?? []).length === 1 ? s.ports![0] : undefined);
            if (!epPort) continue;
            for (const a of s.addresses ?? []) endpoints.push({ ip: a.ip, port: epPort.port });
          }
          return { port: sp.port, protocol: (sp.protocol === 'UDP' ? 'UDP' : 'TCP') as 'TCP' | 'UDP', endpoints };
        });
      out.push({ namespace: ns, name: svc.metadata.name, clusterIP: ip, ports });
    }
    const podRecords = this.#reg.store
      .list(R.pods)
      .map((x) => asT<Pod>(x))
      .filter((p) => p.status?.podIP && !isTerminating(p))
      .map((p) => ({ namespace: p.metadata.namespace ?? '', ip: p.status!.podIP! }));
    const svcText = JSON.stringify(out);
    if (svcText !== this.#lastServices) {
      this.#lastServices = svcText;
      this.#net.setServices(out);
    }
    const dns = { services: dnsServices, pods: podRecords };
    const dnsText = JSON.stringify(dns);
    if (dnsText !== this.#lastDns) {
      this.#lastDns = dnsText;
      this.#net.setDnsRecords(dns);
    }
  }
}

function resolveTargetPort(pod: Pod, target: number | string): number | undefined {
  if (typeof target === 'number') return target;
  if (/^\d+$/.test(target)) return Number(target);
  for (const c of pod.spec.containers) for (const p of c.ports ?? []) if (p.name === target) return p.containerPort;
  return undefined;
}

/** Status without its timestamps, to tell a real change from a rewrite. */
function stripTimes(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripTimes);
  if (isObject(v)) {
    const out: JsonObject = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === 'lastUpdateTime' || k === 'lastTransitionTime' || k === 'lastProbeTime') continue;
      out[k] = stripTimes(x) as JsonObject;
    }
    return out;
  }
  return v;
}

/** Data-plane times follow the API server's (possibly skewed) clock. */
function shift(d: Date): Date {
  return new Date(d.getTime() + (now().getTime() - Date.now()));
}

export { randomSuffix };
