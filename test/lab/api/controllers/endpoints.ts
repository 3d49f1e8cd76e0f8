/** The lab's endpoints controller: Endpoints and EndpointSlices from service selectors, and the services and DNS records pushed into the data plane (nftables DNAT, the cluster DNS server). */
import { ApiError } from '../status.js';
import { clone, deepEqual, stableStringify, type Endpoints, type JsonObject, type Pod, type Service } from '../json.js';
import { R } from '../registry.js';
import { matchesSelector } from '../selectors.js';
import { metaOf } from '../store.js';
import { LAB, type ServiceRuntimeSpec } from '../../net/types.js';
import { NODE_NAME, asT, toJ, isPodReady, isTerminating, type ControllerContext, resolveTargetPort } from './shared.js';

export class EndpointsController {
  readonly #ctx: ControllerContext;
  #syncTimer: NodeJS.Timeout | undefined;
  #lastServices = '';
  #lastDns = '';

  constructor(ctx: ControllerContext) {
    this.#ctx = ctx;
  }

  stop(): void {
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
  }

  scheduleSync(): void {
    if (this.#syncTimer || this.#ctx.stopped) return;
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = undefined;
      try {
        this.#syncEndpoints();
        this.#pushToNet();
      } catch (e) {
        this.#ctx.log(`sync error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
    }, 30);
  }

