import { Command, Option } from 'clipanion';
import { STALE_AFTER_MINUTES } from '../kube/names.js';
import { KubeCommand } from './common/command.js';
import { duration } from './common/validators.js';
import { cleanLocalLeftovers } from '../connect/local-cleanup.js';
import { useProfile } from '../kube/permissions.js';
import { UsageError } from '../errors.js';

export class CleanCommand extends KubeCommand {
  static override paths = [['clean']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'remove what crashed ktctl runs left in the cluster',
    details: `
      Deletes the objects ktctl made (label \`app.kubernetes.io/managed-by=ktctl\`) whose \`ktctl/heartbeat\` is
      older than the threshold, and restores objects ktctl changed in place (replicas, selectors) from their
      \`ktctl/original-*\` annotations. Ages are measured with the API server's clock, never this machine's.
      Objects of a ktctl process that still runs on this machine are kept whatever their age.

      Without \`-n\` it looks in every namespace you may list, else in the current one. On this machine it
      also removes the TUN devices, routes and DNS changes of ktctl processes that died (kill -9, a crash).
    `,
    examples: [
      ['See what would be removed', '$0 clean --dryRun'],
      ['Remove leftovers at once (also fresh ones) in one namespace', '$0 clean --thresholdInMinus 0 -n dev'],
    ],
  });

  thresholdInMinus = Option.String('--thresholdInMinus,--threshold-in-minus,--threshold-in-minutes,--thresholdInMinutes', String(STALE_AFTER_MINUTES), {
    description: `minutes since the last heartbeat after which an object is a leftover (default ${STALE_AFTER_MINUTES})`,
    validator: duration('--thresholdInMinus', { unit: 'minutes', zero: true }),
  });
  dryRun = Option.Boolean('--dryRun,--dry-run', false, { description: 'list what would be removed or restored, change nothing' });
  localOnly = Option.Boolean('--localOnly,--local-only', false, { description: 'only this machine: TUN devices, routes and DNS changes of ktctl processes that died; nothing in the cluster' });
  override namespace = Option.String('--namespace,-n', { description: 'only this namespace (default: all namespaces you may list)' });

  async run(): Promise<number> {
    useProfile({ command: 'clean', flags: {} }, (l) => this.debugLog(l));
    const minutes = this.thresholdInMinus;
    const out = (line: string): void => {
      this.context.stdout.write(`${line}\n`);
    };
    // This machine first: TUN devices, routes and DNS changes of ktctl processes that died (they
    // need no cluster, and a broken kubeconfig must not keep resolv.conf rewritten).
    if (this.localOnly) {
      // KT Connect's clean --localOnly (pkg/kt/command/clean.go `Clean`): the cluster is not asked at all
      if (this.dryRun) throw new UsageError('--localOnly has no dry run: it removes only what dead ktctl processes left on this machine (ktctl status lists them as stale)');
      const n = await cleanLocalLeftovers(out);
      const { removeStaleProcessRecords } = await import('../kube/process-record.js');
      const records = removeStaleProcessRecords();
      for (const r of records) out(`removed the local record of ktctl process ${r.pid} (no longer running)`);
      if (n + records.length === 0) out('nothing to clean on this machine');
      return 0;
    }
    if (!this.dryRun) await cleanLocalLeftovers(out);
    const [{ cleanStale }, { openKube }, { removeStaleProcessRecords }, { preflight }] = await Promise.all([
      import('../kube/clean.js'),
      import('../kube/session.js'),
      import('../kube/process-record.js'),
      import('../kube/access.js'),
    ]);
    const kube = openKube(this.kubeFlags());
    // what clean deletes and restores, asked before the first change (a dry run only lists)
    if (!this.dryRun) await preflight(kube, out);
    const actions = await cleanStale(kube, { thresholdMinutes: minutes, dryRun: this.dryRun, namespace: this.namespace, log: out });
    if (!this.dryRun) {
      for (const r of removeStaleProcessRecords()) out(`removed the local record of ktctl process ${r.pid} (no longer running)`);
    }
    const failed = actions.filter((a) => a.error !== undefined).length;
    if (actions.length === 0) out(`nothing to clean (no ktctl object older than ${minutes} min)`);
    return failed > 0 ? 1 : 0;
  }
}
