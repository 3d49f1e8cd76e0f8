import { randomBytes } from 'node:crypto';
import { Command, Option } from 'clipanion';
import type { Kube } from '../kube/api.js';
import type { Heartbeat } from '../kube/heartbeat.js';
import { serveTransport } from './connect-transport.js';
import { ExposeCommand, serveExposedPorts } from './expose.js';

export class PreviewCommand extends ExposeCommand {
  static override paths = [['preview'], ['run']];

  static override usage = Command.Usage({
    description: 'publish a port on this machine as a new service in the cluster',
    details: `
      Makes a shadow pod and a new Service \`<name>\` that selects it; connections to the Service's ports come
      through the shadow and an ssh remote forward to \`127.0.0.1:LOCAL\` here. \`--expose LOCAL:REMOTE\` gives
      the Service port REMOTE (the shadow listens on it too). \`--external\` makes it a LoadBalancer.
      The Service must not exist yet. On SIGINT/SIGTERM the Service and the shadow are removed.
    `,
    examples: [
      ['A service "demo" in the cluster, port 80, served by a local server on 8080', '$0 preview demo --expose 8080:80'],
      ['The same as a LoadBalancer', '$0 run demo --expose 8080:80 --external'],
    ],
  });

  name = Option.String({ name: 'name' });
  external = Option.Boolean('--external', false, { description: 'make the Service a LoadBalancer (default ClusterIP)' });

  async run(): Promise<number> {
    const ports = this.exposedPorts();
    await this.checkLocal(ports);
    const [{ openKube }, access, { KubeForbiddenError }, target, preview, { Heartbeat }, names, { kubeTransport }] = await Promise.all([
      import('../kube/session.js'),
      import('../kube/access.js'),
      import('../kube/errors.js'),
      import('../kube/target.js'),
      import('../kube/preview.js'),
      import('../kube/heartbeat.js'),
      import('../kube/names.js'),
      import('./transport-kube.js'),
    ]);
    const name = target.parseTargetName(this.name).name;
    const backend = `${name.slice(0, 40)}-${randomBytes(4).toString('hex')}`;
    let kube!: Kube;
    let namespace = '';
    let heartbeat!: Heartbeat;
    return serveTransport({
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      prepare: async (ctx) => {
        kube = openKube({ kubeconfig: this.kubeconfig, context: this.kubeContext, namespace: this.namespace });
        namespace = kube.namespace;
        await kube.serverNow();
        const denied = await access.firstDenied(kube, access.NEEDS.preview, namespace);
        if (denied) throw new KubeForbiddenError(denied.verb, denied.resource, namespace);
        await preview.assertNoService(kube, namespace, name);
        heartbeat = new Heartbeat(kube, { debug: ctx.debug });
        ctx.undo.add('the heartbeat of the service', () => heartbeat.stop());
      },
      buildTransport: (ctx) =>
        kubeTransport(
          {
            ...this.transportOptions({
              role: 'preview',
              labels: { [names.LABEL_SERVICE]: name, [names.LABEL_BACKEND]: backend },
              mode: 'preview',
              ports: ports.map((p) => ({ containerPort: p.remote })),
              sysctls: ports.some((p) => p.remote < 1024) ? [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }] : undefined,
            }),
            namespace,
          },
          ctx,
        ),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, ports.map((p) => ({ local: p.local, listen: p.remote })), ctx.log, ctx.undo);
        await preview.createPreviewService(kube, {
          namespace,
          name,
          ports,
          selector: { [names.LABEL_BACKEND]: backend },
          external: this.external,
          labels: names.parseKeyValues(this.withLabel, '--withLabel'),
          annotations: names.parseKeyValues(this.withAnnotation, '--withAnnotation'),
          heartbeat: await kube.serverNow(),
          undo: ctx.undo,
          heartbeatOf: heartbeat,
        });
        heartbeat.start();
        ctx.undo.add('the heartbeat', () => heartbeat.stop());
        for (const p of ports) {
          this.context.stdout.write(`previewing service ${namespace}/${name} port ${p.remote} -> 127.0.0.1:${p.local}${this.external ? ' (LoadBalancer)' : ''}; Ctrl-C removes it\n`);
        }
      },
    });
  }
}
