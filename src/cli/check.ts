import { constants, accessSync } from 'node:fs';
import { Command, Option } from 'clipanion';
import type { Kube } from '../kube/api.js';
import type { KubeTarget } from '../kube/config.js';
import { COMMANDS, CHECKED_PROFILES, needsOf, profileLabel, type CommandName, type Need, type Profile } from '../kube/permissions.js';
import { netAdminCapability } from '../tun/access.js';
import { describeError, KubeCommand } from './common/command.js';
import { oneOf } from './common/validators.js';

/** The Kubernetes layer, loaded when a command needs it (it carries @kubernetes/client-node). */
async function kubeLayer() {
  const [access, api, config, errors, rbac] = await Promise.all([
    import('../kube/access.js'),
    import('../kube/api.js'),
    import('../kube/config.js'),
    import('../kube/errors.js'),
    import('../kube/rbac-yaml.js'),
  ]);
  return { ...access, ...api, ...config, ...errors, ...rbac };
}
type KubeLayer = Awaited<ReturnType<typeof kubeLayer>>;

type Level = 'ok' | 'fail' | 'warn';

interface Line {
  level: Level;
  what: string;
  fix?: string;
}

/** One permission some profile lacks, with every profile that asks for it. */
interface Missing {
  need: Need;
  /** profiles that cannot work without it */
  requiredBy: string[];
  /** profiles that work without it, losing something */
  optionalFor: string[];
  level: Level;
  sentence: string;
  rbac?: { file: string; line: number } | { leftOut: string };
}

function keyOf(n: Need): string {
  return `${n.verb} ${n.resource}.${n.group} ${typeof n.scope === 'string' ? n.scope : n.scope.namespace} ${n.names?.join(',') ?? ''}`;
}

