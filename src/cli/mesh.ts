import { randomBytes } from 'node:crypto';
import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { DEFAULT_MARK_HEADER, meshBindAddress, meshMarkProblem, type MeshMark } from '../protocol/index.js';
import type { Heartbeat } from '../kube/heartbeat.js';
import type { RouterPort } from '../kube/mesh.js';
import type { ExposedServicePort } from '../kube/target.js';
import { serveTransport } from './connect-transport.js';
import { ExposeCommand, serveExposedPorts } from './expose.js';
import type { KubeTransportOptions } from './transport-kube.js';

/** `--versionMark key:val`, `val` (header VERSION), or nothing (a random value). */
export function parseVersionMark(text: string | undefined): MeshMark {
  let mark: MeshMark;
  if (text === undefined || text.trim() === '') mark = { key: DEFAULT_MARK_HEADER, value: randomBytes(3).toString('hex') };
  else {
    const t = text.trim();
    const colon = t.indexOf(':');
    mark = colon < 0 ? { key: DEFAULT_MARK_HEADER, value: t } : { key: t.slice(0, colon).trim(), value: t.slice(colon + 1).trim() };
  }
  const problem = meshMarkProblem(mark);
  if (problem !== undefined) throw new UsageError(`--versionMark takes HEADER:VALUE (e.g. VERSION:alice): ${problem}`);
  return mark;
}

export class MeshCommand extends ExposeCommand {
  static override paths = [['mesh']];

  static override usage = Command.Usage({
    description: 'send only the requests that carry a version header to a port on this machine',
    details: `
      \`--mode auto\` (default): a router pod (the shadow image in role router) takes over the service's
      selector; the original pods stay reachable through a Service \`<svc>-ktctl-stuntman\` with the original
      selector. Requests whose header matches \`--versionMark\` (HEADER:VALUE, default header VERSION with a
      random value that ktctl prints) come to \`127.0.0.1:LOCAL\` here, every other request goes to the original
      pods. HTTP/1.1 is routed per request (also on keep-alive connections), WebSocket upgrades and h2c (gRPC)
      streams on the same header; a port that does not speak HTTP goes to the original pods. Several developers
      can mesh one service at once with different marks: the router is shared, and the last one to stop puts
      the selector back and removes router and stuntman.

      \`--mode manual\`: only a shadow that carries the service's selector labels plus \`version=<value>\`, and
      the Istio VirtualService and DestinationRule to apply for it are printed. Nothing else is changed.

      After a crash, \`ktctl recover <svc>\` (or \`ktctl clean\`) restores the service.
    `,
    examples: [
      ['Requests with "VERSION: alice" to web:80 come to a local server on 8080', '$0 mesh web --expose 8080:80 --versionMark VERSION:alice'],
      ['Print the Istio rules for a shadow instead of running a router', '$0 mesh web --expose 8080:80 --mode manual'],
    ],
  });

  service = Option.String({ name: 'svc|svc/NAME|deploy/NAME' });
  mode = Option.String('--mode,-m', 'auto', { description: 'auto (default: a router in front of the service) or manual (a shadow and the Istio rules for it)' });
  versionMark = Option.String('--versionMark,--version-mark', { description: 'HEADER:VALUE that marks the requests for this machine (default VERSION:<random>)' });
  routerImage = Option.String('--routerImage,--router-image', { description: 'image of the router pod (default: the shadow image)' });
  clusterDomain = Option.String('--clusterDomain,--cluster-domain', 'cluster.local', { description: 'the cluster\'s DNS domain (for the Istio rules)' });

