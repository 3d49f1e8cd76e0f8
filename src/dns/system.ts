/**
 * The machine's DNS configuration, changed for the time ktctl runs and put back afterwards.
 *
 * Three ways, each recorded before it is applied (a JSON record in the state directory of
 * src/tun/state.ts, `dns-<pid>-<stamp>.json`, holding the original bytes), undone on exit and by
 * `cleanStaleDns()` after a crash:
 *  - resolv.conf (`ResolvConfChange`): the file is rewritten to `nameserver <ours>` with the
 *    machine's search domains and options kept (cluster search domains in front). It is put back
 *    byte for byte, only if it still holds what ktctl wrote: when someone changed it meanwhile,
 *    theirs is kept and the report says so. A symlink (resolvconf, a stale resolved stub) is
 *    replaced by a file and restored as the same symlink.
 *  - systemd-resolved (`ResolvedChange`): when resolved runs, per-link DNS server and routing
 *    domains on the TUN link (`resolvectl dns|domain|default-route`), reverted with
 *    `resolvectl revert`; resolv.conf is not touched.
 *  - /etc/hosts (`HostsBlock`): a marked block of entries, replaceable while running, cut out on
 *    exit; the bytes outside it are kept as they are.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { DnsConfigError } from '../errors.js';
import { defaultStateDir, listStateRecords, newRecordBase, recordOwnerAlive, StateRecordFile, type StateRecordBase } from '../state.js';

export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';
export const DEFAULT_HOSTS = '/etc/hosts';
export const RESOLVED_RUN_DIR = '/run/systemd/resolve';

// ---------------------------------------------------------------------------------------------
// resolv.conf text

export interface ResolvConf {
  nameservers: string[];
  search: string[];
  /** option words as written (`ndots:5`, `edns0`, ...) */
  options: string[];
}

/**
 * Reads resolv.conf(5) text: `nameserver`, `search` (the last `search` or `domain` line wins, as
 * in glibc), `options` (accumulated). Comments start with `#` or `;`.
 */
export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], search: [], options: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'nameserver' && rest[0] !== undefined) {
      // A scope suffix (fe80::1%eth0) is kept; anything that is no address is ignored, as glibc does.
      if (isIP(rest[0].replace(/%.*$/, '')) !== 0) out.nameservers.push(rest[0]);
    } else if (key === 'search' || key === 'domain') {
      out.search = rest.filter((d) => d !== '.');
    } else if (key === 'options') {
      out.options.push(...rest);
    }
  }
  return out;
}

/** The configuration in `path` (empty when the file is missing or unreadable). */
export function readResolvConf(path: string = DEFAULT_RESOLV_CONF): ResolvConf {
  try {
    return parseResolvConf(readFileSync(path, 'utf8'));
  } catch {
    return { nameservers: [], search: [], options: [] };
  }
}

/** First line of every resolv.conf ktctl writes. */
export const WRITTEN_MARK = '# written by ktctl connect';

function readTextOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The servers a stub resolver with this configuration asks: at most the first three (glibc's
 * MAXNS), or the local machine's when there is none (resolv.conf(5)).
 */
export function upstreamServersOf(conf: ResolvConf): string[] {
  return conf.nameservers.length > 0 ? conf.nameservers.slice(0, 3) : ['127.0.0.1'];
}

/** Search domains that make `svc` and `svc.ns` work: `<ns>.svc.<d> svc.<d> <d>`. */
export function clusterSearchDomains(namespace: string, clusterDomain: string): string[] {
  const d = clusterDomain.replace(/\.+$/, '');
  return [`${namespace}.svc.${d}`, `svc.${d}`, d];
}

/**
 * The resolv.conf ktctl writes: one nameserver, the cluster's search domains first and then the
 * machine's (glibc keeps at most 6 domains and 256 characters before 2.26; later ones any number),
 * the machine's options.
 */
