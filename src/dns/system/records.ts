/**
 * What the DNS changes record before they are made (one JSON file each in the state directory,
 * `dns-<pid>-<stamp>.json`, holding the original bytes), the report of an undo, and the file
 * operations the three mechanisms share (whole-file writes, the original as it was).
 */
import { basename, dirname, join } from 'node:path';
import { closeSync, existsSync, ftruncateSync, lstatSync, openSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import type { StateRecordBase } from '../../state-records.js';

export type Original = { type: 'file'; data: string; mode: number } | { type: 'symlink'; target: string } | { type: 'absent' };

export type RecordBase = StateRecordBase<'dns'>;

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
 * in containers and in `ip netns exec`) is written in place instead: the new bytes over the old in
 * one write, then cut to length, so a reader in between never finds the file empty (as it would
 * after a truncate-then-write), at worst a moment's tail of the old content.
 */
export function writeAtomic(path: string, data: string | Buffer, mode: number): void {
  const tmp = join(dirname(path), `.${basename(path)}.ktctl-${process.pid}.tmp`);
  try {
    writeFileSync(tmp, data, { mode });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EBUSY' && code !== 'EXDEV' && code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw e;
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    if (!existsSync(path)) {
      writeFileSync(path, bytes, { mode });
      return;
    }
    const fd = openSync(path, 'r+');
    try {
      writeSync(fd, bytes, 0, bytes.length, 0);
      ftruncateSync(fd, bytes.length);
    } finally {
      closeSync(fd);
    }
  }
}

export function readOriginal(path: string): Original {
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
export function currentFileBytes(path: string): Buffer | undefined {
  try {
    const st = lstatSync(path);
    if (!st.isFile()) return undefined;
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

export function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
