/** The lab's replica set controller: pods made and deleted to match the replicas, with back-off when a create is refused (Pod Security, quota), and its status. */
import { ApiError } from '../status.js';
import { clone, deepEqual, type JsonObject, type Pod, type ReplicaSet } from '../json.js';
import { R } from '../registry.js';
import { matchRequirements, selectorRequirements } from '../selectors.js';
import { metaOf } from '../store.js';
import { timestamp } from '../clock.js';
import { asT, toJ, isPodReady, isTerminating, controllerOf, type ControllerContext } from './shared.js';

export class ReplicaSetController {
  readonly #ctx: ControllerContext;
  /** replica sets whose last pod create was refused: uid -> next delay and the retry timer */
  readonly #createBackoff = new Map<string, { delayMs: number; timer: NodeJS.Timeout; error: string; due: boolean }>();

  constructor(ctx: ControllerContext) {
    this.#ctx = ctx;
  }

  /** Cancels the create back-offs. */
  stop(): void {
    for (const b of this.#createBackoff.values()) clearTimeout(b.timer);
    this.#createBackoff.clear();
  }

  reconcile(ns: string, name: string): void {
    const o = this.#ctx.reg.tryGet(R.replicasets, ns, name);
    if (!o) return;
    const rs = asT<ReplicaSet>(o);
    if (isTerminating(rs)) return;
    const desired = rs.spec.replicas ?? 1;
    const pods = this.#ctx.reg.store
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
          created = this.#ctx.reg.create(R.pods, ns, {
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
            this.#ctx.record(rs, 'Warning', 'FailedCreate', `Error creating: ${e.message}`, 'replicaset-controller');
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
        this.#ctx.record(rs, 'Normal', 'SuccessfulCreate', `Created pod: ${metaOf(created).name}`, 'replicaset-controller');
      }
    } else if (active.length > desired) {
      const rank = (p: Pod): number => (!p.spec.nodeName ? 0 : p.status?.phase === 'Pending' ? 1 : !isPodReady(p) ? 2 : 3);
      const victims = [...active]
        .sort((a, b) => rank(a) - rank(b) || b.metadata.creationTimestamp.localeCompare(a.metadata.creationTimestamp))
        .slice(0, active.length - desired);
      for (const p of victims) {
        try {
          this.#ctx.reg.delete(R.pods, ns, p.metadata.name, {});
          this.#ctx.record(rs, 'Normal', 'SuccessfulDelete', `Deleted pod: ${p.metadata.name}`, 'replicaset-controller');
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
    const fresh = this.#ctx.reg.get(R.replicasets, ns, name);
    if (!deepEqual(fresh.status, status)) {
      const next = clone(fresh);
      next.status = toJ(status);
      delete (next.metadata as JsonObject).resourceVersion;
      this.#ctx.reg.store.update(R.replicasets, next, { bumpGeneration: false });
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
      if (!this.#ctx.reg.tryGet(R.replicasets, ns, name)) this.#createBackoff.delete(uid);
      else this.#ctx.queue.add(`rs:${ns}/${name}`, () => this.reconcile(ns, name));
    }, delayMs);
    timer.unref();
    this.#createBackoff.set(uid, { delayMs, timer, error, due: false });
  }
}
