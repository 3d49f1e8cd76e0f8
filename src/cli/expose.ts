/**
 * `--expose`: which local ports take a service's traffic, in KT Connect's forms: `8080` (the same
 * port on both sides) or `local:remote`, comma separated for several (`7001,8080:80`). And the
 * check that something listens on each local port before the cluster's traffic is pointed at it
 * (skipped with `--skipPortChecking`: KT Connect's flag of that name did the opposite of its name).
 */
import { connect } from 'node:net';
import { Option } from 'clipanion';
import { LocalPortError, UsageError } from '../errors.js';
import { DEFAULT_SHADOW_IMAGE, parseKeyValues } from '../kube/names.js';
import { splice } from '../proxy/splice.js';
import type { ReconnectingTunnel } from '../ssh/reconnect.js';
import { KtctlCommand } from './base.js';
import type { Undo } from './lifecycle.js';
import type { KubeTransportOptions } from './transport-kube.js';

export interface ExposePort {
  /** the port on this machine that gets the connections */
  local: number;
  /** the port in the cluster: a service port or targetPort (exchange, mesh), the new service's port (preview) */
  remote: number;
}

function port(text: string, whole: string): number {
  const t = text.trim();
  const n = Number(t);
  if (!/^\d+$/.test(t) || !Number.isInteger(n) || n < 1 || n > 65535) {
    throw new UsageError(`--expose takes ports from 1 to 65535 as PORT or LOCAL:REMOTE, comma separated (got "${whole}")`);
  }
  return n;
}

/** Parses `8080`, `8080:80`, `7001,8080:80`. */
export function parseExpose(text: string): ExposePort[] {
  const out: ExposePort[] = [];
  if (text.trim() === '') throw new UsageError('--expose needs at least one port: PORT or LOCAL:REMOTE, comma separated (e.g. --expose 8080 or --expose 8080:80)');
  for (const part of text.split(',')) {
    const fields = part.split(':');
    if (fields.length > 2 || part.trim() === '') {
      throw new UsageError(`--expose takes ports from 1 to 65535 as PORT or LOCAL:REMOTE, comma separated (got "${text}")`);
    }
    const local = port(fields[0]!, text);
    const remote = fields.length === 2 ? port(fields[1]!, text) : local;
    if (out.some((p) => p.remote === remote)) throw new UsageError(`--expose names the remote port ${remote} twice (got "${text}")`);
    out.push({ local, remote });
  }
  return out;
}

/** Resolves when a TCP connection to host:port is accepted, rejects with the socket error. */
function probe(host: string, p: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port: p });
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    });
    s.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Rejects with a LocalPortError for the first local port nothing listens on (at `host`, default
 * 127.0.0.1, where the forwarded connections go). Commands skip it with --skipPortChecking.
 */
export async function checkLocalListeners(ports: ExposePort[], host = '127.0.0.1', timeoutMs = 3000): Promise<void> {
  for (const p of ports) {
    try {
      await probe(host, p.local, timeoutMs);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const why = code === 'ECONNREFUSED' ? 'nothing listens there' : `it does not answer (${typeof code === 'string' ? code : String(error)})`;
      throw new LocalPortError(p.local, `the local port ${host}:${p.local} of --expose cannot take connections (${why}): start your local server first, or pass --skipPortChecking to start anyway`, { cause: error });
    }
  }
}

/**
 * What `exchange`, `preview` (and `mesh`) share: `--expose`, `--skipPortChecking`, the kubeconfig
 * flags and the shadow flags `connect` has (no --via: these need a cluster). Their life around the
 * transport is `serveTransport`'s (connect-transport.ts).
 */
export abstract class ExposeCommand extends KtctlCommand {
  expose = Option.String('--expose', { description: 'local ports that take the traffic: PORT or LOCAL:REMOTE, comma separated (e.g. 8080 or 7001,8080:80)' });
  skipPortChecking = Option.Boolean('--skipPortChecking,--skip-port-checking', false, { description: 'start even when nothing listens on the local ports yet' });

