/**
 * RBAC as kube-apiserver does it, over the lab's store: the rule matching of
 * pkg/apis/rbac/v1/evaluation_helpers.go, the binding walk of pkg/registry/rbac/validation/rule.go
 * (DefaultRuleResolver.VisitRulesFor), the decision and its reason of
 * plugin/pkg/auth/authorizer/rbac/rbac.go (RBACAuthorizer.Authorize), and the escalation checks
 * the rbac storages make (ConfirmNoEscalation, EscalationAllowed, BindingAuthorized,
 * RoleEscalationAuthorized). Deny is the default: only a rule can allow.
 */
import type { Attributes, User } from './auth.js';
import { isObject, type Json, type JsonObject } from './json.js';
import { findResource, type ResourceInfo } from './resources.js';
import type { Store } from './store.js';

export const RBAC_GROUP = 'rbac.authorization.k8s.io';

/** The groups k8s.io/apiserver/pkg/authentication/user and serviceaccount define. */
export const GROUPS = {
  masters: 'system:masters',
  authenticated: 'system:authenticated',
  unauthenticated: 'system:unauthenticated',
  serviceAccounts: 'system:serviceaccounts',
} as const;

export interface PolicyRule {
  verbs: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

export interface Subject {
  kind: string;
  apiGroup?: string;
  name: string;
  namespace?: string;
}

export interface RoleRef {
  apiGroup: string;
  kind: string;
  name: string;
}

const info = (name: string): ResourceInfo => {
  const i = findResource(RBAC_GROUP, 'v1', name);
  if (!i) throw new Error(`rbac resource ${name} is not registered`);
  return i;
};
export const RBAC = {
  roles: info('roles'),
  clusterroles: info('clusterroles'),
  rolebindings: info('rolebindings'),
  clusterrolebindings: info('clusterrolebindings'),
};

// ---- reading objects (the store holds JSON; anything malformed simply matches nothing) ----

function strings(v: Json | undefined): string[] | undefined {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined;
}

export function rulesOf(role: JsonObject): PolicyRule[] {
  if (!Array.isArray(role.rules)) return [];
  return role.rules.filter(isObject).map((r) => ({
    verbs: strings(r.verbs) ?? [],
    apiGroups: strings(r.apiGroups),
    resources: strings(r.resources),
    resourceNames: strings(r.resourceNames),
    nonResourceURLs: strings(r.nonResourceURLs),
  }));
}

function subjectsOf(binding: JsonObject): Subject[] {
  if (!Array.isArray(binding.subjects)) return [];
  return binding.subjects.filter(isObject).map((s) => ({
    kind: String(s.kind ?? ''),
    apiGroup: typeof s.apiGroup === 'string' ? s.apiGroup : undefined,
    name: String(s.name ?? ''),
    namespace: typeof s.namespace === 'string' && s.namespace !== '' ? s.namespace : undefined,
  }));
}

export function roleRefOf(binding: JsonObject): RoleRef {
  const r = isObject(binding.roleRef) ? binding.roleRef : {};
  return { apiGroup: String(r.apiGroup ?? ''), kind: String(r.kind ?? ''), name: String(r.name ?? '') };
}

function nameOf(o: JsonObject): string {
  return isObject(o.metadata) && typeof o.metadata.name === 'string' ? o.metadata.name : '';
}

// ---- evaluation_helpers.go ----

/** VerbMatches */
export function verbMatches(rule: PolicyRule, verb: string): boolean {
  return rule.verbs.some((v) => v === '*' || v === verb);
}

/** APIGroupMatches */
export function apiGroupMatches(rule: PolicyRule, group: string): boolean {
  return (rule.apiGroups ?? []).some((g) => g === '*' || g === group);
}

/** ResourceMatches: `*`, the exact `resource/subresource`, or `*\/subresource`. */
export function resourceMatches(rule: PolicyRule, combined: string, subresource: string): boolean {
  for (const r of rule.resources ?? []) {
    if (r === '*' || r === combined) return true;
    if (subresource === '') continue;
    if (r.length === subresource.length + 2 && r.startsWith('*/') && r.endsWith(subresource)) return true;
  }
  return false;
}

/** ResourceNameMatches: no resourceNames means every name (and requests without a name). */
export function resourceNameMatches(rule: PolicyRule, name: string): boolean {
  const names = rule.resourceNames ?? [];
  return names.length === 0 || names.includes(name);
}

/** NonResourceURLMatches: `*`, exact, or a prefix ending in `*`. */
export function nonResourceURLMatches(rule: PolicyRule, path: string): boolean {
  for (const u of rule.nonResourceURLs ?? []) {
    if (u === '*' || u === path) return true;
    if (u.endsWith('*') && path.startsWith(u.replace(/\*+$/, ''))) return true;
  }
  return false;
}

/** rbac.go RuleAllows */
export function ruleAllows(a: Attributes, rule: PolicyRule): boolean {
  if (a.nonResource) return verbMatches(rule, a.verb) && nonResourceURLMatches(rule, a.path ?? '');
  const sub = a.subresource ?? '';
  const combined = sub ? `${a.resource}/${sub}` : a.resource;
  return verbMatches(rule, a.verb) && apiGroupMatches(rule, a.group) && resourceMatches(rule, combined, sub) && resourceNameMatches(rule, a.name ?? '');
}

// ---- rule.go: which bindings apply to a user ----

/** serviceaccount.MakeUsername */
export function serviceAccountUser(namespace: string, name: string): string {
  return `system:serviceaccount:${namespace}:${name}`;
}

/** The user a service account token authenticates as (serviceaccount.UserInfo). */
export function serviceAccountUserInfo(namespace: string, name: string, uid: string): User {
  return { name: serviceAccountUser(namespace, name), uid, groups: [GROUPS.serviceAccounts, `${GROUPS.serviceAccounts}:${namespace}`, GROUPS.authenticated] };
}

/** appliesToUser: a ServiceAccount subject without a namespace means the binding's own namespace. */
export function appliesToUser(user: User, s: Subject, bindingNamespace: string): boolean {
  switch (s.kind) {
    case 'User':
      return user.name === s.name;
    case 'Group':
      return user.groups.includes(s.name);
    case 'ServiceAccount': {
      const ns = s.namespace ?? bindingNamespace;
      if (ns === '') return false;
      return user.name === serviceAccountUser(ns, s.name);
    }
    default:
      return false;
  }
}

/** describeSubject: `ServiceAccount "name/namespace"`, `User "x"`, `Group "y"`. */
function describeSubject(s: Subject, bindingNamespace: string): string {
  if (s.kind === 'ServiceAccount') return `${s.kind} "${s.name}/${s.namespace ?? bindingNamespace}"`;
  return `${s.kind} "${s.name}"`;
}

/** Go's `%q` of a []string: `["a" "b"]`. */
export function goQuoteList(list: string[]): string {
  return `[${list.map((x) => JSON.stringify(x)).join(' ')}]`;
}

/** An error on the way to the rules, e.g. a binding whose role does not exist (rule resolution error). */
export class RuleResolutionError extends Error {}

export type Visitor = (source: string | undefined, rule: PolicyRule | undefined, err: RuleResolutionError | undefined) => boolean;

export interface Decision {
  allowed: boolean;
  /** `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`, or the resolution errors of a denial */
  reason: string;
}

export class Rbac {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  /** DefaultRuleResolver.GetRoleReferenceRules */
  getRoleReferenceRules(ref: RoleRef, bindingNamespace: string): PolicyRule[] {
    if (ref.kind === 'Role') {
      const role = this.#store.get(RBAC.roles, bindingNamespace, ref.name);
      if (!role) throw new RuleResolutionError(`role.${RBAC_GROUP} "${ref.name}" not found`);
      return rulesOf(role);
    }
    if (ref.kind === 'ClusterRole') {
      const role = this.#store.get(RBAC.clusterroles, '', ref.name);
      if (!role) throw new RuleResolutionError(`clusterrole.${RBAC_GROUP} "${ref.name}" not found`);
      return rulesOf(role);
    }
    throw new RuleResolutionError(`unsupported role reference kind: "${ref.kind}"`);
  }

