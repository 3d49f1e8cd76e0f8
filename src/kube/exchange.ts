/**
 * `exchange --mode scale`: the deployment behind a Service is scaled to 0 while a shadow that
 * carries its pod labels takes the traffic. The replica count is saved in
 * `ktctl/original-replicas` (with owner, heartbeat and the Service's name) before the scale, in a
 * resourceVersion-checked write; on exit it is scaled back and ktctl waits for the replicas to be
 * ready. `recover` and `clean` use the same restore.
 */
import type { V1Deployment } from '@kubernetes/client-node';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { isConflict, kubeCall, unlessNotFound } from './errors.js';
import { patchAnnotations, type Heartbeat } from './heartbeat.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_ORIGINAL_REPLICAS, ANNOTATION_OWNER, LABEL_SERVICE, ownerOf } from './names.js';
import type { Progress } from './progress.js';
import { sleep } from './util.js';

/** The replica count saved in `ktctl/original-replicas`, or undefined. */
export function originalReplicasOf(d: Pick<V1Deployment, 'metadata'>): number | undefined {
  const text = d.metadata?.annotations?.[ANNOTATION_ORIGINAL_REPLICAS];
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  return Number(text);
}

/** The pod template's labels a shadow must carry to stand in for the deployment's pods. */
export function standInLabels(d: V1Deployment): Record<string, string> {
  const labels = { ...(d.spec?.template.metadata?.labels ?? {}) };
  delete labels['pod-template-hash'];
  return labels;
}

export interface ScaleDownOptions {
  namespace: string;
  deployment: string;
  /** the Service exchanged (recorded on the deployment for `recover <svc>`) */
  service: string;
  undo: Undo;
  heartbeat?: Heartbeat;
  log: (line: string) => void;
  /** how long the undo waits for the replicas to be ready again */
  recoverWaitMs: number;
  progress: Progress;
}

/**
 * Saves the replica count, then scales the deployment to 0; registers (first) the scale back and
 * the wait for ready replicas on `undo`. A count saved by an earlier run is kept (it is the real one).
 * Returns the count the deployment will get back.
 */
export async function scaleDownForExchange(kube: Kube, o: ScaleDownOptions): Promise<number> {
  const { namespace, deployment: name } = o;
  const ref = { kind: 'deployment' as const, namespace, name };
  o.undo.add(`the scale-down of deployment ${namespace}/${name}`, async () => {
    o.heartbeat?.remove(ref);
    const replicas = await restoreReplicas(kube, namespace, name);
    if (replicas === undefined) return;
    o.log(`scaled deployment ${namespace}/${name} back to ${replicas} replica(s)`);
    await waitForReplicas(kube, { namespace, name, replicas, timeoutMs: o.recoverWaitMs, progress: o.progress, log: o.log });
  });
  let replicas = 0;
  for (let attempt = 0; ; attempt++) {
    const d = await kubeCall({ verb: 'get', resource: 'deployments', namespace, name, server: kube.server }, () => kube.apps.readNamespacedDeployment({ name, namespace }));
    const saved = originalReplicasOf(d);
    replicas = saved ?? d.spec?.replicas ?? 1;
    if (saved !== undefined) o.log(`deployment ${namespace}/${name} still had its replica count saved by an earlier run (${saved}); keeping it`);
    try {
      await patchAnnotations(
        kube,
        ref,
        { [ANNOTATION_ORIGINAL_REPLICAS]: String(replicas), [ANNOTATION_OWNER]: ownerOf(), [ANNOTATION_HEARTBEAT]: rfc3339(await kube.serverNow()), [LABEL_SERVICE]: o.service },
        d.metadata?.resourceVersion,
      );
      break;
    } catch (error) {
      if (!isConflict(error) || attempt >= 20) throw error;
      await sleep(50 + Math.random() * 150);
    }
  }
  o.heartbeat?.add(ref);
  await kubeCall({ verb: 'patch', resource: 'deployments/scale', namespace, name, server: kube.server }, () =>
    kube.apps.patchNamespacedDeploymentScale({ name, namespace, body: { spec: { replicas: 0 } } }, kube.mergePatch),
  );
  return replicas;
}

/**
 * Scales a deployment back to its `ktctl/original-replicas` and removes ktctl's annotations from
 * it. Returns the count, or undefined when nothing was saved (or the deployment is gone).
 */
export async function restoreReplicas(kube: Kube, namespace: string, name: string): Promise<number | undefined> {
  const d = await unlessNotFound(kubeCall({ verb: 'get', resource: 'deployments', namespace, name, server: kube.server }, () => kube.apps.readNamespacedDeployment({ name, namespace })));
  if (d === undefined) return undefined;
  const replicas = originalReplicasOf(d);
  if (replicas !== undefined) {
    await kubeCall({ verb: 'patch', resource: 'deployments/scale', namespace, name, server: kube.server }, () =>
      kube.apps.patchNamespacedDeploymentScale({ name, namespace, body: { spec: { replicas } } }, kube.mergePatch),
    );
  }
  await patchAnnotations(kube, { kind: 'deployment', namespace, name }, { [ANNOTATION_ORIGINAL_REPLICAS]: null, [ANNOTATION_OWNER]: null, [ANNOTATION_HEARTBEAT]: null, [LABEL_SERVICE]: null });
  return replicas;
}

/**
 * Waits (showing progress) until the deployment has `replicas` ready replicas, at most
 * `timeoutMs`; then says how far it got instead of failing: the scale back is done either way.
 */
export async function waitForReplicas(
  kube: Kube,
  o: { namespace: string; name: string; replicas: number; timeoutMs: number; progress: Progress; log: (line: string) => void },
): Promise<boolean> {
  const deadline = Date.now() + o.timeoutMs;
  let ready = 0;
  try {
    for (;;) {
      const d = await kubeCall({ verb: 'get', resource: 'deployments', namespace: o.namespace, name: o.name, server: kube.server }, () =>
        kube.apps.readNamespacedDeployment({ name: o.name, namespace: o.namespace }),
      );
      ready = d.status?.readyReplicas ?? 0;
      if (ready >= o.replicas) {
        o.progress.done(`deployment ${o.namespace}/${o.name}: ${ready}/${o.replicas} replica(s) ready`);
        return true;
      }
      if (Date.now() >= deadline) break;
      o.progress.update(`waiting for deployment ${o.namespace}/${o.name}: ${ready}/${o.replicas} replica(s) ready`);
      await sleep(300);
    }
  } catch (error) {
    o.progress.done();
    throw error;
  }
  o.progress.done(
    `warning: deployment ${o.namespace}/${o.name} has ${ready}/${o.replicas} replica(s) ready after ${Math.round(o.timeoutMs / 1000)} s (--recoverWaitTime); it is scaled back, check its pods with kubectl get pods -n ${o.namespace}`,
  );
  return false;
}
