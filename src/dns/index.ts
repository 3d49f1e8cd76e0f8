/**
 * Cluster DNS for `ktctl connect`: the resolver (resolver.ts), a UDP/TCP listener for it
 * (server.ts) and the machine's DNS configuration with its undo (system.ts).
 */
export { ClusterResolver, type ClusterResolverOptions, type ResolverCounters, type Route } from './resolver.js';
export { DnsServer, type DnsAnswerer, type DnsServerOptions } from './server.js';
export { DNS_MODES, parseDnsMode, type DnsMode } from './mode.js';
export { UpstreamClient, parseServer, formatServer, type UpstreamServer } from './upstream.js';
export {
  cleanStaleDns,
  clusterSearchDomains,
  composeResolvConf,
  execRunner,
  HostsBlock,
  hostsFileNames,
  isDns1123Label,
  isHostsAddress,
  listDnsRecords,
  machineHostNames,
  parseResolvConf,
  readResolvConf,
  ResolvConfChange,
  ResolvedChange,
  resolvedCommands,
  resolvedRunning,
  serviceHostEntries,
  serviceHostNames,
  upstreamServersOf,
  DEFAULT_HOSTS,
  DEFAULT_RESOLV_CONF,
  type CommandRunner,
  type DnsCleanReport,
  type DnsRecord,
  type HostEntriesOptions,
  type HostEntry,
  type ResolvConf,
  type RestoreReport,
} from './system.js';
import type { DnsMode } from './mode.js';
import { readResolvConf, ResolvConfChange, ResolvedChange, resolvedRunning, HostsBlock, type CommandRunner, type ResolvConf, type RestoreReport, DEFAULT_RESOLV_CONF, RESOLVED_RUN_DIR } from './system.js';

/**
 * The netstack's `resolveDns` callback (`(query) => Promise<Buffer>`) for a resolver: a query the
 * resolver drops (no readable id, or a response) becomes a rejection, which the netstack counts as
 * a DNS error and answers with nothing.
 */
export function netstackDnsHandler(resolver: { answer(query: Buffer): Promise<Buffer | undefined> }): (query: Buffer) => Promise<Buffer> {
  return async (query) => {
    const answer = await resolver.answer(query);
    if (answer === undefined) throw new RangeError('DNS message dropped: no readable id, or not a query');
    return answer;
  };
}


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
