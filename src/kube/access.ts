/**
 * What RBAC allows, asked with SelfSubjectAccessReview (no side effects), for the permissions of
 * the table in permissions.ts: each command asks before it makes anything (`preflight`), `check`
 * asks for every command and mode.
 */
import type { Kube } from './api.js';
import { kubeCall, KubeForbiddenError } from './errors.js';
import { activeProfile, needsOf, type Need } from './permissions.js';

export interface Answer {
  need: Need;
  allowed: boolean;
  /** the API server's reason (which binding allowed it), when it gives one */
  reason?: string;
}

function namespaceOf(n: Need, namespace: string): string {
  if (n.scope === 'cluster') return '';
  return typeof n.scope === 'string' ? namespace : n.scope.namespace;
}

/** Asks the API server about every permission of `needs` in `namespace` (all in parallel). */
export async function review(kube: Kube, needs: Need[], namespace: string = kube.namespace): Promise<Answer[]> {
  return Promise.all(
    needs.map(async (need) => {
      const [resource, subresource] = need.resource.split('/');
      let allowed = true;
      let reason: string | undefined;
      for (const name of need.names ?? [undefined]) {
        const r = await kubeCall({ verb: 'create', resource: 'selfsubjectaccessreviews', server: kube.server }, () =>
          kube.authz.createSelfSubjectAccessReview({
            body: {
              apiVersion: 'authorization.k8s.io/v1',
              kind: 'SelfSubjectAccessReview',
              spec: { resourceAttributes: { verb: need.verb, group: need.group, resource, subresource, namespace: namespaceOf(need, namespace), name } },
            },
          }),
        );
        if (r.status?.allowed !== true) allowed = false;
        reason ??= r.status?.reason;
      }
      return { need, allowed, ...(reason ? { reason } : {}) };
    }),
  );
}

const checked = new WeakSet<Kube>();

/**
 * Before the running command (permissions.ts `useProfile`) makes anything: every permission it
 * cannot work without must be allowed, else KubeForbiddenError for the first one missing, in the
 * sentence `check` prints for it. Optional ones missing are logged once with what is lost.
 */
export async function preflight(kube: Kube, log: (line: string) => void = () => undefined): Promise<void> {
  const profile = activeProfile();
  if (!profile || checked.has(kube)) return;
  checked.add(kube);
  const answers = await review(kube, needsOf(profile));
  const missing = answers.filter((a) => !a.allowed);
  const required = missing.find((a) => a.need.lost === undefined);
  if (required) throw KubeForbiddenError.of(required.need, kube.namespace);
  const byLoss = new Map<string, string[]>();
  for (const a of missing) byLoss.set(a.need.lost!, [...(byLoss.get(a.need.lost!) ?? []), describeNeed(a.need, kube.namespace)]);
  for (const [lost, what] of byLoss) log(`note: RBAC does not allow ${what.join(', ')}, so ${lost}`);
}

function describeNeed(n: Need, namespace: string): string {
  const where = n.scope === 'cluster' ? 'at cluster scope' : `in namespace ${typeof n.scope === 'string' ? namespace : n.scope.namespace}`;
  return `${n.verb} ${n.resource}${n.group ? `.${n.group}` : ''}${n.names ? ` ${n.names.join(', ')}` : ''} ${where}`;
}
