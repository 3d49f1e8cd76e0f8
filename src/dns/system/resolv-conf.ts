/**
 * resolv.conf (`localDNS` and `podDNS` without systemd-resolved): its text, read and composed, and
 * `ResolvConfChange`: the file rewritten to `nameserver <ours>` with the machine's search domains
 * and options kept (cluster search domains in front), put back byte for byte only if it still holds
 * what ktctl wrote (someone else's change meanwhile is kept, and the report says so). A symlink
 * (resolvconf, a stale resolved stub) is replaced by a file and restored as the same symlink.
 */
import { lstatSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { DnsConfigError } from '../../errors.js';
import { defaultStateDir, newRecordBase, StateRecordFile } from '../../state-records.js';
import { currentFileBytes, describe, readOriginal, writeAtomic, type ResolvConfRecord, type RestoreReport } from './records.js';

export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';

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

export interface ResolvConfOptions {
  /** the file to rewrite (default /etc/resolv.conf) */
  path?: string;
  /** our DNS address (localDNS) or the cluster DNS service IP (podDNS) */
  nameserver: string;
  namespace: string;
  clusterDomain?: string;
  /** state directory (default: src/state-records.ts's defaultStateDir) */
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

export function restoreResolvConf(rec: ResolvConfRecord): RestoreReport {
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
