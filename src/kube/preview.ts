/**
 * `preview <name>`: a new Service `<name>` whose selector is the shadow's unique label, labelled
 * and annotated like every ktctl object (so `clean` and `recover <name>` find it), removed on exit.
 */
import type { V1Service } from '@kubernetes/client-node';
import { TargetError } from '../errors.js';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { isConflict, KubeApiError, kubeCall, KubeUnreachableError, unlessNotFound } from './errors.js';
import type { Heartbeat } from './heartbeat.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_OWNER, LABEL_MANAGED_BY, LABEL_ROLE, LABEL_SERVICE, MANAGED_BY, ownerOf } from './names.js';
import type { ExposePort } from './target.js';

function exists(namespace: string, name: string, cause?: unknown): TargetError {
  return new TargetError('exists', `a service ${name} exists already in namespace ${namespace}: pick another name for the preview (or ktctl exchange ${name} to take that one over)`, { cause });
}

/** Fails with TargetError('exists') when the Service is there already (checked before a shadow is made). */
export async function assertNoService(kube: Kube, namespace: string, name: string): Promise<void> {
  const svc = await unlessNotFound(kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace })));
  if (svc !== undefined) throw exists(namespace, name);
}

export function previewServiceManifest(o: {
  namespace: string;
  name: string;
  ports: ExposePort[];
  selector: Record<string, string>;
  external: boolean;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  heartbeat: Date;
}): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: o.name,
      namespace: o.namespace,
      labels: { ...o.labels, [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_ROLE]: 'preview', [LABEL_SERVICE]: o.name },
      annotations: { ...o.annotations, [ANNOTATION_OWNER]: ownerOf(), [ANNOTATION_HEARTBEAT]: rfc3339(o.heartbeat) },
    },
    spec: {
      type: o.external ? 'LoadBalancer' : 'ClusterIP',
      selector: o.selector,
      ports: o.ports.map((p) => ({ name: `tcp-${p.remote}`, protocol: 'TCP', port: p.remote, targetPort: p.remote })),
    },
  };
}

/** Creates the preview Service; its deletion is registered on `undo` first. */
export async function createPreviewService(
  kube: Kube,
  o: Parameters<typeof previewServiceManifest>[0] & { undo: Undo; heartbeatOf?: Heartbeat },
): Promise<V1Service> {
  const { namespace, name } = o;
  const ref = { kind: 'service' as const, namespace, name };
  let created = false;
  const remove = o.undo.add(`service ${namespace}/${name}`, async () => {
    o.heartbeatOf?.remove(ref);
    if (!created) return;
    await unlessNotFound(kubeCall({ verb: 'delete', resource: 'services', namespace, name, server: kube.server }, () => kube.core.deleteNamespacedService({ name, namespace })));
  });
  try {
    const svc = await kubeCall({ verb: 'create', resource: 'services', namespace, name, server: kube.server }, () =>
      kube.core.createNamespacedService({ namespace, body: previewServiceManifest(o) }),
    );
    created = true;
    o.heartbeatOf?.add(ref);
    return svc;
  } catch (error) {
    // No answer, or the server failed: the Service may exist now, so its deletion stays registered.
    const ambiguous = error instanceof KubeUnreachableError || (error instanceof KubeApiError && (error.status === 0 || error.status >= 500));
    if (ambiguous) created = true;
    else remove();
    if (isConflict(error)) throw exists(namespace, name, error);
    throw error;
  }
}
