/**
 * The TUN front end of `ktctl connect`: a TUN device whose routes send the far side's ranges into
 * the packet engine (src/netstack), which terminates every TCP flow the kernel opens and carries
 * it over the transport's tunnel; UDP/53 to ktctl's DNS address is answered by the cluster
 * resolver (src/dns), and the machine's DNS points there while ktctl runs.
 *
 * Everything is registered on the `Undo` and in a crash record (src/tun/state.ts, src/dns/
 * system.ts) before it is made. Order of the undo (newest first): DNS settings, the packet engine
 * (every flow gets a RST), the routes, the device, the crash record.
 *
 * Addresses: the device gets `169.254.77.(4k+1)/32` and ktctl's DNS answers on `169.254.77.(4k+2)`
 * (routed into the device as a /32), for the first k in 0..63 whose /30 no existing route or
 * address touches. 169.254.0.0/16 is link-local (RFC 3927): never routed beyond a link, so a /32
 * from it cannot shadow anything the machine reaches, and a more specific /32 wins over a
 * 169.254.0.0/16 route a cloud image may have.
 */
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import {
  applySystemDns,
  cleanStaleDns,
  ClusterResolver,
  netstackDnsHandler,
  readResolvConf,
  serviceHostEntries,
  upstreamServersOf,
  type DnsMode,
  type SystemDnsChange,
} from '../../dns/index.js';
import { PermissionError, TunError, UsageError } from '../../errors.js';
import { dialProbe, NetStack, type NetStackStats } from '../../netstack/index.js';
import {
  addRoutes,
  aggregate,
  cleanStale,
  configureInterface,
  containsCidr,
  deleteRoutes,
  formatCidr,
  linkInfo,
  listRecords,
  listRoutes,
  loadTunAddon,
  makeCidr,
  overlaps,
  parseIp,
  planRoutes,
  tryParseCidr,
  TunDevice,
  TunStateRecord,
  type Cidr,
  type RouteEntry,
} from '../../tun/index.js';
import { defaultStateDir, recordOwnerAlive } from '../../state.js';
import type { ServiceWatch, Transport, TransportBuilder } from '../../transport.js';
import { serveTransport } from '../serve.js';
import type { Logger, Undo } from '../../undo.js';
import type { SignalWatch } from '../signals.js';

/**
 * The TUN device's MTU. With TSO offloads both directions move 64 KiB super-segments whatever the
 * MTU (it only sets the MSS inside them), so 1500 keeps packets that leave by other paths (ICMP
 * quotes, UDP answers) at the common size. `KTCTL_TUN_MTU` overrides it (for measurements).
 */
export const TUN_MTU = tunMtuFromEnv(process.env.KTCTL_TUN_MTU) ?? 1500;

function tunMtuFromEnv(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  const n = Number(v);
  return n >= 1280 && n <= 65535 ? n : undefined;
}
/** Where the device's own address and ktctl's DNS address come from (see the module comment). */
export const TUN_LINK_NET = '169.254.77.0/24';
/** How often `--debug` prints the engine's counters. */
const STATS_INTERVAL_MS = 2000;

export const DNS_MODES: readonly DnsMode[] = ['localDNS', 'podDNS', 'hosts'];

/** The TUN flags of `connect`, checked. */
export interface TunFlags {
  tunName: string | undefined;
  include: Cidr[];
  exclude: Cidr[];
  dnsMode: DnsMode;
  dnsCacheTtl: number;
  clusterDomain: string;
  /** `--dnsServer` (the far side's resolver, --via only) */
  dnsServer: string | undefined;
  /** true with `--via`: there is no cluster */
  via: boolean;
}

export interface TunFrontEndOptions extends TunFlags {
  stdout: Writable;
  log: Logger;
  debug: Logger;
  debugEnabled: boolean;
  undo: Undo;
  /** crash records (default: src/tun/state.ts's defaultStateDir) */
  stateDir?: string;
}

