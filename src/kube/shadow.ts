/**
 * The shadow pod and its Secret: keys made fresh for each run (the client's private key never
 * leaves this process, or for --shareShadow this user's state directory), the manifests, creation
 * registered on the Undo before it happens, and the wait until the pod is Running and Ready, which
 * fails early with the pod's own reason (ErrImagePull, Unschedulable, CrashLoopBackOff).
 */
import type { V1Pod, V1Secret } from '@kubernetes/client-node';
import { generateEd25519 } from '../ssh/keys.js';
import { SHADOW_ENV, SHADOW_PORT, SHADOW_SECRET_KEYS, SHADOW_SECRET_MOUNT } from '../protocol/index.js';
import type { Undo } from '../undo.js';
import type { Kube } from './api.js';
import { rfc3339 } from './api.js';
import { KubeError } from '../errors.js';
import { isNotFound, kubeCall, KubeApiError, KubeUnreachableError, ShadowPodError } from './errors.js';
import {
  ANNOTATION_HEARTBEAT,
  ANNOTATION_OWNER,
  LABEL_MANAGED_BY,
  LABEL_ROLE,
  LABEL_RUN,
  MANAGED_BY,
  ownerOf,
  type Role,
} from './names.js';
import { PROGRAM_DIR, PROGRAM_FILE } from './bundle.js';
import { ensureShadowProgram } from './program.js';
import type { PodSettings } from './pod-settings.js';
import type { Progress } from './progress.js';
import { sleep } from './util.js';

export const SHADOW_CONTAINER = 'shadow';

/** The shadow's resources when --podQuota does not say. */
const DEFAULT_RESOURCES = { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } };

export interface ShadowKeys {
  /** OpenSSH private key of this run's client (stays on this machine). */
  clientPrivate: string;
  /** authorized_keys line of the client key: goes into the Secret. */
  clientPublic: string;
  /** the shadow's host key: private half into the Secret, public half pinned by the client. */
  hostPrivate: string;
  hostPublic: string;
}

export function makeShadowKeys(): ShadowKeys {
  const client = generateEd25519(`ktctl ${ownerOf()}`);
  const host = generateEd25519();
  return { clientPrivate: client.private, clientPublic: client.public, hostPrivate: host.private, hostPublic: host.public };
}

export interface ShadowSpec {
  /** The run's name: the Secret's name and the base of the pod's. */
  name: string;
  namespace: string;
  image: string;
  role: Role;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  nodeSelector: Record<string, string>;
  imagePullSecret?: string;
  /** ports the shadow listens on for remote forwards (exchange, preview); named when a Service's targetPort names one */
  ports?: Array<{ name?: string; containerPort: number }>;
  /** more pod sysctls; the one a port below 1024 needs comes from `ports` by itself (`shadowSysctls`) */
  sysctls?: Array<{ name: string; value: string }>;
  /** more environment for the shadow (the mesh router's ports and upstream) */
  env?: Array<{ name: string; value: string }>;
  /** more Secret entries, base64 (the keys a shared pod's later users read: src/kube/shared.ts) */
  secretData?: Record<string, string>;
  pod: PodSettings;
}

function metadata(spec: ShadowSpec, name: string, heartbeat: Date, extra: Record<string, string> = {}) {
  return {
    name,
    namespace: spec.namespace,
    labels: { ...spec.labels, [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_ROLE]: spec.role, [LABEL_RUN]: spec.name },
    annotations: { ...spec.annotations, ...extra, [ANNOTATION_HEARTBEAT]: rfc3339(heartbeat), [ANNOTATION_OWNER]: ownerOf() },
  };
}

export function secretManifest(spec: ShadowSpec, keys: ShadowKeys, heartbeat: Date, extra?: Record<string, string>): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: metadata(spec, spec.name, heartbeat, extra),
    data: {
      [SHADOW_SECRET_KEYS.hostKey]: Buffer.from(keys.hostPrivate).toString('base64'),
      [SHADOW_SECRET_KEYS.authorizedKey]: Buffer.from(`${keys.clientPublic}\n`).toString('base64'),
      ...spec.secretData,
    },
  };
}

