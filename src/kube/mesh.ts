/**
 * `mesh --mode auto` in the cluster: one router per Service, shared by every developer who meshes
 * it (src/kube/shared.ts joins and leaves it).
 *
 * - `<svc>-ktctl-stuntman`: a Service with the original selector, one port per target port of the
 *   Service (port = the pods' port, targetPort = the original targetPort), so the router reaches
 *   the original pods on the port numbers it serves itself.
 * - `<svc>-ktctl-router`: a Secret (host key, the client key pair the developers share) and a pod
 *   of the shadow image in role `router`, which serves every target port of the Service and sends
 *   unmarked requests to the stuntman's cluster IP.
 * - the Service's selector points at the router's unique label (src/kube/selector.ts) once the
 *   router is ready; the last developer to leave puts it back and deletes all of the above.
 *
 * Who uses the router is the pod's annotation `ktctl/mesh-marks` (JSON: `<header>=<value>` ->
 * `{owner, beat}`, each developer's own last heartbeat, refreshed by their process) plus the
 * `ktctl/users` count; a mark held by another live developer is refused with a sentence naming
 * them. Marks of developers that are gone (a dead process here, a beat older than
 * STALE_AFTER_MINUTES elsewhere) are dropped with a warning by whoever joins or leaves next.
 */
