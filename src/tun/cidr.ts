/**
 * CIDR arithmetic for routes: parse and format (IPv4 and IPv6), containment and overlap, exact
 * aggregation into the fewest CIDRs, covering a set of addresses with a few ranges (KT Connect
 * style: pod and service IPs merged into covering CIDRs), and subtraction (`--excludeIps`).
 *
 * Addresses are bigints so one code path serves both families; a `Cidr` is always normalised
 * (host bits zero).
 */

export type Family = 4 | 6;

export interface Cidr {
  readonly family: Family;
  /** network address, host bits zero */
  readonly base: bigint;
  readonly prefix: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

function bitsOf(family: Family): number {
  return BITS[family];
}

/** Parses a dotted-quad IPv4 address; undefined when malformed. */
function parseIpv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255 || (p.length > 1 && p.startsWith('0'))) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

/** Parses an IPv6 address (with `::` and an optional trailing dotted quad); undefined when malformed. */
function parseIpv6(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    const items = h.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (i === items.length - 1 && it.includes('.')) {
        const v4 = parseIpv4(it);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return undefined;
        out.push(parseInt(it, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  let all: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return undefined;
    all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    all = head;
  }
  if (all.length !== 8) return undefined;
  let v = 0n;
  for (const g of all) v = (v << 16n) | BigInt(g);
  return v;
}

export interface Ip {
  readonly family: Family;
  readonly value: bigint;
}

export function parseIp(s: string): Ip | undefined {
  const t = s.trim();
  if (t.includes(':')) {
    const v = parseIpv6(t);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseIpv4(t);
  return v === undefined ? undefined : { family: 4, value: v };
}

export function formatIp(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  }
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: the longest run (length >= 2) of zero groups becomes "::", first one on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function mask(family: Family, prefix: number): bigint {
  const bits = BigInt(bitsOf(family));
  const hostBits = bits - BigInt(prefix);
  return ((1n << bits) - 1n) ^ ((1n << hostBits) - 1n);
}

/** Makes a normalised Cidr (host bits cleared). */
export function makeCidr(family: Family, value: bigint, prefix: number): Cidr {
  return { family, base: value & mask(family, prefix), prefix };
}

/**
 * Parses "a.b.c.d/n", "x::y/n" or a bare address (a /32 or /128). Host bits are cleared
 * ("10.1.2.3/16" is 10.1.0.0/16). Returns undefined when malformed.
 */
export function tryParseCidr(s: string): Cidr | undefined {
  const t = s.trim();
  const slash = t.indexOf('/');
  const ip = parseIp(slash < 0 ? t : t.slice(0, slash));
  if (!ip) return undefined;
  let prefix = bitsOf(ip.family);
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > bitsOf(ip.family)) return undefined;
  }
  return makeCidr(ip.family, ip.value, prefix);
}

/** Like `tryParseCidr`, but throws a RangeError naming the bad text. */
export function parseCidr(s: string): Cidr {
  const c = tryParseCidr(s);
  if (!c) throw new RangeError(`"${s}" is not an IP address or CIDR`);
  return c;
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.family, c.base)}/${c.prefix}`;
}

/** Last address in the range. */
export function lastOf(c: Cidr): bigint {
  return c.base | ((1n << BigInt(bitsOf(c.family) - c.prefix)) - 1n);
}

export function containsIp(c: Cidr, ip: Ip): boolean {
  return c.family === ip.family && (ip.value & mask(c.family, c.prefix)) === c.base;
}

/** True when `outer` contains all of `inner`. */
export function containsCidr(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && outer.prefix <= inner.prefix && (inner.base & mask(outer.family, outer.prefix)) === outer.base;
}

/** True when the two ranges share at least one address (for CIDRs: one contains the other). */
export function overlaps(a: Cidr, b: Cidr): boolean {
  return containsCidr(a, b) || containsCidr(b, a);
}

export function equalCidr(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.prefix === b.prefix && a.base === b.base;
}

function compare(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.base !== b.base) return a.base < b.base ? -1 : 1;
  return a.prefix - b.prefix;
}

/** The fewest CIDRs covering exactly the inclusive range [first, last]. */
function rangeToCidrs(family: Family, first: bigint, last: bigint): Cidr[] {
  const out: Cidr[] = [];
  const bits = bitsOf(family);
  let cur = first;
  while (cur <= last) {
    // Largest block aligned at `cur` that fits in what is left.
    let size = bits;
    while (size > 0) {
      const blk = 1n << BigInt(size);
      if ((cur & (blk - 1n)) === 0n && cur + blk - 1n <= last) break;
      size--;
    }
    out.push({ family, base: cur, prefix: bits - size });
    cur += 1n << BigInt(size);
  }
  return out;
}

/** Inclusive ranges of a set of CIDRs of one family, sorted and merged. */
function toRanges(list: readonly Cidr[], family: Family): Array<[bigint, bigint]> {
  const sorted = list.filter((c) => c.family === family).sort(compare);
  const out: Array<[bigint, bigint]> = [];
  for (const c of sorted) {
    const first = c.base;
    const last = lastOf(c);
    const prev = out[out.length - 1];
    if (prev && first <= prev[1] + 1n) {
      if (last > prev[1]) prev[1] = last;
    } else out.push([first, last]);
  }
  return out;
}

/** The fewest CIDRs whose union is exactly the union of `list` (duplicates, nested and adjacent ranges merged). */
export function aggregate(list: readonly Cidr[]): Cidr[] {
  const out: Cidr[] = [];
  for (const family of [4, 6] as const) {
    for (const [first, last] of toRanges(list, family)) out.push(...rangeToCidrs(family, first, last));
  }
  return out;
}

/** `from` minus `remove`, as the fewest CIDRs. */
export function subtract(from: readonly Cidr[], remove: readonly Cidr[]): Cidr[] {
  const out: Cidr[] = [];
  for (const family of [4, 6] as const) {
    const cuts = toRanges(remove, family);
    for (const [first, last] of toRanges(from, family)) {
      let cur = first;
      for (const [cf, cl] of cuts) {
        if (cl < cur || cf > last) continue;
        if (cf > cur) out.push(...rangeToCidrs(family, cur, cf - 1n));
        cur = cl + 1n;
        if (cur > last) break;
      }
      if (cur <= last) out.push(...rangeToCidrs(family, cur, last));
    }
  }
  return out;
}

/**
 * Covers a set of addresses or ranges with a few CIDRs, as KT Connect does with pod and service
 * IPs: entries that share the same `/groupPrefix` (default /16 for IPv4, /64 for IPv6) are
 * replaced by the smallest single CIDR covering them all; the results are then aggregated.
 * Addresses of different /16s never pull in the space between them.
 */
export function cover(list: readonly Cidr[], groupPrefix: { 4?: number; 6?: number } = {}): Cidr[] {
  const groups = new Map<string, Cidr[]>();
  for (const c of list) {
    const gp = Math.min(groupPrefix[c.family] ?? (c.family === 4 ? 16 : 64), c.prefix);
    const key = `${c.family}/${(c.base & mask(c.family, gp)).toString(16)}/${gp}`;
    // An entry wider than the group prefix is its own group key.
    const arr = groups.get(key);
    if (arr) arr.push(c);
    else groups.set(key, [c]);
  }
  const covers: Cidr[] = [];
  for (const members of groups.values()) {
    const family = members[0]!.family;
    let lo = members[0]!.base;
    let hi = lastOf(members[0]!);
    for (const m of members) {
      if (m.base < lo) lo = m.base;
      const l = lastOf(m);
      if (l > hi) hi = l;
    }
    // Smallest prefix whose block holds both lo and hi.
    let prefix = bitsOf(family);
    while (prefix > 0 && (lo & mask(family, prefix)) !== (hi & mask(family, prefix))) prefix--;
    covers.push(makeCidr(family, lo, prefix));
  }
  return aggregate(covers);
}
