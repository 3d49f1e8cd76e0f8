/**
 * Decoding of Kubernetes protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`),
 * which kubectl's typed clients send (`kubectl create namespace|deployment|secret|...`,
 * `kubectl auth can-i`). The envelope is the 4-byte magic `k8s\0` followed by a runtime.Unknown
 * (typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2); `raw` is the object in the proto2 encoding
 * of k8s.io/api's generated.proto, decoded here into the same JSON the server stores.
 *
 * gogo-protobuf writes non-pointer fields even when they hold their zero value, whereas JSON omits
 * them (`omitempty`); zero scalars and empty messages are therefore dropped, except for the fields
 * where a zero is a real value (pointer fields in the Go types).
 */
import { badRequest } from './status.js';
import type { Json, JsonObject } from './json.js';
import { SCHEMA } from './proto-schema.js';

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

/** Fields whose zero value (0, false, '') is meaningful and kept. */
const KEEP_ZERO = new Set([
  'replicas', 'terminationGracePeriodSeconds', 'gracePeriodSeconds', 'revisionHistoryLimit', 'runAsUser', 'runAsGroup',
  'fsGroup', 'defaultMode', 'mode', 'priority', 'activeDeadlineSeconds', 'automountServiceAccountToken', 'enableServiceLinks',
  'allowPrivilegeEscalation', 'readOnlyRootFilesystem', 'runAsNonRoot', 'privileged', 'optional', 'immutable', 'allowed',
  'publishNotReadyAddresses', 'allocateLoadBalancerNodePorts', 'ready', 'serving', 'terminating', 'shareProcessNamespace',
  'hostUsers', 'setHostnameAsFQDN', 'value',
]);
/** Fields whose empty message is meaningful and kept (`emptyDir: {}` selects the volume type). */
const KEEP_EMPTY = new Set(['emptyDir', 'selector', 'data', 'stringData', 'labels', 'annotations', 'matchLabels', 'nodeSelector']);

const KIND_PREFIX: Record<string, string> = {
  v1: 'core',
  'apps/v1': 'apps',
  'authentication.k8s.io/v1': 'authn',
  'authorization.k8s.io/v1': 'authz',
  'rbac.authorization.k8s.io/v1': 'rbac',
  'autoscaling/v1': 'autoscaling',
  'meta.k8s.io/v1': 'meta',
};

class Reader {
  pos = 0;
  readonly buf: Buffer;
  readonly end: number;
  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.end) throw badRequest('protobuf: unexpected end of varint');
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw badRequest('protobuf: varint too long');
    }
  }
  bytes(): Buffer {
    const len = Number(this.varint());
    if (this.pos + len > this.end) throw badRequest('protobuf: length past the end');
    const b = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return b;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw badRequest(`protobuf: unsupported wire type ${wire}`);
    if (this.pos > this.end) throw badRequest('protobuf: field past the end');
  }
}

function scalar(type: string, r: Reader, wire: number): Json {
  switch (type) {
    case 'string':
      return r.bytes().toString('utf8');
    case 'bytes':
      return r.bytes().toString('base64');
    case 'bool':
      return r.varint() !== 0n;
    case 'int32':
    case 'int64':
      return Number(BigInt.asIntN(64, r.varint()));
    case 'uint32':
    case 'uint64':
      return Number(r.varint());
    case 'double': {
      const v = r.buf.readDoubleLE(r.pos);
      r.pos += 8;
      return v;
    }
    case 'float': {
      const v = r.buf.readFloatLE(r.pos);
      r.pos += 4;
      return v;
    }
    default:
      r.skip(wire);
      return null;
  }
}

function special(type: string, raw: Buffer): Json | undefined {
  const fields = new Map<number, bigint | Buffer>();
  const r = new Reader(raw);
  while (r.pos < r.end) {
    const key = Number(r.varint());
    const wire = key & 7;
    const num = key >> 3;
    if (wire === 0) fields.set(num, r.varint());
    else if (wire === 2) fields.set(num, r.bytes());
    else r.skip(wire);
  }
  const str = (n: number): string | undefined => {
    const v = fields.get(n);
    return Buffer.isBuffer(v) ? v.toString('utf8') : undefined;
  };
  const num = (n: number): number => {
    const v = fields.get(n);
    return typeof v === 'bigint' ? Number(BigInt.asIntN(64, v)) : 0;
  };
  switch (type) {
    case 'meta.Time':
    case 'meta.MicroTime': {
      const s = num(1);
      if (s === 0 && num(2) === 0) return undefined;
      const iso = new Date(s * 1000 + Math.floor(num(2) / 1e6)).toISOString();
      return type === 'meta.Time' ? iso.replace(/\.\d{3}Z$/, 'Z') : iso.replace(/Z$/, '000Z');
    }
    case 'resource.Quantity':
      return str(1);
    case 'intstr.IntOrString':
      return num(1) === 1 ? (str(3) ?? '') : num(2);
    case 'meta.Duration':
      return `${num(1) / 1e9}s`;
    case 'runtime.RawExtension': {
      const b = fields.get(1);
      if (!Buffer.isBuffer(b) || b.length === 0) return undefined;
      try {
        return JSON.parse(b.toString('utf8')) as Json;
      } catch {
        return undefined;
      }
    }
    case 'meta.FieldsV1':
      return undefined;
  }
  return undefined;
}

