/**
 * `recover <svc>`: puts a Service back the way it was before ktctl touched it, whatever happened to
 * the ktctl process (kill -9, a laptop that never came back): the selector from
 * `ktctl/original-selector`, the replicas of its deployments from `ktctl/original-replicas`, every
 * object ktctl made for it (shadow, router, stuntman, preview Service: label `ktctl/service`)
 * deleted, its lock removed.
 *
 * It refuses (LockedError) while an owner is alive: a ktctl process on this machine that still
 * runs (stopping it restores everything itself), or one on another machine whose heartbeat is
 * fresh (younger than STALE_AFTER_MINUTES). `--force` recovers anyway; the live process then finds
 * its objects gone and stops.
 */
import type { V1ObjectMeta } from '@kubernetes/client-node';
import { LockedError, TargetError } from '../errors.js';
import type { Kube } from './api.js';
import { deleteObject } from './clean.js';
import { isNotFound, kubeCall, unlessNotFound } from './errors.js';
import { restoreReplicas, originalReplicasOf } from './exchange.js';
import { breakLock, describeBeat, holderAge, holderAlive, lockOf } from './lock.js';
import { ANNOTATION_MESH_MARKS, marksOf } from './mesh.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_OWNER, LABEL_MANAGED_BY, LABEL_ROLE, LABEL_SERVICE, MANAGED_BY, STALE_AFTER_MINUTES } from './names.js';
import { formatSelector, originalSelectorOf, restoreSelector } from './selector.js';
import { selectorMatches } from './target.js';

export interface RecoverOptions {
  force: boolean;
  /** keep the Service's lock (an exchange that took a dead owner's lock over cleans up after it) */
  keepLock?: boolean;
  log: (line: string) => void;
  staleMinutes?: number;
}

export interface RecoverReport {
  selector?: Record<string, string>;
  deployments: Array<{ name: string; replicas: number }>;
  deleted: string[];
  lockRemoved: boolean;
}

/** Owners of what ktctl did to the service that still look alive, with the age of their heartbeat. */
function liveOwners(owners: Array<{ owner: string; ageMs: number }>, staleMs: number): Array<{ owner: string; ageMs: number }> {
  const seen = new Set<string>();
  return owners.filter((o) => {
    if (o.owner === '' || seen.has(o.owner)) return false;
    seen.add(o.owner);
    return holderAlive(o.owner, o.ageMs, staleMs);
  });
}

