/**
 * What RBAC allows, asked with SelfSubjectAccessReview (no side effects): `connect` checks what it
 * needs before it creates anything, `check` shows the whole table.
 */
import type { Kube } from './api.js';
import { kubeCall } from './errors.js';

export interface Permission {
  verb: string;
  /** plural resource, optionally with "/subresource" */
  resource: string;
  group: string;
}

const p = (verb: string, resource: string, group = ''): Permission => ({ verb, resource, group });

const CONNECT: Permission[] = [
  p('create', 'pods'),
  p('get', 'pods'),
  p('delete', 'pods'),
  p('patch', 'pods'),
  p('create', 'pods/portforward'),
  p('create', 'secrets'),
  p('delete', 'secrets'),
  p('patch', 'secrets'),
  // the shadow program (src/kube/program.ts): made once per build and namespace, reused after
  p('create', 'configmaps'),
  p('get', 'configmaps'),
  p('patch', 'configmaps'),
];

/** exchange: the lock and selector on the Service, the deployment's scale, a shadow as connect makes it. */
const EXCHANGE: Permission[] = [
  p('get', 'services'),
  p('patch', 'services'),
  p('watch', 'services'),
  p('list', 'services'),
  p('get', 'deployments', 'apps'),
  p('list', 'deployments', 'apps'),
  p('patch', 'deployments', 'apps'),
  p('patch', 'deployments/scale', 'apps'),
  ...CONNECT,
];

/**
 * What each command needs, in the namespace it works in (exchange and preview make a shadow as
 * connect does; mesh also makes and deletes the stuntman Service and reads the keys its users share
 * from the router's Secret).
 */
export const NEEDS: Record<'connect' | 'clean' | 'exchange' | 'mesh' | 'preview' | 'recover', Permission[]> = {
  connect: CONNECT,
  clean: [
    p('list', 'pods'),
    p('delete', 'pods'),
    p('list', 'secrets'),
    p('delete', 'secrets'),
    p('list', 'configmaps'),
    p('delete', 'configmaps'),
    p('list', 'services'),
    p('list', 'deployments', 'apps'),
  ],
  exchange: EXCHANGE,
  mesh: [...EXCHANGE, p('create', 'services'), p('delete', 'services'), p('get', 'secrets')],
  preview: [p('get', 'services'), p('create', 'services'), p('delete', 'services'), p('patch', 'services'), ...CONNECT],
  recover: [
    p('get', 'services'),
    p('patch', 'services'),
    p('list', 'services'),
    p('delete', 'services'),
    p('list', 'deployments', 'apps'),
    p('get', 'deployments', 'apps'),
    p('patch', 'deployments', 'apps'),
    p('patch', 'deployments/scale', 'apps'),
    p('list', 'pods'),
    p('delete', 'pods'),
    p('list', 'secrets'),
    p('delete', 'secrets'),
    p('list', 'configmaps'),
    p('delete', 'configmaps'),
  ],
};

export function describePermission(x: Permission): string {
  return `${x.verb} ${x.resource}${x.group ? `.${x.group}` : ''}`;
}

/** Asks the API server whether the current user may do `x` in `namespace`. */
export async function mayI(kube: Kube, x: Permission, namespace: string): Promise<{ allowed: boolean; reason?: string }> {
  const [resource, subresource] = x.resource.split('/');
  const review = await kubeCall({ verb: 'create', resource: 'selfsubjectaccessreviews', server: kube.server }, () =>
    kube.authz.createSelfSubjectAccessReview({
      body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { verb: x.verb, group: x.group, resource, subresource, namespace } } },
    }),
  );
  return { allowed: review.status?.allowed === true, reason: review.status?.reason };
}

/** The first permission of `needs` that is denied, or undefined when all are allowed. */
export async function firstDenied(kube: Kube, needs: Permission[], namespace: string): Promise<Permission | undefined> {
  const answers = await Promise.all(needs.map(async (x) => ({ x, a: await mayI(kube, x, namespace) })));
  return answers.find((r) => !r.a.allowed)?.x;
}