/** Lets the non-root shadow listen on ports below 1024 (a namespaced sysctl since Kubernetes 1.22). */
export const UNPRIVILEGED_PORT_SYSCTL = 'net.ipv4.ip_unprivileged_port_start';

/**
 * The pod's sysctls: `spec.sysctls`, plus `net.ipv4.ip_unprivileged_port_start=0` when one of the
 * container ports is below 1024 (a shadow or router that takes over port 80); none: undefined.
 */
export function shadowSysctls(spec: Pick<ShadowSpec, 'ports' | 'sysctls'>): Array<{ name: string; value: string }> | undefined {
  const out = [...(spec.sysctls ?? [])];
  if ((spec.ports ?? []).some((p) => p.containerPort < 1024) && !out.some((x) => x.name === UNPRIVILEGED_PORT_SYSCTL)) {
    out.push({ name: UNPRIVILEGED_PORT_SYSCTL, value: '0' });
  }
  return out.length > 0 ? out : undefined;
}

/**
 * The pod: the stock image running ktctl's program from the ConfigMap `program`
 * (src/kube/program.ts). It passes the Pod Security Standard `restricted` (and so `baseline`):
 * non-root with a numeric user the image has, no privilege escalation, every capability dropped,
 * the runtime's default seccomp profile, no host namespaces, only Secret and ConfigMap volumes, and
 * only the sysctl `restricted` allows (net.ipv4.ip_unprivileged_port_start).
 */
export function podManifest(spec: ShadowSpec, podName: string, heartbeat: Date, program: string, extra?: Record<string, string>): V1Pod {
  // 'auto': no user, group or fsGroup at all (undefined fields are not sent): the cluster assigns them
  const uid = spec.pod.runAsUser === 'auto' ? undefined : spec.pod.runAsUser;
  const quota = spec.pod.resources;
  const resources = quota ? { requests: { ...quota }, limits: { ...quota } } : DEFAULT_RESOURCES;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: metadata(spec, podName, heartbeat, extra),
    spec: {
      restartPolicy: 'Always',
      serviceAccountName: spec.pod.serviceAccount,
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 5,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: uid,
        runAsGroup: uid,
        fsGroup: uid,
        seccompProfile: { type: 'RuntimeDefault' },
        sysctls: shadowSysctls(spec),
      },
      nodeSelector: Object.keys(spec.nodeSelector).length > 0 ? spec.nodeSelector : undefined,
      imagePullSecrets: spec.imagePullSecret ? [{ name: spec.imagePullSecret }] : undefined,
      volumes: [
        { name: 'keys', secret: { secretName: spec.name, defaultMode: 0o440 } },
        { name: 'program', configMap: { name: program, items: [{ key: PROGRAM_FILE, path: PROGRAM_FILE }], defaultMode: 0o444 } },
      ],
      containers: [
        {
          name: SHADOW_CONTAINER,
          image: spec.image,
          imagePullPolicy: spec.pod.pullPolicy,
          command: ['node', `${PROGRAM_DIR}/${PROGRAM_FILE}`],
          ports: [{ name: 'ssh', containerPort: SHADOW_PORT, protocol: 'TCP' }, ...(spec.ports ?? []).map((x) => ({ ...x, protocol: 'TCP' }))],
          env: [{ name: SHADOW_ENV.role, value: spec.role }, ...(spec.env ?? [])],
          volumeMounts: [
            { name: 'keys', mountPath: SHADOW_SECRET_MOUNT, readOnly: true },
            { name: 'program', mountPath: PROGRAM_DIR, readOnly: true },
          ],
          readinessProbe: { tcpSocket: { port: SHADOW_PORT }, periodSeconds: 2, timeoutSeconds: 1 },
          resources,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: uid,
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
            seccompProfile: { type: 'RuntimeDefault' },
          },
        },
      ],
    },
  };
}

