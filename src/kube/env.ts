/**
 * The environment a workload's container runs with, made as the kubelet makes it, so `exchange` and
 * `mesh` can hand it to the local process that takes the workload's place (`--envFile`,
 * `--envJson`, `-- command`). Followed: kubernetes/kubernetes pkg/kubelet/kubelet_pods.go
 * `makeEnvironmentVariables` (envFrom first, then env in order, `$(VAR)` expanded over what is
 * declared so far and the service variables), `podFieldSelectorRuntimeValue` and
 * `containerResourceRuntimeValue` (the downward API), pkg/kubelet/envvars/envvars.go `FromServices`
 * (the service links), and third_party/forked/golang/expansion/expand.go `Expand`.
 *
 * Differences, on purpose:
 * - The kubelet adds the `kubernetes` service of namespace default (KUBERNETES_SERVICE_HOST,
 *   KUBERNETES_PORT...) to every container. ktctl leaves those out: with KUBERNETES_SERVICE_HOST
 *   set, client libraries (client-go `rest.InClusterConfig`, the Python client, ...) believe they
 *   run in a pod and look for a service account token that is not on this machine, instead of
 *   using the kubeconfig. The namespace's own services (`enableServiceLinks`, default true) are
 *   kept; their addresses answer while `ktctl connect` runs.
 * - The kubelet's map has no order (a Go map); ktctl keeps the order of declaration (envFrom's keys,
 *   then env), then the service links.
 * - The 1.35 kubelet keeps envFrom keys that are not C identifiers (`my-key`, `1st`): the check
 *   `IsEnvVarName` and the InvalidEnvironmentVariableNames event left the kubelet with
 *   RelaxedEnvironmentVariableValidation (GA in 1.34). ktctl keeps them too; the only keys it
 *   skips are ones the kubelet could not pass either (an '=' or a NUL in the name, impossible in a
 *   ConfigMap or Secret key but possible with a prefix).
 */
import type { V1ConfigMap, V1Container, V1EnvVar, V1ObjectFieldSelector, V1Pod, V1ResourceFieldSelector, V1Secret, V1Service } from '@kubernetes/client-node';
import { WorkloadEnvError } from '../errors.js';
import type { Kube } from './api.js';
import { isNotFound, kubeCall } from './errors.js';

/** The annotation `kubectl exec` and `kubectl logs` read for a pod's default container. */
export const DEFAULT_CONTAINER_ANNOTATION = 'kubectl.kubernetes.io/default-container';

/**
 * `$(VAR)` expansion as the kubelet does it (third_party/forked/golang/expansion/expand.go `Expand`):
 * `$(NAME)` becomes `mapping(NAME)`, `$$` becomes `$`, a `$` before anything else and an unclosed
 * `$(` stay as they are.
 */
export function expand(input: string, mapping: (name: string) => string): string {
  let out = '';
  let checkpoint = 0;
  for (let cursor = 0; cursor < input.length; cursor++) {
    if (input[cursor] !== '$' || cursor + 1 >= input.length) continue;
    out += input.slice(checkpoint, cursor);
    const next = input[cursor + 1];
    let advance = 1;
    if (next === '$') out += '$';
    else if (next === '(') {
      const close = input.indexOf(')', cursor + 2);
      if (close < 0) out += '$(';
      else {
        out += mapping(input.slice(cursor + 2, close));
        advance = close - cursor;
      }
    } else out += `$${next}`;
    cursor += advance;
    checkpoint = cursor + 1;
  }
  return out + input.slice(checkpoint);
}

/** expansion.MappingFuncFor: the first map that has the name, else `$(NAME)` unchanged. */
export function mappingFor(...contexts: Array<ReadonlyMap<string, string>>): (name: string) => string {
  return (name) => {
    for (const c of contexts) {
      const v = c.get(name);
      if (v !== undefined) return v;
    }
    return `$(${name})`;
  };
}

