/**
 * What `exchange`, `mesh` and `recover` act on: `<svc>`, `svc/NAME` or `deploy/NAME` becomes a
 * Service (with a selector) and, where one exists, the Deployment whose pod template the selector
 * matches. And which ports of that Service the `--expose` remote ports are. `readService` and
 * `describePorts` also serve `forward` (src/kube/forward.ts).
 */
import type { V1Deployment, V1Service } from '@kubernetes/client-node';
import { TargetError, UsageError } from '../errors.js';
import type { Kube } from './api.js';
import { isNotFound, kubeCall } from './errors.js';
import { originalSelectorOf } from './selector.js';

/** One `--expose` port pair (parsed by src/cli/common/expose.ts). */
export interface ExposePort {
  /** the port on this machine that gets the connections */
  local: number;
  /** the port in the cluster: a service port or targetPort (exchange, mesh), the new service's port (preview) */
  remote: number;
}

export interface ServiceTarget {
  service: V1Service;
  /** the one Deployment whose pod template labels the service's selector matches (or the one named) */
  deployment?: V1Deployment;
  /** every Deployment the selector matches (more than one: `deployment` is undefined unless named) */
  deployments: V1Deployment[];
}

/** `svc/web` -> { kind: 'service', name: 'web' }; a bare name is a service. */
export function parseTargetName(text: string): { kind: 'service' | 'deployment'; name: string } {
  const t = text.trim();
  const slash = t.indexOf('/');
  const kindText = slash < 0 ? 'svc' : t.slice(0, slash).toLowerCase();
  const name = slash < 0 ? t : t.slice(slash + 1);
  const valid = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) && name.length <= 63;
  const kind = ['svc', 'service', 'services'].includes(kindText) ? 'service' : ['deploy', 'deployment', 'deployments'].includes(kindText) ? 'deployment' : undefined;
  if (!kind || !valid) {
    throw new UsageError(`"${text}" is not a service: give a service name, svc/NAME or deploy/NAME (lower case letters, digits and '-')`);
  }
  return { kind, name };
}

/** True when every key=value of `selector` is among `labels` (an empty selector matches nothing). */
export function selectorMatches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  const entries = Object.entries(selector ?? {});
  if (entries.length === 0) return false;
  return entries.every(([k, v]) => labels?.[k] === v);
}

function templateLabels(d: V1Deployment): Record<string, string> {
  return d.spec?.template.metadata?.labels ?? {};
}

/**
 * The Service `name` in `namespace`. Its absence is a TargetError('not-found') that says how to
 * list the services (`hint` adds to that: what else the command takes); a missing namespace keeps
 * its own sentence (kubeCall's).
 */
export async function readService(kube: Kube, namespace: string, name: string, hint = ''): Promise<V1Service> {
  try {
    return await kubeCall({ verb: 'get', resource: 'services', namespace, name, server: kube.server }, () => kube.core.readNamespacedService({ name, namespace }));
  } catch (error) {
    if (isNotFound(error) && !(error instanceof Error && error.message.startsWith('the namespace '))) {
      throw new TargetError('not-found', `the service ${name} does not exist in namespace ${namespace} (kubectl get services -n ${namespace} lists them${hint})`, { cause: error });
    }
    throw error;
  }
}

async function listDeployments(kube: Kube, namespace: string): Promise<V1Deployment[]> {
  const list = await kubeCall({ verb: 'list', resource: 'deployments', namespace, server: kube.server }, () => kube.apps.listNamespacedDeployment({ namespace }));
  return list.items;
}

/**
 * Looks the target up. Errors (one sentence each): no such service or deployment, a service
 * without a selector, a deployment no service selects, or several services that do.
 */
