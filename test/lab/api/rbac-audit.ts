/**
 * A record of every authorization decision, per user, for tests that compare what a program asked
 * for with what it was allowed (GET /lab/v1/audit?user=NAME; DELETE empties it). The lab-only
 * counterpart of kube-apiserver's audit log at level Metadata, reduced to the authorizer's
 * attributes. Bounded: the last MAX_PER_USER entries of each of the last MAX_USERS users.
 */
import type { Attributes } from './auth.js';

export const MAX_PER_USER = 20_000;
export const MAX_USERS = 2_000;
const SLACK = 1_000;

export interface AuditEntry {
  verb: string;
  apiGroup: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  path: string;
  allowed: boolean;
}

export class AuthzAudit {
  /** insertion order = least recently active user first */
  readonly #byUser = new Map<string, AuditEntry[]>();

  record(user: string, a: Attributes, allowed: boolean): void {
    let list = this.#byUser.get(user);
    if (list) this.#byUser.delete(user);
    else list = [];
    this.#byUser.set(user, list);
    if (this.#byUser.size > MAX_USERS) this.#byUser.delete(this.#byUser.keys().next().value as string);
    list.push({
      verb: a.verb,
      apiGroup: a.nonResource ? '' : a.group,
      resource: a.nonResource ? '' : a.resource,
      subresource: a.subresource ?? '',
      namespace: a.namespace ?? '',
      name: a.name ?? '',
      path: a.path ?? '',
      allowed,
    });
    // trimmed in steps of SLACK so a busy user does not shift 20000 entries per request
    if (list.length > MAX_PER_USER + SLACK) list.splice(0, list.length - MAX_PER_USER);
  }

  entries(user: string): AuditEntry[] {
    return (this.#byUser.get(user) ?? []).slice(-MAX_PER_USER);
  }

  clear(user: string): void {
    this.#byUser.delete(user);
  }
}
