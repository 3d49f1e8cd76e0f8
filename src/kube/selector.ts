/**
 * Taking over a Service's selector (exchange --mode selector, the mesh router): the original goes
 * into `ktctl/original-selector` (JSON) in the same resourceVersion-checked write that points the
 * selector at ktctl's pod, so the original is never lost and nobody else's change in between is
 * overwritten. Undo puts the original back and removes the annotation. A watch reports when
 * someone else changes the selector meanwhile; ktctl does not fight it, and on exit leaves their
 * selector in place instead of restoring over it.
 */
import { Watch, type V1Service } from '@kubernetes/client-node';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { credentialEpoch, renewAfterUnauthorized } from './credentials.js';
import { isConflict, isNotFound, kubeCall, unlessNotFound } from './errors.js';
import { noteRequest } from './requests.js';
import { patchAnnotations } from './heartbeat.js';
import { ANNOTATION_ORIGINAL_SELECTOR } from './names.js';
import { asString, jsonAnnotation, recordOf, sleep } from './util.js';

export type Selector = Record<string, string>;

export function sameSelector(a: Selector | undefined, b: Selector | undefined): boolean {
  const ka = Object.keys(a ?? {});
  const kb = Object.keys(b ?? {});
  return ka.length === kb.length && ka.every((k) => a?.[k] === b?.[k]);
}

export function formatSelector(s: Selector | undefined): string {
  const e = Object.entries(s ?? {});
  return e.length === 0 ? '(none)' : e.map(([k, v]) => `${k}=${v}`).join(',');
}

/** The saved original selector of a Service, or undefined when it has none (or it is unreadable). */
export function originalSelectorOf(service: Pick<V1Service, 'metadata'>): Selector | undefined {
  return recordOf(jsonAnnotation(service.metadata?.annotations?.[ANNOTATION_ORIGINAL_SELECTOR]), asString);
}

/** A selector that points at a ktctl pod (a shadow's or a router's unique `ktctl/` label). */
export function selectsKtctlPod(s: Selector | undefined): boolean {
  return Object.keys(s ?? {}).some((k) => k.startsWith('ktctl/'));
}

/** A merge patch body for spec.selector that replaces it by `next` (keys not in it become null). */
function selectorPatch(current: Selector | undefined, next: Selector): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const k of Object.keys(current ?? {})) out[k] = null;
  return Object.assign(out, next);
}

export interface SelectorTakeover {
  /** the selector the Service had before (from an earlier run's annotation when one was left) */
  original: Selector;
  /** puts the original back (unless someone else changed the selector meanwhile); idempotent */
  restore(): Promise<void>;
}

export interface TakeOverOptions {
  namespace: string;
  name: string;
  /** what the selector becomes (the shadow's or router's unique label) */
  selector: Selector;
  undo: Undo;
  log: (line: string) => void;
  /** reports changes by others while taken over (default: on) */
  watch?: boolean;
}

/**
 * Points the Service's selector at `selector`, its restoration registered on `undo` before the
 * write. When the Service carries an original already (a crashed run's, its lock taken over), that
 * original is kept: it is the real one.
 */
export async function takeOverSelector(kube: Kube, o: TakeOverOptions): Promise<SelectorTakeover> {
  const { namespace, name } = o;
  let original: Selector | undefined;
  let restored: Promise<void> | undefined;
  const restore = (): Promise<void> => (restored ??= restoreSelector(kube, namespace, name, { expected: o.selector, log: o.log }).then(() => undefined));
  const unregister = o.undo.add(`the selector of service ${namespace}/${name} taken over`, restore);
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const svc = await kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace }));
      const current = svc.spec?.selector ?? {};
      const saved = originalSelectorOf(svc);
      original = saved ?? current;
      if (saved) o.log(`the service ${namespace}/${name} still had its original selector saved by an earlier run (${formatSelector(saved)}); keeping it`);
      const body = {
        metadata: { resourceVersion: svc.metadata?.resourceVersion, annotations: { [ANNOTATION_ORIGINAL_SELECTOR]: JSON.stringify(original) } },
        spec: { selector: selectorPatch(current, o.selector) },
      };
      try {
        await kubeCall({ verb: 'patch', resource: 'services', namespace, name, server: kube.server }, () =>
          kube.core.patchNamespacedService({ name, namespace, body }, kube.mergePatch),
        );
      } catch (error) {
        if (isConflict(error)) {
          await sleep(50 + Math.random() * 150);
          continue;
        }
        throw error;
      }
      if (o.watch !== false) {
        const stop = watchSelector(kube, namespace, name, o.selector, (now) =>
          o.log(`warning: someone else changed the selector of service ${namespace}/${name} to ${formatSelector(now)}; ktctl leaves it so (and will not restore over it on exit)`),
        );
        o.undo.add(`the watch on service ${namespace}/${name}`, stop);
      }
      return { original, restore };
    }
    throw new Error(`the service ${namespace}/${name} kept changing while ktctl tried to take over its selector; try again`);
  } catch (error) {
    unregister();
    throw error;
  }
}

