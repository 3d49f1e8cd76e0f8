/**
 * A lock on a Service, held in its annotations: `ktctl/locked-by` (the role: `exchange` holds it
 * alone, `mesh` shares it with other meshes), `ktctl/lock-holders` (JSON array of
 * `{owner: "user@host pid", beat: RFC 3339}`: each holder's own last sign of life, refreshed by its
 * Heartbeat), `ktctl/owner` (the newest holder) and `ktctl/heartbeat` (the API server's time of
 * the last beat of any holder). Every write carries the resourceVersion that was read, so two
 * processes cannot both believe they got it.
 *
 * A holder is alive when it runs on this machine (its pid is a ktctl process), or, for another
 * machine, when its own beat is younger than STALE_AFTER_MINUTES (one live colleague does not keep
 * a dead one's entry alive). Stale holders are dropped with a warning whenever the lock is taken
 * or released. The mesh router's marks (src/kube/mesh.ts) are holders of the same kind.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { V1Service } from '@kubernetes/client-node';
import { LockedError } from '../errors.js';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { isConflict, isNotFound, kubeCall } from './errors.js';
import { patchAnnotations, type Heartbeat, type OwnedObject } from './heartbeat.js';
import { ANNOTATION_HEARTBEAT, ANNOTATION_LOCK_HOLDERS, ANNOTATION_LOCKED_BY, ANNOTATION_OWNER, ownerOf, STALE_AFTER_MINUTES } from './names.js';
import { asString, jsonAnnotation, listOf, sleep } from './util.js';

export type LockRole = 'exchange' | 'mesh';

/** One holder of a lock or of a mesh mark: who, and the API server's time of its own last beat. */
export interface Holder {
  owner: string;
  /** undefined for entries written by older versions (a bare owner string): the object's heartbeat counts */
  beat?: Date;
}

/** A holder entry as written (`{owner, beat}`), or as older versions wrote it (the owner alone). */
export function holderOf(v: unknown): Holder | undefined {
  const bare = asString(v);
  if (bare !== undefined) return { owner: bare };
  if (typeof v !== 'object' || v === null) return undefined;
  const owner = asString((v as { owner?: unknown }).owner);
  if (owner === undefined) return undefined;
  const beat = Date.parse(asString((v as { beat?: unknown }).beat) ?? '');
  return Number.isNaN(beat) ? { owner } : { owner, beat: new Date(beat) };
}

/** The JSON value of a holder entry. */
export function holderJson(h: Holder): { owner: string; beat?: string } {
  return h.beat ? { owner: h.owner, beat: rfc3339(h.beat) } : { owner: h.owner };
}

/** How long ago the holder's last beat was (its own, else `fallback`), ms; infinite without either. */
export function holderAge(h: Holder, now: Date, fallback?: Date): number {
  const beat = h.beat ?? fallback;
  return beat ? now.getTime() - beat.getTime() : Number.POSITIVE_INFINITY;
}

/** "heartbeat 3 min ago" or "no heartbeat". */
export function describeBeat(ageMs: number): string {
  return Number.isFinite(ageMs) ? `heartbeat ${describeAge(ageMs)} ago` : 'no heartbeat';
}

/** Why a holder counts as gone, for warnings. */
export function goneReason(owner: string): string {
  return ownerIsHere(owner) ? 'the process is gone' : `no heartbeat for ${STALE_AFTER_MINUTES} min or more`;
}

export interface LockState {
  role: string;
  holders: Holder[];
  /** the lock's heartbeat (undefined when missing or unreadable) */
  heartbeat?: Date;
}

/** The lock recorded on a Service, or undefined when it has none. */
export function lockOf(service: Pick<V1Service, 'metadata'>): LockState | undefined {
  const a = service.metadata?.annotations ?? {};
  const role = a[ANNOTATION_LOCKED_BY];
  if (role === undefined) return undefined;
  let holders = listOf(jsonAnnotation(a[ANNOTATION_LOCK_HOLDERS]), holderOf) ?? [];
  if (holders.length === 0 && a[ANNOTATION_OWNER]) holders = [{ owner: a[ANNOTATION_OWNER] }];
  const beat = Date.parse(a[ANNOTATION_HEARTBEAT] ?? '');
  return { role, holders, heartbeat: Number.isNaN(beat) ? undefined : new Date(beat) };
}

