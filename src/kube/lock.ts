/**
 * A lock on a Service, held in its annotations: `ktctl/locked-by` (the role: `exchange` holds it
 * alone, `mesh` shares it with other meshes), `ktctl/lock-holders` (JSON array of owners,
 * `user@host pid`), `ktctl/owner` (the newest holder) and `ktctl/heartbeat` (the API server's
 * time, kept fresh by a Heartbeat while a holder lives). Every write carries the resourceVersion
 * that was read, so two processes cannot both believe they got it.
 *
 * A holder is alive when it runs on this machine (its pid is a ktctl process), or, for another
 * machine, when the heartbeat is younger than STALE_AFTER_MINUTES. A lock with no live holder is
 * taken over with a warning.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { V1Service } from '@kubernetes/client-node';
import { LockedError } from '../errors.js';
import type { Undo } from '../cli/lifecycle.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { isConflict, isNotFound, kubeCall } from './errors.js';
import { patchAnnotations, type Heartbeat } from './heartbeat.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_LOCK_HOLDERS, ANNOTATION_LOCKED_BY, ANNOTATION_OWNER, ownerOf, STALE_AFTER_MINUTES } from './names.js';

export type LockRole = 'exchange' | 'mesh';

export interface LockState {
  role: string;
  holders: string[];
  /** the lock's heartbeat (undefined when missing or unreadable) */
  heartbeat?: Date;
}

/** The lock recorded on a Service, or undefined when it has none. */
export function lockOf(service: Pick<V1Service, 'metadata'>): LockState | undefined {
  const a = service.metadata?.annotations ?? {};
  const role = a[ANNOTATION_LOCKED_BY];
  if (role === undefined) return undefined;
  let holders: string[] = [];
  try {
    const parsed: unknown = JSON.parse(a[ANNOTATION_LOCK_HOLDERS] ?? '[]');
    if (Array.isArray(parsed)) holders = parsed.filter((h): h is string => typeof h === 'string');
  } catch {
    /* unreadable: no holders */
  }
  if (holders.length === 0 && a[ANNOTATION_OWNER]) holders = [a[ANNOTATION_OWNER]];
  const beat = Date.parse(a[ANNOTATION_HEARTBEAT] ?? '');
  return { role, holders, heartbeat: Number.isNaN(beat) ? undefined : new Date(beat) };
}

/** True when `owner` ("user@host pid") names a ktctl process alive on this machine. */
export function ownerAliveHere(owner: string): boolean {
  const m = /^(.*)@(.*) (\d+)$/.exec(owner);
  if (!m || m[2] !== hostname()) return false;
  const pid = Number(m[3]);
  if (pid === process.pid) return true;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /ktctl|cli\/main/.test(cmdline);
  } catch {
    return false;
  }
}

/** True when `owner` ("user@host pid") names a process on this machine. */
export function ownerIsHere(owner: string): boolean {
  const m = /^(.*)@(.*) (\d+)$/.exec(owner);
  return m !== null && m[2] === hostname();
}

/** Whether a holder still lives: this machine asks the process table, others go by the heartbeat. */
export function holderAlive(owner: string, heartbeatAgeMs: number, staleMs: number = STALE_AFTER_MINUTES * 60_000): boolean {
  if (ownerIsHere(owner)) return ownerAliveHere(owner);
  return heartbeatAgeMs < staleMs;
}

export function describeAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

export interface ServiceLock {
  readonly namespace: string;
  readonly service: string;
  readonly role: LockRole;
  readonly owner: string;
  /** other live holders when this lock was got (mesh only) */
  readonly sharedWith: string[];
  /** holders whose process was gone and whose lock this one took over (their leftovers may need recovering) */
  readonly tookOverFrom: string[];
  release(): Promise<void>;
}

