/**
 * `--expose`: which local ports take a service's traffic, in KT Connect's forms: `8080` (the same
 * port on both sides) or `local:remote`, comma separated for several (`7001,8080:80`); and
 * `--skipPortChecking` (KT Connect's flag of that name did the opposite of its name). The flags
 * `exchange`, `preview` and `mesh` share.
 */
import { Option } from 'clipanion';
import { checkLocalListeners } from '../../connect/expose.js';
import { UsageError } from '../../errors.js';
import type { ExposePort } from '../../kube/target.js';
import { ShadowCommand } from './shadow.js';
import { flag, portNumber } from './validators.js';

/** Parses `8080`, `8080:80`, `7001,8080:80`. */
export function parseExpose(text: string): ExposePort[] {
  const out: ExposePort[] = [];
  if (text.trim() === '') throw new UsageError('--expose needs at least one port: PORT or LOCAL:REMOTE, comma separated (e.g. --expose 8080 or --expose 8080:80)');
  const bad = (): UsageError => new UsageError(`--expose takes ports from 1 to 65535 as PORT or LOCAL:REMOTE, comma separated (got "${text}")`);
  for (const part of text.split(',')) {
    const fields = part.split(':');
    if (fields.length > 2 || part.trim() === '') throw bad();
    const local = portNumber(fields[0]!.trim(), 1);
    const remote = fields.length === 2 ? portNumber(fields[1]!.trim(), 1) : local;
    if (local === undefined || remote === undefined) throw bad();
    if (out.some((p) => p.remote === remote)) throw new UsageError(`--expose names the remote port ${remote} twice (got "${text}")`);
    out.push({ local, remote });
  }
  return out;
}

export const expose = flag(parseExpose);

/**
 * What `exchange`, `preview` and `mesh` share: `--expose`, `--skipPortChecking`, and the kubeconfig
 * and shadow flags `connect` has (ShadowCommand). Their life around the transport is
 * `serveTransport`'s (src/connect/serve.ts).
 */
export abstract class ExposeCommand extends ShadowCommand {
  expose = Option.String('--expose', { description: 'local ports that take the traffic: PORT or LOCAL:REMOTE, comma separated (e.g. 8080 or 7001,8080:80)', validator: expose });
  skipPortChecking = Option.Boolean('--skipPortChecking,--skip-port-checking', false, { description: 'start even when nothing listens on the local ports yet' });
  // connect's flags that make no sense here, accepted only to refuse them in one sentence.
  via = Option.String('--via', { hidden: true });
  shareShadow = Option.Boolean('--shareShadow,--share-shadow', false, { hidden: true });
  // KT Connect's -i (the shadow image); ktctl's -i is ssh's --identity, which these commands do not take
  ktImage = Option.String('-i', { hidden: true });

  protected override checkFlags(): void {
    super.checkFlags();
    if (this.ktImage !== undefined) throw new UsageError('-i is --identity in ktctl (ssh\'s -i, for connect and forward --via); for the shadow image (KT Connect\'s -i) use --image');
  }

  /** The parsed --expose (required); the first check of every command here. */
  exposedPorts(): ExposePort[] {
    const name = this.path[0] ?? 'this command';
    if (this.via !== undefined) throw new UsageError(`${name} works in a Kubernetes cluster, so it takes no --via (that is for connect and forward): give the cluster with --kubeconfig and --context`);
    if (this.shareShadow) throw new UsageError(`${name} makes a shadow of its own (it carries the service's labels and ports), so it takes no --shareShadow`);
    if (this.expose === undefined) throw new UsageError('--expose is required: the local port(s) that take the traffic, e.g. --expose 8080 or --expose 8080:80');
    return this.expose;
  }

  /** Checks the local listeners unless --skipPortChecking. */
  async checkLocal(ports: ExposePort[]): Promise<void> {
    if (!this.skipPortChecking) await checkLocalListeners(ports);
  }
}

