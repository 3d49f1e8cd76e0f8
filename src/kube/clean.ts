/**
 * Leftovers of runs that died (kill -9, a laptop that went to sleep): ktctl objects whose
 * heartbeat is older than a threshold, measured against the API server's clock. Objects ktctl made
 * are deleted; objects ktctl changed in place (a `ktctl/original-*` annotation) are restored.
 * Objects of a ktctl process that still runs on this machine are never touched.
 */
import type { V1ObjectMeta, V1Pod } from '@kubernetes/client-node';
import type { Kube } from './api.js';
import { isNotFound, kubeCall, KubeForbiddenError } from './errors.js';
import { restoreReplicas } from './exchange.js';
import { breakLock, lockOf, ownerAliveHere } from './lock.js';
import {
  ANNOTATION_HEARTBEAT,
  ANNOTATION_LOCKED_BY,
  ANNOTATION_ORIGINAL_REPLICAS,
  ANNOTATION_ORIGINAL_SELECTOR,
  ANNOTATION_OWNER,
  LABEL_MANAGED_BY,
  LABEL_ROLE,
  MANAGED_BY,
  MANAGED_SELECTOR,
  ROLE_PROGRAM,
} from './names.js';
import { programsMountedBy } from './program.js';
import { restoreSelector } from './selector.js';
import { deleteAndWait } from './shadow.js';

export type ObjectKind = 'pod' | 'secret' | 'service' | 'deployment' | 'configmap';

export interface KtctlObject {
  kind: ObjectKind;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** API server time minus heartbeat (or creation time when there is no heartbeat), ms. */
  ageMs: number;
  owner: string;
  /** changed in place (an original-* annotation, or a Service's lock): restored, not deleted */
  changedInPlace: boolean;
  /** the owner is a ktctl process running on this machine */
  ownerAliveHere: boolean;
  /** a pod: the program ConfigMaps it mounts (src/kube/program.ts) */
  programs: string[];
}

export interface CleanAction {
  object: KtctlObject;
  action: 'delete' | 'restore' | 'skip-live';
  done: boolean;
  error?: string;
}

const metaMaps = (meta: V1ObjectMeta | undefined): { labels: Record<string, string>; annotations: Record<string, string> } => ({
  labels: meta?.labels ?? {},
  annotations: meta?.annotations ?? {},
});

export { ownerAliveHere };

interface RawObject {
  kind: ObjectKind;
  metadata?: V1ObjectMeta;
  programs: string[];
}

/**
 * Every ktctl object in scope: `namespaces` = undefined means all namespaces when RBAC allows
 * listing them, else the current one.
 */
export async function listKtctlObjects(kube: Kube, namespace: string | undefined): Promise<{ objects: KtctlObject[]; scope: string }> {
  const now = (await kube.serverNow()).getTime();
  const raw: RawObject[] = [];
  let scope = namespace ? `namespace ${namespace}` : 'all namespaces';
  const lister = async (ns: string | undefined): Promise<void> => {
    const labelSelector = MANAGED_SELECTOR;
    const op = (resource: string) => ({ verb: 'list', resource, namespace: ns, server: kube.server });
    const add = (kind: ObjectKind, items: Array<{ metadata?: V1ObjectMeta; spec?: unknown }>): void => {
      for (const i of items) raw.push({ kind, metadata: i.metadata, programs: kind === 'pod' ? programsMountedBy(i as V1Pod) : [] });
    };
    if (ns) {
      add('pod', (await kubeCall(op('pods'), () => kube.core.listNamespacedPod({ namespace: ns, labelSelector }))).items);
      add('secret', (await kubeCall(op('secrets'), () => kube.core.listNamespacedSecret({ namespace: ns, labelSelector }))).items);
      add('configmap', (await kubeCall(op('configmaps'), () => kube.core.listNamespacedConfigMap({ namespace: ns, labelSelector }))).items);
      add('service', (await kubeCall(op('services'), () => kube.core.listNamespacedService({ namespace: ns }))).items.filter(managedOrChanged));
      add('deployment', (await kubeCall(op('deployments'), () => kube.apps.listNamespacedDeployment({ namespace: ns }))).items.filter(managedOrChanged));
    } else {
      add('pod', (await kubeCall(op('pods'), () => kube.core.listPodForAllNamespaces({ labelSelector }))).items);
      add('secret', (await kubeCall(op('secrets'), () => kube.core.listSecretForAllNamespaces({ labelSelector }))).items);
      add('configmap', (await kubeCall(op('configmaps'), () => kube.core.listConfigMapForAllNamespaces({ labelSelector }))).items);
      add('service', (await kubeCall(op('services'), () => kube.core.listServiceForAllNamespaces({}))).items.filter(managedOrChanged));
      add('deployment', (await kubeCall(op('deployments'), () => kube.apps.listDeploymentForAllNamespaces({}))).items.filter(managedOrChanged));
    }
  };
  if (namespace) await lister(namespace);
  else {
    try {
      await lister(undefined);
    } catch (error) {
      if (!(error instanceof KubeForbiddenError)) throw error;
      raw.length = 0;
      scope = `namespace ${kube.namespace} (listing all namespaces is not allowed)`;
      await lister(kube.namespace);
    }
  }
  const objects = raw.map((r): KtctlObject => {
    const { labels, annotations } = metaMaps(r.metadata);
    const beat = Date.parse(annotations[ANNOTATION_HEARTBEAT] ?? '');
    const created = r.metadata?.creationTimestamp ? new Date(r.metadata.creationTimestamp).getTime() : now;
    const owner = annotations[ANNOTATION_OWNER] ?? '';
    return {
      kind: r.kind,
      namespace: r.metadata?.namespace ?? '',
      name: r.metadata?.name ?? '',
      labels,
      annotations,
      ageMs: now - (Number.isNaN(beat) ? created : beat),
      owner,
      changedInPlace: changedInPlace(annotations) && labels[LABEL_MANAGED_BY] !== MANAGED_BY,
      ownerAliveHere: owner !== '' && ownerAliveHere(owner),
      programs: r.programs,
    };
  });
  return { objects, scope };
}