export async function recoverService(kube: Kube, namespace: string, name: string, o: RecoverOptions): Promise<RecoverReport> {
  const staleMs = (o.staleMinutes ?? STALE_AFTER_MINUTES) * 60_000;
  const now = (await kube.serverNow()).getTime();
  const ageOf = (meta: V1ObjectMeta | undefined): number => {
    const beat = Date.parse(meta?.annotations?.[ANNOTATION_HEARTBEAT] ?? '');
    return Number.isNaN(beat) ? Number.POSITIVE_INFINITY : now - beat;
  };
  const service = await unlessNotFound(kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace })));
  const labelSelector = `${LABEL_MANAGED_BY}=${MANAGED_BY},${LABEL_SERVICE}=${name}`;
  const list = { verb: 'list', namespace, server: kube.server };
  const [pods, secrets, services, configmaps, deployments] = await Promise.all([
    kubeCall({ ...list, resource: 'pods' }, () => kube.core.listNamespacedPod({ namespace, labelSelector })),
    kubeCall({ ...list, resource: 'secrets' }, () => kube.core.listNamespacedSecret({ namespace, labelSelector })),
    kubeCall({ ...list, resource: 'services' }, () => kube.core.listNamespacedService({ namespace, labelSelector })),
    kubeCall({ ...list, resource: 'configmaps' }, () => kube.core.listNamespacedConfigMap({ namespace, labelSelector })),
    kubeCall({ ...list, resource: 'deployments' }, () => kube.apps.listNamespacedDeployment({ namespace })),
  ]);
  const original = service ? originalSelectorOf(service) : undefined;
  // Deployments scaled down for this service: recorded so, or (older runs) selected by its original selector.
  const scaled = deployments.items.filter(
    (d) =>
      originalReplicasOf(d) !== undefined &&
      (d.metadata?.annotations?.[LABEL_SERVICE] === name || selectorMatches(original ?? service?.spec?.selector, d.spec?.template.metadata?.labels)),
  );
  const lock = service ? lockOf(service) : undefined;
  const made = [...pods.items.map((x) => ({ kind: 'pod' as const, meta: x.metadata })), ...secrets.items.map((x) => ({ kind: 'secret' as const, meta: x.metadata })),
    ...services.items.map((x) => ({ kind: 'service' as const, meta: x.metadata })), ...configmaps.items.map((x) => ({ kind: 'configmap' as const, meta: x.metadata }))];

  if (!service && made.length === 0 && !o.keepLock) {
    throw new TargetError('not-found', `the service ${name} does not exist in namespace ${namespace} and ktctl made nothing for it there: nothing to recover`);
  }
  if (!o.force) {
    // A mesh router's objects are used by every developer with a mark on it: its marks (each with
    // its own beat) say who is alive, not who made them (their heartbeat is anybody's).
    const router = pods.items.find((p) => p.metadata?.labels?.[LABEL_ROLE] === 'router' && p.metadata.annotations?.[ANNOTATION_MESH_MARKS] !== undefined);
    const routerBeat = router ? Date.parse(router.metadata?.annotations?.[ANNOTATION_HEARTBEAT] ?? '') : Number.NaN;
    const serverNow = new Date(now);
    const owners = [
      ...(lock ? lock.holders.map((h) => ({ owner: h.owner, ageMs: holderAge(h, serverNow, lock.heartbeat) })) : []),
      ...(router ? Object.values(marksOf(router)).map((h) => ({ owner: h.owner, ageMs: holderAge(h, serverNow, Number.isNaN(routerBeat) ? undefined : new Date(routerBeat)) })) : []),
      ...made
        .filter((m) => !(router && m.meta?.labels?.[LABEL_ROLE] === 'router'))
        .map((m) => ({ owner: m.meta?.annotations?.[ANNOTATION_OWNER] ?? '', ageMs: ageOf(m.meta) })),
      ...scaled.map((d) => ({ owner: d.metadata?.annotations?.[ANNOTATION_OWNER] ?? '', ageMs: ageOf(d.metadata) })),
    ];
    const live = liveOwners(owners, staleMs);
    if (live.length > 0) {
      const l = live[0]!;
      throw new LockedError(
        `the service ${name} in namespace ${namespace} is still in use by the live ktctl process ${l.owner} (${describeBeat(l.ageMs)}): stop that process (it restores everything itself), or pass --force to recover anyway`,
      );
    }
  }

  const report: RecoverReport = { deployments: [], deleted: [], lockRemoved: false };
  if (service && original !== undefined) {
    const restored = await restoreSelector(kube, namespace, name, { log: o.log });
    if (restored) {
      report.selector = restored;
      o.log(`restored the selector of service ${namespace}/${name} to ${formatSelector(restored)}`);
    }
  }
  for (const d of scaled) {
    const dn = d.metadata?.name ?? '';
    const replicas = await restoreReplicas(kube, namespace, dn);
    if (replicas !== undefined) {
      report.deployments.push({ name: dn, replicas });
      o.log(`scaled deployment ${namespace}/${dn} back to ${replicas} replica(s)`);
    }
  }
  for (const m of made) {
    const n = m.meta?.name ?? '';
    await deleteObject(kube, m.kind, namespace, n);
    report.deleted.push(`${m.kind}/${n}`);
    o.log(`deleted ${m.kind} ${namespace}/${n}`);
  }
  if (service && lock && !o.keepLock && !made.some((m) => m.kind === 'service' && m.meta?.name === name)) {
    try {
      await breakLock(kube, namespace, name);
      report.lockRemoved = true;
      o.log(`removed the ${lock.role} lock of ${lock.holders.map((h) => h.owner).join(', ') || 'nobody'} from service ${namespace}/${name}`);
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
  if (!report.selector && report.deployments.length === 0 && report.deleted.length === 0 && !report.lockRemoved) {
    o.log(`service ${namespace}/${name} has nothing of ktctl's to recover (no saved selector, no scaled deployment, no ktctl objects, no lock)`);
  }
  return report;
}