  kubeconfig = Option.String('--kubeconfig,-c', { description: 'kubeconfig file(s) (default $KUBECONFIG, then ~/.kube/config)' });
  kubeContext = Option.String('--context', { description: 'kubeconfig context (default: the current one)' });
  namespace = Option.String('--namespace,-n', { description: 'namespace of the service (default: the context\'s, else default)' });
  image = Option.String('--image', { description: 'shadow image' });
  imagePullSecret = Option.String('--imagePullSecret,--image-pull-secret', { description: 'image pull secret for the shadow pod' });
  nodeSelector = Option.String('--nodeSelector,--node-selector', { description: 'node selector for the shadow pod (key=value,...)' });
  withLabel = Option.String('--withLabel,--with-label', { description: 'extra labels on every object ktctl makes (key=value,...)' });
  withAnnotation = Option.String('--withAnnotation,--with-annotation', { description: 'extra annotations on every object ktctl makes (key=value,...)' });
  podCreationTimeout = Option.String('--podCreationTimeout,--pod-creation-timeout', '60', { description: 'seconds to wait for the shadow pod to be ready' });
  portForwardTimeout = Option.String('--portForwardTimeout,--port-forward-timeout', '10', { description: 'seconds to wait for the port-forward to the shadow' });

  /** The parsed --expose (required). */
  exposedPorts(): ExposePort[] {
    if (this.expose === undefined) throw new UsageError('--expose is required: the local port(s) that take the traffic, e.g. --expose 8080 or --expose 8080:80');
    return parseExpose(this.expose);
  }

  /** Checks the local listeners unless --skipPortChecking. */
  async checkLocal(ports: ExposePort[]): Promise<void> {
    if (!this.skipPortChecking) await checkLocalListeners(ports);
  }

  /** The shadow's transport options from the flags; `extra` adds the command's role, labels, ports. */
  transportOptions(extra: Pick<KubeTransportOptions, 'role' | 'ports' | 'sysctls'> & { labels: Record<string, string>; mode: string }): KubeTransportOptions {
    return {
      kubeconfig: this.kubeconfig,
      context: this.kubeContext,
      namespace: this.namespace,
      image: this.image ?? DEFAULT_SHADOW_IMAGE,
      imagePullSecret: this.imagePullSecret,
      nodeSelector: keyValues(this.nodeSelector, '--nodeSelector'),
      labels: { ...keyValues(this.withLabel, '--withLabel'), ...extra.labels },
      annotations: keyValues(this.withAnnotation, '--withAnnotation'),
      podCreationTimeoutMs: seconds(this.podCreationTimeout, '--podCreationTimeout'),
      portForwardTimeoutMs: seconds(this.portForwardTimeout, '--portForwardTimeout'),
      shareShadow: false,
      clusterDomain: 'cluster.local',
      mode: extra.mode,
      stderr: this.context.stderr,
      role: extra.role,
      ports: extra.ports,
      sysctls: extra.sysctls,
    };
  }
}

function seconds(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} takes a number of seconds greater than 0 (got "${text}")`);
  return n * 1000;
}

function keyValues(text: string | undefined, flag: string): Record<string, string> {
  try {
    return parseKeyValues(text, flag);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/**
 * Serves remote forwards on the tunnel: the shadow listens on `listen` (all addresses) and every
 * connection made there is spliced to 127.0.0.1:local, half-close passed both ways. A local port
 * that refuses ends the cluster client's connection; the forward stays for the next one.
 */
export async function serveExposedPorts(
  tunnel: ReconnectingTunnel,
  ports: Array<{ local: number; listen: number }>,
  log: (line: string) => void,
  undo: Undo,
  /** the forward's bind address: all addresses, or a mesh mark for the router (src/protocol meshBindAddress) */
  bindAddr = '0.0.0.0',
): Promise<void> {
  for (const p of ports) {
    let warned = 0;
    const forward = await tunnel.forwardIn(bindAddr, p.listen, (stream, info) => {
      const local = connect({ host: '127.0.0.1', port: p.local, allowHalfOpen: true, noDelay: true });
      local.once('error', (error: NodeJS.ErrnoException) => {
        // One line per burst, not per connection: a stopped local server can see many.
        const now = Date.now();
        if (now - warned < 5000) return;
        warned = now;
        log(`a connection from ${info.srcIP}:${info.srcPort} could not reach 127.0.0.1:${p.local} (${error.code ?? error.message}); is the local server running?`);
      });
      splice(stream, local);
    });
    undo.add(`the remote forward of port ${p.listen}`, () => forward.cancel());
  }
}