import { randomBytes } from 'node:crypto';
import type { V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { MeshMarkError, TargetError } from '../errors.js';
import { ROUTER_ENV, formatRouterPorts, parseRouterPorts, type MeshMark, type RouterPortProtocol, type RouterPortSpec } from '../protocol/index.js';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { deleteObject } from './clean.js';
import { kubeCall } from './errors.js';
import type { Heartbeat } from './heartbeat.js';
import { describeBeat, goneReason, holderAge, holderJson, holderOf, holderStale, rewriteAnnotations, type Holder } from './lock.js';
import {
  ANNOTATION_HEARTBEAT,
  ANNOTATION_OWNER,
  ANNOTATION_USERS,
  LABEL_MANAGED_BY,
  LABEL_ROLE,
  LABEL_SERVICE,
  MANAGED_BY,
  dnsLabel,
  ownerOf,
} from './names.js';
import type { Progress } from './progress.js';
import { restoreSelector, takeOverSelector, type Selector } from './selector.js';
import { joinSharedPod, readKeysFromSecret, sharedKeysData, type JoinedPod, type SharedPodKind } from './shared.js';
import { createPod, createSecret, deleteAndWait, makeShadowKeys, waitForShadow, type ShadowSpec } from './shadow.js';
import { jsonAnnotation, recordOf } from './util.js';

/** On the router pod: JSON object, `<header name, lower case>=<value>` -> `{owner: "user@host pid", beat: RFC 3339}`. */
export const ANNOTATION_MESH_MARKS = 'ktctl/mesh-marks';
/** The label the Service's selector points at while meshed: unique per router. */
export const LABEL_ROUTER = 'ktctl/router';

export function routerName(service: string): string {
  return dnsLabel(`${service.slice(0, 45)}-ktctl-router`);
}

export function stuntmanName(service: string): string {
  return dnsLabel(`${service.slice(0, 45)}-ktctl-stuntman`);
}

/** `VERSION:abc` -> `version=abc`: header names are case-insensitive. */
export function markId(mark: MeshMark): string {
  return `${mark.key.toLowerCase()}=${mark.value}`;
}

export function marksOf(pod: Pick<V1Pod, 'metadata'>): Record<string, Holder> {
  return recordOf(jsonAnnotation(pod.metadata?.annotations?.[ANNOTATION_MESH_MARKS]), holderOf) ?? {};
}

/** The annotations that record `marks` (and their count) on the router pod. */
function marksAnnotations(marks: Record<string, Holder>): Record<string, string> {
  const json = Object.fromEntries(Object.entries(marks).map(([mark, h]) => [mark, holderJson(h)]));
  return { [ANNOTATION_MESH_MARKS]: JSON.stringify(json), [ANNOTATION_USERS]: String(Object.keys(marks).length) };
}

/** A port the router serves: the pods' port number, and its name when the Service's targetPort names it. */
export interface RouterPort {
  port: number;
  name?: string;
}

/** Protocols of Istio's port naming and appProtocol values that the router routes: HTTP/1.x, h2c, gRPC, WebSocket. */
const HTTP_PROTOCOLS = new Set(['http', 'http2', 'h2c', 'grpc', 'grpc-web', 'ws', 'kubernetes.io/h2c', 'kubernetes.io/ws']);
/** Port name prefixes that say "not plain HTTP": Istio's (tcp, tls, https, mongo, mysql, redis, udp) and a few common others. */
const OTHER_PROTOCOLS = new Set(['tcp', 'tls', 'https', 'mongo', 'mongodb', 'mysql', 'redis', 'udp', 'postgres', 'postgresql', 'smtp', 'amqp', 'kafka', 'memcached']);

/**
 * What a Service port says of its protocol, after Istio's convention (protocol selection):
 * `appProtocol` first, else the name's part before the first `-` (`http-web`, `grpc-api`).
 * The HTTP ones are `http`. An appProtocol that is anything else is `tcp` (it names a protocol),
 * and so is a name of a known non-HTTP protocol (`tcp`, `mysql`, `redis`, ...); any other name
 * (`web`, `api`) or none is `sniff`.
 */
export function servicePortProtocol(sp: Pick<V1ServicePort, 'name' | 'appProtocol'>): RouterPortProtocol {
  const app = sp.appProtocol?.trim().toLowerCase();
  if (app) return HTTP_PROTOCOLS.has(app) ? 'http' : 'tcp';
  const prefix = (sp.name ?? '').toLowerCase().split('-')[0]!;
  if (HTTP_PROTOCOLS.has(prefix)) return 'http';
  return OTHER_PROTOCOLS.has(prefix) ? 'tcp' : 'sniff';
}

/**
 * The router's ports with their protocols, from the Service ports that lead to each (its
 * targetPort number or name); ports that disagree (`http` and `tcp` to one pod port) are `sniff`.
 */
export function routerPortSpecs(service: V1Service, ports: readonly RouterPort[]): RouterPortSpec[] {
  const tcp = (service.spec?.ports ?? []).filter((sp) => (sp.protocol ?? 'TCP') === 'TCP');
  return ports.map((rp) => {
    const leading = tcp.filter((sp) => rp.port === Number(sp.targetPort ?? sp.port) || (rp.name !== undefined && rp.name === String(sp.targetPort)));
    const said = new Set(leading.map(servicePortProtocol));
    return { port: rp.port, protocol: said.size === 1 ? [...said][0]! : 'sniff' };
  });
}

/** The port numbers a router pod was told to serve (none when its env cannot be read). */
function servedPorts(pod: V1Pod): number[] {
  try {
    return parseRouterPorts((pod.spec?.containers[0]?.env ?? []).find((e) => e.name === ROUTER_ENV.ports)?.value ?? '').map((p) => p.port);
  } catch {
    return [];
  }
}

/** The router pod's image, pull secret, node selector and the user's extra labels and annotations, as for any shadow. */
export interface RouterOptions extends Pick<ShadowSpec, 'image' | 'imagePullSecret' | 'nodeSelector' | 'labels' | 'annotations' | 'pod'> {
  namespace: string;
  /** the meshed Service, as read (its selector, or the original saved in an annotation, is the stuntman's) */
  service: V1Service;
  /** the Service's selector before any ktctl change */
  originalSelector: Selector;
  /** every target port of the Service: the router must serve them all, it takes the whole Service over */
  ports: RouterPort[];
  mark: MeshMark;
  podCreationTimeoutMs: number;
  progress: Progress;
  signal?: AbortSignal;
  log: (line: string) => void;
  /** refreshes this developer's own beat in the router's marks while it runs */
  heartbeat?: Heartbeat;
}

export interface JoinedRouter extends JoinedPod {
  name: string;
  what: string;
}

function routerKind(kube: Kube, o: RouterOptions): SharedPodKind & { name: string } {
  const svc = o.service.metadata?.name ?? '';
  const { namespace } = o;
  const name = routerName(svc);
  const what = `the mesh router ${namespace}/${name}`;
  const me = ownerOf();
  const myMark = markId(o.mark);
  let routerLabel: string | undefined;
  /** The marks of others that are still alive; the gone ones are dropped with a warning. */
  const othersOf = (pod: V1Pod, now: Date): Record<string, Holder> => {
    const rest: Record<string, Holder> = {};
    const fallback = Date.parse(pod.metadata?.annotations?.[ANNOTATION_HEARTBEAT] ?? '');
    const podBeat = Number.isNaN(fallback) ? undefined : new Date(fallback);
    for (const [mark, h] of Object.entries(marksOf(pod))) {
      if (h.owner === me) continue;
      if (holderStale(h, now, undefined, podBeat)) {
        o.log(`warning: dropped the mark ${mark} of ${h.owner} from ${what} (${describeBeat(holderAge(h, now, podBeat))}; ${goneReason(h.owner)})`);
        continue;
      }
      rest[mark] = h;
    }
    return rest;
  };
  const spec: ShadowSpec = {
    name,
    namespace,
    image: o.image,
    role: 'router',
    labels: { ...o.labels, [LABEL_SERVICE]: svc },
    annotations: o.annotations,
    nodeSelector: o.nodeSelector,
    imagePullSecret: o.imagePullSecret,
    pod: o.pod,
    ports: o.ports.map((p) => ({ name: p.name, containerPort: p.port })),
  };
  return {
    name,
    what,
    async join(pod) {
      routerLabel = pod.metadata?.labels?.[LABEL_ROUTER];
      const served = servedPorts(pod);
      const missing = o.ports.filter((p) => !served.includes(p.port));
      if (missing.length > 0) {
        throw new TargetError('port', `${what} serves the ports ${served.join(', ')} of service ${svc}, not ${missing.map((p) => p.port).join(', ')}: the service changed since it was made; mesh again once its other users have left`);
      }
      const now = await kube.serverNow();
      const others = othersOf(pod, now);
      const holder = others[myMark];
      if (holder !== undefined) {
        throw new MeshMarkError(`the mark ${o.mark.key}: ${o.mark.value} on service ${namespace}/${svc} is already used by ${holder.owner}: pick another with --versionMark, or wait until they stop`);
      }
      const marks = { ...others, [myMark]: { owner: me, beat: now } };
      return {
        keys: await readKeysFromSecret(kube, namespace, name, what),
        annotations: marksAnnotations(marks),
        users: Object.keys(marks).length,
      };
    },
    async create(undo: Undo) {
      const keys = makeShadowKeys();
      const now = await kube.serverNow();
      routerLabel = `${name.slice(0, 50)}-${randomBytes(3).toString('hex')}`;
      const stuntman = await createStuntman(kube, o, undo, now);
      const routerSpec: ShadowSpec = {
        ...spec,
        labels: { ...spec.labels, [LABEL_ROUTER]: routerLabel },
        env: [
          { name: ROUTER_ENV.ports, value: formatRouterPorts(routerPortSpecs(o.service, o.ports)) },
          { name: ROUTER_ENV.upstream, value: stuntman },
        ],
        secretData: sharedKeysData(keys),
      };
      await createSecret(kube, routerSpec, keys, undo, now);
      await createPod(kube, routerSpec, name, undo, now, marksAnnotations({ [myMark]: { owner: me, beat: now } }));
      o.log(`created ${what} (image ${o.image}); unmarked requests go to service ${namespace}/${stuntmanName(svc)} (${stuntman})`);
      // The Service moves to the router only once it is ready: no gap for the service's clients.
      await waitForShadow(kube, { namespace, name, image: o.image, timeoutMs: o.podCreationTimeoutMs, progress: o.progress, signal: o.signal });
      await takeOverSelector(kube, { namespace, name: svc, selector: { [LABEL_ROUTER]: routerLabel }, undo, log: o.log, watch: false });
      o.log(`service ${namespace}/${svc} now selects ${what}`);
      return keys;
    },
    async leave(pod) {
      const rest = othersOf(pod, await kube.serverNow());
      return Object.keys(rest).length === 0 ? undefined : marksAnnotations(rest);
    },
    async removeAll() {
      // The selector first: the service's clients go back to the original pods while the router still answers.
      await restoreSelector(kube, namespace, svc, { expected: routerLabel ? { [LABEL_ROUTER]: routerLabel } : undefined, log: o.log });
      await deleteObject(kube, 'service', namespace, stuntmanName(svc));
      await deleteAndWait(kube, 'secret', namespace, name);
    },
  };
}

/** The stuntman Service (original selector, the pods' ports); returns its cluster IP. */
async function createStuntman(kube: Kube, o: RouterOptions, undo: Undo, now: Date): Promise<string> {
  const svc = o.service.metadata?.name ?? '';
  const { namespace } = o;
  const name = stuntmanName(svc);
  const targets = new Map<number, string | number>();
  for (const sp of o.service.spec?.ports ?? []) {
    if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
    const rp = o.ports.find((p) => p.port === Number(sp.targetPort ?? sp.port) || (p.name !== undefined && p.name === String(sp.targetPort)));
    if (rp && !targets.has(rp.port)) targets.set(rp.port, sp.targetPort ?? sp.port);
  }
  for (const p of o.ports) if (!targets.has(p.port)) targets.set(p.port, p.port);
  const body: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace,
      labels: { ...o.labels, [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_ROLE]: 'router', [LABEL_SERVICE]: svc },
      annotations: { ...o.annotations, [ANNOTATION_HEARTBEAT]: rfc3339(now), [ANNOTATION_OWNER]: ownerOf() },
    },
    spec: {
      type: 'ClusterIP',
      selector: o.originalSelector,
      ports: [...targets].map(([port, targetPort]) => ({ name: `p${port}`, port, targetPort, protocol: 'TCP' })),
    },
  };
  const remove = undo.add(`service ${namespace}/${name}`, () => deleteObject(kube, 'service', namespace, name));
  let made: V1Service;
  try {
    made = await kubeCall({ verb: 'create', resource: 'services', namespace, name, server: kube.server }, () => kube.core.createNamespacedService({ namespace, body }));
  } catch (error) {
    remove(); // refused: nothing made (a 409 is someone else's stuntman)
    throw error;
  }
  const ip = made.spec?.clusterIP;
  if (!ip || ip === 'None') throw new TargetError('not-found', `the service ${namespace}/${name} got no cluster IP`);
  return ip;
}

