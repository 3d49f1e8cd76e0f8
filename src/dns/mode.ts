/** `--dnsMode`: its values, in one list (the flag's validator and src/connect/tun/dns-plan.ts read it). */
import { UsageError } from '../errors.js';

export const DNS_MODES = ['localDNS', 'podDNS', 'hosts'] as const;

export type DnsMode = (typeof DNS_MODES)[number];

/** The mode a flag value names, any letter case (`localdns` is `localDNS`); undefined for none. */
export function parseDnsMode(text: string): DnsMode | undefined {
  return DNS_MODES.find((m) => m.toLowerCase() === text.toLowerCase());
}

/** `--dnsMode` with KT Connect's suffixes, checked. */
export interface DnsModeSpec {
  mode: DnsMode;
  /** `hosts:ns1,ns2`: only these namespaces' services get hosts entries (KT Connect's dumpToHost) */
  hostsNamespaces?: string[];
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * `localDNS`, `podDNS`, `hosts`, and KT Connect's forms (pkg/kt/command/connect/common.go `setupDns`
 * and `getDnsOrder`, pkg/kt/service/dns/dnsserver.go `getDnsAddresses`):
 * - `hosts:ns1,ns2`: hosts mode for the services of those namespaces;
 * - `localDNS:ORDER`: KT's local resolver asks the servers of ORDER one after the other (`cluster`,
 *   `upstream`, or an address) and takes the first answer that is not empty. ktctl's localDNS asks by
 *   name instead: cluster names through the tunnel, every other name the machine's resolvers. With
 *   both `cluster` and `upstream` in ORDER that gives the same answers, so it is taken; any other
 *   ORDER is refused with what to use.
 */
export function parseDnsModeSpec(text: string): DnsModeSpec {
  const colon = text.indexOf(':');
  const head = colon < 0 ? text : text.slice(0, colon);
  const mode = parseDnsMode(head);
  if (mode === undefined) throw new UsageError(`--dnsMode must be one of ${DNS_MODES.join(', ')}, or KT Connect's hosts:NAMESPACES or localDNS:cluster,upstream (got "${text}")`);
  if (colon < 0) return { mode };
  const rest = text.slice(colon + 1);
  const parts = rest.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (mode === 'hosts') {
    const bad = parts.find((p) => !DNS_LABEL.test(p));
    if (parts.length === 0 || bad !== undefined) throw new UsageError(`--dnsMode hosts:NAMESPACES takes namespace names separated by commas (got "${text}")`);
    return { mode, hostsNamespaces: [...new Set(parts)] };
  }
  if (mode === 'localDNS') {
    const lower = parts.map((p) => p.toLowerCase());
    const others = parts.filter((_p, i) => lower[i] !== 'cluster' && lower[i] !== 'upstream');
    if (others.length > 0) {
      throw new UsageError(`--dnsMode ${text}: ktctl's localDNS asks no server list; it sends cluster names through the tunnel and every other name to this machine's resolvers. Use --dnsMode localDNS (with --via, --dnsServer IP names the far side's resolver)`);
    }
    if (!lower.includes('cluster')) throw new UsageError(`--dnsMode ${text} would never ask the cluster: without cluster names there is nothing for ktctl's DNS to do; use --dnsMode localDNS (cluster names through the tunnel, others as before)`);
    if (!lower.includes('upstream')) throw new UsageError(`--dnsMode ${text} asks only the cluster's DNS for every name: that is --dnsMode podDNS in ktctl`);
    return { mode };
  }
  throw new UsageError(`--dnsMode podDNS takes nothing after it (got "${text}")`);
}
