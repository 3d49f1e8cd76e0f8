import { Command, Option } from 'clipanion';
import { STALE_AFTER_MINUTES } from '../kube/names.js';
import { KubeCommand } from './common/command.js';
import { useProfile } from '../kube/permissions.js';

export class RecoverCommand extends KubeCommand {
  static override paths = [['recover']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'restore a service that an exchange or mesh left changed',
    details: `
      Puts the service's selector back from \`ktctl/original-selector\`, scales its deployments back from
      \`ktctl/original-replicas\`, deletes the shadow, router and stuntman objects ktctl made for it (label
      \`ktctl/service\`) and removes its lock: what the ktctl process would have done on exit, for when it
      could not (kill -9, a crash, a laptop that went away).

      It refuses while the process that made the changes still lives: a ktctl process on this machine that
      still runs (stop it instead: it restores everything itself), or one on another machine whose heartbeat is
      younger than ${STALE_AFTER_MINUTES} minutes. \`--force\` recovers anyway.
    `,
    examples: [
      ['Restore the service web after ktctl exchange was killed', '$0 recover web -n dev'],
      ['Take a service back from a colleague\'s live exchange', '$0 recover web --force'],
    ],
  });

  service = Option.String({ name: 'svc' });
  force = Option.Boolean('--force', false, { description: 'recover even when the owner still looks alive' });

  async run(): Promise<number> {
    useProfile({ command: 'recover', flags: {} }, (l) => this.debugLog(l));
    const [{ openCluster }, { parseTargetName }, { recoverService }] = await Promise.all([import('../kube/takeover.js'), import('../kube/target.js'), import('../kube/recover.js')]);
    const { name } = parseTargetName(this.service);
    const kube = await openCluster(this.kubeFlags(), (l) => this.log(l));
    await recoverService(kube, kube.namespace, name, { force: this.force, log: (l) => this.context.stdout.write(`${l}\n`) });
    return 0;
  }
}
