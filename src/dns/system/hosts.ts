/**
 * /etc/hosts (`--dnsMode hosts`): `HostsBlock`, a marked block of entries replaceable while running
 * and cut out on exit, the bytes outside it kept as they are; and which names the entries of the
 * cluster's Services get (and which they must leave to the machine).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { DnsConfigError } from '../../errors.js';
import { defaultStateDir, newRecordBase, StateRecordFile } from '../../state-records.js';
import { describe, writeAtomic, type HostsRecord, type RestoreReport } from './records.js';

export const DEFAULT_HOSTS = '/etc/hosts';

export interface HostEntry {
  ip: string;
  names: string[];
}

/**
 * A DNS-1123 label (RFC 1123 as Kubernetes applies it): lower case letters, digits and '-', at most
 * 63, beginning and ending with a letter or digit. Namespace and Service names are such labels; a
 * name from the API server that is not one never reaches the hosts file.
 */
export function isDns1123Label(name: string): boolean {
  return name.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name);
}

/** An address the hosts file can hold: IPv4 or IPv6, without a zone (`%eth0`). */
export function isHostsAddress(ip: string): boolean {
  return isIP(ip) !== 0 && !ip.includes('%');
}

/** A name the hosts file can hold: letters, digits, '-', '_' and '.', nothing that ends a field or starts a comment. */
function isHostsName(name: string): boolean {
  return /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(name);
}

/** Names for a service: `svc` (connected namespace only), `svc.ns`, `svc.ns.svc.<domain>`. */
export function serviceHostNames(service: string, namespace: string, connectedNamespace: string, clusterDomain = 'cluster.local'): string[] {
  const d = clusterDomain.replace(/\.+$/, '');
  const names = [`${service}.${namespace}`, `${service}.${namespace}.svc.${d}`];
  return namespace === connectedNamespace ? [service, ...names] : names;
}

/**
 * The names (lower case) of hosts(5) text: every name after an address on a line, comments cut.
 * Lines inside ktctl blocks (another run's, or a crashed one's) do not count.
 */
export function hostsFileNames(text: string): Set<string> {
  const out = new Set<string>();
  let inBlock = false;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('# BEGIN ktctl ')) inBlock = true;
    else if (raw.startsWith('# END ktctl ')) inBlock = false;
    if (inBlock) continue;
    const [ip, ...names] = raw.replace(/#.*$/, '').trim().split(/\s+/);
    if (ip === undefined || isIP(ip.replace(/%.*$/, '')) === 0) continue;
    for (const n of names) out.add(n.toLowerCase());
  }
  return out;
}

/**
 * The names the hosts block must not take from the machine (lower case): `localhost`, the machine's
 * host name (and its first label), and every name `hostsText` (the hosts file before ktctl's
 * change) has already.
 */
export function machineHostNames(hostsText: string, hostname: string = osHostname()): Set<string> {
  const out = hostsFileNames(hostsText);
  out.add('localhost');
  const h = hostname.trim().toLowerCase().replace(/\.+$/, '');
  if (h !== '') {
    out.add(h);
    out.add(h.split('.')[0]!);
  }
  return out;
}

export interface HostEntriesOptions {
  /** default cluster.local */
  clusterDomain?: string;
  /** names (lower case) the machine has already (`machineHostNames`): none of them is written */
  taken?: ReadonlySet<string>;
  /**
   * names (lower case) ktctl's own connections use, with what they name ("the API server"): none of
   * them is written, so they keep resolving as they did at the start (src/dns/pinned.ts)
   */
  own?: ReadonlyMap<string, string>;
  /**
   * Told about each service, address or name left out: `invalid` (not a DNS-1123 label, not an
   * address: the API server sent something no cluster has), `taken` or `own`. The same cause gives the
   * same text on every call, so a caller can say each once.
   */
  onSkip?: (kind: 'invalid' | 'taken' | 'own', message: string) => void;
}

/**
 * The hosts block for a list of Services: one line per cluster IP with `svc` (connected namespace
 * only), `svc.ns` and the FQDN; services without a cluster IP (headless, ExternalName) have none.
 * Sorted by namespace and name, so an unchanged list gives the same bytes. Services whose name or
 * namespace is not a DNS-1123 label, addresses that are not IPs, and names in `taken` or `own` are
 * left out.
 */
export function serviceHostEntries(
  services: readonly { namespace: string; name: string; ips: readonly string[] }[],
  connectedNamespace: string,
  options: HostEntriesOptions = {},
): HostEntry[] {
  const skip = options.onSkip ?? (() => {});
  const taken = options.taken;
  const sorted = [...services].sort((a, b) => (a.namespace === b.namespace ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.namespace < b.namespace ? -1 : 1));
  const out: HostEntry[] = [];
  for (const s of sorted) {
    if (!isDns1123Label(s.namespace) || !isDns1123Label(s.name)) {
      const bad = isDns1123Label(s.namespace) ? `name ${JSON.stringify(s.name)}` : `namespace ${JSON.stringify(s.namespace)}`;
      skip('invalid', `hosts: left out service ${JSON.stringify(s.name)} in namespace ${JSON.stringify(s.namespace)}: its ${bad} is not a DNS-1123 label`);
      continue;
    }
    let names = serviceHostNames(s.name, s.namespace, connectedNamespace, options.clusterDomain);
    if (taken !== undefined) {
      for (const n of names.filter((x) => taken.has(x.toLowerCase()))) {
        skip('taken', `hosts: no entry ${n} for service ${s.namespace}/${s.name}: this machine has that name already (localhost, its host name or its hosts file)`);
      }
      names = names.filter((x) => !taken.has(x.toLowerCase()));
    }
    const own = options.own;
    if (own !== undefined) {
      for (const n of names) {
        const what = own.get(n.toLowerCase());
        if (what !== undefined) skip('own', `hosts: no entry ${n} for service ${s.namespace}/${s.name}: ktctl's own connection to ${what} uses that name, which keeps the address it had at the start`);
      }
      names = names.filter((x) => !own.has(x.toLowerCase()));
    }
    for (const ip of s.ips) {
      if (!isHostsAddress(ip)) {
        skip('invalid', `hosts: left out address ${JSON.stringify(ip)} of service ${s.namespace}/${s.name}: not an IP address`);
        continue;
      }
      if (names.length > 0) out.push({ ip, names });
    }
  }
  return out;
}

