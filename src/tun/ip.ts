/**
 * Interface and route plumbing for the TUN device through iproute2 (`ip`), run with execFile and
 * argument arrays (never a shell). Using `ip` instead of hand-written rtnetlink keeps this file
 * small and its failures readable (iproute2's own messages end up in the `RouteError`); it is run
 * a handful of times per session, so its cost does not matter.
 *
 * `planRoutes` is the pure part: which ranges to route given what was discovered, what the user
 * included and excluded, and the machine's existing routes.
 */
import { execFile } from 'node:child_process';
import { RouteError } from '../errors.js';
import { aggregate, containsCidr, formatCidr, overlaps, subtract, tryParseCidr, type Cidr, type Family } from './cidr.js';

export interface IpResult {
  stdout: string;
  stderr: string;
}

/** Runs `ip ARGS...`; rejects with a RouteError carrying iproute2's message. */
export function ip(args: readonly string[], options: { timeoutMs?: number } = {}): Promise<IpResult> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: options.timeoutMs ?? 10_000, encoding: 'utf8', maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code;
        const why = code === 'ENOENT' ? 'the ip command (iproute2) is not installed' : stderr.trim() || error.message;
        reject(new RouteError(`ip ${args.join(' ')} failed: ${why}`, { cause: error }));
      } else resolve({ stdout, stderr });
    });
  });
}

export async function setMtu(dev: string, mtu: number): Promise<void> {
  await ip(['link', 'set', 'dev', dev, 'mtu', String(mtu)]);
}

export async function setLinkUp(dev: string): Promise<void> {
  await ip(['link', 'set', 'dev', dev, 'up']);
}

/** Adds an address such as "198.18.127.254/32" (IPv6 without duplicate address detection). */
export async function addAddress(dev: string, cidr: string): Promise<void> {
  const args = ['addr', 'add', cidr, 'dev', dev];
  if (cidr.includes(':')) args.push('nodad');
  await ip(args);
}

export interface InterfaceConfig {
  mtu?: number;
  /** addresses in CIDR form, e.g. a /32 for the TUN itself */
  addresses?: readonly string[];
  /** bring the link up (default true) */
  up?: boolean;
  /** the device's transmit queue length (`ip link set ... txqueuelen`): for a TUN, how many packets wait for the reader */
  txQueueLen?: number;
}

/** MTU, addresses and link state in one call. */
export async function configureInterface(dev: string, config: InterfaceConfig): Promise<void> {
  if (config.mtu !== undefined) await setMtu(dev, config.mtu);
  if (config.txQueueLen !== undefined) await ip(['link', 'set', 'dev', dev, 'txqueuelen', String(config.txQueueLen)]);
  for (const a of config.addresses ?? []) await addAddress(dev, a);
  if (config.up ?? true) await setLinkUp(dev);
}

/** Adds one route per CIDR through `dev`. Fails on the first refused route (after adding the ones before it). */
export async function addRoutes(dev: string, cidrs: readonly Cidr[]): Promise<void> {
  for (const c of cidrs) {
    await ip([c.family === 6 ? '-6' : '-4', 'route', 'add', formatCidr(c), 'dev', dev]);
  }
}

/**
 * Removes routes through `dev`; routes that are already gone (or whose device is gone) are not
 * an error. Returns the ones actually removed.
 */
export async function deleteRoutes(dev: string, cidrs: readonly Cidr[]): Promise<Cidr[]> {
  const removed: Cidr[] = [];
  for (const c of cidrs) {
    try {
      await ip([c.family === 6 ? '-6' : '-4', 'route', 'del', formatCidr(c), 'dev', dev]);
      removed.push(c);
    } catch (e) {
      const msg = (e as Error).message;
      if (/No such process|Cannot find device|No such device|not found/i.test(msg)) continue;
      throw e;
    }
  }
  return removed;
}

export interface RouteEntry {
  dst: Cidr;
  /** "default", "10.0.0.0/8", ... as iproute2 printed it */
  text: string;
  dev?: string;
  gateway?: string;
  /** routing table name or number ("main" when iproute2 omitted it) */
  table: string;
  /** unicast, local, blackhole, unreachable, ... */
  type: string;
}