function changedInPlace(a: Record<string, string>): boolean {
  return ANNOTATION_ORIGINAL_REPLICAS in a || ANNOTATION_ORIGINAL_SELECTOR in a || ANNOTATION_LOCKED_BY in a;
}

function managedOrChanged(o: { metadata?: V1ObjectMeta }): boolean {
  return o.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY || changedInPlace(o.metadata?.annotations ?? {});
}

export function describeObject(o: KtctlObject): string {
  const age = Math.max(0, Math.round(o.ageMs / 1000));
  const ageText = age >= 120 ? `${Math.round(age / 60)} min` : `${age} s`;
  return `${o.kind} ${o.namespace}/${o.name} (heartbeat ${ageText} ago${o.owner ? `, owner ${o.owner}` : ''})`;
}

/**
 * Restores a service's selector / a deployment's replicas from the original-* annotations (the
 * same restore `exchange` runs on exit and `recover` runs), and removes a service's lock.
 */
export async function restoreObject(kube: Kube, o: Pick<KtctlObject, 'kind' | 'namespace' | 'name' | 'annotations'>): Promise<void> {
  const { namespace, name } = o;
  if (o.kind === 'deployment') {
    await restoreReplicas(kube, namespace, name);
    return;
  }
  if (o.kind === 'service') {
    if (ANNOTATION_ORIGINAL_SELECTOR in o.annotations) await restoreSelector(kube, namespace, name);
    if (lockOf({ metadata: { annotations: o.annotations } }) !== undefined || ANNOTATION_HEARTBEAT in o.annotations) await breakLock(kube, namespace, name);
  }
}

/** Deletes an object ktctl made (a pod: and waits until it is gone); one that is gone already is fine. */
export async function deleteObject(kube: Kube, kind: ObjectKind, namespace: string, name: string): Promise<void> {
  const op = { verb: 'delete', resource: `${kind}s`, namespace, name, server: kube.server };
  try {
    switch (kind) {
      case 'pod':
        return await deleteAndWait(kube, 'pod', namespace, name);
      case 'secret':
        await kubeCall(op, () => kube.core.deleteNamespacedSecret({ name, namespace }));
        return;
      case 'configmap':
        await kubeCall(op, () => kube.core.deleteNamespacedConfigMap({ name, namespace }));
        return;
      case 'service':
        await kubeCall(op, () => kube.core.deleteNamespacedService({ name, namespace }));
        return;
      case 'deployment':
        await kubeCall(op, () => kube.apps.deleteNamespacedDeployment({ name, namespace }));
        return;
    }
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}

export interface CleanOptions {
  thresholdMinutes: number;
  dryRun: boolean;
  /** only this namespace (default: all namespaces allowed, else the current one) */
  namespace?: string;
  log: (line: string) => void;
}

/** Deletes or restores every stale object; prints one line per action. */
export async function cleanStale(kube: Kube, o: CleanOptions): Promise<CleanAction[]> {
  const { objects } = await listKtctlObjects(kube, o.namespace);
  const thresholdMs = o.thresholdMinutes * 60_000;
  const actions: CleanAction[] = [];
  const isStale = (x: KtctlObject): boolean => x.ageMs >= thresholdMs;
  // A program ConfigMap stays while a pod that stays mounts it (runs share it; its heartbeat is
  // only its last reuse).
  const inUse = new Set(objects.filter((x) => x.kind === 'pod' && (!isStale(x) || x.ownerAliveHere)).flatMap((x) => x.programs));
  const isProgram = (x: KtctlObject): boolean => x.kind === 'configmap' && x.labels[LABEL_ROLE] === ROLE_PROGRAM;
  // Restores first (they may point a service back at a deployment), program ConfigMaps last.
  const order = (x: KtctlObject): number => (x.changedInPlace ? 0 : isProgram(x) ? 2 : 1);
  const stale = objects.filter((x) => isStale(x) && !(isProgram(x) && inUse.has(x.name))).sort((a, b) => order(a) - order(b));
  for (const object of stale) {
    if (object.ownerAliveHere) {
      actions.push({ object, action: 'skip-live', done: false });
      o.log(`kept ${describeObject(object)}: its ktctl process still runs on this machine`);
      continue;
    }
    const action = object.changedInPlace ? 'restore' : 'delete';
    const verb = action === 'restore' ? 'restore' : 'delete';
    if (o.dryRun) {
      actions.push({ object, action, done: false });
      o.log(`would ${verb} ${describeObject(object)}`);
      continue;
    }
    try {
      if (action === 'restore') await restoreObject(kube, object);
      else await deleteObject(kube, object.kind, object.namespace, object.name);
      actions.push({ object, action, done: true });
      o.log(`${action === 'restore' ? 'restored' : 'deleted'} ${describeObject(object)}`);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      actions.push({ object, action, done: false, error: message });
      o.log(`could not ${verb} ${describeObject(object)}: ${message}`);
    }
  }
  return actions;
}
