/**
 * What `exchange`, `mesh` and `preview` do in the cluster, in the order they do it: first what
 * can refuse (the API server answers, RBAC allows the command, the target and its ports exist,
 * the service's lock), then the changes, each registered on the Undo before it is made. The
 * commands load this one module lazily (it pulls in @kubernetes/client-node) and delegate to it.
 */
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { V1Deployment } from '@kubernetes/client-node';
import { TargetError } from '../errors.js';
import type { MeshMark } from '../protocol/index.js';
import type { Undo } from '../undo.js';
import { preflight } from './access.js';
import type { Kube } from './api.js';
import { scaleDownForExchange, standInLabels } from './exchange.js';
import { Heartbeat } from './heartbeat.js';
import { acquireLock, type LockRole, type ServiceLock } from './lock.js';
import { istioManifests, joinRouter, stuntmanName, type JoinedRouter, type RouterOptions, type RouterPort } from './mesh.js';
import { LABEL_BACKEND, LABEL_SERVICE } from './names.js';
import { assertNoService, createPreviewService } from './preview.js';
import { Progress } from './progress.js';
import { recoverService } from './recover.js';
import { originalSelectorOf, takeOverSelector, type Selector } from './selector.js';
import { openKube, type KubeFlags } from './session.js';
import { checkRemotePorts, parseTargetName, resolveTarget, type ExposedServicePort, type ExposePort, type ServiceTarget } from './target.js';

/** Where the steps log, and where each change registers its undoing. */
export interface StepContext {
  undo: Undo;
  log: (line: string) => void;
  debug: (line: string) => void;
}

/**
 * Opens the kubeconfig of `flags` and checks, before anything is made, that the API server
 * answers and that RBAC allows what the running command (permissions.ts `useProfile`) does in the
 * namespace (KubeForbiddenError names the first permission missing).
 */
export async function openCluster(flags: KubeFlags, log?: (line: string) => void): Promise<Kube> {
  const kube = openKube(flags);
  await kube.serverNow();
  await preflight(kube, log);
  return kube;
}

/** A service this run takes traffic from (exchange, mesh): checked, locked, with a running heartbeat. */
export interface ServiceTakeover {
  kube: Kube;
  namespace: string;
  /** the service's name */
  service: string;
  target: ServiceTarget;
  /** the deployment behind the service: the one named or the only one found, else the first that matches */
  deployment?: V1Deployment;
  /** the --expose ports as the service's pods see them */
  exposed: ExposedServicePort[];
  /** started; keeps the lock (and whatever is added to it) fresh; its stop is on the Undo */
  heartbeat: Heartbeat;
  lock: ServiceLock;
}

export interface TakeoverOptions extends StepContext {
  flags: KubeFlags;
  role: LockRole;
  /** `svc`, `svc/NAME` or `deploy/NAME` */
  target: string;
  expose: ExposePort[];
  /** refuses the target before anything is written (e.g. `requireDeployment`) */
  check?: (found: ServiceTarget, namespace: string) => void;
}

/**
 * Everything exchange and mesh do before a shadow or router is made: RBAC, the target and its
 * ports, the heartbeat, the service's lock; and when the lock was a dead run's (and nobody alive
 * shares it), what that run changed goes back first, as `ktctl recover` would do it.
 */
export async function prepareServiceTakeover(o: TakeoverOptions): Promise<ServiceTakeover> {
  const kube = await openCluster(o.flags, o.log);
  const namespace = kube.namespace;
  const target = await resolveTarget(kube, namespace, o.target);
  const service = target.service.metadata?.name ?? '';
  o.check?.(target, namespace);
  const deployment = target.deployment ?? target.deployments[0];
  const exposed = checkRemotePorts(target.service, o.expose, deployment);
  const heartbeat = new Heartbeat(kube, { debug: o.debug });
  o.undo.add('the heartbeat of the service', () => heartbeat.stop());
  const lock = await acquireLock(kube, { namespace, service, role: o.role, undo: o.undo, heartbeat, log: o.log });
  heartbeat.start();
  if (lock.tookOverFrom.length > 0 && lock.sharedWith.length === 0) {
    await recoverService(kube, namespace, service, { force: true, keepLock: true, log: (l) => o.log(`recover: ${l}`) });
  }
  return { kube, namespace, service, target, deployment, exposed, heartbeat, lock };
}