/** envvars.go `makeEnvVariableName`: upper case, '-' and '.' to '_', a leading digit gets a '_'. */
function envName(s: string): string {
  const n = s.replace(/[-.]/g, '_').toUpperCase();
  return /^[0-9]/.test(n) ? `_${n}` : n;
}

/** A service's cluster IP is "set": neither empty nor None (v1helper.IsServiceIPSet). */
function hasClusterIp(s: V1Service): boolean {
  const ip = s.spec?.clusterIP ?? '';
  return ip !== '' && ip !== 'None';
}

/** envvars.go `FromServices`: NAME_SERVICE_HOST, NAME_SERVICE_PORT[_PORTNAME] and the Docker link variables. */
export function serviceLinkEnv(services: readonly V1Service[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of services) {
    const ports = s.spec?.ports ?? [];
    if (!hasClusterIp(s) || ports.length === 0) continue;
    const ip = s.spec!.clusterIP!;
    const host = ip.includes(':') ? `[${ip}]` : ip;
    const prefix = envName(s.metadata?.name ?? '');
    out.set(`${prefix}_SERVICE_HOST`, ip);
    out.set(`${prefix}_SERVICE_PORT`, String(ports[0]!.port));
    for (const p of ports) if (p.name) out.set(`${prefix}_SERVICE_PORT_${envName(p.name)}`, String(p.port));
    ports.forEach((p, i) => {
      const proto = (p.protocol ?? 'TCP').toLowerCase();
      const url = `${proto}://${host}:${p.port}`;
      if (i === 0) out.set(`${prefix}_PORT`, url);
      const pp = `${prefix}_PORT_${p.port}_${proto.toUpperCase()}`;
      out.set(pp, url);
      out.set(`${pp}_PROTO`, proto);
      out.set(`${pp}_PORT`, String(p.port));
      out.set(`${pp}_ADDR`, ip);
    });
  }
  return out;
}

/** Reads ConfigMaps and Secrets once each (the kubelet's `configMaps`/`secrets` maps), and the node. */
export interface EnvSources {
  configMap(name: string): Promise<V1ConfigMap | undefined>;
  secret(name: string): Promise<V1Secret | undefined>;
  /** the node's allocatable resources, for resourceFieldRef limits a container does not set */
  nodeAllocatable(name: string): Promise<Record<string, string>>;
}

/** The sources of one namespace, through the API (undefined: the object does not exist). */
export function apiSources(kube: Kube, namespace: string): EnvSources {
  const cms = new Map<string, Promise<V1ConfigMap | undefined>>();
  const secrets = new Map<string, Promise<V1Secret | undefined>>();
  const read = <T>(cache: Map<string, Promise<T | undefined>>, name: string, resource: string, fn: () => Promise<T>): Promise<T | undefined> => {
    let p = cache.get(name);
    if (!p) {
      p = kubeCall({ verb: 'get', resource, namespace, name, server: kube.server }, fn).catch((e: unknown) => {
        if (isNotFound(e) && !(e instanceof Error && e.message.startsWith('the namespace '))) return undefined;
        throw e;
      });
      cache.set(name, p);
    }
    return p;
  };
  return {
    configMap: (name) => read(cms, name, 'configmaps', () => kube.core.readNamespacedConfigMap({ name, namespace })),
    secret: (name) => read(secrets, name, 'secrets', () => kube.core.readNamespacedSecret({ name, namespace })),
    nodeAllocatable: async (name) => {
      const node = await kubeCall({ verb: 'get', resource: 'nodes', name, server: kube.server }, () => kube.core.readNode({ name }));
      return node.status?.allocatable ?? {};
    },
  };
}

