import { Command, Option } from 'clipanion';
import type { KtctlObject } from '../kube/clean.js';
import { LABEL_ROLE } from '../kube/names.js';
import { describeError, KubeCommand } from './common/command.js';
import { useProfile } from '../kube/permissions.js';

export class StatusCommand extends KubeCommand {
  static override paths = [['status']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'what ktctl runs on this machine and what it has in the cluster',
    details: `
      Lists this machine's ktctl processes (from the state directory: \`$KTCTL_STATE_DIR\`, \`/run/ktctl\` for root,
      else \`~/.ktctl/state\`; a process that is gone is shown as stale) and the cluster's ktctl objects with
      their owner and heartbeat age (API server time).
    `,
    examples: [
      ['Show everything', '$0 status'],
      ['As JSON', '$0 status --json'],
    ],
  });

  json = Option.Boolean('--json', false, { description: 'print one JSON document' });
  override namespace = Option.String('--namespace,-n', { description: 'only this namespace (default: all namespaces you may list)' });

  async run(): Promise<number> {
    useProfile({ command: 'status', flags: {} }, (l) => this.debugLog(l));
    const [{ listKtctlObjects }, { openKube }, { listProcessRecords }, { netstackBounds }, { PROXY_BOUNDS }] = await Promise.all([
      import('../kube/clean.js'),
      import('../kube/session.js'),
      import('../kube/process-record.js'),
      import('../netstack/index.js'),
      import('../proxy/index.js'),
    ]);
    const processes = listProcessRecords().map((r) => ({ ...r.record, state: r.alive ? 'running' : 'stale' }));
    let objects: KtctlObject[] = [];
    let clusterError: string | undefined;
    let scope = '';
    try {
      const kube = openKube(this.kubeFlags());
      const listed = await listKtctlObjects(kube, this.namespace);
      objects = listed.objects;
      scope = listed.scope;
    } catch (error) {
      clusterError = describeError(error);
    }
    const out = this.context.stdout;
    if (this.json) {
      const cluster = objects.map((o) => ({
        kind: o.kind,
        namespace: o.namespace,
        name: o.name,
        role: o.labels[LABEL_ROLE] ?? null,
        owner: o.owner || null,
        heartbeatAgeSeconds: Math.round(o.ageMs / 1000),
      }));
      // the resource bounds every ktctl of this version keeps (README: the TUN engine's and the proxy's bounds)
      const bounds = { tun: netstackBounds(), proxy: PROXY_BOUNDS };
      out.write(`${JSON.stringify({ processes, cluster, clusterError: clusterError ?? null, bounds }, null, 2)}\n`);
      return 0;
    }
    out.write(`this machine (${processes.length} ktctl process${processes.length === 1 ? '' : 'es'}):\n`);
    for (const p of processes) {
      out.write(`  pid ${p.pid}  ${p.state}  ${p.mode}  context ${p.context}  namespace ${p.namespace}  shadow ${p.shadow || '-'}${p.proxy ? `  proxy ${p.proxy}` : ''}\n`);
    }
    if (clusterError) {
      out.write(`cluster: ${clusterError}\n`);
      return 0;
    }
    out.write(`cluster, ${scope} (${objects.length} ktctl object${objects.length === 1 ? '' : 's'}):\n`);
    for (const o of objects) {
      out.write(`  ${o.kind} ${o.namespace}/${o.name}  role ${o.labels[LABEL_ROLE] ?? '-'}  owner ${o.owner || '-'}  heartbeat ${Math.round(o.ageMs / 1000)} s ago\n`);
    }
    return 0;
  }
}
