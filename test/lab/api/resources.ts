/**
 * The resource kinds the lab serves, with what discovery says about them.
 */
export interface ResourceInfo {
  group: string;
  version: string;
  /** plural, the URL segment */
  name: string;
  singularName: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  /** subresources served, e.g. ['status', 'scale'] */
  subresources: string[];
  /** spec changes bump metadata.generation */
  hasSpec: boolean;
  /** has a status subresource: updates to the main resource keep the stored status */
  statusSubresource: boolean;
}

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

function r(
  group: string,
  version: string,
  name: string,
  kind: string,
  namespaced: boolean,
  extra: Partial<ResourceInfo> = {},
): ResourceInfo {
  return {
    group,
    version,
    name,
    kind,
    namespaced,
    singularName: kind.toLowerCase(),
    subresources: [],
    hasSpec: true,
    statusSubresource: false,
    ...extra,
  };
}

export const RESOURCES: ResourceInfo[] = [
  r('', 'v1', 'namespaces', 'Namespace', false, { shortNames: ['ns'], subresources: ['status', 'finalize'], statusSubresource: true }),
  r('', 'v1', 'nodes', 'Node', false, { shortNames: ['no'], subresources: ['status', 'proxy'], statusSubresource: true }),
  r('', 'v1', 'pods', 'Pod', true, {
    shortNames: ['po'],
    categories: ['all'],
    subresources: ['status', 'log', 'exec', 'portforward', 'attach', 'binding', 'eviction', 'proxy', 'ephemeralcontainers'],
    statusSubresource: true,
  }),
  r('', 'v1', 'services', 'Service', true, { shortNames: ['svc'], categories: ['all'], subresources: ['status', 'proxy'], statusSubresource: true }),
  r('', 'v1', 'endpoints', 'Endpoints', true, { shortNames: ['ep'], hasSpec: false, singularName: 'endpoints' }),
  r('', 'v1', 'configmaps', 'ConfigMap', true, { shortNames: ['cm'], hasSpec: false }),
  r('', 'v1', 'secrets', 'Secret', true, { hasSpec: false }),
  r('', 'v1', 'serviceaccounts', 'ServiceAccount', true, { shortNames: ['sa'], hasSpec: false, subresources: ['token'] }),
  r('', 'v1', 'events', 'Event', true, { shortNames: ['ev'], hasSpec: false }),
  r('apps', 'v1', 'deployments', 'Deployment', true, {
    shortNames: ['deploy'],
    categories: ['all'],
    subresources: ['status', 'scale'],
    statusSubresource: true,
  }),
  r('apps', 'v1', 'replicasets', 'ReplicaSet', true, {
    shortNames: ['rs'],
    categories: ['all'],
    subresources: ['status', 'scale'],
    statusSubresource: true,
  }),
  r('discovery.k8s.io', 'v1', 'endpointslices', 'EndpointSlice', true, { hasSpec: false }),
  r('networking.istio.io', 'v1', 'virtualservices', 'VirtualService', true, { shortNames: ['vs'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] }),
  r('networking.istio.io', 'v1', 'destinationrules', 'DestinationRule', true, { shortNames: ['dr'], categories: ['istio-io', 'networking-istio-io'], subresources: ['status'] }),
  r('authorization.k8s.io', 'v1', 'selfsubjectaccessreviews', 'SelfSubjectAccessReview', false, { hasSpec: true }),
  r('authorization.k8s.io', 'v1', 'selfsubjectrulesreviews', 'SelfSubjectRulesReview', false, { hasSpec: true }),
  r('authentication.k8s.io', 'v1', 'selfsubjectreviews', 'SelfSubjectReview', false, { hasSpec: false }),
  r('rbac.authorization.k8s.io', 'v1', 'roles', 'Role', true, { hasSpec: false }),
  r('rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', false, { hasSpec: false }),
  r('rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding', true, { hasSpec: false }),
  r('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', false, { hasSpec: false }),
];

/** Kinds that exist only as a request and its answer (POST returns them, nothing is stored). */
export const REVIEW_KINDS = new Set(['SelfSubjectAccessReview', 'SelfSubjectRulesReview', 'SelfSubjectReview']);

/** The group versions in discovery order (core first). */
export const GROUP_VERSIONS: Array<{ group: string; version: string }> = [
  { group: '', version: 'v1' },
  { group: 'apps', version: 'v1' },
  { group: 'authentication.k8s.io', version: 'v1' },
  { group: 'authorization.k8s.io', version: 'v1' },
  { group: 'rbac.authorization.k8s.io', version: 'v1' },
  { group: 'discovery.k8s.io', version: 'v1' },
  { group: 'networking.istio.io', version: 'v1' },
];

export function apiVersionOf(info: { group: string; version: string }): string {
  return info.group ? `${info.group}/${info.version}` : info.version;
}

export function findResource(group: string, version: string, name: string): ResourceInfo | undefined {
  return RESOURCES.find((x) => x.group === group && x.version === version && x.name === name);
}

export function findByKind(apiVersion: string, kind: string): ResourceInfo | undefined {
  return RESOURCES.find((x) => apiVersionOf(x) === apiVersion && x.kind === kind);
}

export function resourceKey(info: ResourceInfo): string {
  return `${info.group}/${info.name}`;
}

/** Verbs discovery lists for a resource (virtual resources like reviews only take create). */
export function verbsOf(info: ResourceInfo): string[] {
  if (REVIEW_KINDS.has(info.kind)) return ['create'];
  return VERBS;
}