export interface TunSession {
  device: TunDevice;
  stack: NetStack;
  routes: Cidr[];
  dnsAddress: string | undefined;
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
  const dnsMode = DNS_MODES.find((m) => m.toLowerCase() === raw.dnsMode.toLowerCase());
  if (dnsMode === undefined) throw new UsageError(`--dnsMode must be one of ${DNS_MODES.join(', ')} (got "${raw.dnsMode}")`);
  if (raw.via && dnsMode === 'hosts') {
    throw new UsageError('--dnsMode hosts lists the cluster\'s services and needs a cluster; with --via use --dnsMode localDNS (default) and --dnsServer IP');
  }
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

/** CAP_NET_ADMIN in the effective set (what creating a TUN device and routes needs). */
function hasNetAdmin(): boolean {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (m) return (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n;
  } catch {
    /* not Linux: fall through */
  }
  return process.getuid?.() === 0;
}

/**
 * What TUN mode needs before anything is made (called before the transport is built): root or
 * CAP_NET_ADMIN, and the native addon.
 */
export function checkTunAccess(): void {
  if (!hasNetAdmin()) {
    throw new PermissionError('--mode tun needs root (or CAP_NET_ADMIN) to create a TUN device and routes: run ktctl with sudo, or use --mode socks (a local SOCKS5/HTTP proxy that needs no root)');
  }
  loadTunAddon();
}

/**
 * Removes what crashed runs (kill -9, power loss without tmpfs) left on this machine: TUN devices
 * and routes that outlived their process, and DNS changes (resolv.conf, /etc/hosts block,
 * systemd-resolved link settings). Records of running ktctl processes are left alone. For the
 * next `connect` and for `ktctl clean`.
 */
export async function cleanLocalLeftovers(log: Logger, options: { stateDir?: string } = {}): Promise<number> {
  let n = 0;
  const dir = options.stateDir;
  for (const r of await cleanStale(dir !== undefined ? { dir } : {})) {
    n++;
    const what: string[] = [];
    if (r.removedRoutes.length > 0) what.push(`routes ${r.removedRoutes.join(', ')}`);
    if (r.removedDevice) what.push(`device ${r.record.device}`);
    log(`cleaned up after ktctl process ${r.record.pid} (gone): ${what.length > 0 ? what.join(', ') : `nothing left in the kernel${r.note ? ` (${r.note})` : ''}`}`);
  }
  for (const r of await cleanStaleDns(dir !== undefined ? { dir } : {})) {
    n++;
    const where = r.record.mode === 'resolved' ? `systemd-resolved settings of ${r.record.link}` : r.record.path;
    log(`cleaned up after ktctl process ${r.record.pid} (gone): ${r.restored ? `restored ${where}` : `${where}: ${r.note ?? 'nothing to restore'}`}`);
  }
  return n;
}

/**
 * `--tunName` naming an interface that exists is refused with what holds it (the kernel would say
 * only EBUSY or EINVAL). Taking the next free name instead would surprise whoever asked for this
 * one; without `--tunName` the kernel picks the next free ktN.
 */
async function refuseTakenName(name: string, stateDir: string | undefined): Promise<void> {
  const info = await linkInfo(name);
  if (!info.exists) return;
  let what = info.kind === 'tun' ? 'a TUN device' : info.kind !== undefined ? `a ${info.kind} interface` : 'an interface';
  const owner = listRecords(stateDir ?? defaultStateDir()).find((r) => r.record.device === name && recordOwnerAlive(r.record));
  if (owner) what += `, used by ktctl process ${owner.record.pid}`;
  throw new TunError(`the interface ${name} already exists (${what}): pick another --tunName, or leave it out to take the next free ktN`, 'EEXIST');
}

/** The first /30 of TUN_LINK_NET that no existing route or local address touches. */
function pickLinkAddresses(existing: readonly RouteEntry[]): { local: string; dns: string } {
  const net = tryParseCidr(TUN_LINK_NET)!;
  for (let k = 0; k < 64; k++) {
    const block = makeCidr(4, net.base + BigInt(4 * k), 30);
    if (existing.some((r) => r.dst.prefix > 0 && r.dst.prefix > 16 && overlaps(r.dst, block))) continue;
    const at = (i: number): string => formatCidr(makeCidr(4, block.base + BigInt(i), 32)).replace(/\/32$/, '');
    return { local: at(1), dns: at(2) };
  }
  throw new UsageError(`no free address for the TUN device in ${TUN_LINK_NET} (64 ktctl devices already?)`);
}

function describeStats(s: NetStackStats, device: TunDevice): string {
  const drops = Object.entries(s.dropped).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(' ');
  const rss = process.memoryUsage.rss();
  return `tun: flows=${s.flows} dialing=${s.pendingDials} opened=${s.flowsOpened} closed=${s.flowsClosed} buffered=${s.bytesBuffered} ` +
    `in=${s.packetsIn}/${s.bytesIn}B out=${s.packetsOut}/${s.bytesOut}B retransmits=${s.tcp.retransmits} dns=${s.dnsQueries}/${s.dnsAnswers} ` +
    `writeDropped=${device.stats.writeDropped} rss=${(rss / (1 << 20)).toFixed(1)}MiB${drops ? ` dropped: ${drops}` : ''}`;
}

/**
 * Builds the TUN front end over a transport that is up: cleans earlier runs' leftovers, makes the
 * device, its address and routes, starts the packet engine and points the machine's DNS at it.
 * Returns once everything is in place; the `Undo` takes it all down.
 */
export async function serveTun(o: TunFrontEndOptions, transport: Transport): Promise<TunSession> {
  const stateDir = o.stateDir;
  await cleanLocalLeftovers(o.log, { stateDir });
  const network = await transport.network();

  // --- what to route
  const discovered: Cidr[] = [];
  for (const r of network.routes) {
    const c = tryParseCidr(r);
    if (c) discovered.push(c);
    else o.log(`ignoring "${r}" from the cluster: not a CIDR`);
  }
  const never: Cidr[] = [];
  for (const a of network.avoid) {
    const c = tryParseCidr(a);
    if (c) never.push(c);
  }
  const existing = await listRoutes();
  const plan = planRoutes({ discovered, include: o.include, exclude: o.exclude, never, existing });
  for (const s of plan.skipped) o.log(`not routing ${formatCidr(s.cidr)}: ${s.reason}`);
  if (plan.routes.length === 0) {
    o.log(o.via ? 'nothing to route: with --via give the far side\'s ranges with --includeIps CIDR,...' : 'nothing to route: the cluster\'s ranges were all skipped or excluded');
  }

  // --- DNS plan (before anything is made: a bad combination fails early)
  const cluster = network.cluster;
  const namespace = cluster?.namespace ?? 'default';
  const clusterDomain = cluster?.domain ?? o.clusterDomain;
  let dnsMode: DnsMode | 'off' = o.dnsMode;
  let dnsOffReason = '';
  let podDnsIp: string | undefined;
  if (o.via && o.dnsServer === undefined) {
    dnsMode = 'off';
    dnsOffReason = 'untouched (with --via ktctl handles DNS only when --dnsServer IP names a resolver on the far side)';
  } else if (o.dnsMode === 'hosts' && transport.services === undefined) {
    dnsMode = 'off';
    dnsOffReason = `untouched (hosts: ${transport.label} cannot list services)`;
  } else if (o.dnsMode === 'podDNS') {
    podDnsIp = cluster?.dnsServiceIp ?? o.dnsServer;
    if (podDnsIp === undefined) {
      dnsMode = 'off';
      dnsOffReason = 'untouched (podDNS: the cluster\'s DNS service IP is unknown)';
    }
  }

  // --- the device (recorded first: a crash from here on is cleaned by the next start)
  if (o.tunName !== undefined) await refuseTakenName(o.tunName, stateDir);
  const record = TunStateRecord.create(o.tunName ?? 'kt%d', stateDir !== undefined ? { dir: stateDir } : {});
  o.undo.add('the crash record of the TUN device', () => record.remove());
  const device = TunDevice.open({ name: o.tunName ?? 'kt%d', vnetHdr: true, offload: true, mtu: TUN_MTU });
  record.update({ device: device.name });
  o.undo.add(`the TUN device ${device.name}`, () => device.close());
  if (!device.offload) o.debug(`tun: the kernel refused offloads (${device.offloadFlags.refused ?? 'no reason given'}); one packet per segment`);

  const link = pickLinkAddresses(existing);
  const routes = [...plan.routes];
  let dnsAddress: string | undefined;
  if (dnsMode === 'localDNS') {
    dnsAddress = link.dns;
    routes.push(makeCidr(4, parseIp(link.dns)!.value, 32));
  } else if (dnsMode === 'podDNS' && podDnsIp !== undefined) {
    dnsAddress = podDnsIp;
    const ip = parseIp(podDnsIp);
    if (ip && !routes.some((r) => overlaps(r, makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128)))) {
      routes.push(makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128));
    }
  }
  const finalRoutes = aggregate(routes);
  const addresses = [`${link.local}/32`];
  record.update({ addresses, routes: finalRoutes.map(formatCidr) });
  // Hosts mode adds routes for services made after the start (`routeLater` below): the undo waits
  // for those still being added, and stops any more, so it deletes every route and no add runs
  // after the device is closed.
  let routing: Promise<void> = Promise.resolve();
  let routingClosed = false;
  o.undo.add(`the routes through ${device.name}`, async () => {
    routingClosed = true;
    await routing;
    if (!device.closed) await deleteRoutes(device.name, finalRoutes);
  });
  await configureInterface(device.name, { addresses, up: true });
  await addRoutes(device.name, finalRoutes);

  // --- the packet engine
  let resolveDns: ((query: Buffer) => Promise<Buffer>) | undefined;
  const original = readResolvConf();
  if (dnsMode === 'localDNS' && dnsAddress !== undefined) {
    const resolver = new ClusterResolver({
      dialer: transport.tunnel,
      namespace,
      clusterDomain,
      upstream: { servers: upstreamServersOf(original) },
      cacheTtlSeconds: o.dnsCacheTtl,
      searchDomains: original.search,
      localAddresses: [dnsAddress],
    });
    if (resolver.droppedServers.length > 0) o.log(`not forwarding DNS to ${resolver.droppedServers.join(', ')} (ktctl's own address)`);
    resolveDns = netstackDnsHandler(resolver);
  } else if (dnsMode === 'podDNS' && dnsAddress !== undefined) {
    // UDP to the cluster DNS IP cannot be carried by a TCP tunnel: the engine answers it with the
    // far side's resolver (the shadow's DNS subsystem, or DNS over TCP to --dnsServer).
    const tunnel = transport.tunnel;
    resolveDns = (query) => tunnel.dnsQuery(query, { signal: AbortSignal.timeout(5000) });
  }
  const stack = new NetStack({
    dialer: transport.tunnel,
    mtu: TUN_MTU,
    offload: device.offload,
    emit: (packet) => device.write(packet) > 0,
    // write(2) copies the packet into the kernel before it returns.
    emitConsumes: true,
    // Data segments: headers and payload in one writev(2), the payload never copied in between.
    emitGather: (head, payload) => device.writev(head, payload) > 0,
    // The far streams are ssh2 channels, which copy what they are given into ssh packets.
    farCopiesOnWrite: true,
    dnsAddresses: dnsAddress !== undefined && resolveDns !== undefined ? [dnsAddress] : [],
    resolveDns,
    probe: dialProbe(transport.tunnel),
  });
  o.undo.add('the packet engine (open flows were reset)', () => stack.close());
  const batch: Buffer[] = [];
  device.onError((err) => o.log(`the TUN device ${device.name} failed: ${err.message}`));
  device.onPackets((arena, meta, count) => {
    // Views into the reused arena: the engine copies what it keeps before inputBatch returns.
    batch.length = count;
    for (let i = 0; i < count; i++) batch[i] = TunDevice.packet(arena, meta, i);
    stack.inputBatch(batch);
    batch.length = 0;
  });

  if (o.debugEnabled) {
    let last = '';
    const timer = setInterval(() => {
      const line = describeStats(stack.stats(), device);
      if (line !== last) o.debug(line);
      last = line;
    }, STATS_INTERVAL_MS);
    timer.unref();
    o.undo.add('the statistics timer', () => {
      clearInterval(timer);
      o.debug(describeStats(stack.stats(), device));
    });
  }

  o.log(`TUN device ${device.name} (address ${link.local}, MTU ${TUN_MTU}, offloads ${device.offload ? 'on' : 'off'})`);
  const shown = finalRoutes.map(formatCidr).filter((r) => dnsMode !== 'localDNS' || r !== `${link.dns}/32`);
  o.log(shown.length > 0 ? `routing through ${device.name}: ${shown.join(', ')}` : `routing nothing through ${device.name}`);

  // --- the machine's DNS (its undo is registered before the change; src/dns records it for crashes)
  if (dnsMode === 'off') {
    o.log(`DNS: ${dnsOffReason}`);
  } else {
    let change: SystemDnsChange | undefined;
    o.undo.add('the DNS settings', async () => {
      if (!change) return;
      const report = await change.restore();
      if (!report.restored && report.note) o.log(`DNS: ${report.note}`);
    });
    change = await applySystemDns({
      mode: dnsMode,
      localAddress: dnsMode === 'localDNS' ? dnsAddress : undefined,
      clusterDnsIp: dnsMode === 'podDNS' ? dnsAddress : undefined,
      link: device.name,
      namespace,
      clusterDomain,
      ...(stateDir !== undefined ? { stateDir } : {}),
    });
    if (dnsMode === 'hosts') {
      // Services made after the start may get IPs outside the ranges planned then: route those too
      // (the same rules: never an excluded or avoided address, nor one another route already has).
      const routeLater = (ips: string[]): void => {
        if (routingClosed) return;
        const wanted = ips
          .map((ip) => parseIp(ip))
          .filter((ip) => ip !== undefined)
          .map((ip) => makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128))
          .filter((c) => !finalRoutes.some((r) => containsCidr(r, c)));
        if (wanted.length === 0) return;
        const fresh = planRoutes({ discovered: wanted, exclude: o.exclude, never, existing }).routes;
        if (fresh.length === 0) return;
        finalRoutes.push(...fresh);
        routing = routing.then(async () => {
          try {
            record.update({ routes: finalRoutes.map(formatCidr) });
            await addRoutes(device.name, fresh);
            o.log(`routing through ${device.name}: ${fresh.map(formatCidr).join(', ')} (services made after the start)`);
          } catch (error) {
            o.log(`cannot route ${fresh.map(formatCidr).join(', ')} through ${device.name}: ${error instanceof Error ? error.message : String(error)}`);
          }
        });
      };
      const scope = await keepHostsCurrent(o, transport, change, namespace, clusterDomain, routeLater);
      const others = scope === 'cluster' ? `, svc.ns and svc.ns.svc.${clusterDomain} for the other namespaces` : ' (other namespaces\' services are not listed: RBAC allows listing services only in this one)';
      o.log(`DNS: ${change.description}: svc, svc.${namespace} and svc.${namespace}.svc.${clusterDomain} for namespace ${namespace}${others}, kept current by a watch of services; other names as before`);
    } else {
      const names = cluster ? `*.${clusterDomain}, svc and svc.${namespace}` : `*.${clusterDomain}`;
      o.log(`DNS: ${change.description}; ${names} through ${transport.label}${dnsMode === 'localDNS' ? `, other names through ${upstreamServersOf(original).join(', ')}` : ''}`);
    }
  }
  return { device, stack, routes: finalRoutes, dnsAddress };
}

