/**
 * Crash recovery for the TUN device and its routes.
 *
 * Before ktctl creates a device or adds a route it writes a record (device name, routes,
 * addresses, its pid and the pid's start time) to the state directory; it updates the record
 * before every further change and removes it on a clean exit. `cleanStale()` (run by the next
 * start and by `ktctl clean`) undoes what the records of dead processes describe.
 *
 * What really remains after `kill -9` (checked by test/tun-state.test.ts): the device is
 * non-persistent and its fd is O_CLOEXEC, so the kernel removes the interface when the process
 * dies, and with it its addresses and every route through it. Nothing is left in the kernel; the
 * record itself is the leftover. The device survives only when it was made persistent or its fd
 * outlived the process (passed to another process): then `cleanStale` deletes the routes and the
 * interface, provided the interface is still a TUN device (a different interface that took the
 * name meanwhile is left alone).
 *
 * The state directory and the record files are src/state-records.ts's, shared with the DNS changes and
 * the process records.
 */
import { rmSync } from 'node:fs';
import { defaultStateDir, listStateRecords, newRecordBase, recordOwnerAlive, StateRecordFile, type StateRecordBase } from '../state-records.js';
import { formatCidr, tryParseCidr, type Cidr } from './cidr.js';
import { deleteLink, deleteRoutes, linkInfo } from './ip.js';

export interface TunRecord extends StateRecordBase<'tun'> {
  device: string;
  addresses: string[];
  routes: string[];
}

/** The record of this process's device; keep it current with `update` before each change. */
export class TunStateRecord extends StateRecordFile<TunRecord> {
  /** Writes a new record before the device is created (`device` may still be a `kt%d` pattern). */
  static create(device: string, options: { dir?: string } = {}): TunStateRecord {
    return new TunStateRecord(options.dir ?? defaultStateDir(), 'tun-', { ...newRecordBase('tun'), device, addresses: [], routes: [] });
  }
}

function parseRecord(r: Record<string, unknown>, base: StateRecordBase<'tun'>): TunRecord | undefined {
  if (typeof r.device !== 'string') return undefined;
  const strings = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : []);
  return { ...base, device: r.device, addresses: strings(r.addresses), routes: strings(r.routes) };
}

export interface StoredRecord {
  path: string;
  record: TunRecord;
}

/** All TUN records in the state directory. */
export function listRecords(dir: string = defaultStateDir()): StoredRecord[] {
  return listStateRecords(dir, 'tun-', 'tun', parseRecord);
}

export interface CleanReport {
  record: TunRecord;
  /** the interface still existed and was deleted */
  removedDevice: boolean;
  /** routes that still existed and were deleted */
  removedRoutes: string[];
  /** why something was left alone */
  note?: string;
}

/**
 * Undoes the records of processes that are gone: routes through the device and the device
 * itself when they survived, then the record. Records of live processes are not touched.
 */
export async function cleanStale(options: { dir?: string } = {}): Promise<CleanReport[]> {
  const reports: CleanReport[] = [];
  for (const { path, record } of listRecords(options.dir ?? defaultStateDir())) {
    if (recordOwnerAlive(record)) continue;
    const report: CleanReport = { record, removedDevice: false, removedRoutes: [] };
    const dev = record.device;
    if (!dev.includes('%')) {
      const info = await linkInfo(dev);
      if (info.exists && info.kind === 'tun') {
        const routes = record.routes.map((r) => tryParseCidr(r)).filter((c): c is Cidr => c !== undefined);
        const removed = await deleteRoutes(dev, routes);
        report.removedRoutes = removed.map((c) => formatCidr(c));
        report.removedDevice = await deleteLink(dev);
      } else if (info.exists) {
        report.note = `${dev} exists but is a ${info.kind ?? 'non-TUN'} interface now: left alone`;
      }
    }
    rmSync(path, { force: true });
    reports.push(report);
  }
  return reports;
}
