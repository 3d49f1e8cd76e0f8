/**
 * Services as nftables rules in the node namespace, the way kube-proxy's nftables mode does it:
 * one table, replaced as a whole in one `nft -f` transaction.
 *
 *  - nat prerouting (traffic from pods) and nat output (traffic of the node itself: the daemon,
 *    DNS forwarding) jump to `services`, which matches clusterIP . proto . port and jumps to the
 *    service port's chain; that picks an endpoint with `numgen random` and DNATs to it;
 *  - a pod reaching itself through its service (hairpin) is marked and masqueraded, or it would
 *    see a packet from its own address arriving from outside;
 *  - a service address that matched nothing (no endpoints, unknown port) is rejected like
 *    kube-proxy does: TCP reset, ICMP port unreachable for UDP. The cluster DNS address is
 *    exempt (it is a local address of the node, answered by the cluster DNS server).
 */
import type { ServiceRuntimeSpec } from './types.js';
import { LAB } from './types.js';
import { nftApply } from './run.js';

export const SERVICE_TABLE = 'ktlab-svc';
const HAIRPIN_MARK = '0x00004000';

export interface RenderOptions {
  table?: string;
  serviceCidr?: string;
  clusterDnsIp?: string;
}

function isIPv4(s: string): boolean {
  const p = s.split('.');
  return p.length === 4 && p.every((x) => /^\d{1,3}$/.test(x) && Number(x) <= 255);
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n < 65536;
}

/** The whole table as an nft script that replaces any earlier version atomically. */
export function renderServiceTable(services: readonly ServiceRuntimeSpec[], options: RenderOptions = {}): string {
  const table = options.table ?? SERVICE_TABLE;
  const cidr = options.serviceCidr ?? LAB.serviceCidr;
  const dnsIp = options.clusterDnsIp ?? LAB.clusterDnsIp;
  const dispatch: string[] = [];
  const chains: string[] = [];
  // stable order: the same input always renders the same text
  const sorted = [...services].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  let si = 0;
  for (const svc of sorted) {
    si++;
    if (!isIPv4(svc.clusterIP) || svc.clusterIP === dnsIp) continue;
    let pi = 0;
    for (const port of svc.ports) {
      pi++;
      if (!isPort(port.port)) continue;
      const proto = port.protocol === 'UDP' ? 'udp' : 'tcp';
      const endpoints = port.endpoints.filter((e) => isIPv4(e.ip) && isPort(e.port));
      if (endpoints.length === 0) continue; // falls through to the reject rules below
      const chain = `svc-${si}-${pi}`;
      dispatch.push(`\t\tip daddr ${svc.clusterIP} ${proto} dport ${port.port} goto ${chain} comment "${svc.namespace}/${svc.name}:${port.port}"`);
      const eps: string[] = [];
      endpoints.forEach((ep, i) => {
        const epChain = `${chain}-ep-${i}`;
        eps.push(`${i} : goto ${epChain}`);
        chains.push(
          `\tchain ${epChain} {\n` +
            `\t\tip saddr ${ep.ip} meta mark set meta mark | ${HAIRPIN_MARK}\n` +
            `\t\tmeta l4proto ${proto} dnat to ${ep.ip}:${ep.port}\n` +
            `\t}`,
        );
      });
      chains.push(`\tchain ${chain} {\n\t\tnumgen random mod ${endpoints.length} vmap { ${eps.join(', ')} }\n\t}`);
    }
  }
  const reject =
    `\t\tip daddr ${dnsIp} accept\n` +
    `\t\tip daddr ${cidr} meta l4proto tcp reject with tcp reset\n` +
    `\t\tip daddr ${cidr} reject with icmp type port-unreachable\n`;
  return (
    `table ip ${table}\n` +
    `delete table ip ${table}\n` +
    `table ip ${table} {\n` +
    `\tchain services {\n${dispatch.join('\n')}${dispatch.length ? '\n' : ''}\t}\n` +
    (chains.length ? chains.join('\n') + '\n' : '') +
    `\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}\n` +
    `\tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n` +
    `\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n` +
    `\t\tmeta mark & ${HAIRPIN_MARK} == ${HAIRPIN_MARK} masquerade\n\t}\n` +
    `\tchain filter-forward {\n\t\ttype filter hook forward priority filter; policy accept;\n${reject}\t}\n` +
    `\tchain filter-output {\n\t\ttype filter hook output priority filter; policy accept;\n${reject}\t}\n` +
    `}\n`
  );
}

/**
 * Applies service specs to the node namespace: the latest full sync wins, bursts are coalesced
 * (debounce), one `nft` at a time, and a failure is logged and retried with the next sync.
 */
export class ServiceSync {
  #pending: readonly ServiceRuntimeSpec[] | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #lastApplied = '';
  #closed = false;

  constructor(
    private readonly netns: string,
    private readonly log: (line: string) => void,
    private readonly debounceMs = 50,
  ) {}

  set(services: readonly ServiceRuntimeSpec[]): void {
    if (this.#closed) return;
    this.#pending = services.map((s) => structuredClone(s));
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flush();
    }, this.debounceMs);
  }

  /** Resolves when everything set so far has been applied (or failed). */
  async settled(): Promise<void> {
    while (this.#timer || this.#running || this.#pending) {
      if (this.#timer) {
        clearTimeout(this.#timer);
        this.#timer = undefined;
        void this.#flush();
      }
      await this.#running;
      if (!this.#running && this.#pending) await this.#flush();
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending = undefined;
  }

  async #flush(): Promise<void> {
    if (this.#running) return; // the running apply picks up #pending when it finishes
    const run = async (): Promise<void> => {
      while (this.#pending && !this.#closed) {
        const specs = this.#pending;
        this.#pending = undefined;
        const script = renderServiceTable(specs);
        if (script === this.#lastApplied) continue;
        try {
          await nftApply(this.netns, script);
          this.#lastApplied = script;
          this.log(`services: applied ${specs.length} service(s)`);
        } catch (e) {
          this.log(`services: nft failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    };
    this.#running = run().finally(() => {
      this.#running = undefined;
    });
    await this.#running;
  }
}