  /**
   * DefaultRuleResolver.VisitRulesFor: every ClusterRoleBinding, then (for a namespaced request)
   * every RoleBinding of the namespace, whose subjects include the user; the rules of the role each
   * one names, with the binding described as the reason names it.
   */
  visitRulesFor(user: User, namespace: string, visitor: Visitor): void {
    for (const b of this.#store.peekAll(RBAC.clusterrolebindings)) {
      const subject = subjectsOf(b).find((s) => appliesToUser(user, s, ''));
      if (!subject) continue;
      const ref = roleRefOf(b);
      let rules: PolicyRule[];
      try {
        rules = this.getRoleReferenceRules(ref, '');
      } catch (e) {
        if (!visitor(undefined, undefined, e as RuleResolutionError)) return;
        continue;
      }
      const source = `ClusterRoleBinding "${nameOf(b)}" of ${ref.kind} "${ref.name}" to ${describeSubject(subject, '')}`;
      for (const r of rules) if (!visitor(source, r, undefined)) return;
    }
    if (namespace === '') return;
    for (const b of this.#store.peekAll(RBAC.rolebindings, namespace)) {
      const subject = subjectsOf(b).find((s) => appliesToUser(user, s, namespace));
      if (!subject) continue;
      const ref = roleRefOf(b);
      let rules: PolicyRule[];
      try {
        rules = this.getRoleReferenceRules(ref, namespace);
      } catch (e) {
        if (!visitor(undefined, undefined, e as RuleResolutionError)) return;
        continue;
      }
      const source = `RoleBinding "${nameOf(b)}/${namespace}" of ${ref.kind} "${ref.name}" to ${describeSubject(subject, namespace)}`;
      for (const r of rules) if (!visitor(source, r, undefined)) return;
    }
  }

