/**
 * Defaults and validation of Roles, ClusterRoles, RoleBindings and ClusterRoleBindings, as
 * pkg/apis/rbac/v1/defaults.go and pkg/apis/rbac/validation/validation.go do them, with the
 * same 422 messages (`Role.rbac.authorization.k8s.io "x" is invalid: rules[0].verbs: Required
 * value: verbs must contain at least one value`). aggregationRule is not served (the lab has no
 * aggregation controller): it is refused, so nobody relies on it silently doing nothing.
 */
import { ApiError } from './status.js';
import { isObject, type Json, type JsonObject } from './json.js';
import type { ResourceInfo } from './resources.js';
import { RBAC_GROUP, roleRefOf, type RoleRef } from './rbac.js';

export interface RbacFieldError {
  field: string;
  type: 'Required' | 'Invalid' | 'NotSupported' | 'Forbidden';
  /** the value as Go's field.Error prints it (`"x"`, `[]string{"/a"}`, `rbac.RoleRef{...}`) */
  value?: string;
  detail?: string;
}

const CAUSE: Record<RbacFieldError['type'], string> = {
  Required: 'FieldValueRequired',
  Invalid: 'FieldValueInvalid',
  NotSupported: 'FieldValueNotSupported',
  Forbidden: 'FieldValueForbidden',
};

function body(e: RbacFieldError): string {
  switch (e.type) {
    case 'Required':
      return `Required value${e.detail ? `: ${e.detail}` : ''}`;
    case 'Invalid':
      return `Invalid value: ${e.value ?? 'null'}${e.detail ? `: ${e.detail}` : ''}`;
    case 'Forbidden':
      return `Forbidden${e.detail ? `: ${e.detail}` : ''}`;
    default:
      return `Unsupported value: ${e.value ?? 'null'}${e.detail ? `: ${e.detail}` : ''}`;
  }
}

