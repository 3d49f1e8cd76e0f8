/**
 * Where Kubernetes failures become errors a person can act on: every client-node call ktctl makes
 * goes through `kubeCall`, which turns an `ApiException` (status code + Status body) or a network
 * failure into one of the KubeError subclasses below, with one sentence that names the fix.
 */
import { ApiException } from '@kubernetes/client-node';
import { KubeError } from '../errors.js';
import { credentialEpoch, renewAfterUnauthorized } from './credentials.js';
import type { Permission } from './permissions.js';
import { BINDING_FILE, whereGranted } from './rbac-yaml.js';

/** No kubeconfig, no such context, a context without a cluster. */
export class KubeConfigError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_CONFIG', message, options);
  }
}

/** The API server cannot be reached (refused, no route, timeout, TLS). */
export class KubeUnreachableError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_UNREACHABLE', message, options);
  }
}

/** 401: the credentials of the context are not accepted. */
export class KubeUnauthorizedError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_UNAUTHORIZED', message, options);
  }
}

/** 403: RBAC does not allow a verb on a resource. */
export class KubeForbiddenError extends KubeError {
  readonly verb: string;
  readonly resource: string;
  readonly namespace: string | undefined;
  /** The API server's own words (its Status message), quoted in the sentence when given. */
  readonly reason: string | undefined;
  /**
   * `resource` may carry its group ("deployments.apps"); a bare "deployments" gets its group from
   * the resources ktctl uses. The sentence names the rule of deploy/rbac that grants it.
   */
  constructor(verb: string, resource: string, namespace: string | undefined, options?: { cause?: unknown; scope?: Permission['scope']; names?: string[]; reason?: string }) {
    const [plural, group] = splitGroup(resource);
    const p: Permission = { verb, resource: plural, group, scope: options?.scope ?? (namespace ? 'namespace' : 'cluster'), ...(options?.names ? { names: options.names } : {}) };
    super('KTCTL_KUBE_FORBIDDEN', forbiddenSentence(p, namespace ?? '', options?.reason), options);
    this.verb = verb;
    this.resource = resource;
    this.namespace = namespace;
    this.reason = options?.reason;
  }

  /** For a permission of the table (permissions.ts). */
  static of(p: Permission, namespace: string): KubeForbiddenError {
    const ns = p.scope === 'cluster' ? undefined : typeof p.scope === 'string' ? namespace : p.scope.namespace;
    return new KubeForbiddenError(p.verb, p.group ? `${p.resource}.${p.group}` : p.resource, ns, { scope: p.scope, names: p.names });
  }
}

/** The groups of the resources ktctl uses that are not in the core group. */
const GROUPS: Record<string, string> = { deployments: 'apps', replicasets: 'apps', selfsubjectaccessreviews: 'authorization.k8s.io' };

function splitGroup(resource: string): [string, string] {
  const dot = resource.indexOf('.');
  if (dot > 0) return [resource.slice(0, dot), resource.slice(dot + 1)];
  return [resource, GROUPS[resource.split('/')[0]!] ?? ''];
}

/**
 * "you may not create pods in namespace dev (RBAC): deploy/rbac/role.yaml line 30 grants it: ask a
 * cluster administrator to apply it in namespace dev and bind it to you (deploy/rbac/bindings.yaml),
 * or use a context that has it". `check` prints the same sentence for the same permission.
 */
export function forbiddenSentence(p: Permission, namespace: string, serverSaid?: string): string {
  const names = p.names ? ` ${p.names.join(', ')}` : '';
  const ns = p.scope === 'cluster' ? undefined : typeof p.scope === 'string' ? namespace : p.scope.namespace;
  const where = ns ? `in namespace ${ns}` : 'at cluster scope';
  const what = `${p.verb} ${p.resource}${p.group ? `.${p.group}` : ''}${names} ${where}`;
  const grant = whereGranted(p);
  let fix: string;
  if (grant === undefined) fix = 'ask a cluster administrator for a Role that allows it, or use a context that has it';
  else if ('leftOut' in grant) fix = `deploy/rbac leaves it out on purpose (${grant.leftOut}): ask a cluster administrator, or use a context that has it`;
  else if (grant.file.endsWith('clusterrole.yaml')) fix = `${grant.file} line ${grant.line} grants it: ask a cluster administrator to apply it and bind it to you (${BINDING_FILE}), or use a context that has it`;
  else fix = `${grant.file} line ${grant.line} grants it: ask a cluster administrator to apply it in namespace ${ns ?? namespace} and bind it to you (${BINDING_FILE}), or use a context that has it`;
  const said = serverSaid !== undefined ? `; the API server said: ${serverSaid}` : '';
  return `you may not ${what} (RBAC)${said}: ${fix}`;
}

