/**
 * The TUN mode of `ktctl connect`: a TUN device whose routes send the far side's ranges into the
 * packet engine (src/netstack), which terminates every TCP flow the kernel opens and carries it over
 * the transport's tunnel; UDP/53 to ktctl's DNS address is answered by the cluster resolver
 * (src/dns), and the machine's DNS points there while ktctl runs (dns-plan.ts decides how).
 *
 * Everything is registered on the `Undo` and in a crash record (src/tun/device-record.ts, src/dns/system/)
 * before it is made. Order of the undo (newest first): DNS settings, the packet engine (every flow
 * gets a RST), the routes, the device, the crash record. The link's addresses: link.ts.
 */
import type { Writable } from 'node:stream';
import { applySystemDns, ClusterResolver, clusterSearchDomains, netstackDnsHandler, PinnedNames, readResolvConf, upstreamServersOf, type ResolvConf, type SystemDnsChange } from '../../dns/index.js';
import { dialProbe, NetStack, type NetStackStats } from '../../netstack/index.js';
import type { Transport, TransportBuilder } from '../../transport.js';
import { aggregate, formatCidr, tryParseCidr, type Cidr } from '../../tun/cidr.js';
import { TunDevice } from '../../tun/device.js';
import { addRoutes, configureInterface, deleteRoutes, listRoutes, planRoutes } from '../../tun/ip.js';
import { TunStateRecord } from '../../tun/device-record.js';
import type { Logger, Undo } from '../../undo.js';
import { cleanLocalLeftovers } from '../local-cleanup.js';
import { serveTransport } from '../serve.js';
import type { SignalWatch } from '../signals.js';
import { dnsAddress, planDns } from './dns-plan.js';
import type { TunFlags } from './flags.js';
import { keepHostsCurrent, LateRoutes } from './hosts.js';
import { pickLinkAddresses, refuseTakenName, TUN_MTU } from './link.js';
import { KeptOutNotice, neverRouted, pinnedNames, resolveOwnHosts, type ResolvedHost } from './own-hosts.js';


/**
 * Packets the kernel holds for ktctl to read (the TUN's txqueuelen; the kernel's default for a TUN
 * is 500). TCP never comes near it (its windows pace it), but one UDP sender's burst does: a
 * thousand datagrams written at once lost half of them at 500. The queue only holds what senders
 * already wrote (their socket buffers are charged for it), so a longer one costs no memory at rest.
 */
const TUN_TX_QUEUE_LEN = 2048;

/** How often `--debug` prints the engine's counters. */
const STATS_INTERVAL_MS = 2000;

export interface TunFrontEndOptions extends TunFlags {
  stdout: Writable;
  log: Logger;
  debug: Logger;
  debugEnabled: boolean;
  undo: Undo;
  /** crash records (default: src/state-records.ts's defaultStateDir) */
  stateDir?: string;
}

export interface TunSession {
  device: TunDevice;
  stack: NetStack;
  routes: Cidr[];
  dnsAddress: string | undefined;
}

