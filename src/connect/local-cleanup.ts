/**
 * This machine's leftovers of crashed runs (kill -9, power loss without tmpfs): TUN devices and
 * routes that outlived their process, and DNS changes (resolv.conf, /etc/hosts block,
 * systemd-resolved link settings). Records of running ktctl processes are left alone. Run by the
 * TUN session at its start and by `ktctl clean`.
 */
import { cleanStaleDns } from '../dns/index.js';
import { cleanStale } from '../tun/device-record.js';
import type { Logger } from '../undo.js';

/** Removes what dead ktctl processes left on this machine; returns how many records it handled. */
export async function cleanLocalLeftovers(log: Logger, options: { stateDir?: string } = {}): Promise<number> {
  let n = 0;
  const dir = options.stateDir;
  for (const r of await cleanStale(dir !== undefined ? { dir } : {})) {
    n++;
    const what: string[] = [];
    if (r.removedRoutes.length > 0) what.push(`routes ${r.removedRoutes.join(', ')}`);
    if (r.removedDevice) what.push(`device ${r.record.device}`);
    log(`cleaned up after ktctl process ${r.record.pid} (gone): ${what.length > 0 ? what.join(', ') : `nothing left in the kernel${r.note ? ` (${r.note})` : ''}`}`);
  }
  for (const r of await cleanStaleDns(dir !== undefined ? { dir } : {})) {
    n++;
    const where = r.record.mode === 'resolved' ? `systemd-resolved settings of ${r.record.link}` : r.record.path;
    log(`cleaned up after ktctl process ${r.record.pid} (gone): ${r.restored ? `restored ${where}` : `${where}: ${r.note ?? 'nothing to restore'}`}`);
  }
  return n;
}