/**
 * 403 from Pod Security Admission: the namespace's `pod-security.kubernetes.io/enforce` level
 * refuses the pod. Not RBAC: the message quotes the checks the pod failed.
 */
export class PodSecurityError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_POD_SECURITY', message, options);
  }
}

/** 404: the namespace or the object does not exist. */
export class KubeNotFoundError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_NOT_FOUND', message, options);
  }
}

/** 409: someone else changed the object (resourceVersion) or it exists already. */
export class KubeConflictError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_CONFLICT', message, options);
  }
}

/** Any other answer of the API server. */
export class KubeApiError extends KubeError {
  readonly status: number;
  constructor(status: number, message: string, options?: { cause?: unknown }) {
    super('KTCTL_KUBE_API', message, options);
    this.status = status;
  }
}

/** `gone`: deleted, made again on the next reconnect; `lost`: deleted and not ours to make again (shared shadow, mesh router). */
export type ShadowFailure = 'image' | 'unschedulable' | 'crash' | 'config' | 'timeout' | 'gone' | 'lost';

/** The shadow pod did not become ready, or went away and could not be made again. */
export class ShadowPodError extends KubeError {
  readonly reason: ShadowFailure;
  constructor(reason: ShadowFailure, message: string, options?: { cause?: unknown }) {
    super(`KTCTL_SHADOW_${reason.toUpperCase()}`, message, options);
    this.reason = reason;
  }
}

/** A port-forward stream could not be opened, or the kubelet reported an error on it. */
export class PortForwardError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_PORT_FORWARD', message, options);
  }
}

/** What a call was doing, for the sentence: "create pods in namespace default". */
export interface KubeOperation {
  verb: string;
  /** plural resource, with subresource: pods, pods/portforward, deployments/scale */
  resource: string;
  namespace?: string;
  name?: string;
  /** the API server's URL, for "cannot reach" */
  server?: string;
}

interface StatusBody {
  message?: string;
  reason?: string;
  code?: number;
  details?: { kind?: string; name?: string };
}

function statusOf(body: unknown): StatusBody | undefined {
  let b: unknown = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body.trim() !== '' ? { message: body.trim() } : undefined;
    }
  }
  if (typeof b === 'object' && b !== null) return b as StatusBody;
  return undefined;
}

const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  UND_ERR_CONNECT_TIMEOUT: 'timed out connecting',
  UND_ERR_SOCKET: 'the connection broke',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its TLS certificate is not trusted',
  SELF_SIGNED_CERT_IN_CHAIN: 'its TLS certificate is not trusted',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its TLS certificate is not trusted',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its TLS certificate does not name it',
  CERT_HAS_EXPIRED: 'its TLS certificate has expired',
};

