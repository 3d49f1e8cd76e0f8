/**
 * The local side of `exchange`, `mesh` and `preview`: the check that something listens on each
 * local port before the cluster's traffic is pointed at it, and the remote forwards that bring the
 * cluster's connections to those ports.
 */
import { connect } from 'node:net';
import { LocalPortError } from '../errors.js';
import type { ExposePort } from '../kube/target.js';
import { splice } from '../protocol/splice.js';
import type { Tunnel } from '../transport.js';
import type { Undo } from '../undo.js';

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
 * Serves remote forwards on the tunnel: the shadow listens on `listen` (all addresses) and every
 * connection made there is spliced to 127.0.0.1:local, half-close passed both ways. A local port
 * that refuses ends the cluster client's connection; the forward stays for the next one.
 */
export async function serveExposedPorts(
  tunnel: Tunnel,
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
