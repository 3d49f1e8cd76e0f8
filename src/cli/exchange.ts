import { randomBytes } from 'node:crypto';
import { Command, Option } from 'clipanion';
import { TargetError, UsageError } from '../errors.js';
import type { V1Deployment } from '@kubernetes/client-node';
import type { Kube } from '../kube/api.js';
import type { Heartbeat } from '../kube/heartbeat.js';
import type { ExposedServicePort } from '../kube/target.js';
import { serveTransport } from './connect-transport.js';
import { ExposeCommand, serveExposedPorts } from './expose.js';

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
  mode = Option.String('--mode,-m', 'selector', { description: 'selector (default: point the service at the shadow) or scale (scale the deployment to 0)' });
  recoverWaitTime = Option.String('--recoverWaitTime,--recover-wait-time', '120', { description: 'seconds to wait on exit for the scaled-back replicas to be ready (scale mode)' });

  async run(): Promise<number> {
    const ports = this.exposedPorts();
    if (this.mode !== 'selector' && this.mode !== 'scale') throw new UsageError(`--mode must be selector or scale (got "${this.mode}")`);
    const mode = this.mode;
    const wait = Number(this.recoverWaitTime);
    if (!Number.isFinite(wait) || wait < 0) throw new UsageError(`--recoverWaitTime takes a number of seconds, 0 or more (got "${this.recoverWaitTime}")`);
    await this.checkLocal(ports);
    const [{ openKube }, access, { KubeForbiddenError }, target, { acquireLock }, { Heartbeat }, exchange, { takeOverSelector }, { Progress }, names, { kubeTransport }, { recoverService }] = await Promise.all([
      import('../kube/session.js'),
      import('../kube/access.js'),
      import('../kube/errors.js'),
      import('../kube/target.js'),
      import('../kube/lock.js'),
      import('../kube/heartbeat.js'),
      import('../kube/exchange.js'),
      import('../kube/selector.js'),
      import('../kube/progress.js'),
      import('../kube/names.js'),
      import('./transport-kube.js'),
      import('../kube/recover.js'),
    ]);
    let kube!: Kube;
    let namespace = '';
    let svc = '';
    let deployment: V1Deployment | undefined;
    let exposed: ExposedServicePort[] = [];
    let heartbeat!: Heartbeat;
    let labels: Record<string, string> = {};
    const backend = randomBytes(4).toString('hex');
    return serveTransport({
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // Everything that can refuse comes before the shadow: RBAC, the target, its ports, the lock.
      prepare: async (ctx) => {
        kube = openKube({ kubeconfig: this.kubeconfig, context: this.kubeContext, namespace: this.namespace });
        namespace = kube.namespace;
        await kube.serverNow();
        const denied = await access.firstDenied(kube, access.NEEDS.exchange, namespace);
        if (denied) throw new KubeForbiddenError(denied.verb, denied.resource, namespace);
        const found = await target.resolveTarget(kube, namespace, this.service);
        svc = found.service.metadata?.name ?? '';
        deployment = found.deployment;
        if (mode === 'scale' && !deployment) {
          const names2 = found.deployments.map((d) => d.metadata?.name ?? '');
          throw names2.length === 0
            ? new TargetError('not-found', `no deployment in namespace ${namespace} runs the pods service ${svc} selects, so --mode scale has nothing to scale: use --mode selector`)
            : new TargetError('ambiguous', `several deployments (${names2.join(', ')}) run the pods service ${svc} selects: name one with deploy/NAME for --mode scale, or use --mode selector`);
        }
        exposed = target.checkRemotePorts(found.service, ports, deployment ?? found.deployments[0]);
        heartbeat = new Heartbeat(kube, { debug: ctx.debug });
        ctx.undo.add('the heartbeat of the service', () => heartbeat.stop());
        const lock = await acquireLock(kube, { namespace, service: svc, role: 'exchange', undo: ctx.undo, heartbeat, log: ctx.log });
        heartbeat.start();
        if (lock.tookOverFrom.length > 0) {
          // What the dead owner changed goes back first, as `recover` would do it.
          await recoverService(kube, namespace, svc, { force: true, keepLock: true, log: (l) => ctx.log(`recover: ${l}`) });
        }
        labels =
          mode === 'scale' && deployment
            ? { ...exchange.standInLabels(deployment), [names.LABEL_SERVICE]: svc }
            : { [names.LABEL_SERVICE]: svc, [names.LABEL_BACKEND]: `${svc.slice(0, 40)}-${backend}` };
      },
      buildTransport: (ctx) =>
        kubeTransport(
          {
            ...this.transportOptions({
              role: 'exchange',
              labels,
              mode: `exchange ${mode}`,
              ports: exposed.map((p) => ({ name: p.portName, containerPort: p.listen })),
              sysctls: exposed.some((p) => p.listen < 1024) ? [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }] : undefined,
            }),
            namespace,
          },
          ctx,
        ),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, exposed, ctx.log, ctx.undo);
        if (mode === 'selector') {
          await takeOverSelector(kube, { namespace, name: svc, selector: { [names.LABEL_BACKEND]: labels[names.LABEL_BACKEND] ?? backend }, undo: ctx.undo, log: ctx.log });
        } else if (deployment) {
          const replicas = await exchange.scaleDownForExchange(kube, {
            namespace,
            deployment: deployment.metadata?.name ?? '',
            service: svc,
            undo: ctx.undo,
            heartbeat,
            log: ctx.log,
            recoverWaitMs: wait * 1000,
            progress: new Progress(this.context.stderr, ctx.log),
          });
          ctx.log(`scaled deployment ${namespace}/${deployment.metadata?.name ?? ''} from ${replicas} replica(s) to 0`);
        }
        // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
        ctx.undo.add('the heartbeat', () => heartbeat.stop());
        for (const p of exposed) {
          this.context.stdout.write(`exchanged service ${namespace}/${svc} port ${p.servicePort}${p.listen !== p.servicePort ? ` (pods' port ${p.listen})` : ''} -> 127.0.0.1:${p.local} (--mode ${mode}); Ctrl-C restores it\n`);
        }
      },
    });
  }
}
