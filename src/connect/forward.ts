/**
 * `ktctl forward`: a local listener whose connections go through the tunnel to one far address.
 * The target is looked up first (nothing made), then the local port is bound: a taken one fails
 * before anything is made in the cluster, and connections accepted meanwhile wait for the tunnel.
 */
import type { Dialer } from '../dialer.js';
import { UsageError } from '../errors.js';
import type { ClusterTarget } from '../kube/forward.js';
import type { KubeFlags } from '../kube/session.js';
import { PortForwarder } from '../proxy/forward.js';
import { urlHost } from '../ssh/via.js';
import type { TransportBuilder } from '../transport.js';
import { serveTransport, type CommandIo } from './serve.js';

/** What the first argument names. */
export type ForwardTarget = ClusterTarget | { kind: 'host'; host: string; port?: number };

/** `[local:remote]`: the local port (0: any free one) and the remote port as a number or a name. */
export interface PortMapping {
  local?: number;
  remote?: string;
}

export interface ForwardOptions extends CommandIo {
  /** the target as the user wrote it, for messages */
  text: string;
  target: ForwardTarget;
  mapping: PortMapping;
  /** `--address` */
  address: string;
  kube: KubeFlags;
  clusterDomain: string;
  buildTransport: TransportBuilder;
  /** --via (for the live figures) */
  via: boolean;
}

export async function serveForward(o: ForwardOptions): Promise<number> {
  let forwarder: PortForwarder | undefined;
  let to = '';
  return serveTransport(o, {
    session: { command: 'forward', mode: '', target: o.text, via: o.via },
    buildTransport: o.buildTransport,
    prepare: async (ctx, dialer) => {
      const { host, port, label } = await resolveTarget(o);
      const local = o.mapping.local ?? port;
      forwarder = portForwarder(o, dialer, host, port, local);
      const a = await forwarder.listen();
      const bound = `${urlHost(a.address)}:${a.port}`;
      to = `${bound} -> ${urlHost(host)}:${port}${label ? ` (${label})` : ''}`;
      ctx.undo.add(`the listener on ${bound} and its connections`, () => forwarder?.close());
    },
    start: async (transport) => {
      o.stdout.write(`forwarding ${to} through ${transport.label}\n`);
      o.log('press Ctrl-C to stop');
    },
  });
}

function portForwarder(o: ForwardOptions, dialer: Dialer, host: string, port: number, local: number): PortForwarder {
  return new PortForwarder({
    dialer,
    host: o.address,
    port: local,
    target: { host, port },
    portHint: `pick another local port, e.g. ktctl forward ${o.text} ${local < 65535 ? local + 1 : local - 1}:${port}`,
    onEvent: (e) => {
      if (e.type === 'dial-failed') o.log(`${e.client} -> ${e.target}: ${e.reason}; connection reset`);
      else if (e.type === 'connection') o.debug(`forward: ${e.client} -> ${e.target}`);
      else o.debug(`forward: ${e.client} -> ${e.target} closed${e.error ? ` (${e.error.message})` : ''}`);
    },
  });
}

/** The far-side address: looked up in the cluster for services and pods (nothing is made). */
async function resolveTarget(o: ForwardOptions): Promise<{ host: string; port: number; label?: string }> {
  const { target, mapping } = o;
  if (target.kind === 'host') {
    const remote = target.port !== undefined ? String(target.port) : mapping.remote;
    if (remote === undefined) throw new UsageError(`${o.text} names no port: give one, e.g. ktctl forward ${o.text} 8080:80`);
    if (!/^\d+$/.test(remote)) throw new UsageError(`a port name (${remote}) works only for services and pods; give ${o.text} a port number`);
    return { host: target.host, port: Number(remote) };
  }
  const [{ openKube }, { resolveClusterTarget }] = await Promise.all([import('../kube/session.js'), import('../kube/forward.js')]);
  const kube = openKube(o.kube);
  return resolveClusterTarget(kube, kube.namespace, target, mapping.remote, o.clusterDomain);
}
