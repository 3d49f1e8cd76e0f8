/**
 * The resolver on the tunnel side of `ktctl connect`. One DNS message in, one out:
 *
 *  - names under `.<clusterDomain>` go through the tunnel (`Dialer.dnsQuery`) as asked;
 *  - short names follow KT Connect's rule: `svc` is tried as `svc.<namespace>.svc.<domain>` and
 *    `svc.ns` as `svc.ns.svc.<domain>` through the tunnel, and only when the cluster does not
 *    answer NOERROR (NXDOMAIN, SERVFAIL, no answer) is the original name asked upstream. The
 *    same holds for a short name followed by one of the machine's search domains
 *    (`svc.corp.example` when `corp.example` is searched). The answer names the record owners as the client asked (glibc compares them
 *    with the question), with A/AAAA records owned by the asked name, not a CNAME to the cluster
 *    name;
 *  - everything else goes to the machine's original resolvers, bytes unchanged but for the id;
 *  - before all of these, the names ktctl's own connections use (`pinned`, see pinned.ts) are
 *    answered from their addresses at the start, whatever the cluster says about them.
 *
 * Answers are cached (see cache.ts) for the records' TTLs, at most `cacheTtlSeconds`; negative
 * answers for the SOA's negative TTL (RFC 2308 §5), at most the same cap. Identical questions in
 * flight at the same time share one lookup.
 */
import * as dnsPacket from 'dns-packet';
import type { Dialer } from '../dialer.js';
import { AnswerCache, cacheKey, personalize } from './cache.js';
import {
  errorResponse,
  Flag,
  HEADER_LENGTH,
  isTruncated,
  minTtl,
  OPCODE_QUERY,
  opcode,
  Rcode,
  rcode,
  readId,
  readQuestion,
  splitLabels,
  withId,
  flags,
  count,
  type Question,
} from './message.js';
import type { PinnedNames } from './pinned.js';
import { parseServer, UpstreamClient, type UpstreamServer } from './upstream.js';

export interface ClusterResolverOptions {
  /** The far side's resolver (the shadow's DNS subsystem, or `--dnsServer` over `direct-tcpip`). */
  dialer: Pick<Dialer, 'dnsQuery'>;
  /** The connected namespace: one-label names are looked up in it. */
  namespace: string;
  /** default `cluster.local` */
  clusterDomain?: string;
  upstream: {
    /** the machine's original nameservers (`IP`, or `IP:port` / `[IPv6]:port`) */
    servers: string[];
    /** replaces the UDP/TCP client (tests) */
    query?: (message: Buffer) => Promise<Buffer>;
    timeoutMs?: number;
    attempts?: number;
  };
  /** `--dnsCacheTtl`: longest time an answer is kept, in seconds (default 60; 0 turns the cache off) */
  cacheTtlSeconds?: number;
  /** most answers kept (default 1000) */
  cacheSize?: number;
  /** the machine's search domains (from its resolv.conf) */
  searchDomains?: string[];
  /** `--includeDomains`: names under these suffixes are asked through the tunnel as they are (KT Connect's flag of that name) */
  tunnelDomains?: string[];
  /** where ktctl's own DNS answers (`IP` or `IP:port`): never used as an upstream (no loops) */
  localAddresses?: string[];
  /** how long a tunnel query may take, in ms (default 5000) */
  tunnelTimeoutMs?: number;
  /** the clock, in ms (tests) */
  now?: () => number;
  /** names answered from ktctl's start (the API server's, the ssh server's), never asked of anyone */
  pinned?: PinnedNames;
}

export interface ResolverCounters {
  queries: number;
  cacheHits: number;
  tunnel: number;
  upstream: number;
  shortNameFallbacks: number;
  pinned: number;
  servfail: number;
  formerr: number;
  dropped: number;
}

/** Where a name is asked: through the tunnel as is, through the tunnel expanded, or upstream. */
export type Route =
  | { kind: 'pinned'; addresses: readonly string[] }
  | { kind: 'cluster' }
  | { kind: 'short'; expanded: string }
  | { kind: 'upstream' };

export class ClusterResolver {
  readonly clusterDomain: string;
  readonly namespace: string;
  /** upstream servers in use, after the loop guard */
  readonly upstreamServers: readonly UpstreamServer[];
  /** upstream servers left out because they are ktctl's own address */
  readonly droppedServers: readonly string[];
  readonly counters: ResolverCounters = { queries: 0, cacheHits: 0, tunnel: 0, upstream: 0, shortNameFallbacks: 0, pinned: 0, servfail: 0, formerr: 0, dropped: 0 };