/** `user@host pid` split into its parts, or undefined when it is not one. */
export function parseOwner(owner: string): { user: string; host: string; pid: number } | undefined {
  const m = /^(.*)@(.*) (\d+)$/.exec(owner);
  return m ? { user: m[1]!, host: m[2]!, pid: Number(m[3]) } : undefined;
}

/** True when `owner` ("user@host pid") names a ktctl process alive on this machine. */
export function ownerAliveHere(owner: string): boolean {
  const o = parseOwner(owner);
  if (!o || o.host !== hostname()) return false;
  const pid = o.pid;
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
  return parseOwner(owner)?.host === hostname();
}

/** Whether a holder still lives: this machine asks the process table, others go by the heartbeat. */
export function holderAlive(owner: string, heartbeatAgeMs: number, staleMs: number = STALE_AFTER_MINUTES * 60_000): boolean {
  if (ownerIsHere(owner)) return ownerAliveHere(owner);
  return heartbeatAgeMs < staleMs;
}

/** Whether a holder entry is stale: its process is gone here, or its own beat (else `fallback`) is too old. */
export function holderStale(h: Holder, now: Date, staleMs: number = STALE_AFTER_MINUTES * 60_000, fallback?: Date): boolean {
  return !holderAlive(h.owner, holderAge(h, now, fallback), staleMs);
}

/**
 * A resourceVersion-checked read-modify-write of an object's annotations, retried on conflicts:
 * `change` gets the annotations read and returns the patch, or undefined when there is nothing to
 * do. Returns false when the object is gone or `change` had nothing to do.
 */