/** The container ports of a shadow that listens where the service's pods did. */
export function shadowPorts(exposed: ExposedServicePort[]): Array<{ name?: string; containerPort: number }> {
  return exposed.map((p) => ({ name: p.portName, containerPort: p.listen }));
}

/** `check` for `exchange --mode scale`: exactly one deployment must run the service's pods. */
export function requireDeployment(found: ServiceTarget, namespace: string): void {
  if (found.deployment) return;
  const svc = found.service.metadata?.name ?? '';
  const names = found.deployments.map((d) => d.metadata?.name ?? '');
  throw names.length === 0
    ? new TargetError('not-found', `no deployment in namespace ${namespace} runs the pods service ${svc} selects, so --mode scale has nothing to scale: use --mode selector`)
    : new TargetError('ambiguous', `several deployments (${names.join(', ')}) run the pods service ${svc} selects: name one with deploy/NAME for --mode scale, or use --mode selector`);
}

export type ExchangeMode = 'selector' | 'scale';

/**
 * An exchange's shadow labels: the deployment's pod labels (scale: the service selects the shadow
 * as it selected the pods), or a backend label of this run that the selector is pointed at.
 */
export function exchangeLabels(t: ServiceTakeover, mode: ExchangeMode): Record<string, string> {
  if (mode === 'scale' && t.target.deployment) return { ...standInLabels(t.target.deployment), [LABEL_SERVICE]: t.service };
  return { [LABEL_SERVICE]: t.service, [LABEL_BACKEND]: `${t.service.slice(0, 40)}-${randomBytes(4).toString('hex')}` };
}

/**
 * Sends the service's traffic to the shadow (up and labelled with `labels`): its selector is
 * pointed at the shadow's backend label, or (scale) its deployment scaled to 0, which the Undo
 * scales back and waits up to `recoverWaitMs` for.
 */
export async function divertService(
  t: ServiceTakeover,
  o: StepContext & { mode: ExchangeMode; labels: Record<string, string>; recoverWaitMs: number; stderr: Writable & { isTTY?: boolean } },
): Promise<void> {
  const { kube, namespace, service } = t;
  if (o.mode === 'selector') {
    await takeOverSelector(kube, { namespace, name: service, selector: { [LABEL_BACKEND]: o.labels[LABEL_BACKEND] ?? '' }, undo: o.undo, log: o.log });
    return;
  }
  const deployment = t.target.deployment?.metadata?.name ?? '';
  const replicas = await scaleDownForExchange(kube, {
    namespace,
    deployment,
    service,
    undo: o.undo,
    heartbeat: t.heartbeat,
    log: o.log,
    recoverWaitMs: o.recoverWaitMs,
    progress: new Progress(o.stderr, o.log),
  });
  o.log(`scaled deployment ${namespace}/${deployment} from ${replicas} replica(s) to 0`);
}

/** The service's selector before any ktctl change. */
function originalSelector(t: ServiceTakeover): Selector {
  return originalSelectorOf(t.target.service) ?? t.target.service.spec?.selector ?? {};
}

/**
 * `mesh --mode manual`: the shadow's labels (the service's pods' plus `version=<mark value>`) and
 * the Istio VirtualService and DestinationRule that route the mark to it.
 */
