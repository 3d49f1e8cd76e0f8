/**
 * Cluster DNS for `ktctl connect`: the resolver (resolver.ts), a UDP/TCP listener for it
 * (server.ts), its adapter to the packet engine (netstack-handler.ts), the names of ktctl's own
 * hosts answered from the start (pinned.ts), the `--dnsMode` values (mode.ts) and the machine's
 * DNS configuration with its undo (system/).
 */
export { ClusterResolver, type ClusterResolverOptions, type ResolverCounters, type Route } from './resolver.js';
export { PinnedNames, PINNED_TTL, type PinnedHost } from './pinned.js';
export { DnsServer, type DnsAnswerer, type DnsServerOptions } from './server.js';
export { DNS_MODES, parseDnsMode, type DnsMode } from './mode.js';
export { UpstreamClient, parseServer, formatServer, type UpstreamServer } from './upstream.js';
export { netstackDnsHandler } from './netstack-handler.js';
export {
  applySystemDns,
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
  type SystemDnsChange,
  type SystemDnsOptions,
} from './system/index.js';
