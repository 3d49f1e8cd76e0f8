/**
 * What `exchange`, `mesh` and `preview` run: everything that can refuse first (src/kube/takeover.ts:
 * RBAC, the target and its ports, the service's lock), then the shadow (or the mesh router) as the
 * transport, then the remote forwards to the local ports (expose.ts) and the change in the cluster.
 * The Kubernetes layer is loaded when the command starts (it pulls in @kubernetes/client-node).
 */
import type { Writable } from 'node:stream';
import type { KubeFlags } from '../kube/session.js';
import type { ExposePort } from '../kube/target.js';
import type { PreviewTarget, ServiceTakeover } from '../kube/takeover.js';
import { meshBindAddress, type MeshMark } from '../protocol/index.js';
import { serveExposedPorts } from './expose.js';
import { serveTransport, type CommandIo } from './serve.js';
import { kubeTransport, type KubeTransportOptions } from './transports.js';

interface TakeoverOptions extends CommandIo {
  stderr: Writable & { isTTY?: boolean };
  flags: KubeFlags;
  /** the local ports (--expose) */
  ports: ExposePort[];
  /** the shadow's options, from the flags */
  shadow: KubeTransportOptions;
}

/** `ktctl exchange`: the service's traffic to the local ports until Ctrl-C. */
export async function exchangeService(o: TakeoverOptions & { service: string; mode: 'selector' | 'scale'; recoverWaitMs: number }): Promise<number> {
  const { shadow, mode } = o;
  const k = await import('../kube/takeover.js');
  let t!: ServiceTakeover;
  let labels: Record<string, string> = {};
  return serveTransport(o, {
    session: { command: 'exchange', mode, target: o.service, via: false },
    // Everything that can refuse comes before the shadow: RBAC, the target, its ports, the lock.
    prepare: async (ctx) => {
      t = await k.prepareServiceTakeover({ ...ctx, flags: o.flags, role: 'exchange', target: o.service, expose: o.ports, check: mode === 'scale' ? k.requireDeployment : undefined });
      labels = k.exchangeLabels(t, mode);
    },
    buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...labels }, ports: k.shadowPorts(t.exposed) }, ctx),
    changedService: () => (t ? { namespace: t.namespace, name: t.service } : undefined),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo);
      await k.divertService(t, { ...ctx, mode, labels, recoverWaitMs: o.recoverWaitMs, stderr: o.stderr });
      // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
      ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
      for (const p of t.exposed) {
        o.stdout.write(`exchanged service ${t.namespace}/${t.service} port ${p.servicePort}${p.listen !== p.servicePort ? ` (pods' port ${p.listen})` : ''} -> 127.0.0.1:${p.local} (--mode ${mode}); Ctrl-C restores it\n`);
      }
    },
  });
}

/** `ktctl mesh`: requests with the mark to the local ports (auto: through the shared router; manual: a shadow and Istio rules). */
export async function meshService(
  o: TakeoverOptions & { service: string; mode: 'auto' | 'manual'; mark: MeshMark; clusterDomain: string; routerImage: string | undefined },
): Promise<number> {
  const { shadow, mode, mark } = o;
  const header = `${mark.key}: ${mark.value}`;
  const k = await import('../kube/takeover.js');
  let t!: ServiceTakeover;
  let manifests = '';
  let transportOptions!: KubeTransportOptions;
  return serveTransport(o, {
    session: { command: 'mesh', mode, target: o.service, via: false },
    // Everything that can refuse comes before the tunnel: RBAC, the target, its ports, the lock, the mark.
    prepare: async (ctx) => {
      t = await k.prepareServiceTakeover({ ...ctx, flags: o.flags, role: 'mesh', target: o.service, expose: o.ports });
      if (mode === 'manual') {
        const manual = k.meshManual(t, mark, o.clusterDomain);
        manifests = manual.manifests;
        transportOptions = { ...shadow, labels: { ...shadow.labels, ...manual.labels }, ports: k.shadowPorts(t.exposed) };
        return;
      }
      const image = o.routerImage ?? shadow.image;
      const router = await k.joinMeshRouter(t, { ...ctx, ...shadow, image, mark, signal: ctx.signal });
      transportOptions = { ...shadow, image, attach: { name: router.name, keys: router.keys, what: router.what } };
    },
    buildTransport: (ctx) => kubeTransport(transportOptions, ctx),
    changedService: () => (t ? { namespace: t.namespace, name: t.service } : undefined),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo, mode === 'auto' ? meshBindAddress(mark) : undefined);
      // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
      ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
      const out = o.stdout;
      if (mode === 'manual') {
        out.write(`a shadow with the labels of service ${t.namespace}/${t.service} and version=${mark.value} takes a share of its traffic; for routing by header, apply:\n${manifests}`);
      }
      out.write(`version mark: ${header}\n`);
      for (const p of t.exposed) {
        out.write(`meshed service ${t.namespace}/${t.service} port ${p.servicePort} (--mode ${mode}): requests with "${header}" -> 127.0.0.1:${p.local}; Ctrl-C stops\n`);
      }
    },
  });
}

/** `ktctl preview`: a new Service answered by the local ports until Ctrl-C. */
export async function previewService(o: TakeoverOptions & { name: string; external: boolean }): Promise<number> {
  const { shadow, ports } = o;
  const k = await import('../kube/takeover.js');
  let p!: PreviewTarget;
  return serveTransport(o, {
    session: { command: 'preview', mode: '', target: o.name, via: false },
    prepare: async (ctx) => {
      p = await k.preparePreview({ ...ctx, flags: o.flags, name: o.name });
    },
    buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...k.previewLabels(p) } }, ctx),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, ports.map((x) => ({ local: x.local, listen: x.remote })), ctx.log, ctx.undo);
      await k.publishPreview(p, { ...ctx, labels: shadow.labels, annotations: shadow.annotations, ports, external: o.external });
      for (const x of ports) {
        o.stdout.write(`previewing service ${p.namespace}/${p.name} port ${x.remote} -> 127.0.0.1:${x.local}${o.external ? ' (LoadBalancer)' : ''}; Ctrl-C removes it\n`);
      }
    },
  });
}