export function composeResolvConf(original: ResolvConf, options: { nameserver: string; namespace: string; clusterDomain: string }): string {
  const search: string[] = [];
  for (const d of [...clusterSearchDomains(options.namespace, options.clusterDomain), ...original.search]) {
    if (!search.some((s) => s.toLowerCase() === d.toLowerCase())) search.push(d);
  }
  const lines = [`${WRITTEN_MARK}; the original comes back when it exits (or with ktctl clean)`, `nameserver ${options.nameserver}`, `search ${search.join(' ')}`];
  if (original.options.length > 0) lines.push(`options ${original.options.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// records

type Original = { type: 'file'; data: string; mode: number } | { type: 'symlink'; target: string } | { type: 'absent' };

type RecordBase = StateRecordBase<'dns'>;

export interface ResolvConfRecord extends RecordBase {
  mode: 'resolv.conf';
  path: string;
  original: Original;
  /** base64 of what ktctl writes */
  written: string;
}

export interface HostsRecord extends RecordBase {
  mode: 'hosts';
  path: string;
  /** base64 of the file before ktctl's first change */
  original: string;
  /** the block as last written (or about to be written), utf8 */
  block: string;
  tag: string;
}

export interface ResolvedRecord extends RecordBase {
  mode: 'resolved';
  link: string;
}

export type DnsRecord = ResolvConfRecord | HostsRecord | ResolvedRecord;

export interface RestoreReport {
  mode: DnsRecord['mode'];
  /** what was changed back (false: nothing to do, or left alone; see `note`) */
  restored: boolean;
  note?: string;
}


/**
 * Writes `data` to `path` through a temporary file and a rename, so readers never see half a
 * file. A path that cannot be renamed over (a bind mount, as /etc/resolv.conf and /etc/hosts are
 * in containers) is written in place instead.
 */
function writeAtomic(path: string, data: string | Buffer, mode: number): void {
  const tmp = join(dirname(path), `.${basename(path)}.ktctl-${process.pid}.tmp`);
  try {
    writeFileSync(tmp, data, { mode });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' && code !== 'EXDEV' && code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw e;
    writeFileSync(path, data);
  }
}

function readOriginal(path: string): Original {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return { type: 'absent' };
  }
  if (st.isSymbolicLink()) return { type: 'symlink', target: readlinkSync(path) };
  return { type: 'file', data: readFileSync(path).toString('base64'), mode: st.mode & 0o7777 };
}

/** What is at `path` now, as bytes (undefined: absent or not a regular file). */
function currentFileBytes(path: string): Buffer | undefined {
  try {
    const st = lstatSync(path);
    if (!st.isFile()) return undefined;
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// resolv.conf mode (localDNS and podDNS)

export interface ResolvConfOptions {
  /** the file to rewrite (default /etc/resolv.conf) */
  path?: string;
  /** our DNS address (localDNS) or the cluster DNS service IP (podDNS) */
  nameserver: string;
  namespace: string;
  clusterDomain?: string;
  /** state directory (default that of src/tun/state.ts) */
  stateDir?: string;
}

export class ResolvConfChange {
  /** the machine's configuration before the change: its nameservers are the upstream */
  readonly original: ResolvConf;
  readonly path: string;
  readonly #record: StateRecordFile<ResolvConfRecord>;
  #restored: RestoreReport | undefined;

  private constructor(path: string, original: ResolvConf, record: StateRecordFile<ResolvConfRecord>) {
    this.path = path;
    this.original = original;
    this.#record = record;
  }

  /** Records the original, then rewrites the file. Throws DnsConfigError (nothing changed then). */
  static apply(options: ResolvConfOptions): ResolvConfChange {
    const path = options.path ?? DEFAULT_RESOLV_CONF;
    const original = readOriginal(path);
    if (readTextOrEmpty(path).startsWith(WRITTEN_MARK)) {
      // Taking this as "the original" would make ktctl its own upstream and lose the real one.
      throw new DnsConfigError(`${path} still holds what an earlier ktctl run wrote; run \`ktctl clean\` to restore it first`);
    }
    const conf = readResolvConf(path); // through a symlink, when there is one
    const text = composeResolvConf(conf, { nameserver: options.nameserver, namespace: options.namespace, clusterDomain: options.clusterDomain ?? 'cluster.local' });
    const written = Buffer.from(text);
    let record: StateRecordFile<ResolvConfRecord>;
    try {
      record = new StateRecordFile<ResolvConfRecord>(options.stateDir ?? defaultStateDir(), 'dns-', { ...newRecordBase('dns'), mode: 'resolv.conf', path, original, written: written.toString('base64') });
    } catch (e) {
      throw new DnsConfigError(`cannot write ktctl's undo record before changing ${path}: ${describe(e)}`, { cause: e });
    }
    try {
      // Renaming over a symlink replaces the link itself, never its target.
      writeAtomic(path, written, original.type === 'file' ? original.mode : 0o644);
    } catch (e) {
      record.remove();
      throw new DnsConfigError(`cannot rewrite ${path}: ${describe(e)}; run ktctl as root or use --dnsMode hosts`, { cause: e });
    }
    return new ResolvConfChange(path, conf, record);
  }

  /** Puts the original back (once; later calls return the first report). */
  restore(): RestoreReport {
    this.#restored ??= restoreResolvConf(this.#record.record);
    this.#record.remove();
    return this.#restored;
  }
}

