/**
 * The ClusterRoles and ClusterRoleBindings a fresh cluster has, from
 * plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go (clusterRoles, clusterRoleBindings) of
 * Kubernetes 1.32: cluster-admin, the discovery and self-review roles every user is bound to, and
 * the user-facing admin/edit/view. The real admin, edit and view are aggregated
 * (aggregationRule + the clusterrole-aggregation controller, which the lab does not have); here
 * each carries the union the controller would write: view = system:aggregate-to-view;
 * edit = system:aggregate-to-edit + view; admin = system:aggregate-to-admin + edit. The lists are
 * the real ones, also for resources the lab does not serve (a rule does not need the resource to
 * exist), so `kubectl auth can-i --list` and the escalation checks see what a cluster has.
 */
import type { JsonObject } from './json.js';
import { GROUPS, RBAC_GROUP, type PolicyRule } from './rbac.js';

const Write = ['create', 'update', 'patch', 'delete', 'deletecollection'];
const ReadWrite = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
const Read = ['get', 'list', 'watch'];

const legacy = '';
const apps = 'apps';
const authentication = 'authentication.k8s.io';
const authorization = 'authorization.k8s.io';
const autoscaling = 'autoscaling';
const batch = 'batch';
const discovery = 'discovery.k8s.io';
const extensions = 'extensions';
const policy = 'policy';
const networking = 'networking.k8s.io';

/** rbacv1helpers.NewRule(verbs...).Groups(groups...).Resources(resources...) */
function rule(verbs: string[], groups: string[], resources: string[], names?: string[]): PolicyRule {
  const r: PolicyRule = { verbs: [...verbs], apiGroups: groups, resources };
  if (names) r.resourceNames = names;
  return r;
}
/** rbacv1helpers.NewRule(verbs...).URLs(urls...) */
function urls(verbs: string[], list: string[]): PolicyRule {
  return { verbs: [...verbs], nonResourceURLs: list };
}

const aggregateToView: PolicyRule[] = [
  rule(Read, [legacy], ['pods', 'replicationcontrollers', 'replicationcontrollers/scale', 'serviceaccounts', 'services', 'services/status', 'endpoints', 'persistentvolumeclaims', 'persistentvolumeclaims/status', 'configmaps']),
  rule(Read, [legacy], ['limitranges', 'resourcequotas', 'bindings', 'events', 'pods/status', 'resourcequotas/status', 'namespaces/status', 'replicationcontrollers/status', 'pods/log']),
  // read access to namespaces at the namespace scope means you can read *this* namespace
  rule(Read, [legacy], ['namespaces']),
  rule(Read, [discovery], ['endpointslices']),
  rule(Read, [apps], ['controllerrevisions', 'statefulsets', 'statefulsets/status', 'statefulsets/scale', 'daemonsets', 'daemonsets/status', 'deployments', 'deployments/status', 'deployments/scale', 'replicasets', 'replicasets/status', 'replicasets/scale']),
  rule(Read, [autoscaling], ['horizontalpodautoscalers', 'horizontalpodautoscalers/status']),
  rule(Read, [batch], ['jobs', 'cronjobs', 'cronjobs/status', 'jobs/status']),
  rule(Read, [extensions], ['daemonsets', 'daemonsets/status', 'deployments', 'deployments/scale', 'deployments/status', 'ingresses', 'ingresses/status', 'replicasets', 'replicasets/scale', 'replicasets/status', 'replicationcontrollers/scale', 'networkpolicies']),
  rule(Read, [policy], ['poddisruptionbudgets', 'poddisruptionbudgets/status']),
  rule(Read, [networking], ['networkpolicies', 'ingresses', 'ingresses/status']),
];

const aggregateToEdit: PolicyRule[] = [
  // Allow read on escalating resources
  rule(Read, [legacy], ['pods/attach', 'pods/proxy', 'pods/exec', 'pods/portforward', 'secrets', 'services/proxy']),
  rule(['impersonate'], [legacy], ['serviceaccounts']),
  rule(Write, [legacy], ['pods', 'pods/attach', 'pods/proxy', 'pods/exec', 'pods/portforward']),
  rule(['create'], [legacy], ['pods/eviction']),
  rule(Write, [legacy], ['replicationcontrollers', 'replicationcontrollers/scale', 'serviceaccounts', 'services', 'services/proxy', 'persistentvolumeclaims', 'configmaps', 'secrets']),
  rule(['create'], [legacy], ['serviceaccounts/token']),
  rule(Write, [apps], ['statefulsets', 'statefulsets/scale', 'daemonsets', 'deployments', 'deployments/scale', 'deployments/rollback', 'replicasets', 'replicasets/scale']),
  rule(Write, [autoscaling], ['horizontalpodautoscalers']),
  rule(Write, [batch], ['jobs', 'cronjobs']),
  rule(Write, [extensions], ['daemonsets', 'deployments', 'deployments/scale', 'deployments/rollback', 'ingresses', 'replicasets', 'replicasets/scale', 'replicationcontrollers/scale', 'networkpolicies']),
  rule(Write, [policy], ['poddisruptionbudgets']),
  rule(Write, [networking], ['networkpolicies', 'ingresses']),
];

