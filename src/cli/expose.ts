/**
 * `--expose`: which local ports take a service's traffic, in KT Connect's forms: `8080` (the same
 * port on both sides) or `local:remote`, comma separated for several (`7001,8080:80`). And the
 * check that something listens on each local port before the cluster's traffic is pointed at it
 * (skipped with `--skipPortChecking`: KT Connect's flag of that name did the opposite of its name).
 */
import { connect } from 'node:net';
import { Option } from 'clipanion';
import { LocalPortError, UsageError } from '../errors.js';
import { splice } from '../proxy/splice.js';
import type { ReconnectingTunnel } from '../ssh/reconnect.js';
import { ShadowCommand } from './connect-transport.js';
import type { Undo } from '../undo.js';
import type { ExposePort } from '../kube/target.js';

export type { ExposePort } from '../kube/target.js';

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
 * What `exchange`, `preview` and `mesh` share: `--expose`, `--skipPortChecking`, and the kubeconfig
 * and shadow flags `connect` has (ShadowCommand). Their life around the transport is
 * `serveTransport`'s (connect-transport.ts).
 */
export abstract class ExposeCommand extends ShadowCommand {
  expose = Option.String('--expose', { description: 'local ports that take the traffic: PORT or LOCAL:REMOTE, comma separated (e.g. 8080 or 7001,8080:80)' });
  skipPortChecking = Option.Boolean('--skipPortChecking,--skip-port-checking', false, { description: 'start even when nothing listens on the local ports yet' });
  // connect's flags that make no sense here, accepted only to refuse them in one sentence.
  via = Option.String('--via', { hidden: true });
  shareShadow = Option.Boolean('--shareShadow,--share-shadow', false, { hidden: true });

  /** The parsed --expose (required); the first check of every command here. */
  exposedPorts(): ExposePort[] {
    const name = this.path[0] ?? 'this command';
    if (this.via !== undefined) throw new UsageError(`${name} works in a Kubernetes cluster, so it takes no --via (that is for connect and forward): give the cluster with --kubeconfig and --context`);
    if (this.shareShadow) throw new UsageError(`${name} makes a shadow of its own (it carries the service's labels and ports), so it takes no --shareShadow`);
    if (this.expose === undefined) throw new UsageError('--expose is required: the local port(s) that take the traffic, e.g. --expose 8080 or --expose 8080:80');
    return parseExpose(this.expose);
  }

  /** Checks the local listeners unless --skipPortChecking. */
  async checkLocal(ports: ExposePort[]): Promise<void> {
    if (!this.skipPortChecking) await checkLocalListeners(ports);
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