function parseRouteJson(json: string, family: Family): RouteEntry[] {
  let rows: unknown;
  try {
    rows = JSON.parse(json || '[]');
  } catch (cause) {
    throw new RouteError('cannot parse the output of ip -j route show', { cause });
  }
  if (!Array.isArray(rows)) return [];
  const out: RouteEntry[] = [];
  for (const row of rows as unknown[]) {
    if (typeof row !== 'object' || row === null) continue;
    const r = row as Record<string, unknown>;
    const text = typeof r.dst === 'string' ? r.dst : '';
    const dst = text === 'default' ? tryParseCidr(family === 4 ? '0.0.0.0/0' : '::/0') : tryParseCidr(text);
    if (!dst) continue;
    const entry: RouteEntry = {
      dst,
      text,
      table: typeof r.table === 'string' ? r.table : typeof r.table === 'number' ? String(r.table) : 'main',
      type: typeof r.type === 'string' ? r.type : 'unicast',
    };
    if (typeof r.dev === 'string') entry.dev = r.dev;
    if (typeof r.gateway === 'string') entry.gateway = r.gateway;
    out.push(entry);
  }
  return out;
}

/**
 * The machine's routes (main and local tables, both families): what `ip -j route show` says.
 * Broadcast, multicast and anycast entries are left out.
 */
export async function listRoutes(options: { dev?: string; tables?: readonly string[] } = {}): Promise<RouteEntry[]> {
  const out: RouteEntry[] = [];
  for (const table of options.tables ?? ['main', 'local']) {
    for (const family of [4, 6] as const) {
      const args = ['-j', `-${family}`, 'route', 'show', 'table', table];
      if (options.dev) args.push('dev', options.dev);
      const { stdout } = await ip(args);
      for (const e of parseRouteJson(stdout, family)) {
        if (e.type === 'broadcast' || e.type === 'multicast' || e.type === 'anycast') continue;
        if (e.table === 'main' && table !== 'main') e.table = table;
        out.push(e);
      }
    }
  }
  return out;
}

export interface RouteOverlap {
  cidr: Cidr;
  route: RouteEntry;
}

/**
 * Which of `wanted` overlap an existing route. Default routes are ignored (everything overlaps
 * them, and a more specific route is exactly the point), as are routes on `ownDev` and IPv6
 * link-local/multicast ranges.
 */
export function findOverlaps(wanted: readonly Cidr[], existing: readonly RouteEntry[], options: { ownDev?: string } = {}): RouteOverlap[] {
  const out: RouteOverlap[] = [];
  for (const c of wanted) {
    for (const r of existing) {
      if (r.dst.prefix === 0) continue;
      if (options.ownDev !== undefined && r.dev === options.ownDev) continue;
      if (r.dst.family === 6 && (r.text.startsWith('fe80:') || r.text.startsWith('ff00:') || r.text.startsWith('ff'))) continue;
      if (overlaps(c, r.dst)) out.push({ cidr: c, route: r });
    }
  }
  return out;
}

export interface RoutePlanInput {
  /** ranges found in the cluster (pod CIDRs, service CIDRs, covered pod/service IPs) */
  discovered: readonly Cidr[];
  /** `--includeIps`: routed even when they overlap an existing route */
  include?: readonly Cidr[];
  /** `--excludeIps` */
  exclude?: readonly Cidr[];
  /** addresses that must never go through the tunnel (the API server, the ssh server) */
  never?: readonly Cidr[];
  /** the machine's routes (listRoutes()) */
  existing: readonly RouteEntry[];
  /** the TUN's own name: its routes are not an overlap */
  ownDev?: string;
}

export interface RoutePlan {
  routes: Cidr[];
  skipped: Array<{ cidr: Cidr; reason: string }>;
  /**
   * Never-routed addresses that lay inside a range that is routed, with that range and whether
   * `--includeIps` named it: the caller says so (src/connect/tun/own-hosts.ts names the host).
   */
  keptOut: Array<{ cidr: Cidr; range: Cidr; included: boolean }>;
}

