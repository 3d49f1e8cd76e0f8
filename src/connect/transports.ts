/**
 * How a command gets its transport once its flags are checked. The Kubernetes one is loaded only
 * when needed: @kubernetes/client-node alone is ~90 MiB of RSS, which a --via run (and the TUN
 * engine's memory budget) should not carry.
 */
import type { KubeTransportOptions } from '../kube/transport.js';
import type { Transport, TransportContext } from '../transport.js';

export { viaTransport, type ViaOptions } from '../ssh/via.js';
export type { KubeTransportOptions } from '../kube/transport.js';

/** Builds the transport to a shadow pod (src/kube/transport.ts, imported on the first call). */
export async function kubeTransport(options: KubeTransportOptions, ctx: TransportContext): Promise<Transport> {
  return (await import('../kube/transport.js')).kubeTransport(options, ctx);
}
