import { randomBytes } from 'node:crypto';
import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { DEFAULT_MARK_HEADER, meshBindAddress, meshMarkProblem, type MeshMark } from '../protocol/index.js';
import type { ServiceTakeover } from '../kube/takeover.js';
import { serveTransport } from '../connect/serve.js';
import { kubeTransport } from '../connect/transports.js';
import { serveExposedPorts } from '../connect/expose.js';
import { ExposeCommand } from './common/expose.js';
import { oneOf } from './common/validators.js';
import type { KubeTransportOptions } from '../kube/transport.js';

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

/** Label values: at most 63 characters of [A-Za-z0-9._-], a letter or digit at both ends. */
const LABEL_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

/** `--mode manual` puts the mark's value into the shadow's label `version=<value>`. */
export function checkLabelValue(value: string): void {
  if (!LABEL_VALUE.test(value)) {
    throw new UsageError(`--mode manual puts the --versionMark value into the shadow's label version, so it must be at most 63 letters, digits, '.', '_' or '-' with a letter or digit at both ends (got "${value}")`);
  }
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
  mode = Option.String('--mode,-m', 'auto', { description: 'auto (default: a router in front of the service) or manual (a shadow and the Istio rules for it)', validator: oneOf('--mode', ['auto', 'manual']) });
  versionMark = Option.String('--versionMark,--version-mark', { description: 'HEADER:VALUE that marks the requests for this machine (default VERSION:<random>)' });
  routerImage = Option.String('--routerImage,--router-image', { description: 'image of the router pod (default: the shadow image)' });

  async run(): Promise<number> {
    const ports = this.exposedPorts();
    const mode = this.mode;
    const mark = parseVersionMark(this.versionMark);
    if (mode === 'manual') checkLabelValue(mark.value);
    const header = `${mark.key}: ${mark.value}`;
    const shadow = this.kubeTransportOptions(mode === 'manual' ? { role: 'mesh', mode: 'mesh manual' } : { role: 'router', mode: 'mesh auto' });
    await this.checkLocal(ports);
    const k = await import('../kube/takeover.js');
    let t!: ServiceTakeover;
    let manifests = '';
    let transportOptions!: KubeTransportOptions;
    return serveTransport({
      stop: this.stop,
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // Everything that can refuse comes before the tunnel: RBAC, the target, its ports, the lock, the mark.
      prepare: async (ctx) => {
        t = await k.prepareServiceTakeover({ ...ctx, flags: this.kubeFlags(), role: 'mesh', target: this.service, expose: ports });
        if (mode === 'manual') {
          const manual = k.meshManual(t, mark, this.clusterDomain);
          manifests = manual.manifests;
          transportOptions = { ...shadow, labels: { ...shadow.labels, ...manual.labels }, ports: k.shadowPorts(t.exposed) };
          return;
        }
        const image = this.routerImage ?? shadow.image;
        const router = await k.joinMeshRouter(t, { ...ctx, ...shadow, image, mark, signal: ctx.signal });
        transportOptions = { ...shadow, image, attach: { name: router.name, keys: router.keys, what: router.what } };
      },
      buildTransport: (ctx) => kubeTransport(transportOptions, ctx),
      start: async (transport, ctx) => {
        await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo, mode === 'auto' ? meshBindAddress(mark) : undefined);
        // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
        ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
        const out = this.context.stdout;
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
}