/** The container `--container` names, else the pod's default-container annotation's, else the first. */
export function pickContainer(pod: V1Pod, name: string | undefined): V1Container {
  const containers = pod.spec?.containers ?? [];
  const podName = pod.metadata?.name ?? '';
  const names = containers.map((c) => c.name).join(', ');
  if (name !== undefined) {
    const c = containers.find((x) => x.name === name);
    if (!c) throw new WorkloadEnvError(`pod ${podName} has no container ${name}: --container takes one of ${names}`);
    return c;
  }
  const annotated = pod.metadata?.annotations?.[DEFAULT_CONTAINER_ANNOTATION];
  const byAnnotation = annotated === undefined ? undefined : containers.find((x) => x.name === annotated);
  const c = byAnnotation ?? containers[0];
  if (!c) throw new WorkloadEnvError(`pod ${podName} has no containers`);
  return c;
}

/** `metadata.labels` / `metadata.annotations` as the downward API writes a map (fieldpath.FormatMap): sorted `k="v"` lines. */
function formatMap(m: Record<string, string> | undefined): string {
  return Object.keys(m ?? {})
    .sort()
    .map((k) => `${k}=${JSON.stringify(m![k])}`)
    .join('\n');
}

/**
 * kubelet_pods.go `podFieldSelectorRuntimeValue` and pkg/fieldpath `ExtractFieldPathAsString`. The
 * host IPs are the pod status's (the kubelet reads its node's addresses, which the status holds).
 */
export function fieldRefValue(f: V1ObjectFieldSelector, pod: V1Pod): string {
  const path = f.fieldPath;
  const md = pod.metadata ?? {};
  const st = pod.status ?? {};
  const sub = /^metadata\.(labels|annotations)\['(.*)'\]$/.exec(path);
  if (sub) return (sub[1] === 'labels' ? md.labels : md.annotations)?.[sub[2]!] ?? '';
  switch (path) {
    case 'metadata.name':
      return md.name ?? '';
    case 'metadata.namespace':
      return md.namespace ?? '';
    case 'metadata.uid':
      return md.uid ?? '';
    case 'metadata.labels':
      return formatMap(md.labels);
    case 'metadata.annotations':
      return formatMap(md.annotations);
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? '';
    case 'status.hostIP':
      return st.hostIP ?? st.hostIPs?.[0]?.ip ?? '';
    case 'status.hostIPs':
      return (st.hostIPs ?? []).map((x) => x.ip).join(',') || (st.hostIP ?? '');
    case 'status.podIP':
      return st.podIP ?? st.podIPs?.[0]?.ip ?? '';
    case 'status.podIPs':
      return (st.podIPs ?? []).map((x) => x.ip).join(',') || (st.podIP ?? '');
  }
  throw new WorkloadEnvError(`the fieldRef ${path} of pod ${md.name ?? ''} is not one the kubelet resolves (metadata.name, metadata.labels['KEY'], status.podIP, spec.nodeName, ...)`);
}

const SUFFIX: Record<string, number> = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A resource.Quantity (`500m`, `128Mi`, `1e3`, `2`) as a number of base units. */
export function parseQuantity(text: string): number {
  const m = /^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$/.exec(text.trim());
  if (!m) throw new WorkloadEnvError(`"${text}" is not a Kubernetes quantity (e.g. 500m, 128Mi, 2)`);
  const n = Number(m[1]);
  const s = m[2] ?? '';
  if (/^[eE]/.test(s)) return n * 10 ** Number(s.slice(1));
  const f = SUFFIX[s];
  if (f === undefined || Number.isNaN(n)) throw new WorkloadEnvError(`"${text}" is not a Kubernetes quantity (e.g. 500m, 128Mi, 2)`);
  return n * f;
}

/**
 * pkg/api/v1/resource `ExtractContainerResourceValue`: cpu is ceil(milli / divisor milli), memory and
 * ephemeral-storage ceil(value / divisor); a limit the container does not set is the node's
 * allocatable (kubelet `defaultPodLimitsForDownwardAPI`), a request it does not set is 0.
 */
