/**
 * The shadow program in the cluster: no image of ours exists anywhere, so every shadow, router and
 * exchange pod runs the stock Node.js image (DEFAULT_SHADOW_IMAGE) with ktctl's own program, one
 * bundled ES module (`npm run build` -> dist/shadow.mjs, shadow-image/bundle.ts), mounted
 * read-only from a ConfigMap. The ConfigMap is named after the bundle's content hash, so every run
 * of the same ktctl version in a namespace shares one, and a different build never runs an old one.
 *
 * It outlives the run that made it (other runs may be using it): `clean` removes a program
 * ConfigMap once no pod mounts it and its heartbeat (made or last reused) is older than the
 * threshold; reusing it refreshes that heartbeat, so a run never loses it between "reuse" and "pod".
 */
import type { V1ConfigMap } from '@kubernetes/client-node';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { isNotFound, kubeCall, KubeConflictError } from './errors.js';
import { PROGRAM_FILE, shadowProgram, ShadowProgramError, type ShadowProgram } from './bundle.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_OWNER, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY, ownerOf, ROLE_PROGRAM } from './names.js';

export const ANNOTATION_PROGRAM_SHA256 = 'ktctl/program-sha256';

export function programManifest(program: ShadowProgram, namespace: string, now: Date, labels: Record<string, string> = {}): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: program.configMap,
      namespace,
      labels: { ...labels, [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_ROLE]: ROLE_PROGRAM },
      annotations: { [ANNOTATION_HEARTBEAT]: rfc3339(now), [ANNOTATION_OWNER]: ownerOf(), [ANNOTATION_PROGRAM_SHA256]: program.sha256 },
    },
    immutable: true,
    data: { [PROGRAM_FILE]: program.text },
  };
}

/**
 * Makes sure the namespace has this build's program ConfigMap: creates it, or reuses the one
 * there (its heartbeat refreshed). A ConfigMap of that name whose content is not this bundle (made
 * by hand) is refused rather than run.
 */
export async function ensureShadowProgram(kube: Kube, namespace: string, labels: Record<string, string> = {}, program: ShadowProgram = shadowProgram(), retried = false): Promise<string> {
  const name = program.configMap;
  const now = await kube.serverNow();
  try {
    await kubeCall({ verb: 'create', resource: 'configmaps', namespace, name, server: kube.server }, () =>
      kube.core.createNamespacedConfigMap({ namespace, body: programManifest(program, namespace, now, labels) }),
    );
    return name;
  } catch (error) {
    if (!(error instanceof KubeConflictError)) throw error;
  }
  // It exists: made by an earlier run of this build (or a concurrent one a moment ago).
  let existing: V1ConfigMap;
  try {
    existing = await kubeCall({ verb: 'get', resource: 'configmaps', namespace, name, server: kube.server }, () => kube.core.readNamespacedConfigMap({ name, namespace }));
  } catch (error) {
    // deleted between our create and our read (a clean): make it again, once
    if (isNotFound(error) && !retried) return ensureShadowProgram(kube, namespace, labels, program, true);
    throw error;
  }
  if (existing.data?.[PROGRAM_FILE] !== program.text) {
    throw new ShadowProgramError(
      `the ConfigMap ${namespace}/${name} exists but does not hold this ktctl's shadow program: delete it (kubectl delete configmap ${name} -n ${namespace}) and start again`,
    );
  }
  await kubeCall({ verb: 'patch', resource: 'configmaps', namespace, name, server: kube.server }, () =>
    kube.core.patchNamespacedConfigMap({ name, namespace, body: { metadata: { annotations: { [ANNOTATION_HEARTBEAT]: rfc3339(now) } } } }, kube.mergePatch),
  );
  return name;
}

/** The program ConfigMaps a pod mounts (for `clean`: a program in use is never removed). */
export function programsMountedBy(pod: { spec?: { volumes?: Array<{ configMap?: { name?: string } }> } }): string[] {
  return (pod.spec?.volumes ?? []).map((v) => v.configMap?.name).filter((n): n is string => n !== undefined && n.startsWith('ktctl-shadow-'));
}