/**
 * Puts back the selector saved in `ktctl/original-selector` and removes the annotation. With
 * `expected` (what ktctl set), a selector someone else changed meanwhile is left as it is (only
 * the annotation goes), unless it points at another ktctl pod (a new router made while the last
 * user of the old one left): then the annotation stays, it still holds the real original. A
 * Service without the annotation, or gone, is left alone.
 */
export async function restoreSelector(kube: Kube, namespace: string, name: string, o: { expected?: Selector; log?: (line: string) => void } = {}): Promise<Selector | undefined> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const svc = await unlessNotFound(kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace })));
    if (svc === undefined) return undefined;
    const hasAnnotation = svc.metadata?.annotations?.[ANNOTATION_ORIGINAL_SELECTOR] !== undefined;
    if (!hasAnnotation) return undefined;
    const original = originalSelectorOf(svc);
    const current = svc.spec?.selector ?? {};
    const changedByOthers = o.expected !== undefined && !sameSelector(current, o.expected);
    if (changedByOthers && original !== undefined && selectsKtctlPod(current)) {
      o.log?.(`the service ${namespace}/${name} now selects another ktctl pod (${formatSelector(current)}); left it so, its original selector ${formatSelector(original)} stays saved`);
      return undefined;
    }
    if (changedByOthers || original === undefined) {
      o.log?.(
        original === undefined
          ? `the saved selector of service ${namespace}/${name} is unreadable; left its selector ${formatSelector(current)} as it is`
          : `the selector of service ${namespace}/${name} was changed by someone else (now ${formatSelector(current)}); left it so instead of restoring ${formatSelector(original)}`,
      );
      await patchAnnotations(kube, { kind: 'service', namespace, name }, { [ANNOTATION_ORIGINAL_SELECTOR]: null }, svc.metadata?.resourceVersion).catch((error: unknown) => {
        if (!isConflict(error)) throw error;
      });
      return undefined;
    }
    const body = {
      metadata: { resourceVersion: svc.metadata?.resourceVersion, annotations: { [ANNOTATION_ORIGINAL_SELECTOR]: null } },
      spec: { selector: selectorPatch(current, original) },
    };
    try {
      await kubeCall({ verb: 'patch', resource: 'services', namespace, name, server: kube.server }, () => kube.core.patchNamespacedService({ name, namespace, body }, kube.mergePatch));
      return original;
    } catch (error) {
      if (isConflict(error)) continue; // a heartbeat or another holder wrote meanwhile: read again
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
  throw new Error(`the service ${namespace}/${name} kept changing while ktctl tried to restore its selector; run ktctl recover ${name}`);
}

/**
 * Watches the Service and calls `onChange` (once per distinct selector) when its selector is not
 * `expected` any more. Re-established after the API server ends the watch. Returns stop().
 */
export function watchSelector(kube: Kube, namespace: string, name: string, expected: Selector, onChange: (now: Selector) => void): () => void {
  const watch = new Watch(kube.kc);
  let stopped = false;
  let abort: AbortController | undefined;
  let lastReported: Selector = expected;
  let retry: NodeJS.Timeout | undefined;
  const start = (): void => {
    if (stopped) return;
    // A 401 (the token expired between two watches) drops the credential this one started with.
    const epoch = credentialEpoch();
    const unauthorized = (err: unknown): void => {
      if ((err as { statusCode?: unknown } | undefined)?.statusCode === 401) renewAfterUnauthorized(epoch);
    };
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/services`;
    noteRequest(kube.kc, 'GET', `${path}?watch=true`);
    watch
      .watch(
        path,
        { fieldSelector: `metadata.name=${name}` },
        (phase: string, obj: unknown) => {
          if (phase !== 'ADDED' && phase !== 'MODIFIED') return;
          const selector = (obj as V1Service | undefined)?.spec?.selector ?? {};
          if (sameSelector(selector, expected) || sameSelector(selector, lastReported)) return;
          lastReported = selector;
          onChange(selector);
        },
        (err: unknown) => {
          abort = undefined;
          unauthorized(err);
          if (!stopped) retry = setTimeout(start, 1000);
        },
      )
      .then((a) => {
        if (stopped) a.abort();
        else abort = a;
      })
      .catch(() => {
        if (!stopped) retry = setTimeout(start, 2000);
      });
  };
  start();
  return () => {
    stopped = true;
    if (retry) clearTimeout(retry);
    abort?.abort();
  };
}