  /** DefaultRuleResolver.RulesFor: all rules that apply, and the errors met on the way. */
  rulesFor(user: User, namespace: string): { rules: PolicyRule[]; errors: string[] } {
    const rules: PolicyRule[] = [];
    const errors: string[] = [];
    this.visitRulesFor(user, namespace, (_s, rule, err) => {
      if (rule) rules.push(rule);
      if (err) errors.push(err.message);
      return true;
    });
    return { rules, errors };
  }

  /**
   * RBACAuthorizer.Authorize: allowed by the first rule that allows it, with the binding as the
   * reason; otherwise no opinion (the lab has no other authorizer, so that is a denial) and the
   * resolution errors as the reason (utilerrors.NewAggregate: one error as is, several in brackets).
   */
  authorize(user: User, a: Attributes): Decision {
    let reason = '';
    const errors: string[] = [];
    let allowed = false;
    this.visitRulesFor(user, a.nonResource ? '' : (a.namespace ?? ''), (source, rule, err) => {
      if (rule && ruleAllows(a, rule)) {
        allowed = true;
        reason = `RBAC: allowed by ${source ?? ''}`;
        return false;
      }
      if (err) errors.push(err.message);
      return true;
    });
    if (allowed) return { allowed, reason };
    return { allowed: false, reason: errors.length === 0 ? '' : `RBAC: ${aggregate(errors)}` };
  }

  /**
   * ConfirmNoEscalation (pkg/registry/rbac/validation/rule.go): the user's own rules in the
   * namespace must cover every rule granted (validation.Covers); otherwise the message the
   * storages wrap in Forbidden, listing the missing rules compacted (CompactRules) and sorted.
   */
  confirmNoEscalation(user: User, namespace: string, rules: PolicyRule[]): string | undefined {
    const owner = this.rulesFor(user, namespace);
    const missing = uncovered(owner.rules, rules);
    if (missing.length === 0) return undefined;
    const lines = [...new Set(compactRules(missing).map(compactString))].sort();
    let msg = `user "${user.name}" (groups=${goQuoteList(user.groups)}) is attempting to grant RBAC permissions not currently held:\n${lines.join('\n')}`;
    if (owner.errors.length > 0) msg += `; resolution errors: [${aggregate(owner.errors)}]`;
    return msg;
  }

  /** EscalationAllowed (pkg/registry/rbac/escalation_check.go): system:masters may grant anything. */
  escalationAllowed(user: User): boolean {
    return user.groups.includes(GROUPS.masters);
  }

  /** RoleEscalationAuthorized: the `escalate` verb on the role resource being written. */
  roleEscalationAuthorized(user: User, resource: 'roles' | 'clusterroles', namespace: string, name: string): boolean {
    return this.authorize(user, { verb: 'escalate', group: RBAC_GROUP, resource, namespace, name }).allowed;
  }