function restoreResolvConf(rec: ResolvConfRecord): RestoreReport {
  const now = currentFileBytes(rec.path);
  const written = Buffer.from(rec.written, 'base64');
  if (now === undefined || !now.equals(written)) {
    // A crash between writing the record and writing the file leaves the original in place.
    if (rec.original.type === 'file' && now !== undefined && now.equals(Buffer.from(rec.original.data, 'base64'))) {
      return { mode: 'resolv.conf', restored: false, note: `${rec.path} still holds its original content` };
    }
    if (rec.original.type === 'symlink' && isSymlinkTo(rec.path, rec.original.target)) {
      return { mode: 'resolv.conf', restored: false, note: `${rec.path} is still its original symlink` };
    }
    return { mode: 'resolv.conf', restored: false, note: `${rec.path} was changed by someone else while ktctl ran; their version is kept (ktctl did not restore its original)` };
  }
  try {
    if (rec.original.type === 'file') {
      writeAtomic(rec.path, Buffer.from(rec.original.data, 'base64'), rec.original.mode);
    } else if (rec.original.type === 'symlink') {
      const tmp = join(dirname(rec.path), `.${basename(rec.path)}.ktctl-${process.pid}.lnk`);
      rmSync(tmp, { force: true });
      symlinkSync(rec.original.target, tmp);
      renameSync(tmp, rec.path);
    } else {
      unlinkSync(rec.path);
    }
  } catch (e) {
    throw new DnsConfigError(`cannot restore ${rec.path}: ${describe(e)}`, { cause: e });
  }
  return { mode: 'resolv.conf', restored: true };
}

