/**
 * The cluster's Services, listed and kept current for `--dnsMode hosts` (`Transport.services`).
 */
import { isIP } from 'node:net';
import { ListWatch, Watch, type KubeConfig, type V1Service } from '@kubernetes/client-node';
import type { ClusterService, ServiceWatch, TransportContext } from '../transport.js';
import type { Kube } from './api.js';
import { credentialEpoch, renewAfterUnauthorized } from './credentials.js';
import { kubeCall, KubeForbiddenError } from './errors.js';
import { noteRequest } from './requests.js';

/** How long a burst of watch events is collected before `onChange` sees the list. */
const SERVICES_SETTLE_MS = 50;
/** How long after a failed list or watch the Services are listed and watched again. */
const SERVICES_RETRY_MS = 2000;

/**
 * Lists and watches Services (client-node's informer: a list, then a watch from its
 * resourceVersion, listed again after 410 Gone); every namespace's when RBAC allows it, else the
 * connected namespace's. A failed list or watch is retried until `stop()`.
 */
export async function watchServices(kube: Kube, namespace: string, onChange: (services: ClusterService[]) => void, ctx: TransportContext): Promise<ServiceWatch> {
  let scope: ServiceWatch['scope'] = 'cluster';
  try {
    await kubeCall({ verb: 'list', resource: 'services', server: kube.server }, () => kube.core.listServiceForAllNamespaces({ limit: 1 }));
  } catch (error) {
    if (!(error instanceof KubeForbiddenError)) throw error;
    scope = 'namespace';
    await kubeCall({ verb: 'list', resource: 'services', namespace, server: kube.server }, () => kube.core.listNamespacedService({ namespace, limit: 1 }));
  }
  const path = scope === 'cluster' ? '/api/v1/services' : `/api/v1/namespaces/${namespace}/services`;
  const informer =
    scope === 'cluster'
      ? new ListWatch<V1Service>(path, new SettledWatch(kube.kc), () => kube.core.listServiceForAllNamespaces(), false)
      : new ListWatch<V1Service>(path, new SettledWatch(kube.kc), () => kube.core.listNamespacedService({ namespace }), false);
  // The credential each (re)connection started with: a 401 drops it (credentials.ts), and the retry runs the plugin.
  let epoch = credentialEpoch();
  informer.on('connect', () => (epoch = credentialEpoch()));
  // the informer's watches do not pass through the generated clients: tell the guard (requests.ts)
  const noteWatch = (): void => noteRequest(kube.kc, 'GET', `${path}?watch=true`);
  let stopped = false;
  let settle: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;
  const deliver = (): void => {
    clearTimeout(settle);
    settle = undefined;
    if (stopped) return;
    onChange(
      informer.list().map((s) => ({
        namespace: s.metadata?.namespace ?? '',
        name: s.metadata?.name ?? '',
        ips: (s.spec?.clusterIPs ?? (s.spec?.clusterIP ? [s.spec.clusterIP] : [])).filter((ip) => isIP(ip) !== 0),
      })),
    );
  };
  const changed = (): void => {
    settle ??= setTimeout(deliver, SERVICES_SETTLE_MS);
  };
  informer.on('change', changed);
  informer.on('error', (error: unknown) => {
    if (stopped) return;
    ctx.debug(`watch of services: ${error instanceof Error ? error.message : String(error)}; again in ${SERVICES_RETRY_MS / 1000} s`);
    if (statusOf(error) === 401) renewAfterUnauthorized(epoch);
    clearTimeout(retry);
    retry = setTimeout(() => {
      noteWatch();
      void informer.start().catch(() => undefined);
    }, SERVICES_RETRY_MS);
  });
  noteWatch();
  await informer.start();
  deliver();
  return {
    scope,
    async stop() {
      stopped = true;
      clearTimeout(settle);
      clearTimeout(retry);
      await informer.stop();
    },
  };
}

/** The HTTP status of a failed list (ApiException `code`) or watch (client-node's Error with `statusCode`). */
function statusOf(error: unknown): number | undefined {
  const e = error as { code?: unknown; statusCode?: unknown } | undefined;
  const v = Number(e?.statusCode ?? e?.code);
  return Number.isInteger(v) ? v : undefined;
}

/**
 * client-node's Watch, except that a failure to start (the exec plugin fails while the informer
 * reconnects by itself) goes to `done` like any other watch failure: the informer calls `watch`
 * from its own callbacks without catching, so a rejection there would be unhandled.
 */
class SettledWatch extends Watch {
  constructor(kc: KubeConfig) {
    super(kc);
  }

  override async watch(path: string, queryParams: Record<string, string | number | boolean | undefined>, callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    try {
      return await super.watch(path, queryParams, callback, done);
    } catch (error) {
      done(error);
      return new AbortController();
    }
  }
}