  /** BindingAuthorized: the `bind` verb on the referenced role, in the binding's namespace. */
  bindingAuthorized(user: User, ref: RoleRef, bindingNamespace: string): boolean {
    const resource = ref.kind === 'ClusterRole' ? 'clusterroles' : ref.kind === 'Role' ? 'roles' : undefined;
    if (!resource) return false;
    return this.authorize(user, { verb: 'bind', group: ref.apiGroup, resource, namespace: bindingNamespace, name: ref.name }).allowed;
  }
}

/** utilerrors.NewAggregate(...).Error() */
function aggregate(errors: string[]): string {
  const uniq = [...new Set(errors)];
  return uniq.length === 1 ? uniq[0] : `[${uniq.join(', ')}]`;
}

// ---- component-helpers/auth/rbac/validation/policy_comparator.go ----

/** BreakdownRule: one group, resource, verb and name per rule; non-resource URLs only with verbs. */
export function breakdownRule(rule: PolicyRule): PolicyRule[] {
  const out: PolicyRule[] = [];
  for (const group of rule.apiGroups ?? []) {
    for (const resource of rule.resources ?? []) {
      for (const verb of rule.verbs) {
        const names = rule.resourceNames ?? [];
        if (names.length > 0) for (const n of names) out.push({ apiGroups: [group], resources: [resource], verbs: [verb], resourceNames: [n] });
        else out.push({ apiGroups: [group], resources: [resource], verbs: [verb] });
      }
    }
  }
  for (const url of rule.nonResourceURLs ?? []) for (const verb of rule.verbs) out.push({ nonResourceURLs: [url], verbs: [verb] });
  return out;
}

const hasAll = (set: string[], contains: string[]): boolean => contains.every((x) => set.includes(x));

/** resourceCoversAll */
function resourceCoversAll(set: string[], covers: string[]): boolean {
  if (set.includes('*') || hasAll(set, covers)) return true;
  for (const p of covers) {
    if (set.includes(p)) continue;
    if (!p.includes('/')) return false;
    if (!set.includes(`*/${p.slice(p.indexOf('/') + 1)}`)) return false;
  }
  return true;
}

/** nonResourceURLsCoversAll / nonResourceURLCovers */
function nonResourceURLsCoverAll(set: string[], covers: string[]): boolean {
  return covers.every((p) => set.some((o) => o === p || (o.endsWith('*') && p.startsWith(o.replace(/\*+$/, '')))));
}

/** ruleCovers: owner covers a broken-down subrule. */
function ruleCovers(owner: PolicyRule, sub: PolicyRule): boolean {
  const verbs = owner.verbs.includes('*') || hasAll(owner.verbs, sub.verbs);
  const groups = (owner.apiGroups ?? []).includes('*') || hasAll(owner.apiGroups ?? [], sub.apiGroups ?? []);
  const resources = resourceCoversAll(owner.resources ?? [], sub.resources ?? []);
  const urls = nonResourceURLsCoverAll(owner.nonResourceURLs ?? [], sub.nonResourceURLs ?? []);
  const ownerNames = owner.resourceNames ?? [];
  const subNames = sub.resourceNames ?? [];
  const names = subNames.length === 0 ? ownerNames.length === 0 : ownerNames.length === 0 || hasAll(ownerNames, subNames);
  return verbs && groups && resources && names && urls;
}

/** Covers: the broken-down rules of `servant` that no rule of `owner` covers. */
export function uncovered(owner: PolicyRule[], servant: PolicyRule[]): PolicyRule[] {
  return servant.flatMap(breakdownRule).filter((sub) => !owner.some((o) => ruleCovers(o, sub)));
}

/** CompactRules: simple rules (one group, one resource, nothing else) that differ only in verbs become one. */
export function compactRules(rules: PolicyRule[]): PolicyRule[] {
  const out: PolicyRule[] = [];
  const simple = new Map<string, PolicyRule>();
  for (const r of rules) {
    const isSimple = (r.resourceNames ?? []).length === 0 && (r.nonResourceURLs ?? []).length === 0 && (r.apiGroups ?? []).length === 1 && (r.resources ?? []).length === 1;
    if (!isSimple) {
      out.push(r);
      continue;
    }
    const key = `${r.apiGroups![0]}/${r.resources![0]}`;
    const have = simple.get(key);
    if (have) have.verbs = [...have.verbs, ...r.verbs];
    else simple.set(key, { apiGroups: [...r.apiGroups!], resources: [...r.resources!], verbs: [...r.verbs] });
  }
  return [...out, ...simple.values()];
}

/** CompactString: `{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}` */
export function compactString(r: PolicyRule): string {
  const parts: string[] = [];
  if ((r.apiGroups ?? []).length > 0) parts.push(`APIGroups:${goQuoteList(r.apiGroups!)}`);
  if ((r.resources ?? []).length > 0) parts.push(`Resources:${goQuoteList(r.resources!)}`);
  if ((r.nonResourceURLs ?? []).length > 0) parts.push(`NonResourceURLs:${goQuoteList(r.nonResourceURLs!)}`);
  if ((r.resourceNames ?? []).length > 0) parts.push(`ResourceNames:${goQuoteList(r.resourceNames!)}`);
  if (r.verbs.length > 0) parts.push(`Verbs:${goQuoteList(r.verbs)}`);
  return `{${parts.join(', ')}}`;
}