/** apierrors.NewInvalid with the group-qualified kind, as kube-apiserver names it. */
export function rbacInvalid(kind: string, name: string, errors: RbacFieldError[], group = RBAC_GROUP): ApiError {
  const parts = errors.map((e) => `${e.field}: ${body(e)}`);
  const summary = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${kind}.${group} "${name}" is invalid: ${summary}`, {
    name,
    group,
    kind,
    causes: errors.map((e) => ({ reason: CAUSE[e.type], message: body(e), field: e.field })),
  });
}

const q = (s: string): string => JSON.stringify(s);
const goStrings = (list: string[]): string => `[]string{${list.map(q).join(', ')}}`;
const supported = (values: string[]): string => `supported values: ${values.map(q).join(', ')}`;

function strings(v: Json | undefined): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** path.IsValidPathSegmentName (ValidateRBACName) */
function pathSegmentErrors(name: string): string[] {
  if (name === '.' || name === '..') return [`may not be '${name}'`];
  const out: string[] = [];
  for (const bad of ['/', '%']) if (name.includes(bad)) out.push(`may not contain '${bad}'`);
  return out;
}

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/** SetDefaults_RoleBinding / SetDefaults_ClusterRoleBinding / SetDefaults_Subject, applied on decode. */
export function rbacDefaults(info: ResourceInfo, obj: JsonObject): void {
  if (info.kind !== 'RoleBinding' && info.kind !== 'ClusterRoleBinding') return;
  if (isObject(obj.roleRef) && (obj.roleRef.apiGroup === undefined || obj.roleRef.apiGroup === '')) obj.roleRef.apiGroup = RBAC_GROUP;
  if (Array.isArray(obj.subjects)) {
    for (const s of obj.subjects) {
      if (!isObject(s) || (typeof s.apiGroup === 'string' && s.apiGroup !== '')) continue;
      if (s.kind === 'User' || s.kind === 'Group') s.apiGroup = RBAC_GROUP;
    }
  }
}

/** ValidatePolicyRule */
function policyRuleErrors(rule: JsonObject, namespaced: boolean, path: string): RbacFieldError[] {
  const errs: RbacFieldError[] = [];
  const urls = strings(rule.nonResourceURLs);
  if (strings(rule.verbs).length === 0) errs.push({ field: `${path}.verbs`, type: 'Required', detail: 'verbs must contain at least one value' });
  if (urls.length > 0) {
    if (namespaced) errs.push({ field: `${path}.nonResourceURLs`, type: 'Invalid', value: goStrings(urls), detail: 'namespaced rules cannot apply to non-resource URLs' });
    if (strings(rule.apiGroups).length > 0 || strings(rule.resources).length > 0 || strings(rule.resourceNames).length > 0) {
      errs.push({ field: `${path}.nonResourceURLs`, type: 'Invalid', value: goStrings(urls), detail: 'rules cannot apply to both regular resources and non-resource URLs' });
    }
    return errs;
  }
  if (strings(rule.apiGroups).length === 0) errs.push({ field: `${path}.apiGroups`, type: 'Required', detail: 'resource rules must supply at least one api group' });
  if (strings(rule.resources).length === 0) errs.push({ field: `${path}.resources`, type: 'Required', detail: 'resource rules must supply at least one resource' });
  return errs;
}

/** ValidateRoleBindingSubject */
function subjectErrors(s: JsonObject, namespaced: boolean, path: string): RbacFieldError[] {
  const errs: RbacFieldError[] = [];
  const name = typeof s.name === 'string' ? s.name : '';
  const apiGroup = typeof s.apiGroup === 'string' ? s.apiGroup : '';
  if (name === '') errs.push({ field: `${path}.name`, type: 'Required' });
  switch (s.kind) {
    case 'ServiceAccount':
      if (name !== '' && (!SUBDOMAIN.test(name) || name.length > 253)) errs.push({ field: `${path}.name`, type: 'Invalid', value: q(name), detail: SUBDOMAIN_MSG });
      if (apiGroup !== '') errs.push({ field: `${path}.apiGroup`, type: 'NotSupported', value: q(apiGroup), detail: supported(['']) });
      if (!namespaced && (typeof s.namespace !== 'string' || s.namespace === '')) errs.push({ field: `${path}.namespace`, type: 'Required' });
      break;
    case 'User':
    case 'Group':
      if (apiGroup !== RBAC_GROUP) errs.push({ field: `${path}.apiGroup`, type: 'NotSupported', value: q(apiGroup), detail: supported([RBAC_GROUP]) });
      break;
    default:
      errs.push({ field: `${path}.kind`, type: 'NotSupported', value: q(typeof s.kind === 'string' ? s.kind : ''), detail: supported(['ServiceAccount', 'User', 'Group']) });
  }
  return errs;
}

/**
 * ValidateRole / ValidateClusterRole / ValidateRoleBinding / ValidateClusterRoleBinding, after the
 * ObjectMeta errors the caller found (`metaErrors`, e.g. bad labels). The name follows
 * ValidateRBACName (any path segment: `system:basic-user` is fine).
 */
export function validateRbac(info: ResourceInfo, obj: JsonObject, metaErrors: RbacFieldError[]): ApiError | undefined {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : '';
  const errs: RbacFieldError[] = [];
  if (name === '') errs.push({ field: 'metadata.name', type: 'Required', detail: 'name or generateName is required' });
  for (const msg of pathSegmentErrors(name)) errs.push({ field: 'metadata.name', type: 'Invalid', value: q(name), detail: msg });
  errs.push(...metaErrors);
  const namespaced = info.namespaced;
  if (info.kind === 'Role' || info.kind === 'ClusterRole') {
    const rules = Array.isArray(obj.rules) ? obj.rules : [];
    rules.forEach((r, i) => errs.push(...policyRuleErrors(isObject(r) ? r : {}, namespaced, `rules[${i}]`)));
    if (info.kind === 'ClusterRole' && obj.aggregationRule !== undefined && obj.aggregationRule !== null) {
      errs.push({ field: 'aggregationRule', type: 'Forbidden', detail: 'the lab does not aggregate ClusterRoles (no clusterrole-aggregation controller); list the rules instead' });
    }
  } else {
    const ref = roleRefOf(obj);
    if (ref.apiGroup !== RBAC_GROUP) errs.push({ field: 'roleRef.apiGroup', type: 'NotSupported', value: q(ref.apiGroup), detail: supported([RBAC_GROUP]) });
    if (ref.kind !== 'Role' && ref.kind !== 'ClusterRole') errs.push({ field: 'roleRef.kind', type: 'NotSupported', value: q(ref.kind), detail: supported(['Role', 'ClusterRole']) });
    if (ref.name === '') errs.push({ field: 'roleRef.name', type: 'Required' });
    else for (const msg of pathSegmentErrors(ref.name)) errs.push({ field: 'roleRef.name', type: 'Invalid', value: q(ref.name), detail: msg });
    const subjects = Array.isArray(obj.subjects) ? obj.subjects : [];
    subjects.forEach((s, i) => errs.push(...subjectErrors(isObject(s) ? s : {}, namespaced, `subjects[${i}]`)));
  }
  return errs.length === 0 ? undefined : rbacInvalid(info.kind, name, errs);
}

function goRoleRef(r: RoleRef): string {
  return `rbac.RoleRef{APIGroup:${q(r.apiGroup)}, Kind:${q(r.kind)}, Name:${q(r.name)}}`;
}

/** ValidateRoleBindingUpdate: `roleRef: Invalid value: rbac.RoleRef{...}: cannot change roleRef`. */
export function roleRefChange(info: ResourceInfo, cur: JsonObject, next: JsonObject): ApiError | undefined {
  if (info.kind !== 'RoleBinding' && info.kind !== 'ClusterRoleBinding') return undefined;
  const a = roleRefOf(cur);
  const b = roleRefOf(next);
  if (a.apiGroup === b.apiGroup && a.kind === b.kind && a.name === b.name) return undefined;
  const name = isObject(next.metadata) && typeof next.metadata.name === 'string' ? next.metadata.name : '';
  return rbacInvalid(info.kind, name, [{ field: 'roleRef', type: 'Invalid', value: goRoleRef(b), detail: 'cannot change roleRef' }]);
}
