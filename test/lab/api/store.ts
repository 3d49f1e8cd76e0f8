/**
 * The in-memory object store: one global resourceVersion counter, a bounded history for watches
 * that start from a resourceVersion, and a synchronous event stream for controllers and watchers.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { ApiError, alreadyExists, conflict, notFound } from './status.js';
import { clone, type JsonObject, type ObjectMeta } from './json.js';
import { resourceKey, type ResourceInfo } from './resources.js';
import { timestamp } from './clock.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  type: WatchEventType;
  /** group/plural */
  resource: string;
  rv: number;
  /** the object after the change (for DELETED: the last state, with the deletion's resourceVersion) */
  object: JsonObject;
  /** the object before the change (MODIFIED/DELETED) */
  old?: JsonObject;
}

const HISTORY = 8000;

export function metaOf(o: JsonObject): ObjectMeta {
  return (o.metadata ?? {}) as ObjectMeta;
}

export class Store {
  readonly events = new EventEmitter<{ event: [StoreEvent] }>();
  #rv = 1000;
  readonly #objects = new Map<string, Map<string, JsonObject>>();
  readonly #history: StoreEvent[] = [];

  constructor() {
    this.events.setMaxListeners(0);
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** The oldest resourceVersion a watch can start from without 410 Gone. */
  get oldestWatchable(): number {
    return this.#history.length === HISTORY ? this.#history[0].rv : 0;
  }

  #bucket(info: ResourceInfo): Map<string, JsonObject> {
    const key = resourceKey(info);
    let b = this.#objects.get(key);
    if (!b) {
      b = new Map();
      this.#objects.set(key, b);
    }
    return b;
  }

  #emit(ev: StoreEvent): void {
    this.#history.push(ev);
    if (this.#history.length > HISTORY) this.#history.shift();
    this.events.emit('event', ev);
  }

  get(info: ResourceInfo, namespace: string, name: string): JsonObject | undefined {
    const o = this.#bucket(info).get(`${namespace}/${name}`);
    return o ? clone(o) : undefined;
  }

  /** Stored objects, uncloned: callers must not modify them. */
  peekAll(info: ResourceInfo, namespace?: string): JsonObject[] {
    const out: JsonObject[] = [];
    for (const [k, o] of this.#bucket(info)) {
      if (namespace === undefined || k.startsWith(`${namespace}/`)) out.push(o);
    }
    return out;
  }

  list(info: ResourceInfo, namespace?: string): JsonObject[] {
    return this.peekAll(info, namespace)
      .map((o) => clone(o))
      .sort((a, b) => {
        const ma = metaOf(a);
        const mb = metaOf(b);
        return `${ma.namespace ?? ''}/${ma.name}`.localeCompare(`${mb.namespace ?? ''}/${mb.name}`);
      });
  }

  /** Stores a new object; metadata.name must be final. Sets uid, resourceVersion, timestamps. */
  create(info: ResourceInfo, obj: JsonObject): JsonObject {
    const meta = metaOf(obj);
    const ns = info.namespaced ? (meta.namespace ?? '') : '';
    const key = `${ns}/${meta.name}`;
    const bucket = this.#bucket(info);
    if (bucket.has(key)) throw alreadyExists(info.group, info.name, meta.name ?? '');
    const stored = clone(obj);
    const m = metaOf(stored);
    m.uid = randomUUID();
    m.creationTimestamp = timestamp();
    m.resourceVersion = String(++this.#rv);
    if (info.hasSpec && stored.spec !== undefined) m.generation = 1;
    delete m.deletionTimestamp;
    stored.metadata = m as unknown as JsonObject;
    bucket.set(key, stored);
    this.#emit({ type: 'ADDED', resource: resourceKey(info), rv: this.#rv, object: clone(stored) });
    return clone(stored);
  }

  /**
   * Replaces an object. If `obj.metadata.resourceVersion` is set it must match (409 Conflict).
   * uid and creationTimestamp are kept from the stored object. No-op updates keep the version.
   */
  update(info: ResourceInfo, obj: JsonObject, opts: { bumpGeneration: boolean }): JsonObject {
    const meta = metaOf(obj);
    const ns = info.namespaced ? (meta.namespace ?? '') : '';
    const key = `${ns}/${meta.name}`;
    const bucket = this.#bucket(info);
    const cur = bucket.get(key);
    if (!cur) throw notFound(info.group, info.name, meta.name ?? '');
    const curMeta = metaOf(cur);
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== curMeta.resourceVersion) {
      throw conflict(info.group, info.name, meta.name ?? '', 'the object has been modified; please apply your changes to the latest version and try again');
    }
    if (meta.uid !== undefined && meta.uid !== '' && meta.uid !== curMeta.uid) {
      throw conflict(info.group, info.name, meta.name ?? '', `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${curMeta.uid}`);
    }
    const stored = clone(obj);
    const m = metaOf(stored);
    m.uid = curMeta.uid;
    m.creationTimestamp = curMeta.creationTimestamp;
    m.resourceVersion = curMeta.resourceVersion;
    if (curMeta.deletionTimestamp && !m.deletionTimestamp) m.deletionTimestamp = curMeta.deletionTimestamp;
    if (curMeta.deletionGracePeriodSeconds !== undefined && m.deletionGracePeriodSeconds === undefined) {
      m.deletionGracePeriodSeconds = curMeta.deletionGracePeriodSeconds;
    }
    m.generation = curMeta.generation;
    if (opts.bumpGeneration && curMeta.generation !== undefined) m.generation = curMeta.generation + 1;
    if (m.generation === undefined) delete m.generation;
    stored.metadata = m as unknown as JsonObject;
    if (JSON.stringify(stored) === JSON.stringify(cur)) return clone(cur);
    m.resourceVersion = String(++this.#rv);
    bucket.set(key, stored);
    this.#emit({ type: 'MODIFIED', resource: resourceKey(info), rv: this.#rv, object: clone(stored), old: cur });
    return clone(stored);
  }

  delete(info: ResourceInfo, namespace: string, name: string): JsonObject {
    const key = `${info.namespaced ? namespace : ''}/${name}`;
    const bucket = this.#bucket(info);
    const cur = bucket.get(key);
    if (!cur) throw notFound(info.group, info.name, name);
    bucket.delete(key);
    const gone = clone(cur);
    metaOf(gone).resourceVersion = String(++this.#rv);
    this.#emit({ type: 'DELETED', resource: resourceKey(info), rv: this.#rv, object: clone(gone), old: cur });
    return gone;
  }

  /** Events after `rv` for one resource; 410 Gone if the history no longer reaches back. */
  since(info: ResourceInfo, rv: number): StoreEvent[] {
    if (rv < this.oldestWatchable - 1) {
      throw new ApiError(410, 'Expired', `too old resource version: ${rv} (${this.oldestWatchable})`);
    }
    const key = resourceKey(info);
    return this.#history.filter((e) => e.rv > rv && e.resource === key);
  }
}
