/**
 * The hosts ktctl's own connections go to (the API server, the `--via` ssh server), in the TUN
 * mode. Named by a host name (the usual kubeconfig), they would otherwise follow the machine's
 * routes and DNS as ktctl changes them: an address inside a routed range would send the API
 * traffic into its own tunnel, and a name that the cluster's DNS (or the /etc/hosts block) also
 * knows would send it to a Service. So at the start, before any route or DNS change, each host is
 * resolved with the system resolver (every address, both families); the addresses stay out of the
 * device's routes (planRoutes' `never`, also for the routes added later), and the names are
 * answered from these addresses by ktctl's resolver and left out of the hosts block.
 */
import { lookup as systemLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { OwnHost } from '../../transport.js';
import { formatCidr, makeCidr, parseIp, type Cidr } from '../../tun/cidr.js';
import type { RoutePlan } from '../../tun/ip.js';
import type { Logger } from '../../undo.js';

/** An own host with the addresses it had at the start. */
export interface ResolvedHost extends OwnHost {
  /** every address, as the system resolver gave them (an IP host: itself) */
  addresses: string[];
}

export type Lookup = (host: string) => Promise<string[]>;

/** getaddrinfo(3) through Node: /etc/hosts, DNS and whatever else nsswitch.conf names; v4 and v6. */
export const lookupAll: Lookup = async (host) => (await systemLookup(host, { all: true, family: 0, verbatim: true })).map((a) => a.address);

/**
 * Resolves each host (names once, IPs as they are). A name that does not resolve now is reported
 * and left out: the transport reached it moments ago, so this is a resolver's hiccup, and failing
 * the whole start for it would be worse than a route ktctl cannot keep it from.
 */
export async function resolveOwnHosts(hosts: readonly OwnHost[], log: Logger, lookup: Lookup = lookupAll): Promise<ResolvedHost[]> {
  const out: ResolvedHost[] = [];
  for (const h of hosts) {
    const bare = h.host.replace(/^\[|\]$/g, '');
    if (isIP(bare) !== 0) {
      out.push({ ...h, host: bare, addresses: [bare] });
      continue;
    }
    try {
      const addresses = [...new Set(await lookup(bare))];
      out.push({ ...h, host: bare, addresses });
    } catch (error) {
      log(`cannot resolve ${h.what} ${bare} (${(error as NodeJS.ErrnoException).code ?? String(error)}): its addresses may be routed through the tunnel`);
      out.push({ ...h, host: bare, addresses: [] });
    }
  }
  return out;
}

/** Every address of the hosts as a host route (/32 or /128), for planRoutes' `never`. */
export function neverRouted(hosts: readonly ResolvedHost[]): Cidr[] {
  const out: Cidr[] = [];
  for (const h of hosts) {
    for (const a of h.addresses) {
      const ip = parseIp(a);
      if (ip) out.push(makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128));
    }
  }
  return out;
}

/** The names for ktctl's DNS override: host names only (an IP needs no answer). */
export function pinnedNames(hosts: readonly ResolvedHost[]): Array<{ name: string; addresses: string[]; what: string }> {
  return hosts.filter((h) => isIP(h.host) === 0 && h.addresses.length > 0).map((h) => ({ name: h.host, addresses: h.addresses, what: h.what }));
}

/**
 * Says once per address that it lies in a routed range and stays out of the tunnel: at the start
 * and for the routes added later (hosts.ts's LateRoutes), one sentence naming host, address and range.
 */
export class KeptOutNotice {
  readonly #hosts: readonly ResolvedHost[];
  readonly #log: Logger;
  readonly #told = new Set<string>();

  constructor(hosts: readonly ResolvedHost[], log: Logger) {
    this.#hosts = hosts;
    this.#log = log;
  }

  tell(keptOut: RoutePlan['keptOut']): void {
    for (const k of keptOut) {
      const address = formatCidr(k.cidr).replace(/\/(32|128)$/, '');
      if (this.#told.has(address)) continue;
      this.#told.add(address);
      this.#log(keptOutSentence(this.#hosts, address, formatCidr(k.range), k.included));
    }
  }
}

/** The one sentence for an own address inside a routed range. */
export function keptOutSentence(hosts: readonly ResolvedHost[], address: string, range: string, included: boolean): string {
  const ip = parseIp(address);
  const h = hosts.find((x) => x.addresses.some((a) => { const p = parseIp(a); return p !== undefined && ip !== undefined && p.family === ip.family && p.value === ip.value; }));
  const who = h === undefined ? address : h.host === address ? `${h.what} ${address}` : `${h.what} ${h.host} (${address})`;
  return `${who} lies inside ${range}${included ? ' (--includeIps)' : ' (found in the cluster)'}: ktctl keeps it out of the tunnel, so it keeps the route it had before`;
}
