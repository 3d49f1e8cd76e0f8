/**
 * Names ktctl's own connections use (the API server, the `--via` ssh server), answered from the
 * addresses they had when ktctl started and never asked of the cluster's DNS. Without this, a name
 * the cluster also knows (`kubernetes.default.svc.cluster.local`, or `api.prod` when namespace
 * `prod` has a Service `api`) would send ktctl's own traffic to a Service through its own tunnel.
 *
 * A stub resolver tries a name with fewer dots than `ndots` (resolv.conf(5), default 1) with each
 * search domain first, and ktctl's resolv.conf puts the cluster's search domains in front: so such
 * a name is also pinned with every search domain appended, else `api` would be asked as
 * `api.<ns>.svc.cluster.local` before `api`.
 */
import { isIP } from 'node:net';
import { errorResponse, HEADER_LENGTH, Rcode, readQuestion, Type } from './message.js';

/** TTL of a pinned answer: short, so that a cache outside ktctl forgets it soon after the session. */
export const PINNED_TTL = 5;

const CLASS_IN = 1;

export interface PinnedHost {
  name: string;
  /** the addresses at the start (IPv4 and IPv6) */
  addresses: readonly string[];
}

export class PinnedNames {
  readonly #names = new Map<string, readonly string[]>();

  /**
   * `searchDomains`: the search list the machine's stub uses while ktctl runs (ktctl's cluster
   * domains first); `ndots`: the stub's ndots option.
   */
  constructor(hosts: readonly PinnedHost[], o: { searchDomains?: readonly string[]; ndots?: number } = {}) {
    const ndots = o.ndots ?? 1;
    for (const h of hosts) {
      const name = normalize(h.name);
      if (name === '' || isIP(name) !== 0 || h.addresses.length === 0) continue;
      this.#add(name, h.addresses);
      if (name.split('.').length - 1 < ndots) {
        for (const d of o.searchDomains ?? []) {
          const domain = normalize(d);
          if (domain !== '') this.#add(`${name}.${domain}`, h.addresses);
        }
      }
    }
  }

  #add(name: string, addresses: readonly string[]): void {
    const had = this.#names.get(name) ?? [];
    this.#names.set(name, [...new Set([...had, ...addresses])]);
  }

  get size(): number {
    return this.#names.size;
  }

  /** The pinned addresses of `name` (any case, trailing dot or not), or undefined. */
  addresses(name: string): readonly string[] | undefined {
    return this.#names.get(normalize(name));
  }

  /**
   * The answer to a query for a pinned name, or undefined when the name is not pinned (or the
   * message has no question). A and AAAA get the start addresses of their family; every other
   * type, and a class other than IN, gets an empty NOERROR answer (the name exists, with no data
   * of that type), which is what ktctl knows without asking anyone.
   */
  answer(query: Buffer): Buffer | undefined {
    const q = readQuestion(query);
    if (q === undefined) return undefined;
    const addresses = this.addresses(q.name);
    if (addresses === undefined) return undefined;
    const records: Buffer[] = [];
    if (q.class === CLASS_IN && (q.type === Type.A || q.type === Type.AAAA)) {
      const family = q.type === Type.A ? 4 : 6;
      for (const a of addresses) {
        if (isIP(a) !== family) continue;
        records.push(record(q.type, family === 4 ? ipv4Bytes(a) : ipv6Bytes(a)));
      }
    }
    const head = errorResponse(query, Rcode.NOERROR);
    head.writeUInt16BE(records.length, 6);
    return Buffer.concat([head, ...records]);
  }
}

/** One answer record owned by the question's name (a compression pointer to offset 12). */
function record(type: number, rdata: Buffer): Buffer {
  const r = Buffer.alloc(12 + rdata.length);
  r.writeUInt16BE(0xc000 | HEADER_LENGTH, 0);
  r.writeUInt16BE(type, 2);
  r.writeUInt16BE(CLASS_IN, 4);
  r.writeUInt32BE(PINNED_TTL, 6);
  r.writeUInt16BE(rdata.length, 10);
  rdata.copy(r, 12);
  return r;
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

function ipv6Bytes(a: string): Buffer {
  const bare = a.replace(/%.*$/, '');
  const [head, tail] = bare.includes('::') ? bare.split('::') as [string, string] : [bare, undefined];
  const groups = (s: string | undefined): string[] => (s === undefined || s === '' ? [] : s.split(':'));
  let left = groups(head);
  let right = groups(tail);
  // A trailing dotted quad (::ffff:1.2.3.4) is two groups.
  const v4 = (list: string[]): string[] => {
    const last = list[list.length - 1];
    if (last === undefined || !last.includes('.')) return list;
    const b = ipv4Bytes(last);
    return [...list.slice(0, -1), ((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)];
  };
  if (tail === undefined) left = v4(left);
  else right = v4(right);
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  const all = [...left, ...fill, ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function normalize(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, '');
}