export async function resourceFieldValue(f: V1ResourceFieldSelector, pod: V1Pod, own: V1Container, sources: EnvSources): Promise<string> {
  const c = f.containerName ? (pod.spec?.containers ?? []).find((x) => x.name === f.containerName) : own;
  if (!c) throw new WorkloadEnvError(`the resourceFieldRef ${f.resource} names container ${f.containerName ?? ''}, which pod ${pod.metadata?.name ?? ''} does not have`);
  const [kind, res] = f.resource.split('.', 2) as [string, string | undefined];
  if ((kind !== 'limits' && kind !== 'requests') || !res || !['cpu', 'memory', 'ephemeral-storage'].includes(res)) {
    throw new WorkloadEnvError(`the resourceFieldRef ${f.resource} is not one the kubelet resolves (limits.cpu, requests.memory, limits.ephemeral-storage, ...)`);
  }
  let raw: string | undefined = (kind === 'limits' ? c.resources?.limits : c.resources?.requests)?.[res];
  if (raw === undefined && kind === 'limits') raw = (await sources.nodeAllocatable(pod.spec?.nodeName ?? ''))[res];
  const value = raw === undefined ? 0 : parseQuantity(String(raw));
  const divisor = parseQuantity(f.divisor === undefined ? '1' : String(f.divisor));
  if (res === 'cpu') return String(Math.ceil(Math.ceil(value * 1000) / Math.ceil(divisor * 1000)));
  return String(Math.ceil(Math.ceil(value) / Math.ceil(divisor)));
}

/** What a variable came from, for the JSON file. */
export type EnvOrigin = 'value' | 'configMapKeyRef' | 'secretKeyRef' | 'fieldRef' | 'resourceFieldRef' | 'envFrom' | 'serviceLink';

export interface WorkloadEnv {
  namespace: string;
  pod: string;
  container: string;
  /** name -> value, in the order described at the top */
  vars: Map<string, string>;
  origin: Map<string, EnvOrigin>;
}

const optional = (o: { optional?: boolean } | undefined): boolean => o?.optional === true;

/**
 * makeEnvironmentVariables for `container` of `pod`: envFrom (a missing non-optional ConfigMap or
 * Secret fails), then each env entry (a `value` expanded; a missing key fails unless optional, and
 * an optional one leaves the variable out), then the namespace's service links (`services`, unless
 * the pod's `enableServiceLinks` is false) for names not declared.
 */
