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

      Each running session (connect, forward, exchange, mesh, preview) answers on its control socket in the state
      directory (\`ctl-<pid>.sock\`, mode 0600): flows open, bytes in and out with the rates of the last second, DNS
      queries and answers, reconnects, the tunnel's round trip, its shadow or --via server, and since when it runs.
      A socket left behind by a crash is removed.
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
    const [{ listKtctlObjects }, { openKube }, { listProcessRecords }, { netstackBounds }, { PROXY_BOUNDS }, { listSessions }, { describeFigures }] = await Promise.all([
      import('../kube/clean.js'),
      import('../kube/session.js'),
      import('../kube/process-record.js'),
      import('../netstack/index.js'),
      import('../proxy/index.js'),
      import('../control/socket.js'),
      import('../control/describe.js'),
    ]);
    const processes = listProcessRecords().map((r) => ({ ...r.record, state: r.alive ? 'running' : 'stale' }));
    const sessions = await listSessions();
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
      const live = sessions.map((s) => ('figures' in s ? s.figures : { pid: s.pid, error: s.error }));
      out.write(`${JSON.stringify({ processes, sessions: live, cluster, clusterError: clusterError ?? null, bounds }, null, 2)}\n`);
      return 0;
    }
    out.write(`this machine (${processes.length} ktctl process${processes.length === 1 ? '' : 'es'}):\n`);
    for (const p of processes) {
      out.write(`  pid ${p.pid}  ${p.state}  ${p.mode}  context ${p.context}  namespace ${p.namespace}  shadow ${p.shadow || '-'}${p.proxy ? `  proxy ${p.proxy}` : ''}\n`);
    }
    out.write(`live figures (${sessions.length} session${sessions.length === 1 ? '' : 's'}):\n`);
    for (const s of sessions) {
      if ('error' in s) out.write(`  pid ${s.pid}  ${s.error}\n`);
      else for (const line of describeFigures(s.figures)) out.write(`  ${line}\n`);
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