/**
 * `--dnsMode hosts`: the hosts block follows the transport's watch of services (stopped on undo,
 * before the block is removed), and `route` gets their IPs. A failed first write fails the start;
 * later ones are logged.
 * Returns which services the watch sees.
 */
async function keepHostsCurrent(
  o: TunFrontEndOptions,
  transport: Transport,
  change: SystemDnsChange,
  namespace: string,
  clusterDomain: string,
  route: (ips: string[]) => void,
): Promise<ServiceWatch['scope']> {
  const setHosts = change.setHosts;
  if (transport.services === undefined || setHosts === undefined) throw new TypeError('hosts mode needs a transport that lists services and a hosts change');
  // Each left-out name or service is reported once, not on every change of the list.
  const told = new Set<string>();
  const onSkip = (kind: 'invalid' | 'taken', message: string): void => {
    if (told.has(message)) return;
    told.add(message);
    (kind === 'taken' ? o.log : o.debug)(`DNS: ${message}`);
  };
  let first = true;
  let firstError: unknown;
  const watch = await transport.services((services) => {
    try {
      const entries = serviceHostEntries(services, namespace, { clusterDomain, taken: change.hostsTaken, onSkip });
      route(entries.map((e) => e.ip));
      setHosts(entries);
    } catch (error) {
      if (first) firstError = error;
      else o.log(`DNS: ${error instanceof Error ? error.message : String(error)}`);
    }
    first = false;
  });
  o.undo.add('the watch of services', () => watch.stop());
  if (firstError !== undefined) throw firstError;
  return watch.scope;
}

export interface ConnectTunOptions {
  flags: TunFlags;
  buildTransport: TransportBuilder;
  stop: SignalWatch;
  stdout: Writable;
  log: Logger;
  debug: Logger;
  debugEnabled: boolean;
}

/**
 * `ktctl connect --mode tun` from the transport to the exit: builds the transport, then the TUN
 * front end, serves until SIGINT/SIGTERM (or the transport's fatal error), then undoes everything.
 * The caller has checked the flags and `checkTunAccess()` before: nothing is made before that.
 */
export async function connectTun(o: ConnectTunOptions): Promise<number> {
  return serveTransport({
    buildTransport: o.buildTransport,
    stop: o.stop,
    log: o.log,
    debug: o.debug,
    start: async (transport, ctx) => {
      await serveTun({ ...o.flags, stdout: o.stdout, log: o.log, debug: o.debug, debugEnabled: o.debugEnabled, undo: ctx.undo }, transport);
      if (!ctx.signal.aborted) o.log(`connected through ${transport.label}; press Ctrl-C to disconnect`);
    },
  });
}