function isSymlinkTo(path: string, target: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink() && readlinkSync(path) === target;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// systemd-resolved

export type CommandRunner = (cmd: string, args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** Runs a program (no shell); a missing program gives code 127. */
export const execRunner: CommandRunner = (cmd, args) =>
  new Promise((resolve) => {
    execFile(cmd, args, { timeout: 10_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      let code = 0;
      if (error) {
        const c = (error as NodeJS.ErrnoException).code;
        code = typeof error.code === 'number' ? error.code : c === 'ENOENT' ? 127 : 1;
        if (typeof error.code !== 'number') stderr += error.message;
      }
      resolve({ code, stdout, stderr });
    });
  });

/** True when systemd-resolved runs here: its runtime directory exists and `resolvectl status` works. */
export async function resolvedRunning(options: { runner?: CommandRunner; runDir?: string } = {}): Promise<boolean> {
  if (!existsSync(options.runDir ?? RESOLVED_RUN_DIR)) return false;
  const r = await (options.runner ?? execRunner)('resolvectl', ['status']);
  return r.code === 0;
}

export interface ResolvedOptions {
  /** the TUN link's name */
  link: string;
  /** the DNS address answered on that link */
  server: string;
  namespace: string;
  clusterDomain?: string;
  runner?: CommandRunner;
  stateDir?: string;
}

/** The `resolvectl` command lines that make `link` answer for the cluster's names. */
export function resolvedCommands(options: Pick<ResolvedOptions, 'link' | 'server' | 'namespace' | 'clusterDomain'>): string[][] {
  const d = (options.clusterDomain ?? 'cluster.local').replace(/\.+$/, '');
  return [
    ['dns', options.link, options.server],
    // Search domains (also routing domains) for `svc` and `svc.ns`; `~d` routes all of the cluster
    // domain here without adding it to the search list twice.
    ['domain', options.link, `${options.namespace}.svc.${d}`, `svc.${d}`, `~${d}`],
    // Other names keep going to the machine's own servers.
    ['default-route', options.link, 'false'],
  ];
}

export class ResolvedChange {
  readonly link: string;
  readonly #runner: CommandRunner;
  readonly #record: StateRecordFile<ResolvedRecord>;
  #reverted: Promise<RestoreReport> | undefined;

  private constructor(link: string, runner: CommandRunner, record: StateRecordFile<ResolvedRecord>) {
    this.link = link;
    this.#runner = runner;
    this.#record = record;
  }

  static async apply(options: ResolvedOptions): Promise<ResolvedChange> {
    const runner = options.runner ?? execRunner;
    const record = new StateRecordFile<ResolvedRecord>(options.stateDir ?? defaultStateDir(), 'dns-', { ...newRecordBase('dns'), mode: 'resolved', link: options.link });
    const change = new ResolvedChange(options.link, runner, record);
    const cmds = resolvedCommands(options);
    for (const [i, args] of cmds.entries()) {
      const r = await runner('resolvectl', args);
      // `default-route` needs systemd 246; older ones route by domain alone, which is what we want.
      if (r.code !== 0 && i < 2) {
        await change.revert();
        throw new DnsConfigError(`resolvectl ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
      }
    }
    return change;
  }

  revert(): Promise<RestoreReport> {
    this.#reverted ??= revertResolved(this.#record.record, this.#runner).finally(() => this.#record.remove());
    return this.#reverted;
  }
}

async function revertResolved(rec: ResolvedRecord, runner: CommandRunner): Promise<RestoreReport> {
  const r = await runner('resolvectl', ['revert', rec.link]);
  if (r.code === 0) return { mode: 'resolved', restored: true };
  // The link is gone with the TUN device: resolved forgot its settings with it.
  return { mode: 'resolved', restored: false, note: `resolvectl revert ${rec.link}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`} (the link is gone, so is its DNS setting)` };
}

// ---------------------------------------------------------------------------------------------
// hosts mode

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
   * Told about each service, address or name left out: `invalid` (not a DNS-1123 label, not an
   * address: the API server sent something no cluster has) or `taken`. The same cause gives the
   * same text on every call, so a caller can say each once.
   */
  onSkip?: (kind: 'invalid' | 'taken', message: string) => void;
}

/**
 * The hosts block for a list of Services: one line per cluster IP with `svc` (connected namespace
 * only), `svc.ns` and the FQDN; services without a cluster IP (headless, ExternalName) have none.
 * Sorted by namespace and name, so an unchanged list gives the same bytes. Services whose name or
 * namespace is not a DNS-1123 label, addresses that are not IPs, and names in `taken` are left out.
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

function removeHostsBlock(rec: HostsRecord): RestoreReport {
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

// ---------------------------------------------------------------------------------------------
// crash recovery

function parseRecord(r: Record<string, unknown>, base: RecordBase): DnsRecord | undefined {
  if (r.mode === 'resolv.conf' && typeof r.path === 'string' && typeof r.written === 'string' && typeof r.original === 'object' && r.original !== null) {
    const o = r.original as Record<string, unknown>;
    let original: Original;
    if (o.type === 'file' && typeof o.data === 'string') original = { type: 'file', data: o.data, mode: typeof o.mode === 'number' ? o.mode : 0o644 };
    else if (o.type === 'symlink' && typeof o.target === 'string') original = { type: 'symlink', target: o.target };
    else if (o.type === 'absent') original = { type: 'absent' };
    else return undefined;
    return { ...base, mode: 'resolv.conf', path: r.path, original, written: r.written };
  }
  if (r.mode === 'hosts' && typeof r.path === 'string' && typeof r.block === 'string' && typeof r.tag === 'string') {
    return { ...base, mode: 'hosts', path: r.path, original: typeof r.original === 'string' ? r.original : '', block: r.block, tag: r.tag };
  }
  if (r.mode === 'resolved' && typeof r.link === 'string') return { ...base, mode: 'resolved', link: r.link };
  return undefined;
}

export interface StoredDnsRecord {
  path: string;
  record: DnsRecord;
}

export function listDnsRecords(dir: string = defaultStateDir()): StoredDnsRecord[] {
  return listStateRecords(dir, 'dns-', 'dns', parseRecord);
}

export interface DnsCleanReport extends RestoreReport {
  record: DnsRecord;
}

/**
 * Undoes the DNS changes of ktctl processes that are gone (kill -9, power loss without tmpfs):
 * resolv.conf restored (if still ours), hosts block cut out, resolved link reverted. Records of
 * live processes are left alone. A record whose undo failed is kept for the next try.
 */
export async function cleanStaleDns(options: { dir?: string; runner?: CommandRunner } = {}): Promise<DnsCleanReport[]> {
  const reports: DnsCleanReport[] = [];
  for (const { path, record } of listDnsRecords(options.dir ?? defaultStateDir())) {
    if (recordOwnerAlive(record)) continue;
    let report: RestoreReport;
    try {
      if (record.mode === 'resolv.conf') report = restoreResolvConf(record);
      else if (record.mode === 'hosts') report = removeHostsBlock(record);
      else report = await revertResolved(record, options.runner ?? execRunner);
    } catch (e) {
      reports.push({ record, mode: record.mode, restored: false, note: `${describe(e)} (record kept: ${path})` });
      continue;
    }
    rmSync(path, { force: true });
    reports.push({ ...report, record });
  }
  return reports;
}