const SPECIAL = new Set(['meta.Time', 'meta.MicroTime', 'resource.Quantity', 'intstr.IntOrString', 'meta.Duration', 'runtime.RawExtension', 'meta.FieldsV1']);

function isEmpty(v: Json): boolean {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0;
}

function decodeMessage(type: string, raw: Buffer): JsonObject {
  const schema = SCHEMA[type];
  const out: JsonObject = {};
  const r = new Reader(raw);
  while (r.pos < r.end) {
    const key = Number(r.varint());
    const wire = key & 7;
    const num = key >> 3;
    const spec = schema?.[num];
    if (!spec) {
      r.skip(wire);
      continue;
    }
    const [name, ftype, rep] = spec;
    let value: Json | undefined;
    if (ftype.startsWith('map:')) {
      const vtype = ftype.slice(4);
      const entry = new Reader(r.bytes());
      let k = '';
      let v: Json | undefined;
      while (entry.pos < entry.end) {
        const ek = Number(entry.varint());
        const ew = ek & 7;
        if (ek >> 3 === 1 && ew === 2) k = entry.bytes().toString('utf8');
        else if (ek >> 3 === 2) {
          if (SPECIAL.has(vtype)) v = special(vtype, entry.bytes());
          else if (SCHEMA[vtype]) v = decodeMessage(vtype, entry.bytes());
          else v = scalar(vtype, entry, ew);
        } else entry.skip(ew);
      }
      const map = (out[name] ??= {}) as JsonObject;
      map[k] = v ?? (vtype === 'string' ? '' : null);
      continue;
    }
    if (SPECIAL.has(ftype)) value = wire === 2 ? special(ftype, r.bytes()) : (r.skip(wire), undefined);
    else if (SCHEMA[ftype]) value = wire === 2 ? decodeMessage(ftype, r.bytes()) : (r.skip(wire), undefined);
    else if (wire === 2 && ftype !== 'string' && ftype !== 'bytes') {
      // packed repeated scalars
      const inner = new Reader(r.bytes());
      const arr = (out[name] ??= []) as Json[];
      while (inner.pos < inner.end) arr.push(scalar(ftype, inner, ftype === 'double' ? 1 : ftype === 'float' ? 5 : 0));
      continue;
    } else value = scalar(ftype, r, wire);
    if (value === undefined) continue;
    if (rep) ((out[name] ??= []) as Json[]).push(value);
    else {
      const zero = value === '' || value === 0 || value === false || isEmpty(value);
      if (zero && !KEEP_ZERO.has(name) && !(isEmpty(value) && KEEP_EMPTY.has(name))) continue;
      out[name] = value;
    }
  }
  return out;
}

export function isProtobuf(contentType: string | undefined): boolean {
  return (contentType ?? '').split(';')[0].trim() === 'application/vnd.kubernetes.protobuf';
}

/** Decodes a `k8s\0`-framed protobuf object into its JSON form (with apiVersion and kind). */
export function decodeK8sProtobuf(body: Buffer): JsonObject {
  if (body.length < 4 || !body.subarray(0, 4).equals(MAGIC)) throw badRequest('protobuf: missing the k8s envelope');
  const r = new Reader(body, 4);
  let apiVersion = '';
  let kind = '';
  let raw: Buffer | undefined;
  while (r.pos < r.end) {
    const key = Number(r.varint());
    const wire = key & 7;
    const num = key >> 3;
    if (num === 1 && wire === 2) {
      const tm = new Reader(r.bytes());
      while (tm.pos < tm.end) {
        const k = Number(tm.varint());
        if (k >> 3 === 1 && (k & 7) === 2) apiVersion = tm.bytes().toString('utf8');
        else if (k >> 3 === 2 && (k & 7) === 2) kind = tm.bytes().toString('utf8');
        else tm.skip(k & 7);
      }
    } else if (num === 2 && wire === 2) raw = r.bytes();
    else r.skip(wire);
  }
  const prefix = KIND_PREFIX[apiVersion];
  const type = kind === 'DeleteOptions' || kind === 'Status' ? `meta.${kind}` : prefix ? `${prefix}.${kind}` : undefined;
  if (!type || !SCHEMA[type]) {
    throw badRequest(`no kind "${kind}" is registered for version "${apiVersion}" in scheme "pkg/runtime/scheme.go:100"`);
  }
  const obj = decodeMessage(type, raw ?? Buffer.alloc(0));
  return { apiVersion, kind, ...obj };
}
