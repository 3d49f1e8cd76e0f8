import { constants, accessSync } from 'node:fs';
import { Command, Option } from 'clipanion';
import type { Permission } from '../kube/access.js';
import type { Kube } from '../kube/api.js';
import type { KubeTarget } from '../kube/config.js';
import { netAdminCapability } from '../tun/access.js';
import { describeError, KubeCommand } from './common/command.js';

/** The Kubernetes layer, loaded when a command needs it (it carries @kubernetes/client-node). */
async function kubeLayer() {
  const [access, api, config, errors] = await Promise.all([
    import('../kube/access.js'),
    import('../kube/api.js'),
    import('../kube/config.js'),
    import('../kube/errors.js'),
  ]);
  return { ...access, ...api, ...config, ...errors };
}
type KubeLayer = Awaited<ReturnType<typeof kubeLayer>>;

type Level = 'ok' | 'fail' | 'warn';

interface Line {
  level: Level;
  what: string;
  fix?: string;
}

export class CheckCommand extends KubeCommand {
  static override paths = [['check']];

  static override usage = Command.Usage({
    description: 'check that this machine and the cluster have what ktctl needs',
    details: `
      One line per check, \`ok\`, \`warn\` or \`fail\`, each failure with its fix: the kubeconfig and context, the API
      server, the namespace, RBAC (SelfSubjectAccessReview) for what \`connect\`, \`clean\` and \`exchange\` do,
      the TUN device (/dev/net/tun and CAP_NET_ADMIN) and whether ktctl runs as root. Exits 1 when something
      \`connect\` needs fails.
    `,
    examples: [['Check the current context', '$0 check'], ['Check another context and namespace', '$0 check --context lab-readonly -n default']],
  });

  override namespace = Option.String('--namespace,-n', { description: 'namespace to check (default: the context\'s, else default)' });

  async run(): Promise<number> {
    const lines: Line[] = [];
    const print = (l: Line): void => {
      lines.push(l);
      this.context.stdout.write(`${l.level.padEnd(4)}  ${l.what}${l.fix ? `\n      fix: ${l.fix}` : ''}\n`);
    };
    const k = await kubeLayer();
    let target: KubeTarget | undefined;
    try {
      target = k.loadKubeConfig(this.kubeFlags());
      print({ level: 'ok', what: `kubeconfig ${target.files.join(':')}, context ${target.context}, namespace ${target.namespace}` });
    } catch (error) {
      print({ level: 'fail', what: 'kubeconfig', fix: describeError(error) });
    }
    if (target) await this.#cluster(k, new k.Kube(target), print);
    this.#local(print);
    const failed = lines.filter((l) => l.level === 'fail').length;
    this.context.stdout.write(failed === 0 ? 'everything connect needs is there\n' : `${failed} check(s) failed\n`);
    return failed === 0 ? 0 : 1;
  }

  async #cluster(k: KubeLayer, kube: Kube, print: (l: Line) => void): Promise<void> {
    try {
      const now = await kube.serverNow();
      const skew = Math.round((Date.now() - now.getTime()) / 1000);
      print({ level: 'ok', what: `API server ${kube.server} answers (its clock differs from this machine's by ${skew} s; ktctl uses the API server's)` });
    } catch (error) {
      print({ level: 'fail', what: `API server ${kube.server}`, fix: describeError(error) });
      return;
    }
    try {
      await k.kubeCall({ verb: 'get', resource: 'namespaces', name: kube.namespace, server: kube.server }, () => kube.core.readNamespace({ name: kube.namespace }));
      print({ level: 'ok', what: `namespace ${kube.namespace} exists` });
    } catch (error) {
      if (k.isNotFound(error)) print({ level: 'fail', what: `namespace ${kube.namespace} does not exist`, fix: 'pick an existing one with -n (kubectl get namespaces lists them)' });
      else if (error instanceof k.KubeForbiddenError) print({ level: 'warn', what: `namespace ${kube.namespace}: you may not read namespaces, so ktctl cannot tell whether it exists` });
      else print({ level: 'fail', what: `namespace ${kube.namespace}`, fix: describeError(error) });
    }
    for (const [command, needs] of Object.entries(k.NEEDS) as Array<[keyof typeof k.NEEDS, Permission[]]>) {
      try {
        const answers = await Promise.all(needs.map(async (x) => ({ x, ok: (await k.mayI(kube, x, kube.namespace)).allowed })));
        const denied = answers.filter((a) => !a.ok).map((a) => k.describePermission(a.x));
        if (denied.length === 0) print({ level: 'ok', what: `RBAC for ${command}: ${needs.map(k.describePermission).join(', ')}` });
        else
          print({
            level: command === 'connect' ? 'fail' : 'warn',
            what: `RBAC for ${command}: you may not ${denied.join(', ')} in namespace ${kube.namespace}`,
            fix: `ask a cluster administrator for a Role in ${kube.namespace} that allows ${denied.join(', ')}, or use a context that has it`,
          });
      } catch (error) {
        print({ level: 'fail', what: `RBAC for ${command}`, fix: describeError(error) });
      }
    }
  }

  #local(print: (l: Line) => void): void {
    const root = typeof process.getuid === 'function' && process.getuid() === 0;
    let tun = true;
    try {
      accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    } catch {
      tun = false;
    }
    const netAdmin = netAdminCapability() ?? false;
    if (tun && netAdmin) print({ level: 'ok', what: '/dev/net/tun is usable and this process has CAP_NET_ADMIN (connect --mode tun works)' });
    else
      print({
        level: 'warn',
        what: `TUN mode unavailable: ${tun ? '' : '/dev/net/tun is missing or not accessible; '}${netAdmin ? '' : 'no CAP_NET_ADMIN'}`.replace(/; $/, ''),
        fix: 'run ktctl as root (sudo) for --mode tun, or use --mode socks, which needs neither',
      });
    print({ level: root ? 'ok' : 'warn', what: root ? 'running as root' : 'not running as root: --mode socks works, --mode tun needs root', fix: root ? undefined : 'sudo ktctl connect, or ktctl connect --mode socks' });
  }
}