  readonly #dialer: Pick<Dialer, 'dnsQuery'>;
  readonly #upstream: (message: Buffer) => Promise<Buffer>;
  readonly #cache: AnswerCache;
  readonly #cacheTtl: number;
  readonly #searchDomains: string[];
  readonly #tunnelDomains: string[];
  readonly #tunnelTimeoutMs: number;
  readonly #now: () => number;
  readonly #inflight = new Map<string, Promise<Buffer>>();
  readonly #pinned: PinnedNames | undefined;

  constructor(options: ClusterResolverOptions) {
    this.clusterDomain = normalizeDomain(options.clusterDomain ?? 'cluster.local');
    this.namespace = options.namespace.toLowerCase();
    this.#dialer = options.dialer;
    this.#cacheTtl = Math.max(0, options.cacheTtlSeconds ?? 60);
    this.#cache = new AnswerCache(this.#cacheTtl > 0 ? (options.cacheSize ?? 1000) : 0);
    this.#tunnelDomains = (options.tunnelDomains ?? []).map((d) => normalizeDomain(d)).filter((d) => d !== '');
    this.#searchDomains = (options.searchDomains ?? [])
      .map(normalizeDomain)
      .filter((d) => d !== '' && d !== this.clusterDomain && !d.endsWith(`.${this.clusterDomain}`));
    this.#tunnelTimeoutMs = options.tunnelTimeoutMs ?? 5000;
    this.#now = options.now ?? Date.now;
    this.#pinned = options.pinned;

    const local = (options.localAddresses ?? []).map(parseServer).filter((s): s is UpstreamServer => s !== undefined);
    const servers: UpstreamServer[] = [];
    const dropped: string[] = [];
    for (const spec of options.upstream.servers) {
      const s = parseServer(spec);
      if (s === undefined) {
        dropped.push(spec);
        continue;
      }
      if (local.some((l) => l.host === s.host && l.port === s.port)) dropped.push(spec);
      else servers.push(s);
    }
    this.upstreamServers = servers;
    this.droppedServers = dropped;
    if (options.upstream.query) {
      this.#upstream = options.upstream.query;
    } else {
      const client = new UpstreamClient({ servers, timeoutMs: options.upstream.timeoutMs, attempts: options.upstream.attempts });
      this.#upstream = (m) => client.query(m);
    }
  }

  /**
   * The answer to one query, in wire format. Never rejects. Undefined means "send nothing": the
   * message is too short to hold an id, or it is itself a response (answering it could loop).
   * A malformed query gets FORMERR, an opcode other than QUERY gets NOTIMP, a failure to reach
   * the resolver that should answer gets SERVFAIL.
   */
  async answer(query: Buffer): Promise<Buffer | undefined> {
    this.counters.queries++;
    try {
      return await this.#answer(query);
    } catch {
      // Nothing below is meant to throw; if it does, the client still gets an answer.
      this.counters.servfail++;
      return errorResponse(query, Rcode.SERVFAIL);
    }
  }

  /** Forgets every cached answer. */
  clearCache(): void {
    this.#cache.clear();
  }

  get cacheSize(): number {
    return this.#cache.size;
  }

  async #answer(query: Buffer): Promise<Buffer | undefined> {
    if (query.length < 2) {
      this.counters.dropped++;
      return undefined;
    }
    if (query.length < HEADER_LENGTH) return this.#formerr(query);
    if ((flags(query) & Flag.QR) !== 0) {
      this.counters.dropped++;
      return undefined;
    }
    if (opcode(query) !== OPCODE_QUERY) return errorResponse(query, Rcode.NOTIMP);
    const q = readQuestion(query);
    if (q === undefined || count(query, 'qdcount') !== 1) return this.#formerr(query);

    // Pinned names first: not cached (the answer costs nothing) and never asked of anyone.
    const pinned = this.#pinned?.answer(query);
    if (pinned !== undefined) {
      this.counters.pinned++;
      return pinned;
    }

    const key = cacheKey(q.name, q.type, q.class);
    const cached = this.#cache.get(key, query, this.#now());
    if (cached) {
      this.counters.cacheHits++;
      return cached;
    }