/** The first errno-like code in an error's cause chain. */
function networkCode(error: unknown): string | undefined {
  let e: unknown = error;
  for (let i = 0; i < 6 && typeof e === 'object' && e !== null; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code in NETWORK_CODES) return code;
    if ((e as { name?: unknown }).name === 'TimeoutError' || (e as { name?: unknown }).name === 'AbortError') return 'ETIMEDOUT';
    const errors = (e as { errors?: unknown }).errors;
    if (Array.isArray(errors) && errors.length > 0) {
      const inner = networkCode(errors[0]);
      if (inner) return inner;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Converts any failure of a Kubernetes call into a KubeError (KubeErrors pass through). */
export function toKubeError(error: unknown, op: KubeOperation): Error {
  if (error instanceof KubeError) return error;
  const ns = op.namespace;
  if (error instanceof ApiException) {
    const status = statusOf(error.body);
    const code = Number(error.code);
    const text = status?.message ?? error.message;
    if (code === 401) return new KubeUnauthorizedError(`the API server ${op.server ?? ''} does not accept the credentials of this context (401 Unauthorized): log in again or pick another --context`.replace('  ', ' '), { cause: error });
    if (code === 403) {
      // kube-apiserver's PodSecurity admission (pod-security-admission/admission: "violates PodSecurity \"restricted:latest\": ...")
      const psa = /violates PodSecurity "([^"]+)": (.*)$/s.exec(text);
      if (psa) {
        return new PodSecurityError(
          `the namespace ${ns ?? ''} enforces the Pod Security level "${psa[1]}" and refused the ${op.resource.replace(/s$/, '')} ${op.name ?? ''}: ${psa[2]}; run ktctl in a namespace whose pod-security.kubernetes.io/enforce label allows it, or ask an administrator`.replace(/ +/g, ' '),
          { cause: error },
        );
      }
      // Any other admission plugin's refusal ("pods "x" is forbidden: <why>") is not RBAC either:
      // RBAC's says "User ... cannot <verb> resource ..." (rbac authorizer, as kube-apiserver words it).
      const admission = /is forbidden: (?!User "[^"]*" cannot )(.*)$/s.exec(text);
      if (admission) {
        const sa = /error looking up service account \S+: serviceaccount "([^"]+)" not found/.exec(admission[1]!);
        const fix = sa ? `: name one that exists in namespace ${ns ?? ''} with --serviceAccount, or leave the flag out` : '';
        return new KubeApiError(403, `the API server refused to ${op.verb} ${op.resource}${ns ? ` in namespace ${ns}` : ''}: ${admission[1]}${fix}`, { cause: error });
      }
      return new KubeForbiddenError(op.verb, op.resource, ns, { cause: error });
    }
    if (code === 404) {
      if (ns && (/namespaces? "?[^"]*"? not found/.test(text) || status?.details?.kind === 'namespaces')) {
        return new KubeNotFoundError(`the namespace ${ns} does not exist: pick an existing one with -n (kubectl get namespaces lists them)`, { cause: error });
      }
      return new KubeNotFoundError(`${op.resource.split('/')[0]} ${op.name ?? ''}${ns ? ` in namespace ${ns}` : ''} does not exist (${text})`.replace(/ +/g, ' '), { cause: error });
    }
    if (code === 409) return new KubeConflictError(`${op.resource} ${op.name ?? ''} changed meanwhile or exists already (${text})`.replace(/ +/g, ' '), { cause: error });
    return new KubeApiError(code, `the API server refused to ${op.verb} ${op.resource}${ns ? ` in namespace ${ns}` : ''}: ${text}`, { cause: error });
  }
  const net = networkCode(error);
  if (net) {
    return new KubeUnreachableError(`cannot reach the Kubernetes API server${op.server ? ` at ${op.server}` : ''} (${NETWORK_CODES[net] ?? net}): check the cluster is up and the kubeconfig's server address, or pick another --context`, { cause: error });
  }
  if (error instanceof TypeError && error.message === 'fetch failed') {
    const why = error.cause instanceof Error ? error.cause.message : 'the request failed';
    return new KubeUnreachableError(`cannot reach the Kubernetes API server${op.server ? ` at ${op.server}` : ''} (${why}): check the cluster is up and the kubeconfig's server address, or pick another --context`, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new KubeApiError(0, `could not ${op.verb} ${op.resource}${ns ? ` in namespace ${ns}` : ''}: ${message}`, { cause: error });
}

/**
 * Runs one API call; its failure comes back as a KubeError. A 401 while an exec credential
 * plugin is in use drops the token the call was made with and runs the call once more (the
 * plugin runs again first), as client-go's exec round tripper does.
 */
export async function kubeCall<T>(op: KubeOperation, fn: () => Promise<T>): Promise<T> {
  const epoch = credentialEpoch();
  try {
    return await fn();
  } catch (error) {
    if (!(error instanceof ApiException && Number(error.code) === 401 && renewAfterUnauthorized(epoch))) throw toKubeError(error, op);
  }
  try {
    return await fn();
  } catch (error) {
    throw toKubeError(error, op);
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof KubeNotFoundError || (error instanceof ApiException && Number(error.code) === 404);
}

/**
 * The call's result, or `undefined` when what it reads or deletes does not exist (404): for the
 * many places where "not there" is an answer, not a failure. Other errors pass through.
 */
export async function unlessNotFound<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

export function isConflict(error: unknown): boolean {
  return error instanceof KubeConflictError || (error instanceof ApiException && Number(error.code) === 409);
}