function listed(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

export class CheckCommand extends KubeCommand {
  static override paths = [['check']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'check that this machine and the cluster have what ktctl needs',
    details: `
      One line per check, \`ok\`, \`warn\` or \`fail\`, each failure with its fix: the kubeconfig and context, the API
      server, the namespace, and RBAC (SelfSubjectAccessReview) for every permission of every command and mode in
      ktctl's permission table (the one each command checks before it makes anything, and deploy/rbac is rendered
      from). A missing permission gets one line naming verb, resource, namespace, the commands that need it and the
      line of deploy/rbac that grants it; then the YAML to apply for all that is missing. With COMMAND, only that
      command's modes. Then the TUN device (/dev/net/tun and CAP_NET_ADMIN) and whether ktctl runs as root.

      Exits 1 when something the command (without COMMAND: connect) cannot work without is missing.
    `,
    examples: [
      ['Check the current context', '$0 check'],
      ['Check what exchange needs in namespace dev, as JSON', '$0 check exchange -n dev --json'],
      ['Check another context', '$0 check --context lab-dev'],
    ],
  });

  command = Option.String({ required: false, name: 'COMMAND', validator: oneOf('COMMAND', COMMANDS) });
  json = Option.Boolean('--json', false, { description: 'print the results as one JSON document' });
  override namespace = Option.String('--namespace,-n', { description: 'namespace to check (default: the context\'s, else default)' });

  async run(): Promise<number> {
    const lines: Line[] = [];
    const print = (l: Line): void => {
      lines.push(l);
      if (!this.json) this.context.stdout.write(`${l.level.padEnd(4)}  ${l.what}${l.fix ? `\n      ${l.what.startsWith('you may not') ? '' : 'fix: '}${l.fix}` : ''}\n`);
    };
    const k = await kubeLayer();
    let target: KubeTarget | undefined;
    try {
      target = k.loadKubeConfig(this.kubeFlags());
      print({ level: 'ok', what: `kubeconfig ${target.files.join(':')}, context ${target.context}, namespace ${target.namespace}` });
    } catch (error) {
      print({ level: 'fail', what: 'kubeconfig', fix: describeError(error) });
    }
    const profiles = CHECKED_PROFILES.filter((p) => this.command === undefined || p.command === this.command);
    let rbac: Awaited<ReturnType<CheckCommand['cluster']>> | undefined;
    if (target) rbac = await this.cluster(k, new k.Kube(target), profiles, print);
    if (this.command === undefined || this.command === 'connect') this.#local(print);
    const failed = lines.filter((l) => l.level === 'fail').length;
    if (this.json) {
      const doc = {
        context: target?.context,
        namespace: target?.namespace,
        server: target?.server,
        ok: failed === 0,
        checks: lines.filter((l) => !l.what.startsWith('you may not')),
        commands: rbac?.profiles ?? [],
        missing: (rbac?.missing ?? []).map((m) => ({
          verb: m.need.verb,
          group: m.need.group,
          resource: m.need.resource,
          scope: m.need.scope,
          ...(m.need.names ? { resourceNames: m.need.names } : {}),
          level: m.level,
          requiredBy: m.requiredBy,
          optionalFor: m.optionalFor,
          sentence: m.sentence,
          rbac: m.rbac,
        })),
        snippet: rbac?.snippet ?? '',
      };
      this.context.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    } else {
      if (rbac && rbac.snippet !== '') this.context.stdout.write(`\nto grant what is missing (kubectl apply -f -; deploy/rbac has the whole Role):\n${rbac.snippet}\n`);
      const who = this.command ?? 'connect';
      this.context.stdout.write(failed === 0 ? `everything ${who} needs is there\n` : `${failed} check(s) failed\n`);
    }
    return failed === 0 ? 0 : 1;
  }

  async cluster(k: KubeLayer, kube: Kube, profiles: Profile[], print: (l: Line) => void) {
    try {
      const now = await kube.serverNow();
      const skew = Math.round((Date.now() - now.getTime()) / 1000);
      print({ level: 'ok', what: `API server ${kube.server} answers (its clock differs from this machine's by ${skew} s; ktctl uses the API server's)` });
    } catch (error) {
      print({ level: 'fail', what: `API server ${kube.server}`, fix: describeError(error) });
      return undefined;
    }
    try {
      await k.kubeCall({ verb: 'get', resource: 'namespaces', name: kube.namespace, server: kube.server }, () => kube.core.readNamespace({ name: kube.namespace }));
      print({ level: 'ok', what: `namespace ${kube.namespace} exists` });
    } catch (error) {
      if (k.isNotFound(error)) print({ level: 'fail', what: `namespace ${kube.namespace} does not exist`, fix: 'pick an existing one with -n (kubectl get namespaces lists them)' });
      else if (error instanceof k.KubeForbiddenError) print({ level: 'warn', what: `namespace ${kube.namespace}: you may not read namespaces, so ktctl cannot tell whether it exists` });
      else print({ level: 'fail', what: `namespace ${kube.namespace}`, fix: describeError(error) });
    }
    // who the API server takes us for (SelfSubjectReview, `kubectl auth whoami`): the name to bind
    try {
      const { AuthenticationV1Api } = await import('@kubernetes/client-node');
      const review = await kube.kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } });
      const info = review.status?.userInfo;
      if (info?.username) print({ level: 'ok', what: `you are ${info.username}${info.groups?.length ? ` (groups ${info.groups.join(', ')})` : ''}: the name a RoleBinding binds (deploy/rbac/bindings.yaml)` });
    } catch {
      /* an API server older than 1.28 has no SelfSubjectReview: nothing to say */
    }
    // every permission once, then each profile's answer from those
    const all = new Map<string, Need>();
    for (const p of profiles) for (const n of needsOf(p)) if (!all.has(keyOf(n))) all.set(keyOf(n), n);
    let answers: Map<string, boolean>;
    try {
      const r = await k.review(kube, [...all.values()]);
      answers = new Map(r.map((a) => [keyOf(a.need), a.allowed]));
    } catch (error) {
      print({ level: 'fail', what: 'RBAC (SelfSubjectAccessReview)', fix: describeError(error) });
      return undefined;
    }
    const missing = new Map<string, Missing>();
    const report: Array<{ profile: string; command: CommandName; flags: Profile['flags']; ok: boolean; needs: Array<Need & { allowed: boolean }> }> = [];
    for (const p of profiles) {
      const label = profileLabel(p);
      const needs = needsOf(p).map((n) => ({ ...n, allowed: answers.get(keyOf(n)) === true }));
      report.push({ profile: label, command: p.command, flags: p.flags, ok: needs.every((n) => n.allowed || n.lost !== undefined), needs });
      for (const n of needs) {
        if (n.allowed) continue;
        let m = missing.get(keyOf(n));
        if (!m) {
          const { allowed: _a, ...need } = n;
          m = { need, requiredBy: [], optionalFor: [], level: 'warn', sentence: '', rbac: k.whereGranted(n) };
          missing.set(keyOf(n), m);
        }
        (n.lost === undefined ? m.requiredBy : m.optionalFor).push(label);
      }
    }
    for (const p of report) if (p.needs.every((n) => n.allowed)) print({ level: 'ok', what: `RBAC for ${p.profile}` });
    for (const m of missing.values()) {
      const failsConnect = m.requiredBy.some((l) => l.startsWith('connect') || this.command !== undefined);
      m.level = m.requiredBy.length > 0 && failsConnect ? 'fail' : 'warn';
      m.sentence = k.forbiddenSentence(m.need, kube.namespace);
      const who = m.requiredBy.length > 0 ? `${listed(m.requiredBy)} cannot work without it (${m.need.why})` : `${listed(m.optionalFor)} work without it, but ${m.need.lost ?? ''}`;
      print({ level: m.level, what: m.sentence, fix: who });
    }
    const snippet = missing.size > 0 ? k.snippetFor([...missing.values()].map((m) => m.need), kube.namespace) : '';
    return { profiles: report, missing: [...missing.values()], snippet };
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
