/**
 * The machine's DNS configuration, changed for the time ktctl runs and put back afterwards, in one
 * of three ways, each recorded before it is applied (records.ts), undone on exit and by
 * `cleanStaleDns()` after a crash (crash.ts):
 *  - resolv.conf (resolv-conf.ts), for localDNS and podDNS;
 *  - systemd-resolved per-link settings (resolved.ts), for the same modes when resolved runs;
 *  - a block in /etc/hosts (hosts.ts), for `--dnsMode hosts`.
 * `applySystemDns` picks the way for a mode.
 */
import type { DnsMode } from '../mode.js';
import { HostsBlock } from './hosts.js';
import type { RestoreReport } from './records.js';
import { DEFAULT_RESOLV_CONF, readResolvConf, ResolvConfChange, type ResolvConf } from './resolv-conf.js';
import { RESOLVED_RUN_DIR, ResolvedChange, resolvedRunning, type CommandRunner } from './resolved.js';

export * from './crash.js';
export * from './hosts.js';
export * from './records.js';
export * from './resolv-conf.js';
export * from './resolved.js';

export interface SystemDnsOptions {
  mode: DnsMode;
  /** localDNS: the address our resolver answers on (the netstack's DNS address, or a DnsServer's) */
  localAddress?: string;
  /** podDNS: the cluster DNS service IP (reached through the tunnel) */
  clusterDnsIp?: string;
  /** the TUN link, for systemd-resolved */
  link?: string;
  namespace: string;
  clusterDomain?: string;
  resolvConfPath?: string;
  hostsPath?: string;
  stateDir?: string;
  runner?: CommandRunner;
  /** where resolved keeps its runtime files (tests) */
  resolvedRunDir?: string;
}

export interface SystemDnsChange {
  /** what was done, for the "DNS: ..." line `connect` prints */
  readonly description: string;
  /** the machine's resolver configuration before the change (its nameservers: the upstream) */
  readonly original: ResolvConf;
  /** hosts mode only: replaces the entries */
  setHosts?(entries: { ip: string; names: string[] }[]): void;
  /** hosts mode only: the names the entries must leave to the machine (`machineHostNames`) */
  readonly hostsTaken?: ReadonlySet<string>;
  restore(): Promise<RestoreReport>;
}

/**
 * Applies `--dnsMode`: with systemd-resolved running and a link given, per-link DNS on the TUN
 * link; otherwise a rewrite of resolv.conf (localDNS: our address; podDNS: the cluster DNS IP);
 * hosts: a block in /etc/hosts. The original configuration is read first, before any change.
 */
export async function applySystemDns(options: SystemDnsOptions): Promise<SystemDnsChange> {
  const resolvConfPath = options.resolvConfPath ?? DEFAULT_RESOLV_CONF;
  const original = readResolvConf(resolvConfPath);
  if (options.mode === 'hosts') {
    const block = HostsBlock.open({ path: options.hostsPath, stateDir: options.stateDir });
    return {
      description: `hosts (entries in ${block.path})`,
      original,
      setHosts: (entries) => block.setHosts(entries),
      hostsTaken: block.machineNames,
      restore: async () => block.remove(),
    };
  }
  const server = options.mode === 'podDNS' ? options.clusterDnsIp : options.localAddress;
  if (server === undefined) throw new TypeError(`--dnsMode ${options.mode} needs ${options.mode === 'podDNS' ? 'the cluster DNS IP' : 'a local DNS address'}`);
  if (options.link !== undefined && (await resolvedRunning({ runner: options.runner, runDir: options.resolvedRunDir ?? RESOLVED_RUN_DIR }))) {
    const change = await ResolvedChange.apply({ link: options.link, server, namespace: options.namespace, clusterDomain: options.clusterDomain, runner: options.runner, stateDir: options.stateDir });
    return { description: `${options.mode} via systemd-resolved (DNS ${server} on ${options.link})`, original, restore: () => change.revert() };
  }
  const change = ResolvConfChange.apply({ path: resolvConfPath, nameserver: server, namespace: options.namespace, clusterDomain: options.clusterDomain, stateDir: options.stateDir });
  return { description: `${options.mode} (nameserver ${server} in ${resolvConfPath})`, original: change.original, restore: async () => change.restore() };
}