const aggregateToAdmin: PolicyRule[] = [
  rule(['create'], [authorization], ['localsubjectaccessreviews']),
  rule(ReadWrite, [RBAC_GROUP], ['roles', 'rolebindings']),
];

export const BOOTSTRAP_LABELS = { 'kubernetes.io/bootstrapping': 'rbac-defaults' };
const BOOTSTRAP_ANNOTATIONS = { 'rbac.authorization.kubernetes.io/autoupdate': 'true' };

function clusterRole(name: string, rules: PolicyRule[], labels: Record<string, string> = {}): JsonObject {
  return { metadata: { name, labels: { ...BOOTSTRAP_LABELS, ...labels }, annotations: { ...BOOTSTRAP_ANNOTATIONS } }, rules: rules as unknown as JsonObject[] };
}

/** clusterRoles(), the ones the lab needs. */
export function bootstrapClusterRoles(): JsonObject[] {
  const view = aggregateToView;
  const edit = [...aggregateToEdit, ...view];
  const admin = [...aggregateToAdmin, ...edit];
  return [
    // a "root" role which can do absolutely anything
    clusterRole('cluster-admin', [rule(['*'], ['*'], ['*']), urls(['*'], ['*'])]),
    // just enough power to determine if the server is ready and discover API versions for negotiation
    clusterRole('system:discovery', [urls(['get'], ['/livez', '/readyz', '/healthz', '/version', '/version/', '/openapi', '/openapi/*', '/api', '/api/*', '/apis', '/apis/*'])]),
    // minimal resource access to allow a "normal" user to learn information about themselves
    clusterRole('system:basic-user', [rule(['create'], [authorization], ['selfsubjectaccessreviews', 'selfsubjectrulesreviews']), rule(['create'], [authentication], ['selfsubjectreviews'])]),
    // just enough power to read insensitive cluster information
    clusterRole('system:public-info-viewer', [urls(['get'], ['/livez', '/readyz', '/healthz', '/version', '/version/'])]),
    clusterRole('admin', admin),
    clusterRole('edit', edit, { 'rbac.authorization.k8s.io/aggregate-to-admin': 'true' }),
    clusterRole('view', view, { 'rbac.authorization.k8s.io/aggregate-to-edit': 'true' }),
    clusterRole('system:aggregate-to-admin', aggregateToAdmin, { 'rbac.authorization.k8s.io/aggregate-to-admin': 'true' }),
    clusterRole('system:aggregate-to-edit', aggregateToEdit, { 'rbac.authorization.k8s.io/aggregate-to-edit': 'true' }),
    clusterRole('system:aggregate-to-view', aggregateToView, { 'rbac.authorization.k8s.io/aggregate-to-view': 'true' }),
  ];
}

/** rbacv1helpers.NewClusterBinding(role).Groups(...)/.Users(...) */
function clusterBinding(name: string, role: string, subjects: Array<{ kind: 'Group' | 'User'; name: string }>): JsonObject {
  return {
    metadata: { name, labels: { ...BOOTSTRAP_LABELS }, annotations: { ...BOOTSTRAP_ANNOTATIONS } },
    roleRef: { apiGroup: RBAC_GROUP, kind: 'ClusterRole', name: role },
    subjects: subjects.map((s) => ({ kind: s.kind, apiGroup: RBAC_GROUP, name: s.name })),
  };
}

/** clusterRoleBindings(), the ones for the roles above. */
export function bootstrapClusterRoleBindings(): JsonObject[] {
  return [
    clusterBinding('cluster-admin', 'cluster-admin', [{ kind: 'Group', name: GROUPS.masters }]),
    clusterBinding('system:discovery', 'system:discovery', [{ kind: 'Group', name: GROUPS.authenticated }]),
    clusterBinding('system:basic-user', 'system:basic-user', [{ kind: 'Group', name: GROUPS.authenticated }]),
    clusterBinding('system:public-info-viewer', 'system:public-info-viewer', [
      { kind: 'Group', name: GROUPS.authenticated },
      { kind: 'Group', name: GROUPS.unauthenticated },
    ]),
  ];
}

/** The lab's own binding: `lab-readonly` may read what `view` allows, everywhere. */
export function labBindings(readonlyUser: string): JsonObject[] {
  return [clusterBinding('lab-readonly-view', 'view', [{ kind: 'User', name: readonlyUser }])];
}
