/**
 * Every request ktctl sends to the API server, seen as RBAC sees it: verb, API group, resource
 * (with subresource), namespace and name, derived from the method and URL as kube-apiserver's
 * `RequestInfoFactory.NewRequestInfo` does (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go).
 *
 * A `Kube` routes its requests through `watchRequests` (the generated clients call the
 * KubeConfig's `applySecurityAuthentication` for each request; watches and port-forwards, which do
 * not, report theirs with `noteRequest`). That gives the permission table (permissions.ts) a
 * check at the one place no call can avoid: a request that the running command's table does not
 * list is a ktctl bug, and with `KTCTL_PERMISSIONS=strict` (the test suite sets it) it fails.
 */
import { appendFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';

export interface RequestAttributes {
  verb: string;
  /** '' for the core group */
  group: string;
  /** plural, with "/subresource" when there is one: pods/portforward, deployments/scale */
  resource: string;
  /** '' when the request is not namespaced (cluster scope, or every namespace) */
  namespace: string;
  name: string;
}

/** Namespaces' own subresources (requestinfo.go `namespaceSubresources`). */
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);

/**
 * The RBAC attributes of a request, or undefined for a non-resource URL (/version, /api, ...,
 * which every authenticated user may read: system:discovery, system:public-info-viewer).
 */
export function requestAttributes(method: string, url: string): RequestAttributes | undefined {
  const u = new URL(url, 'https://x');
  let parts = u.pathname.split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));
  let group: string;
  if (parts[0] === 'api' && parts.length >= 2) {
    group = '';
    parts = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    group = parts[1]!;
    parts = parts.slice(3);
  } else return undefined;
  if (parts.length === 0) return undefined;
  let watch = u.searchParams.get('watch') === 'true' || u.searchParams.get('watch') === '1';
  // the deprecated /watch/ path prefix
  if (parts[0] === 'watch') {
    watch = true;
    parts = parts.slice(1);
  }
  let namespace = '';
  // "/namespaces/{namespace}/{resource}/...": relative to the resource; /namespaces/{name} is the
  // namespace itself, with its name as the namespace (so a RoleBinding there can grant reading it)
  if (parts[0] === 'namespaces' && parts.length > 1) {
    namespace = parts[1]!;
    if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2]!)) parts = parts.slice(2);
  }
  const resource = parts[0]!;
  const name = parts[1] ?? '';
  const subresource = parts[2];
  let verb: string;
  switch (method.toUpperCase()) {
    case 'POST':
      verb = 'create';
      break;
    case 'GET':
    case 'HEAD':
      verb = name === '' ? (watch ? 'watch' : 'list') : watch ? 'watch' : 'get';
      break;
    case 'PUT':
      verb = 'update';
      break;
    case 'PATCH':
      verb = 'patch';
      break;
    case 'DELETE':
      verb = name === '' ? 'deletecollection' : 'delete';
      break;
    default:
      verb = method.toLowerCase();
  }
  return { verb, group, resource: subresource ? `${resource}/${subresource}` : resource, namespace, name };
}

export type RequestListener = (attrs: RequestAttributes) => void;

const listeners = new WeakMap<KubeConfig, RequestListener>();

/**
 * Sends every request made through `kc` to `listener` before it leaves (a listener that throws
 * fails the request). Wraps the KubeConfig's `applySecurityAuthentication`, which the generated
 * API clients call once per request with its method and URL.
 */
export function watchRequests(kc: KubeConfig, listener: RequestListener): void {
  const first = !listeners.has(kc);
  listeners.set(kc, listener);
  if (!first) return;
  const apply = kc.applySecurityAuthentication.bind(kc);
  kc.applySecurityAuthentication = async (context) => {
    noteRequest(kc, context.getHttpMethod(), context.getUrl());
    return apply(context);
  };
}

/** For requests the generated clients do not make (watches, port-forward upgrades). */
export function noteRequest(kc: KubeConfig, method: string, url: string): void {
  const listener = listeners.get(kc);
  if (!listener) return;
  const attrs = requestAttributes(method, url);
  if (attrs) listener(attrs);
}

/** `KTCTL_PERMISSIONS_LOG=FILE`: one JSON line per request (the command line, then the attributes). */
export function logRequestsTo(file: string | undefined): RequestListener | undefined {
  if (!file) return undefined;
  const argv = process.argv.slice(2);
  return (attrs) => {
    try {
      appendFileSync(file, `${JSON.stringify({ argv, ...attrs })}\n`);
    } catch {
      /* a log for development: never fail a request for it */
    }
  };
}