/**
 * Routes to add: discovered ranges that do not overlap an existing route (the others are
 * skipped, with the route they collide with as reason), plus the included ones, minus the
 * excluded ones and the never-routed addresses, aggregated.
 *
 * How a never-routed address inside a routed range is kept out: the range is cut around it (the
 * routes through the device are the range minus that address, at most 31 routes more for an IPv4
 * address and 127 for IPv6), so the kernel finds for it exactly the route it used before ktctl
 * came. The other ways on Linux were weighed and not taken:
 *  - a host route through the path `ip route get ADDR` shows now: one route instead of up to 31,
 *    but it pins today's gateway and device (a new Wi-Fi network, a VPN or a DHCP change under a
 *    running session leaves it pointing at the old one), and it is a route outside the TUN device,
 *    so it outlives a crash and needs a record and a cleaner of its own; the cut routes all go
 *    through the device and vanish with it when the process dies;
 *  - a policy rule (`ip rule add to ADDR lookup main` before a table of ktctl's own): it needs the
 *    TUN routes moved out of the main table, where every other tool (and `findOverlaps`) looks,
 *    and it too outlives a crash.
 */
export function planRoutes(input: RoutePlanInput): RoutePlan {
  const skipped: RoutePlan['skipped'] = [];
  const include = aggregate(input.include ?? []);
  const keep: Cidr[] = [];
  for (const c of aggregate(input.discovered)) {
    // Explicitly included ranges win over the overlap rule.
    if (include.some((i) => overlaps(i, c))) {
      keep.push(c);
      continue;
    }
    const hits = findOverlaps([c], input.existing, input.ownDev !== undefined ? { ownDev: input.ownDev } : {});
    if (hits.length > 0) {
      const h = hits[0]!;
      skipped.push({
        cidr: c,
        reason: `overlaps the existing route ${h.route.text}${h.route.dev ? ` dev ${h.route.dev}` : ''}${h.route.table !== 'main' ? ` (table ${h.route.table})` : ''}; add it to --includeIps to route it anyway`,
      });
      continue;
    }
    keep.push(c);
  }
  const wanted = aggregate([...keep, ...include]);
  const exclude = input.exclude ?? [];
  const never = input.never ?? [];
  const keptOut: RoutePlan['keptOut'] = [];
  for (const n of never) {
    // An address the user excluded anyway is not news.
    if (exclude.some((e) => containsCidr(e, n))) continue;
    const range = wanted.find((w) => overlaps(w, n));
    if (range === undefined) continue;
    const named = include.find((i) => overlaps(i, n));
    keptOut.push({ cidr: n, range: named ?? range, included: named !== undefined });
  }
  const routes = subtract(wanted, [...exclude, ...never]);
  return { routes, skipped, keptOut };
}

export async function linkExists(dev: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', dev]);
    return true;
  } catch {
    return false;
  }
}

/** Details of a link: whether it is a TUN device (from `ip -d -j link show`). */
export async function linkInfo(dev: string): Promise<{ exists: boolean; kind?: string }> {
  let out: IpResult;
  try {
    out = await ip(['-d', '-j', 'link', 'show', 'dev', dev]);
  } catch {
    return { exists: false };
  }
  try {
    const rows = JSON.parse(out.stdout) as unknown;
    const row = Array.isArray(rows) ? (rows[0] as Record<string, unknown> | undefined) : undefined;
    const li = row?.linkinfo as Record<string, unknown> | undefined;
    const kind = typeof li?.info_kind === 'string' ? li.info_kind : undefined;
    return kind ? { exists: true, kind } : { exists: true };
  } catch {
    return { exists: true };
  }
}

/** Deletes an interface; an interface that is already gone is not an error. */
export async function deleteLink(dev: string): Promise<boolean> {
  try {
    await ip(['link', 'del', 'dev', dev]);
    return true;
  } catch (e) {
    if (/Cannot find device|does not exist/i.test((e as Error).message)) return false;
    throw e;
  }
}