export interface HostsOptions {
  path?: string;
  stateDir?: string;
}

export class HostsBlock {
  readonly path: string;
  /** what the block must leave to the machine: `machineHostNames` of the file as it was at `open` */
  readonly machineNames: ReadonlySet<string>;
  readonly #record: StateRecordFile<HostsRecord>;
  #removed: RestoreReport | undefined;

  private constructor(path: string, record: StateRecordFile<HostsRecord>, machineNames: ReadonlySet<string>) {
    this.path = path;
    this.machineNames = machineNames;
    this.#record = record;
  }

  /** Records the file's original bytes; the file itself is changed by the first `setHosts`. */
  static open(options: HostsOptions = {}): HostsBlock {
    const path = options.path ?? DEFAULT_HOSTS;
    let original: Buffer;
    try {
      original = readFileSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new DnsConfigError(`cannot read ${path}: ${describe(e)}`, { cause: e });
      original = Buffer.alloc(0);
    }
    const tag = `${process.pid}-${randomBytes(3).toString('hex')}`;
    const record = new StateRecordFile<HostsRecord>(options.stateDir ?? defaultStateDir(), 'dns-', { ...newRecordBase('dns'), mode: 'hosts', path, original: original.toString('base64'), block: '', tag });
    return new HostsBlock(path, record, machineHostNames(original.toString('latin1')));
  }

  /** Replaces the block's entries (an empty list leaves an empty block). */
  setHosts(entries: HostEntry[]): void {
    if (this.#removed) throw new DnsConfigError(`the ktctl block in ${this.path} was already removed`);
    const rec = this.#record.record;
    const current = readText(this.path);
    const without = cutBlock(current, rec.block, rec.tag);
    // Only what a hosts line can hold: nothing in an entry can end a line or start another field.
    const lines: string[] = [];
    for (const e of entries) {
      const names = e.names.filter(isHostsName);
      if (isHostsAddress(e.ip) && names.length > 0) lines.push(`${e.ip}\t${names.join(' ')}\n`);
    }
    const body = lines.join('');
    const lead = without.length > 0 && !without.endsWith('\n') ? '\n' : '';
    const block = `${lead}${beginMarker(rec.tag)}\n${body}${endMarker(rec.tag)}\n`;
    // A watch event that changed nothing here (a Service's labels, say) leaves the file alone.
    if (block === rec.block && current.endsWith(block)) return;
    // Recorded before written: a crash in between still finds the block by its markers.
    this.#record.update({ block });
    try {
      writeAtomic(this.path, Buffer.from(without + block, 'latin1'), fileMode(this.path, 0o644));
    } catch (e) {
      throw new DnsConfigError(`cannot write ${this.path}: ${describe(e)}; run ktctl as root`, { cause: e });
    }
  }

  /** Cuts the block out; the rest of the file stays as it is now. Idempotent. */
  remove(): RestoreReport {
    this.#removed ??= removeHostsBlock(this.#record.record);
    this.#record.remove();
    return this.#removed;
  }
}

function beginMarker(tag: string): string {
  return `# BEGIN ktctl ${tag} (added by ktctl connect --dnsMode hosts, removed when it exits)`;
}

function endMarker(tag: string): string {
  return `# END ktctl ${tag}`;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return '';
  }
}

function fileMode(path: string, fallback: number): number {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return fallback;
  }
}

/**
 * `text` without our block: the exact block when it is there (so the bytes around it come back
 * as they were), else every line from our begin marker to our end marker.
 */
function cutBlock(text: string, block: string, tag: string): string {
  if (block !== '') {
    const at = text.lastIndexOf(block);
    if (at >= 0) return text.slice(0, at) + text.slice(at + block.length);
  }
  const begin = beginMarker(tag);
  const end = endMarker(tag);
  const lines = text.split('\n');
  const out: string[] = [];
  let inside = false;
  for (const l of lines) {
    if (!inside && l === begin) inside = true;
    else if (inside && l === end) inside = false;
    else if (!inside) out.push(l);
  }
  return out.join('\n');
}

export function removeHostsBlock(rec: HostsRecord): RestoreReport {
  const text = readText(rec.path);
  const cut = cutBlock(text, rec.block, rec.tag);
  if (cut === text) return { mode: 'hosts', restored: false, note: `${rec.path} holds no ktctl block (removed by someone else, or never written)` };
  try {
    writeAtomic(rec.path, Buffer.from(cut, 'latin1'), fileMode(rec.path, 0o644));
  } catch (e) {
    throw new DnsConfigError(`cannot remove ktctl's entries from ${rec.path}: ${describe(e)}`, { cause: e });
  }
  return { mode: 'hosts', restored: true };
}
