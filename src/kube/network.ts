/**
 * The cluster as a network, for the TUN mode: node pod CIDRs plus the pod and service IPs that
 * exist, merged into few CIDRs; the API server's host (a name or an address), which must keep its
 * normal route; and the cluster DNS service.
 */
import { isIP } from 'node:net';
import { aggregate, cover, formatCidr, tryParseCidr, type Cidr } from '../tun/cidr.js';
import type { OwnHost, TransportNetwork } from '../transport.js';
import type { Kube } from './api.js';
import { kubeCall } from './errors.js';

/**
 * `pods: false` (KT Connect's `--disablePodIp`, pkg/kt/service/cluster/cidr.go `ClusterCidr`): neither
 * the nodes' pod CIDRs nor the pods' IPs are routed, only the services'.
 */
export async function discoverNetwork(kube: Kube, o: { clusterDomain: string; namespace: string; pods?: boolean; debug?: (line: string) => void }): Promise<TransportNetwork> {
  const debug = o.debug ?? (() => undefined);
  const found: Cidr[] = [];
  const add = (text: string | undefined): void => {
    if (!text || text === 'None') return;
    const c = tryParseCidr(text.includes('/') ? text : `${text}/${isIP(text) === 6 ? 128 : 32}`);
    if (c) found.push(c);
  };
  const tryList = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await kubeCall({ verb: 'list', resource: what, server: kube.server }, fn);
    } catch (error) {
      debug(`network discovery: cannot list ${what}: ${error instanceof Error ? error.message : String(error)}`);
      return undefined;
    }
  };
  const podCidrs: Cidr[] = [];
  const withPods = o.pods !== false;
  const nodes = withPods ? await tryList('nodes', () => kube.core.listNode({})) : undefined;
  for (const n of nodes?.items ?? []) {
    for (const c of n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : [])) {
      const p = tryParseCidr(c);
      if (p) podCidrs.push(p);
    }
  }
  const pods = !withPods ? undefined : ((await tryList('pods', () => kube.core.listPodForAllNamespaces({}))) ?? (await tryList('pods', () => kube.core.listNamespacedPod({ namespace: o.namespace }))));
  for (const p of pods?.items ?? []) {
    if (p.spec?.hostNetwork) continue;
    for (const ip of p.status?.podIPs ?? []) add(ip.ip);
    add(p.status?.podIP);
  }
  const services = (await tryList('services', () => kube.core.listServiceForAllNamespaces({}))) ?? (await tryList('services', () => kube.core.listNamespacedService({ namespace: o.namespace })));
  for (const s of services?.items ?? []) {
    for (const ip of s.spec?.clusterIPs ?? []) add(ip);
    add(s.spec?.clusterIP);
  }
  const routes = [...podCidrs, ...cover(found)];
  let dnsServiceIp: string | undefined;
  try {
    const dns = await kube.core.readNamespacedService({ name: 'kube-dns', namespace: 'kube-system' });
    if (dns.spec?.clusterIP && isIP(dns.spec.clusterIP)) dnsServiceIp = dns.spec.clusterIP;
  } catch {
    /* no kube-dns, or not allowed */
  }
  // By name or by address: the TUN session resolves names (all addresses, both families) itself.
  const avoid: OwnHost[] = [];
  try {
    const host = new URL(kube.server).hostname.replace(/^\[|\]$/g, '');
    if (host !== '') avoid.push({ host, what: 'the API server' });
  } catch {
    /* not a URL */
  }
  return {
    routes: aggregate(routes).map(formatCidr),
    avoid,
    cluster: { domain: o.clusterDomain, namespace: o.namespace, dnsServiceIp },
  };
}
