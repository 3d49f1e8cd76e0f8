import { Command, Option } from 'clipanion';
import { serveForward } from '../connect/forward.js';
import { UsageError } from '../errors.js';
import { parseForwardTarget, parsePortMapping } from './common/forward-args.js';
import { TransportCommand } from './common/transport.js';
import { listenAddress } from './common/validators.js';
import { useProfile } from '../kube/permissions.js';

export class ForwardCommand extends TransportCommand {
  static override paths = [['forward']];

  static override usage = Command.Usage({
    category: 'Reach the cluster',
    description: 'forward a local port to a service, a pod or any address the cluster reaches',
    details: `
      Listens on a local port (\`--address\`, default 127.0.0.1) and carries each connection through the
      tunnel: a shadow pod reached through the API server, or with \`--via\` any SSH server that allows TCP
      forwarding. The target is a Service (\`web\` or \`svc/web\`: its DNS name in the namespace of \`-n\`),
      a Pod (\`pod/NAME\`: its IP) or \`host:port\` (any address or name the far side reaches).

      The ports: \`8080\` is the same port on both sides, \`8080:80\` local 8080 to remote 80, \`8080:http\`
      names a service port, \`0:80\` (or \`0\`) takes any free local port. Without them a service's only port is used
      (several ports: name one). A remote port must be one of the service's ports.

      A connection whose far side refuses is reset, and the forward goes on. Runs until SIGINT/SIGTERM, then
      removes what it made (the shadow pod) and exits 0.
    `,
    examples: [
      ['Service web on local port 8080', '$0 forward web 8080:80 -n dev'],
      ['A pod\'s port 9090 on the same local port', '$0 forward pod/web-5d9c7 9090'],
      ['An address behind an OpenSSH bastion', '$0 forward 10.20.0.7:5432 15432 --via alice@bastion.example.test'],
    ],
  });

  target = Option.String({ name: 'svc|pod/NAME|host:port' });
  ports = Option.String({ name: 'local:remote', required: false });
  address = Option.String('--address,--listen', '127.0.0.1', { description: 'local address to listen on (default 127.0.0.1)', validator: listenAddress });

  async run(): Promise<number> {
    useProfile({ command: 'forward', flags: { shareShadow: this.shareShadow } }, (l) => this.debugLog(l));
    const target = parseForwardTarget(this.target);
    const mapping = parsePortMapping(this.ports);
    if (target.kind === 'host' && target.port !== undefined && mapping.remote !== undefined && this.ports?.includes(':')) {
      throw new UsageError(`${this.target} already names the remote port: give only the local one (ktctl forward ${this.target} 8080)`);
    }
    if (target.kind !== 'host' && this.via !== undefined) {
      throw new UsageError(`with --via there is no cluster to find ${target.kind} ${target.name} in: forward host:port instead`);
    }
    return serveForward({
      ...this.io(),
      text: this.target, target, mapping, address: this.address, kube: this.kubeFlags(), clusterDomain: this.clusterDomain,
      buildTransport: this.transportBuilder({ mode: 'forward' }), via: this.via !== undefined,
    });
  }
}