export interface AcquireOptions {
  namespace: string;
  service: string;
  role: LockRole;
  /** the release is registered here before the lock is written */
  undo: Undo;
  /** keeps the lock's heartbeat fresh while this process lives */
  heartbeat?: Heartbeat;
  log: (line: string) => void;
  staleMinutes?: number;
  /** this process's owner string (default `user@host pid`) */
  owner?: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Takes the lock of a Service. Fails with LockedError naming the live holder and the age of its
 * heartbeat when another process holds it (any holder for `exchange`, an `exchange` holder for
 * `mesh`); takes a lock nobody alive holds over with a warning.
 */
export async function acquireLock(kube: Kube, o: AcquireOptions): Promise<ServiceLock> {
  const { namespace, service: name, role } = o;
  const me = o.owner ?? ownerOf();
  const staleMs = (o.staleMinutes ?? STALE_AFTER_MINUTES) * 60_000;
  const op = { verb: 'get', resource: 'services', namespace, name, server: kube.server };
  let held = false;
  const release = async (): Promise<void> => {
    if (!held) return;
    o.heartbeat?.remove({ kind: 'service', namespace, name });
    await releaseLock(kube, namespace, name, me);
    held = false;
  };
  const unregister = o.undo.add(`the ${role} lock on service ${namespace}/${name}`, release);
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const svc = await kubeCall(op, () => kube.core.readNamespacedService({ name, namespace }));
      const now = await kube.serverNow();
      const current = lockOf(svc);
      let holders = [me];
      let sharedWith: string[] = [];
      let tookOverFrom: string[] = [];
      if (current && current.holders.length > 0) {
        const age = current.heartbeat ? now.getTime() - current.heartbeat.getTime() : Number.POSITIVE_INFINITY;
        const others = current.holders.filter((h) => h !== me);
        const alive = others.filter((h) => holderAlive(h, age, staleMs));
        const dead = others.filter((h) => !alive.includes(h));
        if (alive.length > 0 && !(role === 'mesh' && current.role === 'mesh')) {
          const ageText = current.heartbeat ? `heartbeat ${describeAge(age)} ago` : 'no heartbeat';
          throw new LockedError(
            `the service ${name} in namespace ${namespace} is already ${current.role === 'mesh' ? 'meshed' : 'exchanged'} by ${alive[0]} (${ageText}): wait until it stops, or run ktctl recover ${name} if that process is gone`,
          );
        }
        if (dead.length > 0) {
          o.log(`warning: taking over the lock on service ${namespace}/${name} from ${dead.join(', ')} (${current.role}, ${current.heartbeat ? `heartbeat ${describeAge(age)} ago` : 'no heartbeat'}; the process is gone)`);
        }
        sharedWith = alive;
        tookOverFrom = dead;
        holders = [...alive, me];
      }
      try {
        held = true;
        await patchAnnotations(
          kube,
          { kind: 'service', namespace, name },
          { [ANNOTATION_LOCKED_BY]: role, [ANNOTATION_LOCK_HOLDERS]: JSON.stringify(holders), [ANNOTATION_OWNER]: me, [ANNOTATION_HEARTBEAT]: rfc3339(now) },
          svc.metadata?.resourceVersion,
        );
      } catch (error) {
        if (isConflict(error)) {
          held = false;
          await sleep(50 + Math.random() * 150);
          continue;
        }
        throw error;
      }
      o.heartbeat?.add({ kind: 'service', namespace, name });
      return { namespace, service: name, role, owner: me, sharedWith, tookOverFrom, release };
    }
    throw new LockedError(`could not lock the service ${name} in namespace ${namespace}: it kept changing meanwhile; try again`);
  } catch (error) {
    if (!held) unregister();
    throw error;
  }
}

/**
 * Takes `owner` (and holders on this machine whose process is gone) off the lock; the last holder
 * removes the lock's annotations. A service that is gone has no lock left to release.
 */
export async function releaseLock(kube: Kube, namespace: string, name: string, owner: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    let svc: V1Service;
    try {
      svc = await kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace }));
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
    const current = lockOf(svc);
    if (!current) return;
    const rest = current.holders.filter((h) => h !== owner && !(ownerIsHere(h) && !ownerAliveHere(h)));
    if (rest.length === current.holders.length && current.holders.length > 0) return; // not ours (taken over meanwhile)
    const patch: Record<string, string | null> =
      rest.length === 0
        ? { [ANNOTATION_LOCKED_BY]: null, [ANNOTATION_LOCK_HOLDERS]: null, [ANNOTATION_OWNER]: null, [ANNOTATION_HEARTBEAT]: null }
        : { [ANNOTATION_LOCK_HOLDERS]: JSON.stringify(rest), [ANNOTATION_OWNER]: rest[rest.length - 1]! };
    try {
      await patchAnnotations(kube, { kind: 'service', namespace, name }, patch, svc.metadata?.resourceVersion);
      return;
    } catch (error) {
      if (isConflict(error)) continue;
      if (isNotFound(error)) return;
      throw error;
    }
  }
  throw new LockedError(`could not release the lock on service ${namespace}/${name}: it kept changing meanwhile; run ktctl recover ${name}`);
}

/** Removes a lock whoever holds it (`recover`, `clean`). */
export async function breakLock(kube: Kube, namespace: string, name: string): Promise<void> {
  await patchAnnotations(kube, { kind: 'service', namespace, name }, { [ANNOTATION_LOCKED_BY]: null, [ANNOTATION_LOCK_HOLDERS]: null, [ANNOTATION_OWNER]: null, [ANNOTATION_HEARTBEAT]: null });
}
