/**
 * `--dnsMode hosts` while it runs: the /etc/hosts block follows the transport's watch of Services,
 * and a Service made after the start whose IP lies outside the ranges routed then gets a route of
 * its own (the same rules as at the start: never an excluded or avoided address, nor one another
 * route of the machine has).
 */
import { serviceHostEntries, type SystemDnsChange } from '../../dns/index.js';
import type { ServiceWatch, Transport } from '../../transport.js';
import { containsCidr, formatCidr, makeCidr, parseIp, type Cidr } from '../../tun/cidr.js';
import { addRoutes, planRoutes, type RouteEntry } from '../../tun/ip.js';
import type { Logger, Undo } from '../../undo.js';
import type { KeptOutNotice } from './own-hosts.js';

export interface LateRoutesOptions {
  device: string;
  /** every route through the device, added to in place (the routes' undo deletes them all) */
  routes: Cidr[];
  exclude: Cidr[];
  never: Cidr[];
  existing: RouteEntry[];
  /** the crash record gets each new list before the routes are added */
  record: { update(fields: { routes: string[] }): void };
  log: Logger;
  /** says once that one of ktctl's own addresses lies in a new route and stays out of it */
  notice?: Pick<KeptOutNotice, 'tell'>;
}

/**
 * Routes added after the start. The routes' undo calls `close()` first: it waits for the adds still
 * running and stops any more, so the undo deletes every route and no add runs after the device is closed.
 */
export class LateRoutes {
  readonly #o: LateRoutesOptions;
  #routing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(o: LateRoutesOptions) {
    this.#o = o;
  }

  /** Routes those of `ips` that no route covers yet (in the background, one add after the other). */
  add(ips: string[]): void {
    if (this.#closed) return;
    const o = this.#o;
    const wanted = ips
      .map((ip) => parseIp(ip))
      .filter((ip) => ip !== undefined)
      .map((ip) => makeCidr(ip.family, ip.value, ip.family === 4 ? 32 : 128))
      .filter((c) => !o.routes.some((r) => containsCidr(r, c)));
    if (wanted.length === 0) return;
    const plan = planRoutes({ discovered: wanted, exclude: o.exclude, never: o.never, existing: o.existing });
    o.notice?.tell(plan.keptOut);
    const fresh = plan.routes;
    if (fresh.length === 0) return;
    o.routes.push(...fresh);
    this.#routing = this.#routing.then(async () => {
      try {
        o.record.update({ routes: o.routes.map(formatCidr) });
        await addRoutes(o.device, fresh);
        o.log(`routing through ${o.device}: ${fresh.map(formatCidr).join(', ')} (services made after the start)`);
      } catch (error) {
        o.log(`cannot route ${fresh.map(formatCidr).join(', ')} through ${o.device}: ${error instanceof Error ? error.message : String(error)}`);
      }
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#routing;
  }
}

/** The services of `namespaces` (KT Connect's `hosts:ns1,ns2`, pkg/kt/command/connect/common.go `dumpToHost`). */
export function servicesIn<S extends { namespace: string }>(services: readonly S[], namespaces: readonly string[]): S[] {
  const wanted = new Set(namespaces);
  return services.filter((s) => wanted.has(s.namespace));
}

/**
 * The hosts block follows the transport's watch of services (stopped on undo, before the block is
 * removed), and `route` gets their IPs. A failed first write fails the start; later ones are logged.
 * Returns which services the watch sees.
 */
export async function keepHostsCurrent(
  o: { log: Logger; debug: Logger; undo: Undo },
  transport: Transport,
  change: SystemDnsChange,
  namespace: string,
  clusterDomain: string,
  route: (ips: string[]) => void,
  /** names of ktctl's own hosts (lower case -> what they name): never written (src/dns/pinned.ts) */
  own: ReadonlyMap<string, string> = new Map(),
  /** KT Connect's `--dnsMode hosts:ns1,ns2`: only these namespaces' services (undefined: all listed) */
  only?: readonly string[],
): Promise<ServiceWatch['scope']> {
  const setHosts = change.setHosts;
  if (transport.services === undefined || setHosts === undefined) throw new TypeError('hosts mode needs a transport that lists services and a hosts change');
  // Each left-out name or service is reported once, not on every change of the list.
  const told = new Set<string>();
  const onSkip = (kind: 'invalid' | 'taken' | 'own', message: string): void => {
    if (told.has(message)) return;
    told.add(message);
    (kind === 'invalid' ? o.debug : o.log)(`DNS: ${message}`);
  };
  let first = true;
  let firstError: unknown;
  const watch = await transport.services((services) => {
    try {
      const entries = serviceHostEntries(only === undefined ? services : servicesIn(services, only), namespace, { clusterDomain, taken: change.hostsTaken, own, onSkip });
      route(entries.map((e) => e.ip));
      setHosts(entries);
    } catch (error) {
      if (first) firstError = error;
      else o.log(`DNS: ${error instanceof Error ? error.message : String(error)}`);
    }
    first = false;
  });
  o.undo.add('the watch of services', () => watch.stop());
  if (firstError !== undefined) throw firstError;
  return watch.scope;
}