export async function resolveTarget(kube: Kube, namespace: string, text: string): Promise<ServiceTarget> {
  const t = parseTargetName(text);
  if (t.kind === 'service') {
    const service = await readService(kube, namespace, t.name);
    // A selector ktctl took over (a run that died) is not the service's own: its original is.
    const selector = originalSelectorOf(service) ?? service.spec?.selector;
    if (!selector || Object.keys(selector).length === 0) {
      throw new TargetError('no-selector', `the service ${t.name} in namespace ${namespace} has no selector (its endpoints are set by hand), so ktctl cannot point it at a shadow pod`);
    }
    const deployments = (await listDeployments(kube, namespace)).filter((d) => selectorMatches(selector, templateLabels(d)));
    return { service, deployments, deployment: deployments.length === 1 ? deployments[0] : undefined };
  }
  let deployment: V1Deployment;
  try {
    deployment = await kubeCall({ verb: 'get', resource: 'deployments', namespace, name: t.name, server: kube.server }, () =>
      kube.apps.readNamespacedDeployment({ name: t.name, namespace }),
    );
  } catch (error) {
    if (isNotFound(error)) {
      throw new TargetError('not-found', `the deployment ${t.name} does not exist in namespace ${namespace} (kubectl get deployments -n ${namespace} lists them)`, { cause: error });
    }
    throw error;
  }
  const services = (
    await kubeCall({ verb: 'list', resource: 'services', namespace, server: kube.server }, () => kube.core.listNamespacedService({ namespace }))
  ).items.filter((s) => selectorMatches(s.spec?.selector, templateLabels(deployment)));
  if (services.length === 0) {
    throw new TargetError('not-found', `no service in namespace ${namespace} selects the pods of deployment ${t.name}: create one, or name the service instead`);
  }
  if (services.length > 1) {
    const names = services.map((s) => s.metadata?.name ?? '').sort();
    throw new TargetError('ambiguous', `several services select the pods of deployment ${t.name} (${names.join(', ')}): name the one to use, e.g. svc/${names[0]}`);
  }
  return { service: services[0]!, deployment, deployments: [deployment] };
}

/** One exposed port, checked against the Service. */
export interface ExposedServicePort extends ExposePort {
  /** the port the backing pods listen on (the service's targetPort): the shadow listens here */
  listen: number;
  /** the service port this remote port belongs to */
  servicePort: number;
  /** the targetPort's name when it is a named port: the shadow declares a container port of that name */
  portName?: string;
}

/** The numeric port behind a named targetPort, from the deployment's pod template. */
function namedPort(deployment: V1Deployment | undefined, name: string): number | undefined {
  for (const c of deployment?.spec?.template.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === name) return p.containerPort;
  }
  return undefined;
}

/** A port as error messages list it: `80`, `80 (http)`, `80 (targetPort 8080)`, `80 (http, targetPort 8080)`. */
export interface DescribedPort {
  port: number;
  name?: string;
  /** shown when given and different from `port` */
  targetPort?: number | string;
}

/** The ports of a Service (or a pod's declared ports) for an error message: `80 (http), 81 (targetPort 8080)`. */
export function describePorts(ports: readonly DescribedPort[]): string {
  return ports
    .map((p) => {
      const notes: string[] = [];
      if (p.name) notes.push(p.name);
      if (p.targetPort !== undefined && String(p.targetPort) !== String(p.port)) notes.push(`targetPort ${String(p.targetPort)}`);
      return notes.length > 0 ? `${p.port} (${notes.join(', ')})` : String(p.port);
    })
    .join(', ');
}

/**
 * Maps each remote port of `expose` to the service port it names: a remote port equal to a
 * service `port` or to a numeric `targetPort`. Connections reach the pods after the service's
 * DNAT, so the shadow listens on the targetPort (a named one is resolved through the deployment's
 * pod template, else the service port's number is used and the shadow declares the name).
 */
export function checkRemotePorts(service: V1Service, expose: ExposePort[], deployment?: V1Deployment): ExposedServicePort[] {
  const ports = (service.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  const name = service.metadata?.name ?? '';
  return expose.map((e) => {
    const sp = ports.find((p) => p.port === e.remote) ?? ports.find((p) => typeof (p.targetPort ?? p.port) === 'number' && Number(p.targetPort ?? p.port) === e.remote);
    if (!sp) {
      throw new TargetError(
        'port',
        ports.length === 0
          ? `the service ${name} has no TCP ports, so --expose ${e.local}:${e.remote} has nothing to take over`
          : `the service ${name} has no port ${e.remote}: expose one of its ports ${describePorts(ports)} (--expose LOCAL:REMOTE)`,
      );
    }
    const target = sp.targetPort ?? sp.port;
    if (typeof target === 'number' || /^\d+$/.test(String(target))) return { ...e, listen: Number(target), servicePort: sp.port };
    const portName = String(target);
    return { ...e, listen: namedPort(deployment, portName) ?? sp.port, servicePort: sp.port, portName };
  });
}