  async run(): Promise<number> {
    const ports = this.exposedPorts();
    if (this.mode !== 'auto' && this.mode !== 'manual') throw new UsageError(`--mode must be auto or manual (got "${this.mode}")`);
    const mode = this.mode;
    const mark = parseVersionMark(this.versionMark);
    const header = `${mark.key}: ${mark.value}`;
    await this.checkLocal(ports);
    const [{ openKube }, access, { KubeForbiddenError }, target, { acquireLock }, { Heartbeat }, mesh, { Progress }, names, { kubeTransport }, selector, exchange, { recoverService }] = await Promise.all([
      import('../kube/session.js'),
      import('../kube/access.js'),
      import('../kube/errors.js'),
      import('../kube/target.js'),
      import('../kube/lock.js'),
      import('../kube/heartbeat.js'),
      import('../kube/mesh.js'),
      import('../kube/progress.js'),
      import('../kube/names.js'),
      import('./transport-kube.js'),
      import('../kube/selector.js'),
      import('../kube/exchange.js'),
      import('../kube/recover.js'),
    ]);
    let namespace = '';
    let svc = '';
    let exposed: ExposedServicePort[] = [];
    let heartbeat!: Heartbeat;
    let originalVersion: string | undefined;
    let transportOptions!: KubeTransportOptions;
    return serveTransport({
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // Everything that can refuse comes before the tunnel: RBAC, the target, its ports, the lock, the mark.
      prepare: async (ctx) => {
        const kube = openKube({ kubeconfig: this.kubeconfig, context: this.kubeContext, namespace: this.namespace });
        namespace = kube.namespace;
        await kube.serverNow();
        const denied = await access.firstDenied(kube, access.NEEDS.exchange, namespace);
        if (denied) throw new KubeForbiddenError(denied.verb, denied.resource, namespace);
        const found = await target.resolveTarget(kube, namespace, this.service);
        svc = found.service.metadata?.name ?? '';
        const deployment = found.deployment ?? found.deployments[0];
        originalVersion = deployment?.spec?.template.metadata?.labels?.version;
        exposed = target.checkRemotePorts(found.service, ports, deployment);
        const originalSelector = selector.originalSelectorOf(found.service) ?? found.service.spec?.selector ?? {};

        heartbeat = new Heartbeat(kube, { debug: ctx.debug });
        ctx.undo.add('the heartbeat of the service', () => heartbeat.stop());
        const lock = await acquireLock(kube, { namespace, service: svc, role: 'mesh', undo: ctx.undo, heartbeat, log: ctx.log });
        heartbeat.start();
        if (lock.tookOverFrom.length > 0 && lock.sharedWith.length === 0) {
          // Nobody alive meshes it: what the dead owners left (router, stuntman, selector) goes first.
          await recoverService(kube, namespace, svc, { force: true, keepLock: true, log: (l) => ctx.log(`recover: ${l}`) });
        }

        if (mode === 'manual') {
          const labels = { ...(deployment ? exchange.standInLabels(deployment) : originalSelector), version: mark.value, [names.LABEL_SERVICE]: svc };
          transportOptions = {
            ...this.transportOptions({
              role: 'mesh',
              labels,
              mode: 'mesh manual',
              ports: exposed.map((p) => ({ name: p.portName, containerPort: p.listen })),
              sysctls: exposed.some((p) => p.listen < 1024) ? [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }] : undefined,
            }),
            namespace,
          };
          return;
        }
        // The router serves every target port of the service: it takes all of the service's traffic.
        const all = (found.service.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => ({ local: p.port, remote: p.port }));
        const routerPorts = new Map<number, RouterPort>();
        for (const p of target.checkRemotePorts(found.service, all, deployment)) if (!routerPorts.has(p.listen)) routerPorts.set(p.listen, { port: p.listen, name: p.portName });
        const base = this.transportOptions({ role: 'router', labels: {}, mode: 'mesh auto' });
        const image = this.routerImage ?? base.image;
        const router = await mesh.joinRouter(
          kube,
          {
            namespace,
            service: found.service,
            originalSelector,
            ports: [...routerPorts.values()],
            mark,
            image,
            imagePullSecret: base.imagePullSecret,
            nodeSelector: base.nodeSelector,
            labels: base.labels,
            annotations: base.annotations,
            podCreationTimeoutMs: base.podCreationTimeoutMs,
            progress: new Progress(this.context.stderr, ctx.log),
            signal: ctx.signal,
            log: ctx.log,
          },
          ctx.undo,
        );
        heartbeat.add({ kind: 'service', namespace, name: mesh.stuntmanName(svc) });
        transportOptions = { ...base, image, namespace, attach: { name: router.name, keys: router.keys, what: router.what } };
      },
      buildTransport: (ctx) => kubeTransport(transportOptions, ctx),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, exposed, ctx.log, ctx.undo, mode === 'auto' ? meshBindAddress(mark) : undefined);
        // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
        ctx.undo.add('the heartbeat', () => heartbeat.stop());
        const out = this.context.stdout;
        if (mode === 'manual') {
          out.write(
            `a shadow with the labels of service ${namespace}/${svc} and version=${mark.value} takes a share of its traffic; for routing by header, apply:\n` +
              mesh.istioManifests({ namespace, service: svc, mark, clusterDomain: this.clusterDomain, originalVersion }),
          );
        }
        out.write(`version mark: ${header}\n`);
        for (const p of exposed) {
          out.write(`meshed service ${namespace}/${svc} port ${p.servicePort} (--mode ${mode}): requests with "${header}" -> 127.0.0.1:${p.local}; Ctrl-C stops\n`);
        }
      },
    });
  }
}