/**
 * Joins the Service's router with this developer's mark, or makes it (stuntman, Secret, pod, then
 * the selector). The step that leaves it goes on `undo` (the last one out removes everything).
 */
export async function joinRouter(kube: Kube, o: RouterOptions, undo: Undo): Promise<JoinedRouter> {
  const kind = routerKind(kube, o);
  const joined = await joinSharedPod(kube, o.namespace, kind.name, kind, undo, o.log);
  const { heartbeat } = o;
  if (heartbeat) {
    const me = ownerOf();
    const myMark = markId(o.mark);
    const ref = { kind: 'pod' as const, namespace: o.namespace, name: kind.name };
    const stop = heartbeat.onBeat(async (now) => {
      await rewriteAnnotations(kube, ref, (annotations) => {
        const marks = marksOf({ metadata: { annotations } });
        if (marks[myMark]?.owner !== me) return undefined; // dropped or taken over meanwhile
        return marksAnnotations({ ...marks, [myMark]: { owner: me, beat: now } });
      });
    });
    undo.add(`the heartbeat of our mark on ${kind.what}`, stop);
  }
  return { ...joined, name: kind.name, what: kind.what };
}

/**
 * The Istio objects a user applies for `mesh --mode manual`: the shadow carries the Service's
 * selector labels plus `version: <mark value>`; requests with the mark header go to that subset.
 * Unmarked requests go to the subset of the original pods' own `version` label when their pod
 * template has one; without it Istio cannot tell them from the shadow, and the YAML says so.
 */
