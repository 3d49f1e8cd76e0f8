import { randomBytes } from 'node:crypto';
import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { DEFAULT_MARK_HEADER, meshMarkProblem, type MeshMark } from '../protocol/index.js';
import { meshService } from '../connect/takeover.js';
import { ExposeCommand } from './common/expose.js';
import { oneOf } from './common/validators.js';
import { useProfile } from '../kube/permissions.js';

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
    category: 'Take over a service\'s traffic',
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
      ['Run a local program with the environment of web\'s pods while it takes web\'s traffic', '$0 mesh web --expose 8080:80 --envFile web.env -- npm start'],
    ],
  });

  service = Option.String({ name: 'svc|svc/NAME|deploy/NAME' });
  mode = Option.String('--mode,-m', 'auto', { description: 'auto (default: a router in front of the service) or manual (a shadow and the Istio rules for it)', validator: oneOf('--mode', ['auto', 'manual']) });
  versionMark = Option.String('--versionMark,--version-mark', { description: 'HEADER:VALUE that marks the requests for this machine (default VERSION:<random>)' });
  routerImage = Option.String('--routerImage,--router-image', { description: 'image of the router pod (default: the shadow image)' });

  envFile = Option.String('--envFile,--env-file', { description: 'write the environment of the service\'s pods (env, envFrom, ConfigMaps, Secrets) to this dotenv file (0600)' });
  envJson = Option.String('--envJson,--env-json', { description: 'the same environment as a JSON object' });
  container = Option.String('--container', { description: 'the container whose environment is read (default: the pod\'s default container, else the first)' });
  command = Option.Rest({ name: '-- command args' });

  /** Reading ConfigMaps, Secrets and pods is asked for only when the environment is. */
  private envWanted(): boolean {
    const wanted = this.envFile !== undefined || this.envJson !== undefined || this.command.length > 0;
    if (this.container !== undefined && !wanted) throw new UsageError('--container picks the container whose environment --envFile, --envJson or -- command read: give one of them too');
    return wanted;
  }

  async run(): Promise<number> {
    useProfile({ command: 'mesh', flags: { mode: this.mode, shareShadow: this.shareShadow, env: this.envWanted() } }, (l) => this.debugLog(l));
    const ports = this.exposedPorts();
    const mode = this.mode;
    const mark = parseVersionMark(this.versionMark);
    if (mode === 'manual') checkLabelValue(mark.value);
    const shadow = this.kubeTransportOptions(mode === 'manual' ? { role: 'mesh', mode: 'mesh manual' } : { role: 'router', mode: 'mesh auto' });
    await this.checkLocal(ports);
    return meshService({
      ...this.io(), stderr: this.context.stderr, flags: this.kubeFlags(), ports, shadow,
      service: this.service, mode, mark, clusterDomain: this.clusterDomain, routerImage: this.routerImage,
      env: { envFile: this.envFile, envJson: this.envJson, container: this.container, command: this.command },
    });
  }
}
