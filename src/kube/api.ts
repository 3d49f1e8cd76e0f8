/**
 * The Kubernetes clients ktctl uses (client-node 2.0.1), with the API server's clock: every
 * timestamp ktctl writes or compares (heartbeats, `clean`'s threshold) comes from the `Date` header
 * of an API response, never from this machine's clock (KT Connect deleted other users' live shadows
 * when a laptop's clock was off).
 */
import {
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  PatchStrategy,
  VersionApi,
  setHeaderOptions,
  type ConfigurationOptions,
  type KubeConfig,
} from '@kubernetes/client-node';
import type { KubeTarget } from './config.js';
import { kubeCall, KubeApiError } from './errors.js';
import { requestGuard } from './permissions.js';
import { logRequestsTo, watchRequests, type RequestAttributes } from './requests.js';

export type MergePatchOptions = ConfigurationOptions;

export class Kube {
  readonly kc: KubeConfig;
  readonly namespace: string;
  readonly context: string;
  readonly server: string;
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly authz: AuthorizationV1Api;
  readonly #version: VersionApi;
  /** Header options that make a PATCH a JSON merge patch (RFC 7386). */
  readonly mergePatch: MergePatchOptions = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  /** Sees each request before it leaves (permissions.ts's `requestGuard`); may throw to refuse it. */
  onRequest: ((attrs: RequestAttributes) => void) | undefined;

  constructor(target: KubeTarget) {
    this.kc = target.kc;
    this.namespace = target.namespace;
    this.context = target.context;
    this.server = target.server;
    this.core = target.kc.makeApiClient(CoreV1Api);
    this.apps = target.kc.makeApiClient(AppsV1Api);
    this.authz = target.kc.makeApiClient(AuthorizationV1Api);
    this.#version = target.kc.makeApiClient(VersionApi);
    const log = logRequestsTo(process.env.KTCTL_PERMISSIONS_LOG);
    this.onRequest = requestGuard(() => this.namespace);
    watchRequests(target.kc, (attrs) => {
      log?.(attrs);
      this.onRequest?.(attrs);
    });
  }

  /**
   * The API server's time now, from the `Date` header of a GET /version (second precision, as
   * Kubernetes writes its own timestamps). Also the cheapest "is the API server reachable".
   */
  async serverNow(): Promise<Date> {
    const info = await kubeCall({ verb: 'get', resource: '/version', server: this.server }, () => this.#version.getCodeWithHttpInfo());
    const date = headerValue(info.headers, 'date');
    const d = date ? new Date(date) : undefined;
    if (!d || Number.isNaN(d.getTime())) throw new KubeApiError(info.httpStatusCode, `the API server at ${this.server} sent no usable Date header (${date ?? 'none'}), so ktctl cannot use its clock`);
    return d;
  }
}

function headerValue(headers: Record<string, string>, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return undefined;
}

/** RFC 3339 with second precision (metav1.Time). */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
