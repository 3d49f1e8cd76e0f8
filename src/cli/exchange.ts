import { Command, Option } from 'clipanion';
import type { ServiceTakeover } from '../kube/takeover.js';
import { serveTransport } from '../connect/serve.js';
import { kubeTransport } from '../connect/transports.js';
import { serveExposedPorts } from '../connect/expose.js';
import { ExposeCommand } from './common/expose.js';
import { duration, oneOf } from './common/validators.js';

export class ExchangeCommand extends ExposeCommand {
  static override paths = [['exchange']];

  static override usage = Command.Usage({
    description: 'send the traffic of a cluster service to a port on this machine',
    details: `
      A shadow pod takes the place of the service's pods; every connection the cluster makes to the service's
      exposed ports comes through the shadow and an ssh remote forward to \`127.0.0.1:LOCAL\` here.

      \`--mode selector\` (default) points the service's selector at the shadow (the original is kept in the
      annotation \`ktctl/original-selector\`); \`--mode scale\` gives the shadow the pod labels of the deployment
      behind the service and scales that deployment to 0 (\`ktctl/original-replicas\`). On SIGINT/SIGTERM the
      service is restored (scale mode waits up to \`--recoverWaitTime\` seconds for the replicas to be ready)
      and the shadow removed. The service is locked meanwhile: a second exchange fails naming the owner.
      After a crash, \`ktctl recover <svc>\` (or \`ktctl clean\`) restores it.

      The remote port of \`--expose LOCAL:REMOTE\` is one of the service's ports (or a numeric targetPort).
    `,
    examples: [
      ['The service web\'s port 80 goes to a local server on 8080', '$0 exchange web --expose 8080:80'],
      ['Scale the deployment down instead of changing the selector', '$0 exchange deploy/web --expose 8080:80 --mode scale'],
    ],
  });

  service = Option.String({ name: 'svc|svc/NAME|deploy/NAME' });
  mode = Option.String('--mode,-m', 'selector', { description: 'selector (default: point the service at the shadow) or scale (scale the deployment to 0)', validator: oneOf('--mode', ['selector', 'scale']) });
  recoverWaitTime = Option.String('--recoverWaitTime,--recover-wait-time', '120', {
    description: 'seconds to wait on exit for the scaled-back replicas to be ready (scale mode)',
    validator: duration('--recoverWaitTime', { unit: 'seconds', zero: true }),
  });

  async run(): Promise<number> {
    const ports = this.exposedPorts();
    const mode = this.mode;
    const wait = this.recoverWaitTime;
    const shadow = this.kubeTransportOptions({ role: 'exchange', mode: `exchange ${mode}` });
    await this.checkLocal(ports);
    const k = await import('../kube/takeover.js');
    let t!: ServiceTakeover;
    let labels: Record<string, string> = {};
    return serveTransport({
      stop: this.stop,
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // Everything that can refuse comes before the shadow: RBAC, the target, its ports, the lock.
      prepare: async (ctx) => {
        t = await k.prepareServiceTakeover({ ...ctx, flags: this.kubeFlags(), role: 'exchange', target: this.service, expose: ports, check: mode === 'scale' ? k.requireDeployment : undefined });
        labels = k.exchangeLabels(t, mode);
      },
      buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...labels }, ports: k.shadowPorts(t.exposed) }, ctx),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo);
        await k.divertService(t, { ...ctx, mode, labels, recoverWaitMs: wait * 1000, stderr: this.context.stderr });
        // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
        ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
        for (const p of t.exposed) {
          this.context.stdout.write(`exchanged service ${t.namespace}/${t.service} port ${p.servicePort}${p.listen !== p.servicePort ? ` (pods' port ${p.listen})` : ''} -> 127.0.0.1:${p.local} (--mode ${mode}); Ctrl-C restores it\n`);
        }
      },
    });
  }
}
