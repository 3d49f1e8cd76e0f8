/**
 * `ktctl forward`'s targets in the cluster: a Service (dialled by its DNS name, on one of its
 * ports) or a Pod (by its IP). Looked up before anything is made, so a typo costs nothing.
 */
import type { V1Pod, V1Service } from '@kubernetes/client-node';
import { UsageError } from '../errors.js';
import type { Kube } from './api.js';
import { isNotFound, kubeCall, KubeNotFoundError } from './errors.js';
import { describePorts, readService } from './target.js';

export interface ClusterTarget {
  kind: 'service' | 'pod';
  name: string;
}

/** Where the shadow dials, and what to print. */
export interface ResolvedTarget {
  host: string;
  port: number;
  /** what it is: "service dev/web, port http", "pod dev/web-1" */
  label: string;
}

/**
 * The far-side address of `target` in `namespace`. `remote` is the port asked for: a number or a
 * port name, or undefined for "the only port there is".
 */
export async function resolveClusterTarget(kube: Kube, namespace: string, target: ClusterTarget, remote: string | undefined, clusterDomain: string): Promise<ResolvedTarget> {
  return target.kind === 'service'
    ? serviceTarget(await readService(kube, namespace, target.name, '; pod/NAME forwards to a pod'), namespace, target.name, remote, clusterDomain)
    : podTarget(await readPod(kube, namespace, target.name), namespace, target.name, remote);
}

async function readPod(kube: Kube, namespace: string, name: string): Promise<V1Pod> {
  try {
    return await kubeCall({ verb: 'get', resource: 'pods', namespace, name, server: kube.server }, () => kube.core.readNamespacedPod({ name, namespace }));
  } catch (error) {
    if (isNotFound(error) && !(error as Error).message.startsWith('the namespace ')) {
      throw new KubeNotFoundError(`there is no pod ${name} in namespace ${namespace} (kubectl get pods -n ${namespace} lists them)`, { cause: error });
    }
    throw error;
  }
}

interface NamedPort {
  port: number;
  name?: string;
}

/** The port of `ports` that `remote` names (number or name); `strict`: a number must be listed. */
function pickPort(ports: readonly NamedPort[], remote: string | undefined, what: string, strict: boolean): NamedPort {
  if (remote === undefined) {
    if (ports.length === 1) return ports[0]!;
    if (ports.length === 0) throw new UsageError(`${what} declares no ports: name the port, e.g. 8080:80`);
    throw new UsageError(`${what} has several ports (${describePorts(ports)}): name one, e.g. ${ports[0]!.port}:${ports[0]!.port}`);
  }
  const found = /^\d+$/.test(remote) ? ports.find((p) => p.port === Number(remote)) : ports.find((p) => p.name === remote);
  if (found) return found;
  if (!strict && /^\d+$/.test(remote)) return { port: Number(remote) };
  const valid = ports.length > 0 ? `its ports are ${describePorts(ports)}` : 'it declares no ports';
  throw new UsageError(`${what} has no port ${/^\d+$/.test(remote) ? remote : `named ${remote}`}: ${valid}`);
}

function serviceTarget(svc: V1Service, namespace: string, name: string, remote: string | undefined, clusterDomain: string): ResolvedTarget {
  const ports: NamedPort[] = (svc.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => ({ port: p.port, ...(p.name ? { name: p.name } : {}) }));
  const what = `service ${name} in namespace ${namespace}`;
  const port = pickPort(ports, remote, what, true);
  const domain = clusterDomain.replace(/\.+$/, '');
  return { host: `${name}.${namespace}.svc.${domain}`, port: port.port, label: `service ${namespace}/${name}${port.name ? `, port ${port.name}` : ''}` };
}

function podTarget(pod: V1Pod, namespace: string, name: string, remote: string | undefined): ResolvedTarget {
  const what = `pod ${name} in namespace ${namespace}`;
  const ip = pod.status?.podIP;
  if (pod.metadata?.deletionTimestamp || !ip || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') {
    throw new KubeNotFoundError(`${what} has no IP to forward to (phase ${pod.status?.phase ?? 'unknown'}${pod.metadata?.deletionTimestamp ? ', being deleted' : ''}): wait until it runs, or pick another pod`);
  }
  const ports: NamedPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if ((p.protocol ?? 'TCP') === 'TCP') ports.push({ port: p.containerPort, ...(p.name ? { name: p.name } : {}) });
  }
  // A pod may listen on ports it does not declare (kubectl port-forward allows them too).
  const port = pickPort(ports, remote, what, false);
  return { host: ip, port: port.port, label: `pod ${namespace}/${name}${port.name ? `, port ${port.name}` : ''}` };
}