export async function containerEnv(pod: V1Pod, container: V1Container, sources: EnvSources, services: readonly V1Service[]): Promise<WorkloadEnv> {
  const ns = pod.metadata?.namespace ?? '';
  const podName = pod.metadata?.name ?? '';
  const serviceEnv = pod.spec?.enableServiceLinks === false ? new Map<string, string>() : serviceLinkEnv(services);
  const vars = new Map<string, string>();
  const origin = new Map<string, EnvOrigin>();
  const set = (k: string, v: string, o: EnvOrigin): void => {
    if (k.includes('=') || k.includes('\0') || k === '') return;
    vars.delete(k); // a later declaration takes the earlier one's place (and position)
    vars.set(k, v);
    origin.set(k, o);
  };
  const missingObject = (kind: string, name: string): WorkloadEnvError =>
    new WorkloadEnvError(`container ${container.name} of pod ${ns}/${podName} takes its environment from ${kind} ${name}, which does not exist in namespace ${ns} (mark the reference optional: true, or create it)`);
  for (const from of container.envFrom ?? []) {
    const prefix = from.prefix ?? '';
    if (from.configMapRef) {
      const cm = await sources.configMap(from.configMapRef.name ?? '');
      if (!cm) {
        if (optional(from.configMapRef)) continue;
        throw missingObject('ConfigMap', from.configMapRef.name ?? '');
      }
      for (const [k, v] of Object.entries(cm.data ?? {})) set(prefix + k, v, 'envFrom');
    } else if (from.secretRef) {
      const s = await sources.secret(from.secretRef.name ?? '');
      if (!s) {
        if (optional(from.secretRef)) continue;
        throw missingObject('Secret', from.secretRef.name ?? '');
      }
      for (const [k, v] of Object.entries(s.data ?? {})) set(prefix + k, Buffer.from(v, 'base64').toString(), 'envFrom');
    }
  }
  const mapping = mappingFor(vars, serviceEnv);
  for (const e of container.env ?? []) {
    const value = await envValue(e);
    if (value === undefined) continue;
    set(e.name, value[0], value[1]);
  }
  for (const [k, v] of serviceEnv) if (!vars.has(k)) set(k, v, 'serviceLink');
  return { namespace: ns, pod: podName, container: container.name, vars, origin };

  async function envValue(e: V1EnvVar): Promise<[string, EnvOrigin] | undefined> {
    if (e.value !== undefined && e.value !== '') return [expand(e.value, mapping), 'value'];
    const from = e.valueFrom;
    if (!from) return ['', 'value'];
    if (from.fieldRef) return [fieldRefValue(from.fieldRef, pod), 'fieldRef'];
    if (from.resourceFieldRef) return [await resourceFieldValue(from.resourceFieldRef, pod, container, sources), 'resourceFieldRef'];
    const ref = from.configMapKeyRef ?? from.secretKeyRef;
    if (!ref) return ['', 'value'];
    const kind = from.configMapKeyRef ? 'ConfigMap' : 'Secret';
    const obj = from.configMapKeyRef ? await sources.configMap(ref.name ?? '') : await sources.secret(ref.name ?? '');
    if (!obj) {
      if (optional(ref)) return undefined;
      throw missingObject(kind, ref.name ?? '');
    }
    const raw = from.configMapKeyRef ? (obj as V1ConfigMap).data?.[ref.key] : (obj as V1Secret).data?.[ref.key];
    if (raw === undefined) {
      if (optional(ref)) return undefined;
      // the kubelet's words: couldn't find key KEY in ConfigMap NS/NAME
      throw new WorkloadEnvError(`couldn't find key ${ref.key} in ${kind} ${ns}/${ref.name ?? ''}, which variable ${e.name} of container ${container.name} (pod ${podName}) takes (mark it optional: true, or add the key)`);
    }
    return from.configMapKeyRef ? [raw, 'configMapKeyRef'] : [Buffer.from(raw, 'base64').toString(), 'secretKeyRef'];
  }
}

/** A pod that runs (phase Running, not being deleted), ready ones first, then by name. */
export function runningPod(pods: readonly V1Pod[]): V1Pod | undefined {
  const ready = (p: V1Pod): boolean => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  return pods
    .filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp)
    .sort((a, b) => Number(ready(b)) - Number(ready(a)) || (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''))[0];
}

/**
 * The environment of the service's workload: one running pod the `selector` picks (its spec is what
 * the kubelet ran), its container (`--container`), resolved with the namespace's ConfigMaps, Secrets
 * and services. Read before anything in the cluster changes (scale mode: before the scale-down).
 */
export async function readWorkloadEnv(kube: Kube, o: { namespace: string; service: string; selector: Record<string, string>; container?: string }): Promise<WorkloadEnv> {
  const { namespace } = o;
  const labelSelector = Object.entries(o.selector)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  const pods = await kubeCall({ verb: 'list', resource: 'pods', namespace, server: kube.server }, () => kube.core.listNamespacedPod({ namespace, labelSelector }));
  const pod = runningPod(pods.items);
  if (!pod) {
    throw new WorkloadEnvError(`no pod of service ${o.service} runs in namespace ${namespace} (selector ${labelSelector}), so there is no environment to read for --envFile/--envJson/-- command: start its pods first`);
  }
  const container = pickContainer(pod, o.container);
  const services = await kubeCall({ verb: 'list', resource: 'services', namespace, server: kube.server }, () => kube.core.listNamespacedService({ namespace }));
  return containerEnv(pod, container, apiSources(kube, namespace), services.items);
}
