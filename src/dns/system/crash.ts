/**
 * After a crash: the DNS records of ktctl processes that are gone, read back and undone
 * (`ktctl clean` and the next `connect` call `cleanStaleDns`).
 */
import { rmSync } from 'node:fs';
import { defaultStateDir, listStateRecords, recordOwnerAlive } from '../../state-records.js';
import { removeHostsBlock } from './hosts.js';
import { describe, type DnsRecord, type Original, type RecordBase, type RestoreReport } from './records.js';
import { restoreResolvConf } from './resolv-conf.js';
import { execRunner, revertResolved, type CommandRunner } from './resolved.js';

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
