/**
 * What the lab's controllers share: the node's name and labels, small helpers over the JSON
 * objects, the work queue, and the context each controller gets (the registry, the data plane,
 * the queue and the Event recorder).
 */
import { createHash } from 'node:crypto';
import { isObject, stableStringify, type ContainerState, type JsonObject, type KObject, type Pod } from '../json.js';
import type { Registry } from '../registry.js';
import { now } from '../clock.js';
import { LAB, type LabNet } from '../../net/types.js';

export const NODE_NAME = LAB.nodeNetns;
export const NODE_IP = LAB.apiServerIp;
export const NODE_LABELS: Record<string, string> = {
  'kubernetes.io/hostname': NODE_NAME,
  'kubernetes.io/os': 'linux',
  'kubernetes.io/arch': 'amd64',
  'beta.kubernetes.io/os': 'linux',
  'beta.kubernetes.io/arch': 'amd64',
  'node-role.kubernetes.io/control-plane': '',
};

const HASH_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** pod-template-hash: a short safe string of the template's content */
export function templateHash(template: unknown): string {
  // nulls are absent values (Go clients send `creationTimestamp: null`): they must not change the hash
  const digest = createHash('sha256').update(stableStringify(dropNulls(template))).digest();
  let n = digest.readUInt32BE(0) * 65536 + digest.readUInt16BE(4);
  let s = '';
  while (s.length < 10) {
    s += HASH_CHARS[n % HASH_CHARS.length];
    n = Math.floor(n / HASH_CHARS.length) || digest[s.length + 6];
  }
  return s;
}

export function dropNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropNulls);
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== null) out[k] = dropNulls(x);
    return out;
  }
  return v;
}

export function asT<T>(o: JsonObject): T {
  return o as unknown as T;
}
export function toJ(o: unknown): JsonObject {
  return o as JsonObject;
}

export function isPodReady(p: Pod): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}
export function isTerminating(o: KObject): boolean {
  return o.metadata.deletionTimestamp !== undefined;
}
export function controllerOf(o: KObject): string | undefined {
  return o.metadata.ownerReferences?.find((r) => r.controller)?.uid;
}

/** A de-duplicating work queue drained on the next turn of the event loop. */
export class Queue {
  readonly #pending = new Map<string, () => void>();
  #scheduled = false;
  readonly #onError: (e: unknown) => void;
  constructor(onError: (e: unknown) => void) {
    this.#onError = onError;
  }
  add(key: string, fn: () => void): void {
    this.#pending.set(key, fn);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#drain());
    }
  }
  #drain(): void {
    this.#scheduled = false;
    const work = [...this.#pending.values()];
    this.#pending.clear();
    for (const fn of work) {
      try {
        fn();
      } catch (e) {
        this.#onError(e);
      }
    }
  }
}

export interface ContainerRuntime {
  name: string;
  image: string;
  state: ContainerState;
  lastState: ContainerState;
  ready: boolean;
  started: boolean;
  restartCount: number;
}

export interface PodRuntime {
  uid: string;
  namespace: string;
  name: string;
  podIP?: string;
  startTime?: string;
  created: boolean;
  creating: boolean;
  stopping: boolean;
  containers: Map<string, ContainerRuntime>;
  /** set while the pod waits for a secret/configmap */
  blocked?: { reason: string; message: string };
  backoffTimer?: NodeJS.Timeout;
}

export class ResolveError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

export function resolveTargetPort(pod: Pod, target: number | string): number | undefined {
  if (typeof target === 'number') return target;
  if (/^\d+$/.test(target)) return Number(target);
  for (const c of pod.spec.containers) for (const p of c.ports ?? []) if (p.name === target) return p.containerPort;
  return undefined;
}

/** Status without its timestamps, to tell a real change from a rewrite. */
export function stripTimes(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripTimes);
  if (isObject(v)) {
    const out: JsonObject = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === 'lastUpdateTime' || k === 'lastTransitionTime' || k === 'lastProbeTime') continue;
      out[k] = stripTimes(x) as JsonObject;
    }
    return out;
  }
  return v;
}

/** Data-plane times follow the API server's (possibly skewed) clock. */
export function shift(d: Date): Date {
  return new Date(d.getTime() + (now().getTime() - Date.now()));
}

/** What every controller gets from `Controllers`. */
export interface ControllerContext {
  readonly reg: Registry;
  readonly net: LabNet;
  readonly log: (line: string) => void;
  readonly queue: Queue;
  /** true once `Controllers.stop()` began: nothing reacts any more */
  readonly stopped: boolean;
  /** Records an Event about `involved` (best effort). */
  record(involved: KObject, type: 'Normal' | 'Warning', reason: string, message: string, component?: string): void;
}
