/**
 * Signs of life: every 30 s the `ktctl/heartbeat` annotation of every object this process owns is
 * set to the API server's time (from the Date header, see Kube.serverNow), so `clean` (measuring
 * against the same clock) never takes a live run's objects for leftovers.
 */
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { ExecCredentialError } from './credentials.js';
import { kubeCall, KubeUnauthorizedError } from './errors.js';
import { ANNOTATION_HEARTBEAT } from './names.js';

/** 30 s; KTCTL_HEARTBEAT_SECONDS shortens it (tests that watch the beats across token expiries). */
export const HEARTBEAT_INTERVAL_MS = heartbeatFromEnv(process.env.KTCTL_HEARTBEAT_SECONDS) ?? 30_000;

function heartbeatFromEnv(text: string | undefined): number | undefined {
  const s = Number(text);
  return text !== undefined && text !== '' && Number.isFinite(s) && s >= 1 && s <= 300 ? s * 1000 : undefined;
}

/** The credentials are gone for good: the exec plugin fails, or the API server refuses a fresh token (kubeCall renewed it once already). */
const credentialsLost = (e: unknown): e is Error => e instanceof ExecCredentialError || e instanceof KubeUnauthorizedError;

export interface OwnedObject {
  kind: 'pod' | 'secret' | 'service' | 'deployment';
  namespace: string;
  name: string;
}

export class Heartbeat {
  readonly #kube: Kube;
  readonly #objects = new Map<string, OwnedObject>();
  readonly #hooks = new Set<(now: Date) => Promise<void>>();
  readonly #debug: (line: string) => void;
  readonly #intervalMs: number;
  readonly #onCredentialsLost: (error: Error) => void;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;

  /** `onCredentialsLost`: a beat failed because the credentials cannot be renewed (the session should end). */
  constructor(kube: Kube, options: { debug?: (line: string) => void; intervalMs?: number; onCredentialsLost?: (error: Error) => void } = {}) {
    this.#kube = kube;
    this.#debug = options.debug ?? (() => undefined);
    this.#onCredentialsLost = options.onCredentialsLost ?? (() => undefined);
    this.#intervalMs = options.intervalMs ?? HEARTBEAT_INTERVAL_MS;
  }

  add(o: OwnedObject): void {
    this.#objects.set(`${o.kind}/${o.namespace}/${o.name}`, o);
  }

  remove(o: OwnedObject): void {
    this.#objects.delete(`${o.kind}/${o.namespace}/${o.name}`);
  }

  /**
   * Also runs `fn` with the API server's time on each beat (a holder's own beat in a lock or a
   * mesh mark, src/kube/lock.ts); its failures are reported like the others. Returns its removal.
   */
  onBeat(fn: (now: Date) => Promise<void>): () => void {
    this.#hooks.add(fn);
    return () => void this.#hooks.delete(fn);
  }

  get objects(): OwnedObject[] {
    return [...this.#objects.values()];
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.beat(), this.#intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#beating;
  }

  /** One round: the API server's time, then a merge patch on each object. Failures are reported, not fatal. */
  beat(): Promise<void> {
    this.#beating ??= (async () => {
      try {
        const date = await this.#kube.serverNow();
        const now = rfc3339(date);
        for (const o of this.#objects.values()) {
          try {
            await patchAnnotations(this.#kube, o, { [ANNOTATION_HEARTBEAT]: now });
          } catch (error) {
            this.#debug(`heartbeat: ${o.kind} ${o.namespace}/${o.name}: ${error instanceof Error ? error.message : String(error)}`);
            if (credentialsLost(error)) throw error;
          }
        }
        for (const fn of this.#hooks) {
          try {
            await fn(date);
          } catch (error) {
            this.#debug(`heartbeat: ${error instanceof Error ? error.message : String(error)}`);
          }
        }
        this.#debug(`heartbeat ${now} on ${this.#objects.size} object(s)`);
      } catch (error) {
        this.#debug(`heartbeat: ${error instanceof Error ? error.message : String(error)}`);
        if (credentialsLost(error)) this.#onCredentialsLost(error);
      } finally {
        this.#beating = undefined;
      }
    })();
    return this.#beating;
  }
}

/** Merge-patches annotations (null deletes one) of any object kind ktctl owns. */
export async function patchAnnotations(kube: Kube, o: OwnedObject, annotations: Record<string, string | null>, resourceVersion?: string): Promise<unknown> {
  const body = { metadata: { annotations, ...(resourceVersion ? { resourceVersion } : {}) } };
  const { namespace, name } = o;
  const resource = `${o.kind}s`;
  return kubeCall({ verb: 'patch', resource, namespace, name, server: kube.server }, (): Promise<unknown> => {
    switch (o.kind) {
      case 'pod':
        return kube.core.patchNamespacedPod({ name, namespace, body }, kube.mergePatch);
      case 'secret':
        return kube.core.patchNamespacedSecret({ name, namespace, body }, kube.mergePatch);
      case 'service':
        return kube.core.patchNamespacedService({ name, namespace, body }, kube.mergePatch);
      case 'deployment':
        return kube.apps.patchNamespacedDeployment({ name, namespace, body }, kube.mergePatch);
    }
  });
}
