/**
 * Every DNS question of `connect --mode tun` in one place, as pure functions (like `planRoutes`):
 * which `--dnsMode` combinations are refused before anything is made, what the machine's DNS
 * becomes for a given far side (or why it is left alone), and which address ktctl's resolver
 * answers on and must be routed into the device.
 *
 * The modes: `localDNS` (ktctl answers on an address of its own link; cluster names through the
 * tunnel, others to the machine's resolvers), `podDNS` (the machine asks the cluster DNS service
 * itself, through the tunnel), `hosts` (no resolver: a block in /etc/hosts kept current by a watch
 * of Services).
 */
import type { DnsMode } from '../../dns/mode.js';
import { UsageError } from '../../errors.js';
import type { Transport, TransportNetwork } from '../../transport.js';
import { makeCidr, overlaps, parseIp, type Cidr } from '../../tun/cidr.js';

/** The DNS flags of `connect`, checked. */
export interface DnsFlags {
  dnsMode: DnsMode;
  clusterDomain: string;
  /** `--dnsServer` (the far side's resolver, --via only) */
  dnsServer: string | undefined;
  /** true with `--via`: there is no cluster */
  via: boolean;
}

/** Combinations refused before anything is made (a cross-flag rule of `connect`). */
export function checkDnsFlags(flags: Pick<DnsFlags, 'dnsMode' | 'via'>): void {
  if (flags.via && flags.dnsMode === 'hosts') {
    throw new UsageError('--dnsMode hosts lists the cluster\'s services and needs a cluster; with --via use --dnsMode localDNS (default) and --dnsServer IP');
  }
}

interface PlanBase {
  /** the namespace short names follow */
  namespace: string;
  clusterDomain: string;
  /** the names resolved through the tunnel, for the "DNS: ..." line */
  names: string;
}

export type DnsPlan = PlanBase &
  (
    | { mode: 'off'; /** why the machine's DNS is left alone, for the "DNS: ..." line */ reason: string }
    | { mode: 'localDNS' }
    | { mode: 'podDNS'; /** the cluster's (or --dnsServer's) resolver, reached through the tunnel */ server: string }
    | { mode: 'hosts' }
  );

/** What the machine's DNS becomes, for these flags and this far side. */
export function planDns(flags: DnsFlags, network: Pick<TransportNetwork, 'cluster'>, transport: Pick<Transport, 'label' | 'services'>): DnsPlan {
  const cluster = network.cluster;
  const namespace = cluster?.namespace ?? 'default';
  const clusterDomain = cluster?.domain ?? flags.clusterDomain;
  const base: PlanBase = { namespace, clusterDomain, names: cluster ? `*.${clusterDomain}, svc and svc.${namespace}` : `*.${clusterDomain}` };
  if (flags.via && flags.dnsServer === undefined) {
    return { ...base, mode: 'off', reason: 'untouched (with --via ktctl handles DNS only when --dnsServer IP names a resolver on the far side)' };
  }
  if (flags.dnsMode === 'hosts') {
    if (transport.services === undefined) return { ...base, mode: 'off', reason: `untouched (hosts: ${transport.label} cannot list services)` };
    return { ...base, mode: 'hosts' };
  }
  if (flags.dnsMode === 'podDNS') {
    const server = cluster?.dnsServiceIp ?? flags.dnsServer;
    if (server === undefined) return { ...base, mode: 'off', reason: 'untouched (podDNS: the cluster\'s DNS service IP is unknown)' };
    return { ...base, mode: 'podDNS', server };
  }
  return { ...base, mode: 'localDNS' };
}

/**
 * Where DNS queries go into the device, and the routes with it: localDNS answers on the link's DNS
 * address (a /32 into the device); podDNS on the cluster DNS IP (a host route unless one of
 * `routes` covers it already). undefined: no DNS address (off, hosts).
 */
export function dnsAddress(plan: DnsPlan, link: { dns: string }, routes: readonly Cidr[]): { address: string; route: Cidr | undefined } | undefined {
  if (plan.mode === 'localDNS') return { address: link.dns, route: makeCidr(4, parseIp(link.dns)!.value, 32) };
  if (plan.mode !== 'podDNS') return undefined;
  const ip = parseIp(plan.server);
  const host = ip ? makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128) : undefined;
  return { address: plan.server, route: host && !routes.some((r) => overlaps(r, host)) ? host : undefined };
}
