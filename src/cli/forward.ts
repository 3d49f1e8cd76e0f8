import { isIP } from 'node:net';
import { Command, Option } from 'clipanion';
import type { Dialer } from '../dialer.js';
import { UsageError } from '../errors.js';
import type { ClusterTarget } from '../kube/forward.js';
import { PortForwarder } from '../proxy/forward.js';
import { serveTransport } from '../connect/serve.js';
import { TransportCommand } from './common/transport.js';
import { urlHost } from '../ssh/via.js';

/** What the first argument names. */
export type ForwardTarget = ClusterTarget | { kind: 'host'; host: string; port?: number };

/** `[local:remote]`: the local port (0: any free one) and the remote port as a number or a name. */
export interface PortMapping {
  local?: number;
  remote?: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function portNumber(text: string, what: string, allowZero: boolean): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || n > 65535 || (n === 0 && !allowZero)) {
    throw new UsageError(`${what} must be a port number between ${allowZero ? 0 : 1} and 65535 (got "${text}")`);
  }
  return n;
}

/**
 * `svc`, `svc/NAME`, `service/NAME`, `pod/NAME`, `host:port`, `[v6]:port`, or an IP address or a
 * host name with a dot (the port then comes from `[local:remote]`).
 */
export function parseForwardTarget(text: string): ForwardTarget {
  const slash = /^(svc|service|services|pod|pods|po)\/(.+)$/.exec(text);
  if (slash) {
    const name = slash[2]!;
    if (!DNS_LABEL.test(name)) throw new UsageError(`"${name}" is not a Kubernetes object name (lower case letters, digits and '-')`);
    return { kind: slash[1]!.startsWith('po') ? 'pod' : 'service', name };
  }
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text);
  if (v6 && isIP(v6[1]!) === 6) return { kind: 'host', host: v6[1]!, port: portNumber(v6[2]!, `the port in ${text}`, false) };
  if (isIP(text) !== 0) return { kind: 'host', host: text };
  const hostPort = /^([A-Za-z0-9.-]+):(\d+)$/.exec(text);
  if (hostPort) return { kind: 'host', host: hostPort[1]!, port: portNumber(hostPort[2]!, `the port in ${text}`, false) };
  if (DNS_LABEL.test(text)) return { kind: 'service', name: text };
  if (/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(text)) return { kind: 'host', host: text };
  throw new UsageError(`cannot tell what "${text}" is: give a service (web or svc/web), pod/NAME, or host:port`);
}

/** `8080` (both sides), `8080:80`, `8080:http` (a port name), `0:80` or `0` (any free local port). */
export function parsePortMapping(text: string | undefined): PortMapping {
  if (text === undefined) return {};
  const m = /^([^:]+)(?::([^:]+))?$/.exec(text);
  if (!m) throw new UsageError(`the ports must look like 8080 or local:remote, e.g. 8080:80 (got "${text}")`);
  if (m[2] === undefined) {
    const port = portNumber(m[1]!, 'the port', true);
    // `0`: any free local port, to the target's only (or given) port.
    return port === 0 ? { local: 0 } : { local: port, remote: String(port) };
  }
  const local = portNumber(m[1]!, 'the local port', true);
  const remote = /^\d+$/.test(m[2]) ? String(portNumber(m[2], 'the remote port', false)) : m[2];
  if (!/^\d+$/.test(remote) && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(remote)) throw new UsageError(`the remote port must be a number or a port name (got "${remote}")`);
  return { local, remote };
}

export class ForwardCommand extends TransportCommand {
  static override paths = [['forward']];

  static override usage = Command.Usage({
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
  address = Option.String('--address,--listen', '127.0.0.1', { description: 'local address to listen on (default 127.0.0.1)' });

  async run(): Promise<number> {
    const target = parseForwardTarget(this.target);
    const mapping = parsePortMapping(this.ports);
    if (target.kind === 'host' && target.port !== undefined && mapping.remote !== undefined && this.ports?.includes(':')) {
      throw new UsageError(`${this.target} already names the remote port: give only the local one (ktctl forward ${this.target} 8080)`);
    }
    if (target.kind !== 'host' && this.via !== undefined) {
      throw new UsageError(`with --via there is no cluster to find ${target.kind} ${target.name} in: forward host:port instead`);
    }
    if (isIP(this.address) === 0 && this.address !== 'localhost') throw new UsageError(`--address must be an IP address of this machine (got "${this.address}")`);
    const buildTransport = this.transportBuilder({ mode: 'forward' });
    let forwarder: PortForwarder | undefined;
    let to = '';
    return serveTransport({
      buildTransport,
      stop: this.stop,
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // The target (looked up, nothing made), then the local port: a taken one fails before anything
      // is made in the cluster, and connections accepted meanwhile wait for the tunnel.
      prepare: async (ctx, dialer) => {
        const { host, port, label } = await this.#resolve(target, mapping);
        const local = mapping.local ?? port;
        forwarder = this.#forwarder(dialer, host, port, local);
        const a = await forwarder.listen();
        const bound = `${urlHost(a.address)}:${a.port}`;
        to = `${bound} -> ${urlHost(host)}:${port}${label ? ` (${label})` : ''}`;
        ctx.undo.add(`the listener on ${bound} and its connections`, () => forwarder?.close());
      },
      start: async (transport) => {
        this.context.stdout.write(`forwarding ${to} through ${transport.label}\n`);
        this.log('press Ctrl-C to stop');
      },
    });
  }

  #forwarder(dialer: Dialer, host: string, port: number, local: number): PortForwarder {
    return new PortForwarder({
      dialer,
      host: this.address,
      port: local,
      target: { host, port },
      portHint: `pick another local port, e.g. ktctl forward ${this.target} ${local < 65535 ? local + 1 : local - 1}:${port}`,
      onEvent: (e) => {
        if (e.type === 'dial-failed') this.log(`${e.client} -> ${e.target}: ${e.reason}; connection reset`);
        else if (e.type === 'connection') this.debugLog(`forward: ${e.client} -> ${e.target}`);
        else this.debugLog(`forward: ${e.client} -> ${e.target} closed${e.error ? ` (${e.error.message})` : ''}`);
      },
    });
  }

  /** The far-side address: looked up in the cluster for services and pods (nothing is made). */
  async #resolve(target: ForwardTarget, mapping: PortMapping): Promise<{ host: string; port: number; label?: string }> {
    if (target.kind === 'host') {
      const remote = target.port !== undefined ? String(target.port) : mapping.remote;
      if (remote === undefined) throw new UsageError(`${this.target} names no port: give one, e.g. ktctl forward ${this.target} 8080:80`);
      if (!/^\d+$/.test(remote)) throw new UsageError(`a port name (${remote}) works only for services and pods; give ${this.target} a port number`);
      const port = Number(remote);
      return { host: target.host, port };
    }
    const [{ openKube }, { resolveClusterTarget }] = await Promise.all([import('../kube/session.js'), import('../kube/forward.js')]);
    const kube = openKube(this.kubeFlags());
    return resolveClusterTarget(kube, kube.namespace, target, mapping.remote, this.clusterDomain);
  }
}
