import { Command, Option } from 'clipanion';
import { useProfile } from '../kube/permissions.js';
import { KubeCommand } from './common/command.js';
import { oneOf } from './common/validators.js';

export class BirdseyeCommand extends KubeCommand {
  static override paths = [['birdseye']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'who holds which service: every service of the namespace and what ktctl does to it',
    details: `
      One row per service (KT Connect's birdseye): natural, exchanged (mode, by whom, since when), meshed (version
      marks, router) or a preview, with the age and heartbeat of every ktctl object that belongs to it. A holder
      whose process is gone on this machine, or whose heartbeat is older than 5 minutes, is marked STALE:
      \`ktctl recover SVC\` puts such a service back.

      What RBAC does not let you read is left out with a note naming the permission; listing services is all it
      needs to show anything.
    `,
    examples: [
      ['The current namespace', '$0 birdseye'],
      ['Only services ktctl holds, in every namespace', '$0 birdseye -A --hideNaturalService'],
      ['Also who is connected, as JSON', '$0 birdseye --showConnector --json'],
    ],
  });

  sortBy = Option.String('--sortBy,--sort-by', 'status', { description: 'status (exchanged, meshed, natural, preview; default) or name', validator: oneOf('--sortBy', ['status', 'name']) });
  hideNaturalService = Option.Boolean('--hideNaturalService,--hide-natural-service', false, { description: 'only services that are exchanged, meshed or previews' });
  showConnector = Option.Boolean('--showConnector,--show-connector', false, { description: 'also list who is connected (connect shadows) and their heartbeats' });
  allNamespaces = Option.Boolean('--all-namespaces,-A', false, { description: 'every namespace you may list' });
  json = Option.Boolean('--json', false, { description: 'print one JSON document' });

  async run(): Promise<number> {
    useProfile({ command: 'birdseye', flags: {} }, (l) => this.debugLog(l));
    const [{ openKube }, { birdseye, describeBirdseye }] = await Promise.all([import('../kube/session.js'), import('../kube/birdseye.js')]);
    const kube = openKube(this.kubeFlags());
    const b = await birdseye(kube, { namespace: this.allNamespaces ? undefined : kube.namespace, sortBy: this.sortBy, hideNaturalService: this.hideNaturalService });
    const out = this.context.stdout;
    if (this.json) {
      const { connectors, ...rest } = b;
      out.write(`${JSON.stringify(this.showConnector ? b : rest, null, 2)}\n`);
      return 0;
    }
    for (const line of describeBirdseye(b, { showConnector: this.showConnector, allNamespaces: this.allNamespaces })) out.write(`${line}\n`);
    return 0;
  }
}
