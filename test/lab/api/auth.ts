/**
 * Who makes a request (the authenticated user: a name and its groups, as k8s.io/apiserver's
 * user.Info) and what it asks to do (authorizer.Attributes), plus the API server's words when the
 * answer is no. The decision itself is RBAC's (rbac.ts).
 */
export interface User {
  name: string;
  /** every authenticated user carries `system:authenticated` (rbac.ts GROUPS) */
  groups: string[];
  /** service accounts: the ServiceAccount's uid (SelfSubjectReview shows it) */
  uid?: string;
}

/**
 * One request as the authorizer sees it (k8s.io/apiserver authorizer.AttributesRecord). A resource
 * request names group, resource (plural), maybe a subresource, namespace and name; a non-resource
 * request (`/api`, `/version`, `/openapi/v3`, ...) names only its path (`nonResource: true`).
 */
export interface Attributes {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  /** the URL path; for a non-resource request it is what rules' nonResourceURLs match */
  path?: string;
  nonResource?: boolean;
}

/**
 * The Forbidden Status message, as responsewriters.Forbidden and forbiddenMessage
 * (k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go) build it, wrapped by
 * apierrors.NewForbidden: `pods "x" is forbidden: User "u" cannot create resource "pods/exec" in
 * API group "" in the namespace "default"`. The subject is always `User "<name>"`: a service
 * account shows as `User "system:serviceaccount:NS:NAME"`, and groups are not named (the real
 * message does not name them either). `reason` is RBAC's (e.g. a binding whose role is missing:
 * `RBAC: role.rbac.authorization.k8s.io "x" not found`) and follows after a colon.
 */
export function forbiddenMessage(user: User, a: Attributes, reason = ''): string {
  if (a.nonResource) {
    const msg = `User "${user.name}" cannot ${a.verb} path "${a.path ?? ''}"`;
    return `forbidden: ${reason ? `${msg}: ${reason}` : msg}`;
  }
  const res = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  const what = a.group ? `${a.resource}.${a.group}` : a.resource;
  const subject = a.name ? `${what} "${a.name}"` : what;
  const scope = a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
  const msg = `User "${user.name}" cannot ${a.verb} resource "${res}" in API group "${a.group}" ${scope}`;
  return `${subject} is forbidden: ${reason ? `${msg}: ${reason}` : msg}`;
}