export function meshManual(t: ServiceTakeover, mark: MeshMark, clusterDomain: string): { labels: Record<string, string>; manifests: string } {
  const labels = { ...(t.deployment ? standInLabels(t.deployment) : originalSelector(t)), version: mark.value, [LABEL_SERVICE]: t.service };
  const originalVersion = t.deployment?.spec?.template.metadata?.labels?.version;
  return { labels, manifests: istioManifests({ namespace: t.namespace, service: t.service, mark, clusterDomain, originalVersion }) };
}

/**
 * `mesh --mode auto`: joins (or makes) the service's router for `mark`. The router serves every
 * TCP port of the service, as its pods see them: it takes all of the service's traffic. The
 * stuntman Service joins the heartbeat.
 */
export async function joinMeshRouter(
  t: ServiceTakeover,
  o: StepContext &
    Pick<RouterOptions, 'mark' | 'image' | 'imagePullSecret' | 'nodeSelector' | 'labels' | 'annotations' | 'pod' | 'podCreationTimeoutMs' | 'signal'> & {
      stderr: Writable & { isTTY?: boolean };
    },
): Promise<JoinedRouter> {
  const all = (t.target.service.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => ({ local: p.port, remote: p.port }));
  const ports = new Map<number, RouterPort>();
  for (const p of checkRemotePorts(t.target.service, all, t.deployment)) if (!ports.has(p.listen)) ports.set(p.listen, { port: p.listen, name: p.portName });
  const router = await joinRouter(
    t.kube,
    {
      namespace: t.namespace,
      service: t.target.service,
      originalSelector: originalSelector(t),
      ports: [...ports.values()],
      mark: o.mark,
      image: o.image,
      imagePullSecret: o.imagePullSecret,
      pod: o.pod,
      nodeSelector: o.nodeSelector,
      labels: o.labels,
      annotations: o.annotations,
      podCreationTimeoutMs: o.podCreationTimeoutMs,
      progress: new Progress(o.stderr, o.log),
      signal: o.signal,
      log: o.log,
      heartbeat: t.heartbeat,
    },
    o.undo,
  );
  t.heartbeat.add({ kind: 'service', namespace: t.namespace, name: stuntmanName(t.service) });
  return router;
}

/** A new Service this run publishes (preview): checked absent, with a heartbeat not yet started. */
export interface PreviewTarget {
  kube: Kube;
  namespace: string;
  name: string;
  /** the shadow's label the Service selects */
  backend: string;
  heartbeat: Heartbeat;
}

/** Everything preview does before its shadow is made: the name, RBAC, no Service of that name yet. */
export async function preparePreview(o: StepContext & { flags: KubeFlags; name: string }): Promise<PreviewTarget> {
  const { name } = parseTargetName(o.name);
  const kube = await openCluster(o.flags, o.log);
  await assertNoService(kube, kube.namespace, name);
  const heartbeat = new Heartbeat(kube, { debug: o.debug });
  o.undo.add('the heartbeat of the service', () => heartbeat.stop());
  return { kube, namespace: kube.namespace, name, backend: `${name.slice(0, 40)}-${randomBytes(4).toString('hex')}`, heartbeat };
}

/** The preview shadow's labels. */
export function previewLabels(p: PreviewTarget): Record<string, string> {
  return { [LABEL_SERVICE]: p.name, [LABEL_BACKEND]: p.backend };
}

/** Creates the preview Service that selects the shadow (its deletion on the Undo first) and starts its heartbeat. */
export async function publishPreview(
  p: PreviewTarget,
  o: StepContext & { ports: ExposePort[]; external: boolean; labels: Record<string, string>; annotations: Record<string, string> },
): Promise<void> {
  await createPreviewService(p.kube, {
    namespace: p.namespace,
    name: p.name,
    ports: o.ports,
    selector: { [LABEL_BACKEND]: p.backend },
    external: o.external,
    labels: o.labels,
    annotations: o.annotations,
    heartbeat: await p.kube.serverNow(),
    undo: o.undo,
    heartbeatOf: p.heartbeat,
  });
  p.heartbeat.start();
  o.undo.add('the heartbeat', () => p.heartbeat.stop());
}
