/**
 * systemd-resolved: when it runs, per-link DNS server and routing domains on the TUN link
 * (`resolvectl dns|domain|default-route`), reverted with `resolvectl revert`; resolv.conf is not
 * touched.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { DnsConfigError } from '../../errors.js';
import { defaultStateDir, newRecordBase, StateRecordFile } from '../../state-records.js';
import { type ResolvedRecord, type RestoreReport } from './records.js';

export const RESOLVED_RUN_DIR = '/run/systemd/resolve';

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

export async function revertResolved(rec: ResolvedRecord, runner: CommandRunner): Promise<RestoreReport> {
  const r = await runner('resolvectl', ['revert', rec.link]);
  if (r.code === 0) return { mode: 'resolved', restored: true };
  // The link is gone with the TUN device: resolved forgot its settings with it.
  return { mode: 'resolved', restored: false, note: `resolvectl revert ${rec.link}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`} (the link is gone, so is its DNS setting)` };
}