  #syncEndpoints(): void {
    const services = this.#ctx.reg.store.list(R.services).map((x) => asT<Service>(x));
    for (const svc of services) {
      const sel = svc.spec.selector;
      if (!sel || Object.keys(sel).length === 0) continue;
      const ns = svc.metadata.namespace ?? '';
      const pods = this.#ctx.reg.store
        .list(R.pods, ns)
        .map((x) => asT<Pod>(x))
        .filter((p) => p.status?.podIP && !isTerminating(p) && matchesSelector({ matchLabels: sel }, p.metadata.labels));
      const groups = new Map<string, NonNullable<Endpoints['subsets']>[number]>();
      for (const p of pods) {
        const ports: Array<{ name?: string; port: number; protocol: string }> = [];
        for (const sp of svc.spec.ports ?? []) {
          const port = resolveTargetPort(p, sp.targetPort ?? sp.port);
          if (port === undefined) continue;
          const e: { name?: string; port: number; protocol: string } = { port, protocol: sp.protocol ?? 'TCP' };
          if (sp.name) e.name = sp.name;
          ports.push(e);
        }
        if (ports.length === 0 && (svc.spec.ports ?? []).length > 0) continue;
        const key = stableStringify(ports);
        let g = groups.get(key);
        if (!g) {
          g = { ports };
          groups.set(key, g);
        }
        const addr = {
          ip: p.status!.podIP!,
          nodeName: p.spec.nodeName,
          targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name, uid: p.metadata.uid },
        };
        if (isPodReady(p)) (g.addresses ??= []).push(addr);
        else (g.notReadyAddresses ??= []).push(addr);
      }
      const subsets = [...groups.values()].map((g) => {
        g.addresses?.sort((a, b) => a.ip.localeCompare(b.ip));
        g.notReadyAddresses?.sort((a, b) => a.ip.localeCompare(b.ip));
        const ordered: JsonObject = {};
        if (g.addresses) ordered.addresses = toJ(g.addresses);
        if (g.notReadyAddresses) ordered.notReadyAddresses = toJ(g.notReadyAddresses);
        if (g.ports && g.ports.length > 0) ordered.ports = toJ(g.ports);
        return ordered;
      });
      this.#syncSlice(svc, pods);
      const cur = this.#ctx.reg.tryGet(R.endpoints, ns, svc.metadata.name);
      if (!cur) {
        try {
          this.#ctx.reg.create(R.endpoints, ns, { metadata: { name: svc.metadata.name, labels: toJ(svc.metadata.labels ?? {}) }, subsets: subsets.length > 0 ? subsets : null } as JsonObject);
        } catch (e) {
          if (!(e instanceof ApiError && (e.code === 409 || e.code === 403 || e.code === 404))) throw e;
        }
      } else if (!deepEqual(cur.subsets ?? [], subsets)) {
        const next = clone(cur);
        if (subsets.length > 0) next.subsets = subsets;
        else delete next.subsets;
        delete (next.metadata as JsonObject).resourceVersion;
        this.#ctx.reg.store.update(R.endpoints, next, { bumpGeneration: false });
      }
    }
    // endpoints of services that are gone (only the ones a selector made)
    for (const ep of this.#ctx.reg.store.list(R.endpoints)) {
      const m = metaOf(ep);
      const svc = services.find((s) => s.metadata.namespace === m.namespace && s.metadata.name === m.name);
      if (!svc) this.#ctx.reg.remove(R.endpoints, m.namespace ?? '', m.name!);
    }
  }

  /** One EndpointSlice per selector service (kubectl describe service reads these). */
  #syncSlice(svc: Service, pods: Pod[]): void {
    const ns = svc.metadata.namespace ?? '';
    const existing = this.#ctx.reg.store
      .list(R.endpointslices, ns)
      .find((s) => metaOf(s).labels?.['kubernetes.io/service-name'] === svc.metadata.name && metaOf(s).ownerReferences?.some((r) => r.uid === svc.metadata.uid));
    const first = pods[0];
    const ports = (svc.spec.ports ?? [])
      .map((sp) => {
        const port = first ? resolveTargetPort(first, sp.targetPort ?? sp.port) : undefined;
        const p: JsonObject = { name: sp.name ?? '', protocol: sp.protocol ?? 'TCP' };
        if (port !== undefined) p.port = port;
        return p;
      });
    const endpoints = pods.map((p) => {
      const ready = isPodReady(p);
      return {
        addresses: [p.status!.podIP!],
        conditions: { ready, serving: ready, terminating: false },
        nodeName: p.spec.nodeName ?? NODE_NAME,
        targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name, uid: p.metadata.uid },
      };
    });
    const body: JsonObject = {
      addressType: 'IPv4',
      endpoints: toJ(endpoints),
      ports: first ? ports : null,
    };
    if (!existing) {
      try {
        this.#ctx.reg.create(R.endpointslices, ns, {
          metadata: {
            generateName: `${svc.metadata.name}-`,
            labels: { ...(svc.metadata.labels ?? {}), 'kubernetes.io/service-name': svc.metadata.name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
            ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: svc.metadata.name, uid: svc.metadata.uid, controller: true, blockOwnerDeletion: true }],
          },
          ...body,
        });
      } catch (e) {
        if (!(e instanceof ApiError && (e.code === 409 || e.code === 403 || e.code === 404))) throw e;
      }
    } else if (!deepEqual({ addressType: existing.addressType, endpoints: existing.endpoints, ports: existing.ports ?? null }, body)) {
      const next = { ...clone(existing), ...body };
      delete (next.metadata as JsonObject).resourceVersion;
      this.#ctx.reg.store.update(R.endpointslices, next, { bumpGeneration: false });
    }
  }

  #pushToNet(): void {
    const services = this.#ctx.reg.store.list(R.services).map((x) => asT<Service>(x));
    const out: ServiceRuntimeSpec[] = [];
    const dnsServices: Array<{ namespace: string; name: string; clusterIP: string }> = [];
    for (const svc of services) {
      const ip = svc.spec.clusterIP;
      if (!ip || ip === 'None') continue;
      const ns = svc.metadata.namespace ?? '';
      dnsServices.push({ namespace: ns, name: svc.metadata.name, clusterIP: ip });
      // the cluster DNS address is served by the data plane itself, not by DNAT
      if (ip === LAB.clusterDnsIp) continue;
      const ep = this.#ctx.reg.tryGet(R.endpoints, ns, svc.metadata.name);
      const subsets = ep ? (asT<Endpoints>(ep).subsets ?? []) : [];
      const ports = (svc.spec.ports ?? [])
        .filter((p) => p.protocol !== 'SCTP')
        .map((sp) => {
          const endpoints: Array<{ ip: string; port: number }> = [];
          for (const s of subsets) {
            const epPort = (s.ports ?? []).find((p) => (p.name ?? '') === (sp.name ?? '') && p.protocol === (sp.protocol ?? 'TCP')) ?? ((s.ports ?? []).length === 1 && (svc.spec.ports ?? []).length === 1 ? s.ports![0] : undefined);
            if (!epPort) continue;
            for (const a of s.addresses ?? []) endpoints.push({ ip: a.ip, port: epPort.port });
          }
          return { port: sp.port, protocol: (sp.protocol === 'UDP' ? 'UDP' : 'TCP') as 'TCP' | 'UDP', endpoints };
        });
      out.push({ namespace: ns, name: svc.metadata.name, clusterIP: ip, ports });
    }
    const podRecords = this.#ctx.reg.store
      .list(R.pods)
      .map((x) => asT<Pod>(x))
      .filter((p) => p.status?.podIP && !isTerminating(p))
      .map((p) => ({ namespace: p.metadata.namespace ?? '', ip: p.status!.podIP! }));
    const svcText = JSON.stringify(out);
    if (svcText !== this.#lastServices) {
      this.#lastServices = svcText;
      this.#ctx.net.setServices(out);
    }
    const dns = { services: dnsServices, pods: podRecords };
    const dnsText = JSON.stringify(dns);
    if (dnsText !== this.#lastDns) {
      this.#lastDns = dnsText;
      this.#ctx.net.setDnsRecords(dns);
    }
  }
}