export async function rewriteAnnotations(
  kube: Kube,
  ref: OwnedObject & { kind: 'pod' | 'service' },
  change: (annotations: Record<string, string>) => Record<string, string | null> | undefined,
  attempts = 20,
): Promise<boolean> {
  const { namespace, name } = ref;
  for (let attempt = 0; attempt < attempts; attempt++) {
    let meta;
    try {
      const op = { verb: 'get', resource: `${ref.kind}s`, namespace, name, server: kube.server };
      meta =
        ref.kind === 'pod'
          ? (await kubeCall(op, () => kube.core.readNamespacedPod({ name, namespace }))).metadata
          : (await kubeCall(op, () => kube.core.readNamespacedService({ name, namespace }))).metadata;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
    if (meta?.deletionTimestamp) return false;
    const patch = change(meta?.annotations ?? {});
    if (patch === undefined) return false;
    try {
      await patchAnnotations(kube, ref, patch, meta?.resourceVersion);
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      if (!isConflict(error)) throw error;
      await sleep(50 + Math.random() * 150);
    }
  }
  throw new LockedError(`the ${ref.kind} ${namespace}/${name} kept changing while ktctl tried to update its annotations; try again`);
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

/**
 * Takes the lock of a Service. Fails with LockedError naming the live holder and the age of its
 * heartbeat when another process holds it (any holder for `exchange`, an `exchange` holder for
 * `mesh`); takes over the entries of holders that are gone with a warning. With a Heartbeat, this
 * holder's own beat is refreshed on each of its beats until the release.
 */
export async function acquireLock(kube: Kube, o: AcquireOptions): Promise<ServiceLock> {
  const { namespace, service: name, role } = o;
  const me = o.owner ?? ownerOf();
  const staleMs = (o.staleMinutes ?? STALE_AFTER_MINUTES) * 60_000;
  const op = { verb: 'get', resource: 'services', namespace, name, server: kube.server };
  const ref = { kind: 'service' as const, namespace, name };
  let held = false;
  let stopBeat: (() => void) | undefined;
  const release = async (): Promise<void> => {
    if (!held) return;
    stopBeat?.();
    o.heartbeat?.remove(ref);
    await releaseLock(kube, namespace, name, me, o.log);
    held = false;
  };
  const unregister = o.undo.add(`the ${role} lock on service ${namespace}/${name}`, release);
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const svc = await kubeCall(op, () => kube.core.readNamespacedService({ name, namespace }));
      const now = await kube.serverNow();
      const current = lockOf(svc);
      let holders: Holder[] = [{ owner: me, beat: now }];
      let sharedWith: string[] = [];
      let tookOverFrom: string[] = [];
      if (current && current.holders.length > 0) {
        const others = current.holders.filter((h) => h.owner !== me);
        const ageOf = (h: Holder): number => holderAge(h, now, current.heartbeat);
        const alive = others.filter((h) => holderAlive(h.owner, ageOf(h), staleMs));
        const dead = others.filter((h) => !alive.includes(h));
        if (alive.length > 0 && !(role === 'mesh' && current.role === 'mesh')) {
          throw new LockedError(
            `the service ${name} in namespace ${namespace} is already ${current.role === 'mesh' ? 'meshed' : 'exchanged'} by ${alive[0]!.owner} (${describeBeat(ageOf(alive[0]!))}): wait until it stops, or run ktctl recover ${name} if that process is gone`,
          );
        }
        if (dead.length > 0) {
          o.log(`warning: taking over the lock on service ${namespace}/${name} from ${dead.map((h) => `${h.owner} (${current.role}, ${describeBeat(ageOf(h))}; ${goneReason(h.owner)})`).join(', ')}`);
        }
        sharedWith = alive.map((h) => h.owner);
        tookOverFrom = dead.map((h) => h.owner);
        holders = [...alive, { owner: me, beat: now }];
      }
      try {
        held = true;
        await patchAnnotations(
          kube,
          ref,
          { [ANNOTATION_LOCKED_BY]: role, [ANNOTATION_LOCK_HOLDERS]: JSON.stringify(holders.map(holderJson)), [ANNOTATION_OWNER]: me, [ANNOTATION_HEARTBEAT]: rfc3339(now) },
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
      o.heartbeat?.add(ref);
      stopBeat = o.heartbeat?.onBeat((beat) => refreshLockBeat(kube, namespace, name, me, beat));
      return { namespace, service: name, role, owner: me, sharedWith, tookOverFrom, release };
    }
    throw new LockedError(`could not lock the service ${name} in namespace ${namespace}: it kept changing meanwhile; try again`);
  } catch (error) {
    if (!held) unregister();
    throw error;
  }
}

/** Writes `owner`'s own beat into the lock's holders (nothing when it holds the lock no more). */
export async function refreshLockBeat(kube: Kube, namespace: string, name: string, owner: string, now: Date): Promise<void> {
  await rewriteAnnotations(kube, { kind: 'service', namespace, name }, (annotations) => {
    const current = lockOf({ metadata: { annotations } });
    if (!current?.holders.some((h) => h.owner === owner)) return undefined;
    const holders = current.holders.map((h) => (h.owner === owner ? { owner, beat: now } : h));
    return { [ANNOTATION_LOCK_HOLDERS]: JSON.stringify(holders.map(holderJson)) };
  });
}

/**
 * Takes `owner` (and holders that are gone: a dead process here, a stale beat elsewhere) off the
 * lock; the last holder removes the lock's annotations. A service that is gone has no lock left to
 * release.
 */
export async function releaseLock(kube: Kube, namespace: string, name: string, owner: string, log?: (line: string) => void, staleMinutes: number = STALE_AFTER_MINUTES): Promise<void> {
  const now = await kube.serverNow();
  let dropped: string[] = [];
  await rewriteAnnotations(kube, { kind: 'service', namespace, name }, (annotations): Record<string, string | null> | undefined => {
    const current = lockOf({ metadata: { annotations } });
    if (!current) return undefined;
    const others = current.holders.filter((h) => h.owner !== owner);
    if (others.length === current.holders.length && current.holders.length > 0) return undefined; // not ours (taken over meanwhile)
    const rest = others.filter((h) => !holderStale(h, now, staleMinutes * 60_000, current.heartbeat));
    dropped = others.filter((h) => !rest.includes(h)).map((h) => `${h.owner} (${describeBeat(holderAge(h, now, current.heartbeat))}; ${goneReason(h.owner)})`);
    return rest.length === 0
      ? { [ANNOTATION_LOCKED_BY]: null, [ANNOTATION_LOCK_HOLDERS]: null, [ANNOTATION_OWNER]: null, [ANNOTATION_HEARTBEAT]: null }
      : { [ANNOTATION_LOCK_HOLDERS]: JSON.stringify(rest.map(holderJson)), [ANNOTATION_OWNER]: rest[rest.length - 1]!.owner };
  });
  if (dropped.length > 0) log?.(`warning: dropped ${dropped.join(', ')} from the lock on service ${namespace}/${name}`);
}

/** Removes a lock whoever holds it (`recover`, `clean`). */
export async function breakLock(kube: Kube, namespace: string, name: string): Promise<void> {
  await patchAnnotations(kube, { kind: 'service', namespace, name }, { [ANNOTATION_LOCKED_BY]: null, [ANNOTATION_LOCK_HOLDERS]: null, [ANNOTATION_OWNER]: null, [ANNOTATION_HEARTBEAT]: null });
}
