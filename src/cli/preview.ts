import { Command, Option } from 'clipanion';
import { previewService } from '../connect/takeover.js';
import { ExposeCommand } from './common/expose.js';
import { useProfile } from '../kube/permissions.js';

export class PreviewCommand extends ExposeCommand {
  static override paths = [['preview'], ['run']];

  static override usage = Command.Usage({
    category: 'Take over a service\'s traffic',
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
    useProfile({ command: 'preview', flags: { shareShadow: this.shareShadow } }, (l) => this.debugLog(l));
    const ports = this.exposedPorts();
    const shadow = this.kubeTransportOptions({ role: 'preview', mode: 'preview', ports: ports.map((x) => ({ containerPort: x.remote })) });
    await this.checkLocal(ports);
    return previewService({ ...this.io(), stderr: this.context.stderr, flags: this.kubeFlags(), ports, shadow, name: this.name, external: this.external });
  }
}
