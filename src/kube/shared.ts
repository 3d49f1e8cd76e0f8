/**
 * --shareShadow: several `connect` processes of one user in one namespace use one shadow pod. The
 * number of users is an annotation on the pod, changed only with resourceVersion-checked writes
 * (a merge patch that carries the resourceVersion read, a delete with a resourceVersion
 * precondition), so two processes leaving at once cannot both believe they are the last, and one
 * joining while another leaves either joins the old pod in time or makes a new one. The client's
 * private key is shared through a 0600 file in the user's state directory, never the cluster.
 */
import { createHash } from 'node:crypto';
import type { Undo } from '../cli/lifecycle.js';
import type { Kube } from './api.js';
import { isConflict, isNotFound, kubeCall, KubeConfigError } from './errors.js';
import { patchAnnotations } from './heartbeat.js';
import { ANNOTATION_SHARED_BY, ANNOTATION_USERS, dnsLabel, userAtHost } from './names.js';
import { createPod, createSecret, deleteAndWait, makeShadowKeys, type ShadowKeys, type ShadowSpec } from './shadow.js';
import { readSharedKey, removeSharedKey, writeSharedKey } from './state.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The shared shadow's name for this user (the same on every run of theirs). */
export function sharedShadowName(user: string = userAtHost()): string {
  const h = createHash('sha256').update(user).digest('hex').slice(0, 8);
  return dnsLabel(`ktctl-shared-${user.split('@')[0]}`).slice(0, 40).replace(/-+$/, '') + `-${h}`;
}

export interface SharedShadow {
  keys: ShadowKeys;
  /** true when this process made the pod (it must wait for it to be ready like any new pod) */
  created: boolean;
  users: number;
}

/**
 * Joins the user's shared shadow in the namespace, or makes it. Registers on `undo` the step
 * that leaves it (deleting pod, Secret and key file when this process is the last user).
 */
export async function joinSharedShadow(kube: Kube, spec: ShadowSpec, undo: Undo, log: (line: string) => void): Promise<SharedShadow> {
  const me = userAtHost();
  const { namespace, name } = spec;
  const pods = { verb: 'get', resource: 'pods', namespace, name, server: kube.server };
  let leaveRegistered = false;
  const registerLeave = (): void => {
    if (leaveRegistered) return;
    leaveRegistered = true;
    undo.add(`our use of the shared shadow ${namespace}/${name}`, () => leaveSharedShadow(kube, namespace, name, log));
  };
  for (let attempt = 0; attempt < 40; attempt++) {
    let pod;
    try {
      pod = await kubeCall(pods, () => kube.core.readNamespacedPod({ name, namespace }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    if (pod) {
      const a = pod.metadata?.annotations ?? {};
      if (pod.metadata?.deletionTimestamp) {
        await sleep(250);
        continue;
      }
      if (a[ANNOTATION_SHARED_BY] !== me) {
        throw new KubeConfigError(`the pod ${namespace}/${name} exists but is not a shadow shared by ${me}; delete it or connect without --shareShadow`);
      }
      const key = readSharedKey(namespace, name);
      if (!key) {
        throw new KubeConfigError(`the shared shadow ${namespace}/${name} exists but its key is not in this machine's state directory (it was made from another machine); connect without --shareShadow, or run ktctl clean once its users have gone`);
      }
      const users = Number(a[ANNOTATION_USERS] ?? '0');
      try {
        registerLeave();
        await patchAnnotations(kube, { kind: 'pod', namespace, name }, { [ANNOTATION_USERS]: String(users + 1) }, pod.metadata?.resourceVersion);
      } catch (error) {
        if (isConflict(error)) continue;
        throw error;
      }
      log(`joined the shared shadow ${namespace}/${name} (${users + 1} users)`);
      return { keys: { clientPrivate: key.clientPrivate, clientPublic: key.clientPublic, hostPublic: key.hostPublic, hostPrivate: '' }, created: false, users: users + 1 };
    }
    // Nobody has it: make it. The key file first (a joiner needs it), then Secret, then pod.
    const keys = makeShadowKeys();
    const now = await kube.serverNow();
    const extra = { [ANNOTATION_SHARED_BY]: me };
    writeSharedKey(namespace, name, { clientPrivate: keys.clientPrivate, clientPublic: keys.clientPublic, hostPublic: keys.hostPublic });
    let created = false;
    try {
      const secretStep = await createSecret(kube, spec, keys, undo, now, extra).catch((error: unknown) => {
        if (isConflict(error)) return undefined;
        throw error;
      });
      if (secretStep === undefined) {
        // Another process of ours is making it right now: wait for its pod.
        await sleep(250);
        continue;
      }
      // The Secret goes with the shared pod (leaveSharedShadow deletes both), not on its own.
      secretStep();
      registerLeave();
      await createPod(kube, spec, name, undo, now, { ...extra, [ANNOTATION_USERS]: '1' }).then((podStep) => podStep());
      created = true;
    } catch (error) {
      if (!isConflict(error)) throw error;
    }
    if (created) {
      log(`created the shared shadow ${namespace}/${name}`);
      return { keys, created: true, users: 1 };
    }
    await sleep(250);
  }
  throw new KubeConfigError(`could not join the shared shadow ${namespace}/${name}: it kept changing; try again`);
}

/** Leaves the shared shadow: the last user deletes pod, Secret and key file. */
export async function leaveSharedShadow(kube: Kube, namespace: string, name: string, log: (line: string) => void): Promise<void> {
  for (let attempt = 0; attempt < 40; attempt++) {
    let pod;
    try {
      pod = await kubeCall({ verb: 'get', resource: 'pods', namespace, name, server: kube.server }, () => kube.core.readNamespacedPod({ name, namespace }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    if (!pod || pod.metadata?.deletionTimestamp) break;
    const users = Number(pod.metadata?.annotations?.[ANNOTATION_USERS] ?? '1');
    const resourceVersion = pod.metadata?.resourceVersion;
    try {
      if (users > 1) {
        await patchAnnotations(kube, { kind: 'pod', namespace, name }, { [ANNOTATION_USERS]: String(users - 1) }, resourceVersion);
        log(`left the shared shadow ${namespace}/${name} (${users - 1} users remain)`);
        return;
      }
      await kubeCall({ verb: 'delete', resource: 'pods', namespace, name, server: kube.server }, () =>
        kube.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 2, body: { preconditions: { resourceVersion } } }),
      );
      break;
    } catch (error) {
      if (isConflict(error)) continue;
      if (isNotFound(error)) break;
      throw error;
    }
  }
  // The last user (or the pod is gone anyway): pod, Secret and the local key go.
  await deleteAndWait(kube, 'pod', namespace, name);
  await deleteAndWait(kube, 'secret', namespace, name);
  removeSharedKey(namespace, name);
  log(`deleted the shared shadow ${namespace}/${name} (last user)`);
}
