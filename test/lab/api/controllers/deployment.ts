/** The lab's deployment controller: a deployment's replica sets, rolled to its template and scaled to its replicas, and its status. */
import { clone, deepEqual, type Condition, type Deployment, type JsonObject, type ReplicaSet } from '../json.js';
import { R } from '../registry.js';
import { timestamp } from '../clock.js';
import { templateHash, asT, toJ, isTerminating, controllerOf, type ControllerContext, stripTimes } from './shared.js';

export class DeploymentController {
  readonly #ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.#ctx = ctx;
  }

  reconcile(ns: string, name: string): void {
    const o = this.#ctx.reg.tryGet(R.deployments, ns, name);
    if (!o) return;
    const d = asT<Deployment>(o);
    if (isTerminating(d)) return;
    const desired = d.spec.replicas ?? 1;
    const hash = templateHash(d.spec.template);
    const owned = this.#ctx.reg.store
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
        const created = this.#ctx.reg.create(R.replicasets, ns, {
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
        this.#ctx.record(d, 'Normal', 'ScalingReplicaSet', `Scaled up replica set ${newRs.metadata.name} from 0 to ${desired}`, 'deployment-controller');
      } else if ((newRs.spec.replicas ?? 0) !== desired || newRs.metadata.annotations?.['deployment.kubernetes.io/revision'] !== String(revision)) {
        const from = newRs.spec.replicas ?? 0;
        const next = clone(newRs);
        next.spec.replicas = desired;
        if (revision <= maxRevision && owned.some((rs) => rs !== newRs && (rs.spec.replicas ?? 0) > 0)) revision = maxRevision + 1;
        next.metadata.annotations = { ...(next.metadata.annotations ?? {}), 'deployment.kubernetes.io/revision': String(revision), 'deployment.kubernetes.io/desired-replicas': String(desired) };
        delete (next.metadata as { resourceVersion?: string }).resourceVersion;
        newRs = asT<ReplicaSet>(this.#ctx.reg.update(R.replicasets, ns, newRs.metadata.name, toJ(next)));
        if (from !== desired) {
          this.#ctx.record(d, 'Normal', 'ScalingReplicaSet', `Scaled ${desired > from ? 'up' : 'down'} replica set ${newRs.metadata.name} from ${from} to ${desired}`, 'deployment-controller');
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
          this.#ctx.reg.update(R.replicasets, ns, rs.metadata.name, toJ(next));
          this.#ctx.record(d, 'Normal', 'ScalingReplicaSet', `Scaled down replica set ${rs.metadata.name} from ${from} to 0`, 'deployment-controller');
        }
      }
      // keep revisionHistoryLimit old replica sets
      const rhl = (d.spec as unknown as JsonObject).revisionHistoryLimit;
      const limit = typeof rhl === 'number' ? rhl : 10;
      const old = owned
        .filter((rs) => rs.metadata.uid !== newRs!.metadata.uid && (rs.spec.replicas ?? 0) === 0 && (rs.status?.replicas ?? 0) === 0)
        .sort((a, b) => Number(a.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? 0) - Number(b.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? 0));
      for (const rs of old.slice(0, Math.max(0, old.length - limit))) this.#ctx.reg.delete(R.replicasets, ns, rs.metadata.name, {});
    }

    // status
    const all = this.#ctx.reg.store
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
    const fresh = asT<Deployment>(this.#ctx.reg.get(R.deployments, ns, name));
    const annotations = { ...(fresh.metadata.annotations ?? {}) };
    const wantRev = newRs ? (newRs.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? String(revision)) : undefined;
    if (wantRev && annotations['deployment.kubernetes.io/revision'] !== wantRev) {
      annotations['deployment.kubernetes.io/revision'] = wantRev;
      const next = clone(fresh);
      next.metadata.annotations = annotations;
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#ctx.reg.store.update(R.deployments, toJ(next), { bumpGeneration: false });
    }
    const after = asT<Deployment>(this.#ctx.reg.get(R.deployments, ns, name));
    if (!deepEqual(stripTimes(after.status), stripTimes(status))) {
      const next = clone(after);
      next.status = status;
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#ctx.reg.store.update(R.deployments, toJ(next), { bumpGeneration: false });
    }
  }
}