function describeStats(s: NetStackStats, device: TunDevice): string {
  const drops = Object.entries(s.dropped).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(' ');
  const rss = process.memoryUsage.rss();
  return `tun: flows=${s.flows} dialing=${s.pendingDials} opened=${s.flowsOpened} closed=${s.flowsClosed} buffered=${s.bytesBuffered} ` +
    `in=${s.packetsIn}/${s.bytesIn}B out=${s.packetsOut}/${s.bytesOut}B retransmits=${s.tcp.retransmits} dns=${s.dnsQueries}/${s.dnsAnswers} ` +
    `udp=${s.udpFlows}/${s.udpFlowsOpened} flows ${s.udpDatagramsOut}/${s.udpDatagramsIn} datagrams ` +
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
  // ktctl's own hosts, resolved before any route or DNS change (own-hosts.ts).
  const own = await resolveOwnHosts(network.avoid, o.log);
  for (const h of own) o.debug(`${h.what} ${h.host}: ${h.addresses.join(', ') || 'no address'} (kept out of the tunnel)`);
  const never = neverRouted(own);
  const notice = new KeptOutNotice(own, o.log);
  const existing = await listRoutes();
  const plan = planRoutes({ discovered, include: o.include, exclude: o.exclude, never, existing });
  notice.tell(plan.keptOut);
  for (const s of plan.skipped) o.log(`not routing ${formatCidr(s.cidr)}: ${s.reason}`);
  if (plan.routes.length === 0) {
    o.log(o.via ? 'nothing to route: with --via give the far side\'s ranges with --includeIps CIDR,...' : 'nothing to route: the cluster\'s ranges were all skipped or excluded');
  }

  // --- DNS plan (before anything is made)
  const dns = planDns(o, network, transport);
  const { namespace, clusterDomain } = dns;

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
  const dnsAt = dnsAddress(dns, link, routes);
  if (dnsAt?.route !== undefined) routes.push(dnsAt.route);
  const finalRoutes = aggregate(routes);
  const addresses = [`${link.local}/32`];
  record.update({ addresses, routes: finalRoutes.map(formatCidr) });
  const late = new LateRoutes({ device: device.name, routes: finalRoutes, exclude: o.exclude, never, existing, record, log: o.log, notice });
  o.undo.add(`the routes through ${device.name}`, async () => {
    await late.close();
    if (!device.closed) await deleteRoutes(device.name, finalRoutes);
  });
  await configureInterface(device.name, { addresses, up: true, txQueueLen: TUN_TX_QUEUE_LEN });
  await addRoutes(device.name, finalRoutes);

  // --- the packet engine
  let resolveDns: ((query: Buffer) => Promise<Buffer>) | undefined;
  const original = readResolvConf();
  const pinned = pinnedFor(own, original, namespace, clusterDomain);
  if (dns.mode === 'localDNS' && dnsAt !== undefined) {
    const resolver = new ClusterResolver({
      dialer: transport.tunnel,
      namespace,
      clusterDomain,
      upstream: { servers: upstreamServersOf(original) },
      cacheTtlSeconds: o.dnsCacheTtl,
      searchDomains: original.search,
      tunnelDomains: o.includeDomains ?? [],
      localAddresses: [dnsAt.address],
      pinned,
    });
    if (resolver.droppedServers.length > 0) o.log(`not forwarding DNS to ${resolver.droppedServers.join(', ')} (ktctl's own address)`);
    resolveDns = netstackDnsHandler(resolver);
  } else if (dns.mode === 'podDNS' && dnsAt !== undefined) {
    // UDP to the cluster DNS IP cannot be carried by a TCP tunnel: the engine answers it with the
    // far side's resolver (the shadow's DNS subsystem, or DNS over TCP to --dnsServer); ktctl's own
    // hosts' names are answered here, from the start, as in localDNS.
    const tunnel = transport.tunnel;
    resolveDns = async (query) => pinned.answer(query) ?? (await tunnel.dnsQuery(query, { signal: AbortSignal.timeout(5000) }));
  }
  // UDP beyond DNS: through the far side's UDP subsystem when it has one (src/netstack/udp-flows.ts).
  const udp = await transport.tunnel.udp?.();
  if (udp === undefined) {
    o.log(`UDP beyond DNS is not carried: ${transport.label} has no ktctl UDP subsystem (an SSH server that is not ktctl's shadow, or an older shadow); such datagrams get ICMP port unreachable`);
  }
  const stack = new NetStack({
    dialer: transport.tunnel,
    udp,
    mtu: TUN_MTU,
    offload: device.offload,
    emit: (packet) => device.write(packet) > 0,
    // write(2) copies the packet into the kernel before it returns.
    emitConsumes: true,
    // Data segments: headers and payload in one writev(2), the payload never copied in between.
    emitGather: (head, payload) => device.writev(head, payload) > 0,
    // The far streams are ssh2 channels, which copy what they are given into ssh packets.
    farCopiesOnWrite: true,
    dnsAddresses: dnsAt !== undefined && resolveDns !== undefined ? [dnsAt.address] : [],
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
  const shown = finalRoutes.map(formatCidr).filter((r) => dns.mode !== 'localDNS' || r !== `${link.dns}/32`);
  o.log(shown.length > 0 ? `routing through ${device.name}: ${shown.join(', ')}` : `routing nothing through ${device.name}`);

  // --- the machine's DNS (its undo is registered before the change; src/dns records it for crashes)
  if (dns.mode === 'off') {
    o.log(`DNS: ${dns.reason}`);
  } else {
    let change: SystemDnsChange | undefined;
    o.undo.add('the DNS settings', async () => {
      if (!change) return;
      const report = await change.restore();
      if (!report.restored && report.note) o.log(`DNS: ${report.note}`);
    });
    change = await applySystemDns({
      mode: dns.mode,
      localAddress: dns.mode === 'localDNS' ? dnsAt?.address : undefined,
      clusterDnsIp: dns.mode === 'podDNS' ? dnsAt?.address : undefined,
      link: device.name,
      namespace,
      clusterDomain,
      ...(stateDir !== undefined ? { stateDir } : {}),
    });
    if (dns.mode === 'hosts') {
      const only = o.hostsNamespaces;
      const scope = await keepHostsCurrent(o, transport, change, namespace, clusterDomain, (ips) => late.add(ips), ownNames(own), only);
      const others =
        only !== undefined
          ? ` (only the services of ${only.join(', ')}${scope === 'cluster' || only.every((n) => n === namespace) ? '' : `; RBAC allows listing services only in ${namespace}`})`
          : scope === 'cluster'
            ? `, svc.ns and svc.ns.svc.${clusterDomain} for the other namespaces`
            : ' (other namespaces\' services are not listed: RBAC allows listing services only in this one)';
      o.log(`DNS: ${change.description}: svc, svc.${namespace} and svc.${namespace}.svc.${clusterDomain} for namespace ${namespace}${others}, kept current by a watch of services; other names as before`);
    } else {
      o.log(`DNS: ${change.description}; ${dns.names} through ${transport.label}${dns.mode === 'localDNS' ? `, other names through ${upstreamServersOf(original).join(', ')}` : ''}`);
    }
  }
  return { device, stack, routes: finalRoutes, dnsAddress: dnsAt?.address };
}

/**
 * The names of ktctl's own hosts for the resolver (localDNS, podDNS): as given, and with each search
 * domain the machine's stub will try first while ktctl runs (the cluster's, then the original ones).
 */
function pinnedFor(own: readonly ResolvedHost[], original: ResolvConf, namespace: string, clusterDomain: string): PinnedNames {
  const ndots = original.options.map((w) => /^ndots:(\d+)$/.exec(w)).find((m) => m !== null);
  return new PinnedNames(
    pinnedNames(own).map((h) => ({ name: h.name, addresses: h.addresses })),
    { searchDomains: [...clusterSearchDomains(namespace, clusterDomain), ...original.search], ndots: ndots ? Math.min(Number(ndots[1]), 15) : 1 },
  );
}

/** The names of ktctl's own hosts for the hosts block (lower case -> what they name). */
function ownNames(own: readonly ResolvedHost[]): Map<string, string> {
  return new Map(pinnedNames(own).map((h) => [h.name.toLowerCase().replace(/\.+$/, ''), `${h.what} ${h.name}`]));
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
  return serveTransport(o, {
    session: { command: 'connect', mode: 'tun', target: '', via: o.flags.via },
    buildTransport: o.buildTransport,
    start: async (transport, ctx) => {
      await serveTun({ ...o.flags, stdout: o.stdout, log: o.log, debug: o.debug, debugEnabled: o.debugEnabled, undo: ctx.undo }, transport);
      if (!ctx.signal.aborted) o.log(`connected through ${transport.label}; press Ctrl-C to disconnect`);
    },
  });
}