export function istioManifests(o: { namespace: string; service: string; mark: MeshMark; clusterDomain: string; originalVersion?: string }): string {
  const host = `${o.service}.${o.namespace}.svc.${o.clusterDomain}`;
  const subset = dnsLabel(`ktctl-${o.mark.value}`);
  const original = o.originalVersion !== undefined && o.originalVersion !== o.mark.value;
  const originalSubset = original
    ? `
  - name: original
    labels:
      version: ${JSON.stringify(o.originalVersion)}`
    : '';
  const defaultRoute = original
    ? `
  - route:
    - destination:
        host: ${host}
        subset: original`
    : `
  # The original pods have no "version" label of their own, so this route also reaches the shadow:
  # give their pod template one (e.g. version: v1) and route to that subset here.
  - route:
    - destination:
        host: ${host}`;
  return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ${o.service}
  namespace: ${o.namespace}
spec:
  host: ${host}
  subsets:
  - name: ${subset}
    labels:
      version: ${JSON.stringify(o.mark.value)}${originalSubset}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${o.service}
  namespace: ${o.namespace}
spec:
  hosts:
  - ${host}
  http:
  - match:
    - headers:
        ${o.mark.key.toLowerCase()}:
          exact: ${JSON.stringify(o.mark.value)}
    route:
    - destination:
        host: ${host}
        subset: ${subset}${defaultRoute}
`;
}
