/** The TUN flags of `connect`, checked (src/cli/connect.ts's validators), as the TUN session takes them. */
import type { Cidr } from '../../tun/cidr.js';
import type { DnsFlags } from './dns-plan.js';

export interface TunFlags extends DnsFlags {
  tunName: string | undefined;
  /** `--includeIps` */
  include: Cidr[];
  /** `--excludeIps` */
  exclude: Cidr[];
  /** `--dnsCacheTtl`, seconds */
  dnsCacheTtl: number;
  /** KT Connect's `--dnsMode hosts:ns1,ns2`: only these namespaces' services in the hosts block (undefined: every one listed) */
  hostsNamespaces?: string[];
  /** `--includeDomains`: names under these suffixes are asked through the tunnel too (localDNS) */
  includeDomains?: string[];
}