    // Identical questions in flight (a stub's retry, two programs at once) share one lookup.
    const pending = this.#inflight.get(key);
    if (pending !== undefined) {
      const shared = await pending;
      return personalize(Buffer.from(shared), query);
    }
    const lookup = this.#lookup(query, q, key);
    this.#inflight.set(key, lookup);
    try {
      return await lookup;
    } finally {
      this.#inflight.delete(key);
    }
  }

  async #lookup(query: Buffer, q: Question, key: string): Promise<Buffer> {
    const route = this.route(q.name);
    let answer: Buffer;
    if (route.kind === 'cluster') {
      const a = await this.#tunnel(query);
      if (a === undefined) {
        this.counters.servfail++;
        return errorResponse(query, Rcode.SERVFAIL);
      }
      answer = withId(a, readId(query));
    } else if (route.kind === 'short') {
      const a = await this.#tunnel(buildQuery(query, q, route.expanded));
      // Only a NOERROR answer (data or NODATA) means the cluster has the name; NXDOMAIN,
      // SERVFAIL or no answer at all leaves the name to the machine's resolver.
      const rewritten = a !== undefined && rcode(a) === Rcode.NOERROR ? rewriteOwners(a, query, q, route.expanded) : undefined;
      if (rewritten !== undefined) {
        answer = rewritten;
      } else {
        this.counters.shortNameFallbacks++;
        const u = await this.#askUpstream(query);
        if (u === undefined) return errorResponse(query, Rcode.SERVFAIL);
        answer = u;
      }
    } else {
      const u = await this.#askUpstream(query);
      if (u === undefined) return errorResponse(query, Rcode.SERVFAIL);
      answer = u;
    }
    this.#cache.set(key, answer, this.#cacheTtlOf(answer), this.#now());
    return answer;
  }

  /** Where a name is asked (exposed for tests and for `ktctl status`). */
  route(name: string): Route {
    const lower = normalizeDomain(name);
    if (lower === '') return { kind: 'upstream' };
    const pinned = this.#pinned?.addresses(lower);
    if (pinned !== undefined) return { kind: 'pinned', addresses: pinned };
    if (lower === this.clusterDomain || lower.endsWith(`.${this.clusterDomain}`)) return { kind: 'cluster' };
    if (this.#tunnelDomains.some((d) => lower === d || lower.endsWith(`.${d}`))) return { kind: 'cluster' };
    const short = this.#expandShort(lower);
    if (short !== undefined) return { kind: 'short', expanded: short };
    for (const d of this.#searchDomains) {
      if (lower.endsWith(`.${d}`)) {
        const expanded = this.#expandShort(lower.slice(0, lower.length - d.length - 1));
        if (expanded !== undefined) return { kind: 'short', expanded };
      }
    }
    return { kind: 'upstream' };
  }

  #expandShort(lower: string): string | undefined {
    const labels = splitLabels(lower);
    if (labels.some((l) => l === '')) return undefined;
    if (labels.length === 1) return `${lower}.${this.namespace}.svc.${this.clusterDomain}`;
    if (labels.length === 2) return `${lower}.svc.${this.clusterDomain}`;
    return undefined;
  }

  #formerr(query: Buffer): Buffer {
    this.counters.formerr++;
    return errorResponse(query, Rcode.FORMERR);
  }

  async #tunnel(message: Buffer): Promise<Buffer | undefined> {
    const dnsQuery = this.#dialer.dnsQuery;
    if (dnsQuery === undefined) return undefined;
    this.counters.tunnel++;
    try {
      const a = await dnsQuery.call(this.#dialer, message, { signal: AbortSignal.timeout(this.#tunnelTimeoutMs) });
      if (!Buffer.isBuffer(a) || a.length < HEADER_LENGTH) return undefined;
      return a;
    } catch {
      return undefined;
    }
  }

  async #askUpstream(query: Buffer): Promise<Buffer | undefined> {
    this.counters.upstream++;
    try {
      const a = await this.#upstream(query);
      if (!Buffer.isBuffer(a) || a.length < HEADER_LENGTH) throw new Error('short answer');
      return withId(a, readId(query));
    } catch {
      this.counters.servfail++;
      return undefined;
    }
  }

  /** Seconds an answer may be cached: 0 for errors, truncated answers and negatives without SOA. */
  #cacheTtlOf(answer: Buffer): number {
    if (this.#cacheTtl === 0 || isTruncated(answer)) return 0;
    const code = rcode(answer);
    if (code !== Rcode.NOERROR && code !== Rcode.NXDOMAIN) return 0;
    if (code === Rcode.NOERROR && count(answer, 'ancount') > 0) {
      const ttl = minTtl(answer);
      return ttl === undefined ? 0 : Math.min(ttl, this.#cacheTtl);
    }
    // RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM).
    let packet: dnsPacket.Packet;
    try {
      packet = dnsPacket.decode(answer);
    } catch {
      return 0;
    }
    for (const rr of packet.authorities ?? []) {
      if (rr.type === 'SOA') {
        const min = Math.min(rr.ttl ?? 0, rr.data.minimum ?? 0);
        return Math.min(min, this.#cacheTtl);
      }
    }
    return 0;
  }
}

function normalizeDomain(name: string): string {
  return name.trim().toLowerCase().replace(/\.+$/, '').replace(/^\.+/, '');
}

/** Encodes a dotted name (escapes as made by readQuestion) as DNS labels. */
function encodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of splitLabels(name)) {
    const bytes: number[] = [];
    for (let i = 0; i < label.length; i++) {
      const c = label[i]!;
      if (c === '\\' && i + 1 < label.length) {
        const digits = /^\d{3}/.exec(label.slice(i + 1));
        if (digits) {
          bytes.push(Number(digits[0]));
          i += 3;
        } else {
          bytes.push(label.charCodeAt(i + 1));
          i += 1;
        }
      } else bytes.push(c.charCodeAt(0) & 0xff);
    }
    parts.push(Buffer.from([bytes.length]), Buffer.from(bytes));
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** The client's query with its question's name replaced by `name` (no other sections). */
function buildQuery(query: Buffer, q: Question, name: string): Buffer {
  const header = Buffer.from(query.subarray(0, HEADER_LENGTH));
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(0, 6);
  header.writeUInt16BE(0, 8);
  header.writeUInt16BE(0, 10);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(q.type, 0);
  tail.writeUInt16BE(q.class, 2);
  return Buffer.concat([header, encodeName(name), tail]);
}

const CHAIN_LIMIT = 8;

function ttlOf(r: dnsPacket.Answer): number {
  return 'ttl' in r && typeof r.ttl === 'number' ? r.ttl : 0;
}

/**
 * The cluster's answer for `expanded`, told as the answer for the name the client asked:
 * question = the client's, id = the client's; records of the asked type reached from `expanded`
 * (directly or along a CNAME chain) are owned by the asked name, with the chain's smallest TTL.
 * When the chain does not end in the asked type, its first CNAME is owned by the asked name.
 * Undefined when the answer cannot be decoded.
 */
function rewriteOwners(answer: Buffer, query: Buffer, q: Question, expanded: string): Buffer | undefined {
  let packet: dnsPacket.Packet;
  try {
    packet = dnsPacket.decode(answer);
  } catch {
    return undefined;
  }
  const asked = packet.questions?.[0];
  if (asked === undefined) return undefined;
  const askedName = q.name;
  const qtype = asked.type;
  const records = packet.answers ?? [];
  const out: dnsPacket.Answer[] = [];
  let target = expanded.toLowerCase();
  let chainTtl = Infinity;
  let firstCname: dnsPacket.Answer | undefined;
  for (let i = 0; i < CHAIN_LIMIT; i++) {
    const here = records.filter((r) => r.name.toLowerCase() === target);
    const typed = here.filter((r) => r.type === qtype);
    if (typed.length > 0) {
      for (const r of typed) out.push({ ...r, name: askedName, ttl: Math.min(ttlOf(r), chainTtl) } as dnsPacket.Answer);
      break;
    }
    const cname = here.find((r) => r.type === 'CNAME');
    if (cname === undefined || cname.type !== 'CNAME') break;
    firstCname ??= cname;
    chainTtl = Math.min(chainTtl, ttlOf(cname));
    target = cname.data.toLowerCase();
  }
  if (out.length === 0 && firstCname !== undefined) {
    // The chain leaves the cluster (an ExternalName service): the asked name is the alias.
    out.push({ ...firstCname, name: askedName } as dnsPacket.Answer);
    for (const r of records) if (r !== firstCname) out.push(r);
  }
  const additionals = (packet.additionals ?? []).filter((r) => r.type === 'OPT');
  let encoded: Buffer;
  try {
    encoded = dnsPacket.encode({
      ...packet,
      id: readId(query),
      questions: [{ ...asked, name: askedName }],
      answers: out,
      additionals,
    });
  } catch {
    return undefined;
  }
  // Keep the client's question bytes exactly (case, RFC 4343).
  const a = readQuestion(encoded);
  if (a && a.end - a.start === q.end - q.start) query.copy(encoded, a.start, q.start, q.end);
  return encoded;
}
