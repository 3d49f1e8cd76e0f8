/**
 * The state directory: small JSON records of what a ktctl process changed on this machine (its TUN
 * device and routes, its DNS changes, the process itself for `ktctl status`), written before each
 * change and removed on a clean exit, so that the next start or `ktctl clean` can undo what a
 * process killed with -9 left. Each record says whose it is: the pid and that pid's start time,
 * which tells a reused pid from the original process.
 *
 * The directory: `$KTCTL_STATE_DIR` when set; otherwise `/run/ktctl` for root (tmpfs: a reboot
 * removes devices and records alike) and `~/.ktctl/state` for other users.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

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

/** True when the process that wrote a record still runs (same pid, same start time). */
export function recordOwnerAlive(rec: { pid: number; pidStart: string | null }): boolean {
  const start = processStartTime(rec.pid);
  if (start === null) return false;
  return rec.pidStart === null || rec.pidStart === start;
}

/** Writes a file readable by its owner only, whole or not at all (a temporary file renamed over it). */
export function writeStateFile(path: string, data: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
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

/** The common fields of a new record of this process. */
export function newRecordBase<K extends string>(kind: K): StateRecordBase<K> {
  return { version: 1, kind, pid: process.pid, pidStart: processStartTime(process.pid), createdAt: new Date().toISOString() };
}

/**
 * One record of this process, on disk from the moment it is made: `update` before each further
 * change, `remove` once everything it describes has been undone (idempotent; updates after it are
 * ignored). The file is `<prefix><pid>-<unique>.json` in `dir`, or exactly `options.path`.
 */
export class StateRecordFile<R extends object> {
  readonly dir: string;
  readonly path: string;
  #rec: R;
  #removed = false;

  constructor(dir: string, prefix: string, rec: R, options: { path?: string } = {}) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.dir = dir;
    this.path = options.path ?? join(dir, `${prefix}${process.pid}-${Date.now().toString(36)}${randomBytes(2).toString('hex')}.json`);
    this.#rec = rec;
    this.#write();
  }

  get record(): Readonly<R> {
    return this.#rec;
  }

  update(patch: Partial<R>): void {
    if (this.#removed) return;
    this.#rec = { ...this.#rec, ...patch };
    this.#write();
  }

  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    rmSync(this.path, { force: true });
  }

  #write(): void {
    writeStateFile(this.path, `${JSON.stringify(this.#rec, null, 2)}\n`);
  }
}

/**
 * The records named `<prefix>*.json` in a state directory whose `kind` is `kind`: each file's JSON
 * and common fields are read here, the rest by `parse` (unreadable and malformed files are
 * skipped).
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