/** Deletes an object and waits (up to `waitMs`) until it is gone; a missing object is fine. */
export async function deleteAndWait(kube: Kube, kind: 'pod' | 'secret', namespace: string, name: string, waitMs = 15_000): Promise<void> {
  const resource = kind === 'pod' ? 'pods' : 'secrets';
  const op = { verb: 'delete', resource, namespace, name, server: kube.server };
  try {
    await kubeCall(op, async (): Promise<unknown> =>
      kind === 'pod' ? kube.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 2 }) : kube.core.deleteNamespacedSecret({ name, namespace }),
    );
  } catch (error) {
    if (isNotFound(error)) return;
    throw error;
  }
  if (kind !== 'pod') return;
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    try {
      await kube.core.readNamespacedPod({ name, namespace });
    } catch (error) {
      if (isNotFound(error)) return;
    }
    await sleep(200);
  }
}

/** Creates the Secret; its removal is registered on `undo` first. Returns the unregister function. */
export async function createSecret(kube: Kube, spec: ShadowSpec, keys: ShadowKeys, undo: Undo, heartbeat: Date, extra?: Record<string, string>): Promise<() => void> {
  const remove = undo.add(`secret ${spec.namespace}/${spec.name}`, () => deleteAndWait(kube, 'secret', spec.namespace, spec.name));
  await refusedMeansNotCreated(remove, () =>
    kubeCall({ verb: 'create', resource: 'secrets', namespace: spec.namespace, name: spec.name, server: kube.server }, () =>
      kube.core.createNamespacedSecret({ namespace: spec.namespace, body: secretManifest(spec, keys, heartbeat, extra) }),
    ),
  );
  return remove;
}

/**
 * Creates a shadow pod named `podName`, after the ConfigMap with the program it runs; the pod's
 * removal is registered on `undo` first (the ConfigMap is shared: `clean` removes it once unused).
 */
export async function createPod(kube: Kube, spec: ShadowSpec, podName: string, undo: Undo, heartbeat: Date, extra?: Record<string, string>): Promise<() => void> {
  const program = await ensureShadowProgram(kube, spec.namespace, spec.pod.userLabels);
  const remove = undo.add(`pod ${spec.namespace}/${podName}`, () => deleteAndWait(kube, 'pod', spec.namespace, podName));
  await refusedMeansNotCreated(remove, () =>
    kubeCall({ verb: 'create', resource: 'pods', namespace: spec.namespace, name: podName, server: kube.server }, () =>
      kube.core.createNamespacedPod({ namespace: spec.namespace, body: podManifest(spec, podName, heartbeat, program, extra) }),
    ),
  );
  return remove;
}

/**
 * A create the API server answered with a 4xx made nothing (and a 409 means the object is someone
 * else's): its undo step goes. A network failure is ambiguous: the step stays.
 */
async function refusedMeansNotCreated(remove: () => void, create: () => Promise<unknown>): Promise<void> {
  try {
    await create();
  } catch (error) {
    if (error instanceof KubeError && !(error instanceof KubeUnreachableError) && !(error instanceof KubeApiError && (error.status === 0 || error.status >= 500))) remove();
    throw error;
  }
}

