import { Command, Option } from 'clipanion';
import type { PreviewTarget } from '../kube/takeover.js';
import { serveTransport } from '../connect/serve.js';
import { kubeTransport } from '../connect/transports.js';
import { serveExposedPorts } from '../connect/expose.js';
import { ExposeCommand } from './common/expose.js';

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
    const shadow = this.kubeTransportOptions({ role: 'preview', mode: 'preview', ports: ports.map((x) => ({ containerPort: x.remote })) });
    await this.checkLocal(ports);
    const k = await import('../kube/takeover.js');
    let p!: PreviewTarget;
    return serveTransport({
      stop: this.stop,
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      prepare: async (ctx) => {
        p = await k.preparePreview({ ...ctx, flags: this.kubeFlags(), name: this.name });
      },
      buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...k.previewLabels(p) } }, ctx),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, ports.map((x) => ({ local: x.local, listen: x.remote })), ctx.log, ctx.undo);
        await k.publishPreview(p, { ...ctx, labels: shadow.labels, annotations: shadow.annotations, ports, external: this.external });
        for (const x of ports) {
          this.context.stdout.write(`previewing service ${p.namespace}/${p.name} port ${x.remote} -> 127.0.0.1:${x.local}${this.external ? ' (LoadBalancer)' : ''}; Ctrl-C removes it\n`);
        }
      },
    });
  }
}
