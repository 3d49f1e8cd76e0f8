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
 * State directory: `$KTCTL_STATE_DIR` when set; otherwise `/run/ktctl` for root (tmpfs: a reboot
 * removes devices and records alike) and `~/.ktctl/state` for other users.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, tryParseCidr, type Cidr } from './cidr.js';
import { deleteLink, deleteRoutes, linkInfo } from './ip.js';

export interface TunRecord extends StateRecordBase<'tun'> {
  device: string;
  addresses: string[];
  routes: string[];
}

export function defaultStateDir(): string {
  const env = process.env.KTCTL_STATE_DIR;
  if (env) return env;
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/run/ktctl';
  return join(homedir(), '.ktctl', 'state');
}

/** Start time of a process (clock ticks since boot), or null when it does not exist. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

/** True when the process that wrote `rec` still runs (same pid, same start time). */
export function recordOwnerAlive(rec: Pick<TunRecord, 'pid' | 'pidStart'>): boolean {
  const start = processStartTime(rec.pid);
  if (start === null) return false;
  return rec.pidStart === null || rec.pidStart === start;
}

function writeAtomic(path: string, data: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, path);
}

/** The record of this process's device; keep it current with `update` before each change. */
export class TunStateRecord {
  readonly dir: string;
  #path: string;
  #rec: TunRecord;
  #removed = false;

  private constructor(dir: string, rec: TunRecord) {
    this.dir = dir;
    this.#rec = rec;
    this.#path = join(dir, `tun-${rec.pid}-${Date.now().toString(36)}.json`);
  }

  /** Writes a new record before the device is created (`device` may still be a `kt%d` pattern). */
  static create(device: string, options: { dir?: string } = {}): TunStateRecord {
    const dir = options.dir ?? defaultStateDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const r = new TunStateRecord(dir, {
      version: 1,
      kind: 'tun',
      pid: process.pid,
      pidStart: processStartTime(process.pid),
      createdAt: new Date().toISOString(),
      device,
      addresses: [],
      routes: [],
    });
    r.#write();
    return r;
  }

  get path(): string {
    return this.#path;
  }

  get record(): Readonly<TunRecord> {
    return this.#rec;
  }

  /** Records a change before it is made (e.g. the routes about to be added). */
  update(patch: Partial<Pick<TunRecord, 'device' | 'addresses' | 'routes'>>): void {
    if (this.#removed) return;
    this.#rec = { ...this.#rec, ...patch };
    this.#write();
  }

  /** Clean exit: everything recorded has been undone. Idempotent. */
  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    rmSync(this.#path, { force: true });
  }

  #write(): void {
    writeAtomic(this.#path, `${JSON.stringify(this.#rec, null, 2)}\n`);
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

/** What every state record starts with: whose it is (pid and its start time) and since when. */
export interface StateRecordBase<K extends string> {
  version: 1;
  kind: K;
  pid: number;
  /** field 22 of /proc/PID/stat: tells a reused pid from the original process */
  pidStart: string | null;
  createdAt: string;
}

/**
 * The records named `<prefix>*.json` in a state directory whose `kind` is `kind`: each file's JSON
 * and common fields are read here, the rest by `parse` (unreadable and malformed files are
 * skipped). Shared by the TUN records here and the DNS records of src/dns.
 */
export function listStateRecords<K extends string, T>(
  dir: string,
  prefix: string,
  kind: K,
  parse: (fields: Record<string, unknown>, base: StateRecordBase<K>) => T | undefined,
): Array<{ path: string; record: T }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: Array<{ path: string; record: T }> = [];
  for (const n of names) {
    if (!n.startsWith(prefix) || !n.endsWith('.json')) continue;
    const path = join(dir, n);
    let v: unknown;
    try {
      v = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      continue; // removed meanwhile, or not JSON
    }
    if (typeof v !== 'object' || v === null) continue;
    const r = v as Record<string, unknown>;
    if (r.kind !== kind || typeof r.pid !== 'number') continue;
    const base: StateRecordBase<K> = { version: 1, kind, pid: r.pid, pidStart: typeof r.pidStart === 'string' ? r.pidStart : null, createdAt: typeof r.createdAt === 'string' ? r.createdAt : '' };
    const rec = parse(r, base);
    if (rec) out.push({ path, record: rec });
  }
  return out;
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
