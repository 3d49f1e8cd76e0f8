import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { exchangeService } from '../connect/takeover.js';
import { ExposeCommand } from './common/expose.js';
import { duration, flag } from './common/validators.js';
import { useProfile } from '../kube/permissions.js';

/** `--mode`; KT Connect's experimental `ephemeral` is refused with what to use. */
const exchangeMode = flag<'selector' | 'scale'>((text) => {
  if (text === 'selector' || text === 'scale') return text;
  if (text === 'ephemeral') throw new UsageError('--mode ephemeral (KT Connect\'s experimental ephemeral container in the target pod) has no counterpart in ktctl: use --mode selector (default) or --mode scale');
  throw new UsageError(`--mode must be selector or scale (got "${text}")`);
});

export class ExchangeCommand extends ExposeCommand {
  static override paths = [['exchange']];

  static override usage = Command.Usage({
    category: 'Take over a service\'s traffic',
    description: 'send the traffic of a cluster service to a port on this machine',
    details: `
      A shadow pod takes the place of the service's pods; every connection the cluster makes to the service's
      exposed ports comes through the shadow and an ssh remote forward to \`127.0.0.1:LOCAL\` here.

      \`--mode selector\` (default) points the service's selector at the shadow (the original is kept in the
      annotation \`ktctl/original-selector\`); \`--mode scale\` gives the shadow the pod labels of the deployment
      behind the service and scales that deployment to 0 (\`ktctl/original-replicas\`). On SIGINT/SIGTERM the
      service is restored (scale mode waits up to \`--recoverWaitTime\` seconds for the replicas to be ready)
      and the shadow removed. The service is locked meanwhile: a second exchange fails naming the owner.
      After a crash, \`ktctl recover <svc>\` (or \`ktctl clean\`) restores it.

      The remote port of \`--expose LOCAL:REMOTE\` is one of the service's ports (or a numeric targetPort).
    `,
    examples: [
      ['The service web\'s port 80 goes to a local server on 8080', '$0 exchange web --expose 8080:80'],
      ['Scale the deployment down instead of changing the selector', '$0 exchange deploy/web --expose 8080:80 --mode scale'],
      ['Run a local program with the environment of web\'s pods while it takes web\'s traffic', '$0 exchange web --expose 8080:80 --envFile web.env -- npm start'],
    ],
  });

  service = Option.String({ name: 'svc|svc/NAME|deploy/NAME' });
  mode = Option.String('--mode,-m', 'selector', { description: 'selector (default: point the service at the shadow) or scale (scale the deployment to 0)', validator: exchangeMode });
  recoverWaitTime = Option.String('--recoverWaitTime,--recover-wait-time', '120', {
    description: 'seconds to wait on exit for the scaled-back replicas to be ready (scale mode)',
    validator: duration('--recoverWaitTime', { unit: 'seconds', zero: true }),
  });

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
    useProfile({ command: 'exchange', flags: { mode: this.mode, shareShadow: this.shareShadow, env: this.envWanted() } }, (l) => this.debugLog(l));
    const ports = this.exposedPorts();
    const shadow = this.kubeTransportOptions({ role: 'exchange', mode: `exchange ${this.mode}` });
    await this.checkLocal(ports);
    return exchangeService({
      ...this.io(), stderr: this.context.stderr, flags: this.kubeFlags(), ports, shadow,
      service: this.service, mode: this.mode, recoverWaitMs: this.recoverWaitTime * 1000,
      env: { envFile: this.envFile, envJson: this.envJson, container: this.container, command: this.command },
    });
  }
}