export function podReady(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** What the pod waits for, or why it will never be ready. */
export function podPhase(pod: V1Pod, image: string): { waiting: string } | { failed: ShadowPodError } | { ready: true } {
  const name = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
  if (pod.metadata?.deletionTimestamp) return { failed: new ShadowPodError('gone', `the shadow pod ${name} is being deleted`) };
  if (podReady(pod)) return { ready: true };
  const status = pod.status;
  const scheduled = (status?.conditions ?? []).find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
    return { failed: new ShadowPodError('unschedulable', `the shadow pod ${name} cannot be scheduled: ${scheduled.message ?? 'no node fits'} (check --nodeSelector and the nodes' capacity)`) };
  }
  if (status?.phase === 'Failed' || status?.phase === 'Succeeded') {
    return { failed: new ShadowPodError('crash', `the shadow pod ${name} ended (${status.phase}${status.reason ? `: ${status.reason}` : ''}${status.message ? `, ${status.message}` : ''})`) };
  }
  const cs = (status?.containerStatuses ?? []).find((c) => c.name === SHADOW_CONTAINER);
  const waiting = cs?.state?.waiting;
  if (waiting?.reason === 'ErrImagePull' || waiting?.reason === 'ImagePullBackOff' || waiting?.reason === 'InvalidImageName') {
    return {
      failed: new ShadowPodError('image', `the shadow image ${image} cannot be pulled (${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}): give one the cluster can pull with --image, or its pull secret with --imagePullSecret`),
    };
  }
  if (waiting?.reason === 'CreateContainerConfigError' || waiting?.reason === 'CreateContainerError') {
    const hint = /runAsNonRoot/.test(waiting.message ?? '') ? ': give a non-root user id that the image has with --runAsUser' : '';
    return { failed: new ShadowPodError('config', `the shadow pod ${name} cannot start its container (${waiting.reason}: ${waiting.message ?? ''})${hint}`) };
  }
  if (waiting?.reason === 'CrashLoopBackOff' || ((cs?.restartCount ?? 0) > 0 && !cs?.state?.running)) {
    return { failed: new ShadowPodError('crash', `the shadow pod ${name} keeps crashing (${waiting?.reason ?? 'restarted'})`) };
  }
  if (!scheduled || scheduled.status !== 'True') return { waiting: `waiting for the shadow pod ${name} to be scheduled` };
  if (!cs || waiting?.reason === 'ContainerCreating' || waiting?.reason === 'PodInitializing') {
    return { waiting: `waiting for the shadow pod ${name}: pulling image ${image} and creating the container` };
  }
  if (waiting) return { waiting: `waiting for the shadow pod ${name}: ${waiting.reason ?? 'container waiting'}` };
  if (cs.state?.running) return { waiting: `waiting for the shadow pod ${name}: its ssh server to accept connections (readiness probe)` };
  return { waiting: `waiting for the shadow pod ${name} to start its container` };
}

/** The last lines of the shadow's log (current or previous instance), for a crash message. */
async function lastLogLines(kube: Kube, namespace: string, name: string): Promise<string> {
  for (const previous of [true, false]) {
    try {
      const text = await kube.core.readNamespacedPodLog({ name, namespace, container: SHADOW_CONTAINER, tailLines: 5, previous });
      const lines = String(text).trim();
      if (lines !== '') return lines.split('\n').slice(-5).join(' | ');
    } catch {
      /* no log (yet) */
    }
  }
  return '';
}

/**
 * Polls the pod until it is Running and Ready; fails with the pod's own reason as soon as there
 * is one, or after `timeoutMs` with what it was still waiting for.
 */
export async function waitForShadow(
  kube: Kube,
  o: { namespace: string; name: string; image: string; timeoutMs: number; progress: Progress; signal?: AbortSignal },
): Promise<V1Pod> {
  const deadline = Date.now() + o.timeoutMs;
  let last = 'waiting for the shadow pod to appear';
  try {
    for (;;) {
      if (o.signal?.aborted) throw new ShadowPodError('gone', `stopped while waiting for the shadow pod ${o.namespace}/${o.name}`);
      let pod: V1Pod;
      try {
        pod = await kubeCall({ verb: 'get', resource: 'pods', namespace: o.namespace, name: o.name, server: kube.server }, () =>
          kube.core.readNamespacedPod({ name: o.name, namespace: o.namespace }),
        );
      } catch (error) {
        if (isNotFound(error)) throw new ShadowPodError('gone', `the shadow pod ${o.namespace}/${o.name} was deleted while ktctl waited for it`, { cause: error });
        throw error;
      }
      const phase = podPhase(pod, o.image);
      if ('ready' in phase) return pod;
      if ('failed' in phase) {
        if (phase.failed.reason === 'crash') {
          const lines = await lastLogLines(kube, o.namespace, o.name);
          if (lines) throw new ShadowPodError('crash', `${phase.failed.message}; its last log lines: ${lines}`);
        }
        throw phase.failed;
      }
      last = phase.waiting;
      o.progress.update(last);
      if (Date.now() >= deadline) {
        throw new ShadowPodError('timeout', `the shadow pod ${o.namespace}/${o.name} was not ready within ${o.timeoutMs / 1000} s (--podCreationTimeout); it was still ${last.replace(/^waiting for the shadow pod \S+:? ?/, 'waiting for ')}`);
      }
      await sleep(300);
    }
  } finally {
    o.progress.done();
  }
}
