/** The TUN flags of `connect`, checked. */
import { DNS_MODES, parseDnsMode } from '../../dns/mode.js';
import { UsageError } from '../../errors.js';
import { tryParseCidr, type Cidr } from '../../tun/cidr.js';
import { checkDnsFlags, type DnsFlags } from './dns-plan.js';

export interface TunFlags extends DnsFlags {
  tunName: string | undefined;
  include: Cidr[];
  exclude: Cidr[];
  dnsCacheTtl: number;
}

function parseCidrList(text: string | undefined, flag: string): Cidr[] {
  if (text === undefined || text.trim() === '') return [];
  const out: Cidr[] = [];
  for (const part of text.split(',')) {
    if (part.trim() === '') continue;
    const c = tryParseCidr(part);
    if (!c) throw new UsageError(`${flag} takes IP addresses or CIDRs separated by commas ("${part.trim()}" is neither)`);
    out.push(c);
  }
  return out;
}

/** Validates the TUN flags (before anything is made). */
export function parseTunFlags(raw: {
  tunName?: string; includeIps?: string; excludeIps?: string; dnsMode: string; dnsCacheTtl: string; clusterDomain: string; dnsServer?: string; via: boolean;
}): TunFlags {
  if (raw.tunName !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(raw.tunName)) {
    throw new UsageError(`--tunName must be an interface name of at most 15 letters, digits, '.', '_' or '-' (got "${raw.tunName}")`);
  }
  const dnsMode = parseDnsMode(raw.dnsMode);
  if (dnsMode === undefined) throw new UsageError(`--dnsMode must be one of ${DNS_MODES.join(', ')} (got "${raw.dnsMode}")`);
  checkDnsFlags({ dnsMode, via: raw.via });
  const ttl = Number(raw.dnsCacheTtl);
  if (!/^\d+$/.test(raw.dnsCacheTtl.trim()) || !Number.isSafeInteger(ttl)) throw new UsageError(`--dnsCacheTtl must be a number of seconds (got "${raw.dnsCacheTtl}")`);
  const domain = raw.clusterDomain.replace(/\.+$/, '');
  if (!/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(domain)) throw new UsageError(`--clusterDomain must be a DNS domain (got "${raw.clusterDomain}")`);
  return {
    tunName: raw.tunName,
    include: parseCidrList(raw.includeIps, '--includeIps'),
    exclude: parseCidrList(raw.excludeIps, '--excludeIps'),
    dnsMode,
    dnsCacheTtl: ttl,
    clusterDomain: domain,
    dnsServer: raw.dnsServer,
    via: raw.via,
  };
}

