/**
 * Users (bearer tokens) and the rule table behind authorization and SelfSubjectAccessReview.
 */
export interface User {
  name: string;
  /** verbs allowed; undefined = everything */
  verbs?: string[];
}

export interface Attributes {
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

export function allowed(user: User, attrs: Attributes): boolean {
  if (!user.verbs) return true;
  return user.verbs.includes(attrs.verb);
}

/** `pods "x" is forbidden: User "u" cannot create resource "pods/exec" in API group "" in the namespace "default"` */
export function forbiddenMessage(user: User, a: Attributes): string {
  const res = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  const what = a.group ? `${a.resource}.${a.group}` : a.resource;
  const subject = a.name ? `${what} "${a.name}"` : what;
  const scope = a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
  return `${subject} is forbidden: User "${user.name}" cannot ${a.verb} resource "${res}" in API group "${a.group}" ${scope}`;
}
