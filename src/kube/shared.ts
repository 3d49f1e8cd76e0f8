/**
 * Pods that several ktctl processes use at once: the --shareShadow pod (one user's `connect`
 * processes in a namespace) and the mesh router (every developer meshing one Service). Who uses the
 * pod is written in its annotations, changed only with resourceVersion-checked writes (a merge
 * patch that carries the resourceVersion read, a delete with a resourceVersion precondition), so
 * two processes leaving at once cannot both believe they are the last, and one joining while
 * another leaves either joins the old pod in time or makes a new one.
 *
 * The last user first marks the pod `ktctl/closing` (resourceVersion-checked: nobody joined
 * meanwhile), so that joiners wait for it to go instead of joining; then it takes back what points
 * at the pod and removes everything else (a Service's selector goes back before the router stops
 * answering), and deletes the pod last: when the pod is gone, so is the rest, and a new pod can
 * be made at once.
 *
 * Where the ssh keys come from differs: a shared shadow's client key stays on this machine (a 0600
 * file in the user's state directory, never the cluster); the router's users are different people
 * on different machines, so its Secret also holds the client key and the host's public key
 * (`readKeysFromSecret`), and whoever may read that Secret may use the router.
 */
import { createHash } from 'node:crypto';
import type { V1Pod } from '@kubernetes/client-node';
import { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { isConflict, isNotFound, kubeCall, KubeConfigError, unlessNotFound } from './errors.js';
import { patchAnnotations } from './heartbeat.js';
import { ANNOTATION_SHARED_BY, ANNOTATION_USERS, dnsLabel, ownerOf, userAtHost } from './names.js';
import { createPod, createSecret, deleteAndWait, makeShadowKeys, type ShadowKeys, type ShadowSpec } from './shadow.js';
import { readSharedKey, removeSharedKey, writeSharedKey } from './shared-key.js';
import { sleep } from './util.js';

/** Attempts at a join or leave before giving up (each conflict is one). */
const ATTEMPTS = 40;
/** How long a joiner waits for a pod that is being removed (closing or terminating) to go. */
const GONE_WAIT_MS = 60_000;

/** On a shared pod whose last user removes it: that user (`user@host pid`); nobody joins it any more. */
export const ANNOTATION_CLOSING = 'ktctl/closing';

/** Secret entries a shared pod's later users read their keys from (beside the shadow's own two). */
export const SECRET_SHARED_KEYS = { clientKey: 'client_key', clientPublic: 'client_key.pub', hostPublic: 'host_key.pub' } as const;

/** Secret data that lets later users in: the client key pair and the host's public key. */
export function sharedKeysData(keys: ShadowKeys): Record<string, string> {
  return {
    [SECRET_SHARED_KEYS.clientKey]: Buffer.from(keys.clientPrivate).toString('base64'),
    [SECRET_SHARED_KEYS.clientPublic]: Buffer.from(keys.clientPublic).toString('base64'),
    [SECRET_SHARED_KEYS.hostPublic]: Buffer.from(keys.hostPublic).toString('base64'),
  };
}

/** The keys a shared pod's Secret carries (sharedKeysData); a Secret without them is refused. */
export async function readKeysFromSecret(kube: Kube, namespace: string, name: string, what: string): Promise<ShadowKeys> {
  const secret = await kubeCall({ verb: 'get', resource: 'secrets', namespace, name, server: kube.server }, () => kube.core.readNamespacedSecret({ name, namespace }));
  const field = (key: string): string | undefined => {
    const b64 = secret.data?.[key];
    return b64 === undefined ? undefined : Buffer.from(b64, 'base64').toString('utf8');
  };
  const clientPrivate = field(SECRET_SHARED_KEYS.clientKey);
  const clientPublic = field(SECRET_SHARED_KEYS.clientPublic);
  const hostPublic = field(SECRET_SHARED_KEYS.hostPublic);
  if (!clientPrivate || !clientPublic || !hostPublic) {
    throw new KubeConfigError(`the Secret ${namespace}/${name} of ${what} does not hold the keys its users share; run ktctl recover once its users have gone`);
  }
  return { clientPrivate, clientPublic, hostPublic, hostPrivate: '' };
}

/** How one kind of shared pod is joined, made and left. */
export interface SharedPodKind {
  /** what the pod is, for messages: "the shared shadow ns/name", "the mesh router ns/name" */
  what: string;
  /**
   * For an existing pod: throws a sentence when this process may not join, else returns the keys
   * and the annotation changes that add this process as a user.
   */
  join(pod: V1Pod): Promise<{ keys: ShadowKeys; annotations: Record<string, string | null>; users: number }>;
  /**
   * Makes the pod and what goes with it, this process its only user, each object's removal
   * registered on `undo`. A 409 (someone else makes them right now) is thrown as it is: the join
   * waits and looks again.
   */
  create(undo: Undo): Promise<ShadowKeys>;
  /** The annotation changes that take this process off; undefined when it is the last user. */
  leave(pod: V1Pod): Promise<Record<string, string | null> | undefined>;
  /**
   * The last user goes: takes back what points at the pod and removes everything but the pod
   * (which is marked closing, or already gone); leaveSharedPod deletes the pod after it.
   */
  removeAll(): Promise<void>;
}

export interface JoinedPod {
  keys: ShadowKeys;
  /** true when this process made the pod (it must wait for it to be ready like any new pod) */
  created: boolean;
  users: number;
}

/**
 * Joins the shared pod `name`, or makes it. Registers on `undo` the step that leaves it (removing
 * everything when this process is the last user).
 */
export async function joinSharedPod(kube: Kube, namespace: string, name: string, kind: SharedPodKind, undo: Undo, log: (line: string) => void): Promise<JoinedPod> {
  const pods = { verb: 'get', resource: 'pods', namespace, name, server: kube.server };
  let leaveRegistered = false;
  const registerLeave = (): void => {
    if (leaveRegistered) return;
    leaveRegistered = true;
    undo.add(`our use of ${kind.what}`, () => leaveSharedPod(kube, namespace, name, kind, log));
  };
  const goneBy = Date.now() + GONE_WAIT_MS;
  for (let attempt = 0; attempt < ATTEMPTS; ) {
    const pod = await unlessNotFound(kubeCall(pods, () => kube.core.readNamespacedPod({ name, namespace })));
    if (pod) {
      const closing = pod.metadata?.annotations?.[ANNOTATION_CLOSING];
      if (pod.metadata?.deletionTimestamp || closing !== undefined) {
        // Its last user removes it: wait until it is gone, then make a new one.
        if (Date.now() > goneBy) {
          throw new KubeConfigError(
            `${kind.what} is being removed${closing ? ` by ${closing}` : ''} and did not go within ${GONE_WAIT_MS / 1000} s; if that process is gone, run ktctl clean (or ktctl recover for a mesh router), then try again`,
          );
        }
        await sleep(250);
        continue;
      }
      attempt++;
      const joined = await kind.join(pod);
      try {
        registerLeave();
        await patchAnnotations(kube, { kind: 'pod', namespace, name }, joined.annotations, pod.metadata?.resourceVersion);
      } catch (error) {
        if (isConflict(error)) continue;
        throw error;
      }
      log(`joined ${kind.what} (${joined.users} users)`);
      return { keys: joined.keys, created: false, users: joined.users };
    }
    // Nobody has it: make it. Its own steps are folded into the leave step once it exists.
    const own = new UndoFold(undo, log);
    try {
      const keys = await kind.create(own.undo);
      own.fold();
      registerLeave();
      log(`created ${kind.what}`);
      return { keys, created: true, users: 1 };
    } catch (error) {
      if (!isConflict(error)) throw error;
      await own.unwind(log); // what this attempt made before the conflict (someone else makes it right now)
    }
    attempt++;
    await sleep(250);
  }
  throw new KubeConfigError(`could not join ${kind.what}: it kept changing; try again`);
}

/**
 * The steps `create` registers go on a private Undo while it runs: on a conflict they are run (what
 * this attempt made goes), on success they are dropped and the leave step (which removes all of it
 * when the last user goes) stands for them on the command's Undo. A crash in between is `clean`'s.
 */
class UndoFold {
  readonly undo = new Undo();
  readonly #removeGuard: () => void;

  constructor(outer: Undo, log: (line: string) => void) {
    // Until create() returns, an exit (Ctrl-C) must still remove what it made.
    this.#removeGuard = outer.add('the objects being created', () => this.undo.run(log));
  }

  /** create() succeeded: the leave step stands for its steps. */
  fold(): void {
    this.#removeGuard();
  }

  /** create() failed: its steps run now (each removal or failure logged), and the outer Undo forgets them. */
  async unwind(log: (line: string) => void): Promise<void> {
    this.#removeGuard();
    await this.undo.run(log);
  }
}

/**
 * Leaves the shared pod. The last user marks it closing (precondition: nobody joined meanwhile),
 * removes everything else (kind.removeAll), then deletes the pod.
 */
export async function leaveSharedPod(kube: Kube, namespace: string, name: string, kind: SharedPodKind, log: (line: string) => void): Promise<void> {
  const ref = { kind: 'pod' as const, namespace, name };
  let last = false;
  for (let attempt = 0; attempt < ATTEMPTS && !last; attempt++) {
    const pod = await unlessNotFound(kubeCall({ verb: 'get', resource: 'pods', namespace, name, server: kube.server }, () => kube.core.readNamespacedPod({ name, namespace })));
    if (!pod || pod.metadata?.deletionTimestamp) {
      last = true; // gone anyway: what belongs to it goes too
      break;
    }
    const rest = await kind.leave(pod);
    try {
      await patchAnnotations(kube, ref, rest ?? { [ANNOTATION_CLOSING]: ownerOf() }, pod.metadata?.resourceVersion);
    } catch (error) {
      if (isConflict(error)) continue;
      if (isNotFound(error)) {
        last = true;
        break;
      }
      throw error;
    }
    if (rest !== undefined) {
      log(`left ${kind.what} (${rest[ANNOTATION_USERS] ?? 'other'} users remain)`);
      return;
    }
    last = true;
  }
  if (!last) throw new KubeConfigError(`could not leave ${kind.what}: it kept changing; run ktctl recover (or ktctl clean) once its other users have gone`);
  // The last user: what points at the pod goes back and the rest goes first, the pod last.
  await kind.removeAll();
  await deleteAndWait(kube, 'pod', namespace, name);
  log(`deleted ${kind.what} (last user)`);
}

/** The shared shadow's name for this user (the same on every run of theirs). */
export function sharedShadowName(user: string = userAtHost()): string {
  const h = createHash('sha256').update(user).digest('hex').slice(0, 8);
  return dnsLabel(`ktctl-shared-${user.split('@')[0]}`).slice(0, 40).replace(/-+$/, '') + `-${h}`;
}

export type SharedShadow = JoinedPod;

/** --shareShadow: one user's connect processes, the client key in the state directory. */
function sharedShadowKind(kube: Kube, spec: ShadowSpec): SharedPodKind {
  const me = userAtHost();
  const { namespace, name } = spec;
  const users = (pod: V1Pod): number => Number(pod.metadata?.annotations?.[ANNOTATION_USERS] ?? '1');
  return {
    what: `the shared shadow ${namespace}/${name}`,
    async join(pod) {
      if (pod.metadata?.annotations?.[ANNOTATION_SHARED_BY] !== me) {
        throw new KubeConfigError(`the pod ${namespace}/${name} exists but is not a shadow shared by ${me}; delete it or connect without --shareShadow`);
      }
      const key = readSharedKey(namespace, name);
      if (!key) {
        throw new KubeConfigError(`the shared shadow ${namespace}/${name} exists but its key is not in this machine's state directory (it was made from another machine); connect without --shareShadow, or run ktctl clean once its users have gone`);
      }
      const n = Number(pod.metadata?.annotations?.[ANNOTATION_USERS] ?? '0') + 1;
      return { keys: { ...key, hostPrivate: '' }, annotations: { [ANNOTATION_USERS]: String(n) }, users: n };
    },
    async create(undo) {
      // The key file first (a joiner needs it), then Secret, then pod.
      const keys = makeShadowKeys();
      const now = await kube.serverNow();
      const extra = { [ANNOTATION_SHARED_BY]: me };
      writeSharedKey(namespace, name, { clientPrivate: keys.clientPrivate, clientPublic: keys.clientPublic, hostPublic: keys.hostPublic });
      await createSecret(kube, spec, keys, undo, now, extra);
      await createPod(kube, spec, name, undo, now, { ...extra, [ANNOTATION_USERS]: '1' });
      return keys;
    },
    leave: async (pod) => (users(pod) > 1 ? { [ANNOTATION_USERS]: String(users(pod) - 1) } : undefined),
    async removeAll() {
      await deleteAndWait(kube, 'secret', namespace, name);
      removeSharedKey(namespace, name);
    },
  };
}

/**
 * Joins the user's shared shadow in the namespace, or makes it. Registers on `undo` the step
 * that leaves it (deleting pod, Secret and key file when this process is the last user).
 */
export function joinSharedShadow(kube: Kube, spec: ShadowSpec, undo: Undo, log: (line: string) => void): Promise<SharedShadow> {
  return joinSharedPod(kube, spec.namespace, spec.name, sharedShadowKind(kube, spec), undo, log);
}
