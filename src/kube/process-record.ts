/**
 * This machine's running ktctl processes, for `ktctl status`: each `connect` writes a small record
 * (pid, mode, namespace, shadow, proxy) into the state directory and removes it on exit. A record
 * whose process is gone (kill -9) is shown as stale and removed by `ktctl clean`.
 *
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultStateDir, processStartTime, recordOwnerAlive, StateRecordFile } from '../state-records.js';

export interface ProcessRecord {
  version: 1;
  kind: 'connect';
  pid: number;
  pidStart: string | null;
  startedAt: string;
  mode: string;
  context: string;
  namespace: string;
  /** the shadow pod, or the --via target */
  shadow: string;
  /** host:port of the proxy (socks mode) */
  proxy?: string;
}

export interface StoredProcessRecord {
  path: string;
  record: ProcessRecord;
  alive: boolean;
}

/** Writes this process's record (`connect-<pid>.json`); update it with `update`, remove it on exit. */
export function writeProcessRecord(
  fields: Omit<ProcessRecord, 'version' | 'kind' | 'pid' | 'pidStart' | 'startedAt'>,
  dir: string = defaultStateDir(),
): StateRecordFile<ProcessRecord> {
  const record: ProcessRecord = {
    version: 1,
    kind: 'connect',
    pid: process.pid,
    pidStart: processStartTime(process.pid),
    startedAt: new Date().toISOString(),
    ...fields,
  };
  return new StateRecordFile(dir, 'connect-', record, { path: join(dir, `connect-${process.pid}.json`) });
}

export function listProcessRecords(dir: string = defaultStateDir()): StoredProcessRecord[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: StoredProcessRecord[] = [];
  for (const n of names) {
    if (!n.startsWith('connect-') || !n.endsWith('.json')) continue;
    const path = join(dir, n);
    try {
      const record = JSON.parse(readFileSync(path, 'utf8')) as ProcessRecord;
      if (record.version !== 1 || record.kind !== 'connect' || typeof record.pid !== 'number') continue;
      out.push({ path, record, alive: recordOwnerAlive(record) });
    } catch {
      /* removed meanwhile, or not ours */
    }
  }
  return out.sort((a, b) => a.record.pid - b.record.pid);
}

/** Removes the records of processes that are gone; returns them. */
export function removeStaleProcessRecords(dir: string = defaultStateDir()): ProcessRecord[] {
  const gone: ProcessRecord[] = [];
  for (const r of listProcessRecords(dir)) {
    if (r.alive) continue;
    rmSync(r.path, { force: true });
    gone.push(r.record);
  }
  return gone;
}

