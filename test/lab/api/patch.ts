/**
 * The three patch kinds the API server accepts: JSON merge patch (RFC 7386), strategic merge
 * patch (Kubernetes: lists of named things merge by key, `$patch` directives) and JSON patch
 * (RFC 6902). All return a new value and never modify their inputs.
 */
import { badRequest, ApiError } from './status.js';
import { clone, deepEqual, isObject, type Json, type JsonObject } from './json.js';

/** RFC 7386 §2: null removes, objects merge recursively, anything else replaces. */
export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k] ?? null, v);
  }
  return out;
}

/** Merge keys of the list fields ktctl, kubectl and the tests touch (from the Go types' patchMergeKey). */
function mergeKeyFor(field: string, items: Json[]): string | undefined {
  switch (field) {
    case 'containers':
    case 'initContainers':
    case 'ephemeralContainers':
    case 'env':
    case 'volumes':
    case 'imagePullSecrets':
      return 'name';
    case 'volumeMounts':
      return 'mountPath';
    case 'conditions':
      return 'type';
    case 'ownerReferences':
      return 'uid';
    case 'hostAliases':
      return 'ip';
    case 'ports':
      // container ports merge by containerPort, service ports by port
      return items.some((x) => isObject(x) && 'containerPort' in x) ? 'containerPort' : 'port';
    default:
      return undefined;
  }
}

/** Lists of scalars that merge as sets. */
const PRIMITIVE_MERGE = new Set(['finalizers']);

export function strategicMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  if (patch.$patch === 'replace') {
    const rest = { ...patch };
    delete rest.$patch;
    return clone(rest);
  }
  if (patch.$patch === 'delete') return null;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  const retainKeys = Array.isArray(patch.$retainKeys) ? patch.$retainKeys.filter((x): x is string => typeof x === 'string') : undefined;
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$setElementOrder/') || k === '$retainKeys' || k === '$patch') continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      const cur = out[field];
      if (Array.isArray(cur) && Array.isArray(v)) out[field] = cur.filter((x) => !v.some((y) => deepEqual(x, y)));
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    const cur = out[k];
    if (Array.isArray(v)) {
      out[k] = mergeList(k, Array.isArray(cur) ? cur : [], v);
    } else if (isObject(v)) {
      const merged = strategicMergePatch(cur ?? null, v);
      if (merged === null) delete out[k];
      else out[k] = merged;
    } else {
      out[k] = v;
    }
  }
  if (retainKeys) for (const k of Object.keys(out)) if (!retainKeys.includes(k) && !(k in patch)) delete out[k];
  return out;
}

function mergeList(field: string, cur: Json[], patch: Json[]): Json[] {
  if (PRIMITIVE_MERGE.has(field)) {
    const out = [...cur];
    for (const x of patch) if (!out.some((y) => deepEqual(x, y))) out.push(x);
    return out;
  }
  const key = mergeKeyFor(field, [...cur, ...patch]);
  if (!key) {
    // replace, but honour a `{$patch: replace}` marker element
    return clone(patch.filter((x) => !(isObject(x) && x.$patch === 'replace')));
  }
  if (patch.some((x) => isObject(x) && x.$patch === 'replace')) {
    return clone(patch.filter((x) => !(isObject(x) && x.$patch === 'replace')));
  }
  const out: Json[] = [...cur];
  for (const item of patch) {
    if (!isObject(item)) {
      out.push(clone(item));
      continue;
    }
    const idx = out.findIndex((x) => isObject(x) && deepEqual(x[key], item[key]));
    if (item.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMergePatch(out[idx], item) ?? null;
    else {
      const fresh = strategicMergePatch(null, item);
      if (fresh !== null) out.push(fresh);
    }
  }
  return out;
}

interface Op {
  op: string;
  path: string;
  value?: Json;
  from?: string;
}

function parsePointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw badRequest(`the server rejected our request due to an error in our request: invalid JSON pointer "${p}"`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function jsonPatchError(msg: string): ApiError {
  return new ApiError(422, 'Invalid', msg);
}

function getAt(doc: Json, tokens: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) {
      const i = Number(t);
      if (!/^\d+$/.test(t) || i >= cur.length) return undefined;
      cur = cur[i];
    } else if (isObject(cur)) {
      if (!Object.prototype.hasOwnProperty.call(cur, t)) return undefined;
      cur = cur[t];
    } else return undefined;
  }
  return cur;
}

function parentOf(doc: Json, tokens: string[], path: string): { parent: Json; last: string } {
  const parent = getAt(doc, tokens.slice(0, -1));
  if (parent === undefined || (typeof parent !== 'object' || parent === null)) {
    throw jsonPatchError(`doc is missing path: "${path}": missing value`);
  }
  return { parent, last: tokens[tokens.length - 1] };
}

function add(doc: Json, path: string, value: Json): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) return value;
  const { parent, last } = parentOf(doc, tokens, path);
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!/^\d+$/.test(last) && last !== '-') throw jsonPatchError(`add operation does not apply: doc is missing path: "${path}"`);
    if (i > parent.length) throw jsonPatchError(`add operation does not apply: doc is missing path: "${path}"`);
    parent.splice(i, 0, value);
  } else if (isObject(parent)) {
    parent[last] = value;
  }
  return doc;
}

function remove(doc: Json, path: string): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) return null;
  const { parent, last } = parentOf(doc, tokens, path);
  if (getAt(doc, tokens) === undefined) throw jsonPatchError(`remove operation does not apply: doc is missing path: "${path}": missing value`);
  if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else if (isObject(parent)) delete parent[last];
  return doc;
}

/** RFC 6902 §4: add, remove, replace, move, copy, test; the whole patch fails or none of it applies. */
export function jsonPatch(target: Json, patch: Json): Json {
  if (!Array.isArray(patch)) throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = clone(target);
  for (const raw of patch) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest('the server rejected our request due to an error in our request: invalid JSON patch operation');
    }
    const op = raw as unknown as Op;
    switch (op.op) {
      case 'add':
        if (op.value === undefined) throw jsonPatchError(`add operation does not apply: missing value`);
        doc = add(doc, op.path, clone(op.value));
        break;
      case 'remove':
        doc = remove(doc, op.path);
        break;
      case 'replace': {
        if (op.value === undefined) throw jsonPatchError(`replace operation does not apply: missing value`);
        const tokens = parsePointer(op.path);
        if (getAt(doc, tokens) === undefined) throw jsonPatchError(`replace operation does not apply: doc is missing key: ${op.path}: missing value`);
        doc = remove(doc, op.path);
        doc = add(doc, op.path, clone(op.value));
        break;
      }
      case 'move':
      case 'copy': {
        if (typeof op.from !== 'string') throw badRequest(`${op.op} operation requires "from"`);
        const v = getAt(doc, parsePointer(op.from));
        if (v === undefined) throw jsonPatchError(`${op.op} operation does not apply: doc is missing from path: ${op.from}: missing value`);
        if (op.op === 'move') doc = remove(doc, op.from);
        doc = add(doc, op.path, clone(v));
        break;
      }
      case 'test': {
        const v = getAt(doc, parsePointer(op.path));
        if (v === undefined || !deepEqual(v, op.value ?? null)) throw jsonPatchError(`testing value ${op.path} failed: test failed`);
        break;
      }
      default:
        throw badRequest(`Unexpected kind: ${op.op}`);
    }
  }
  return doc;
}
