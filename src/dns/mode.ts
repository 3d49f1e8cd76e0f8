/** `--dnsMode`: its values, in one list (the flag's validator and src/connect/tun/dns-plan.ts read it). */
export const DNS_MODES = ['localDNS', 'podDNS', 'hosts'] as const;

export type DnsMode = (typeof DNS_MODES)[number];

/** The mode a flag value names, any letter case (`localdns` is `localDNS`); undefined for none. */
export function parseDnsMode(text: string): DnsMode | undefined {
  return DNS_MODES.find((m) => m.toLowerCase() === text.toLowerCase());
}
