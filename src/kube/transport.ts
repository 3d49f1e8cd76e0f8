/**
 * The Kubernetes transport (src/transport.ts's contract): a shadow pod made for this run (or shared),
 * ssh over the API server's port-forward, made again when it disappears, kept by heartbeats. Loaded
 * lazily by src/connect/transports.ts: @kubernetes/client-node is heavy, and a --via run must not carry it.
 */
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { CipherAlgorithm } from 'ssh2';
import { AuthError, HostKeyError, InputFileError } from '../errors.js';
import { SHADOW_PORT, type ResumeLimits } from '../protocol/index.js';
import { ReconnectingTunnel } from '../ssh/reconnect.js';
import { SshTunnel } from '../ssh/tunnel.js';
import type { Transport, TransportContext } from '../transport.js';
import { preflight } from './access.js';
import { Kube } from './api.js';
import { cleanStale } from './clean.js';
import { loadKubeConfig } from './config.js';
import { ExecCredentialError, retryUnauthorized } from './credentials.js';
import { isNotFound, kubeCall, KubeForbiddenError, KubeNotFoundError, KubeUnauthorizedError, PodSecurityError, ShadowPodError, unlessNotFound } from './errors.js';
import { ShadowProgramError } from './bundle.js';
import { Heartbeat } from './heartbeat.js';
import { discoverNetwork } from './network.js';
import { openPortForward } from './portforward.js';
import { Progress } from './progress.js';
import { joinSharedShadow, sharedShadowName } from './shared.js';
import { createPod, createSecret, makeShadowKeys, podReady, waitForShadow, type ShadowKeys, type ShadowSpec } from './shadow.js';
import type { PodSettings } from './pod-settings.js';
import { STALE_AFTER_MINUTES, type Role } from './names.js';
import { writeProcessRecord } from './process-record.js';
import { watchServices } from './services-watch.js';

export interface KubeTransportOptions {
  /** The resume layer's limits (src/protocol/resume.ts); absent: streams end with their connection. */
  resume?: ResumeLimits;
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  image: string;
  imagePullSecret?: string;
  /** how the shadow pod runs: user, resources, service account, pull policy */
  pod: PodSettings;
  nodeSelector: Record<string, string>;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  podCreationTimeoutMs: number;
  portForwardTimeoutMs: number;
  shareShadow: boolean;
  /**
   * Use a pod made (and removed) by the caller instead of making one: the mesh router. Its Secret
   * has the pod's name; the pod is not made again when it goes (the run ends).
   */
  attach?: { name: string; keys: ShadowKeys; what: string };
  clusterDomain: string;
  ciphers?: CipherAlgorithm[];
  /** false: the stale objects of crashed runs in the namespace are left at start (KT Connect's connect --skipCleanup) */
  cleanAtStart?: boolean;
  /** whether TUN mode routes the pods' addresses (default true; KT Connect's --disablePodIp makes it false) */
  podRoutes?: boolean;
  /** for `ktctl status`: the mode and where the proxy listens */
  mode: string;
  proxy?: string;
  /** where the spinner goes (a TTY gets a spinner, anything else plain lines) */
  stderr: Writable & { isTTY?: boolean };
  /** the shadow's role (default connect); exchange/preview shadows also get the ports and sysctls below */
  role?: Role;
  ports?: ShadowSpec['ports'];
  sysctls?: ShadowSpec['sysctls'];
}

const isFatal = (e: unknown): boolean =>
  e instanceof HostKeyError ||
  e instanceof AuthError ||
  e instanceof InputFileError ||
  e instanceof KubeForbiddenError ||
  e instanceof KubeUnauthorizedError ||
  e instanceof ExecCredentialError ||
  e instanceof PodSecurityError ||
  e instanceof ShadowProgramError ||
  (e instanceof ShadowPodError && e.reason !== 'timeout' && e.reason !== 'gone');

/**
 * `connect` through a cluster: a shadow pod made for this run (or shared, --shareShadow), reached
 * over a port-forward stream of the API server, with ssh on top; the shadow is made again when it
 * disappears, and heartbeats keep `clean` away from it while this process lives.
 */
export async function kubeTransport(o: KubeTransportOptions, ctx: TransportContext): Promise<Transport> {
  const target = loadKubeConfig({ kubeconfig: o.kubeconfig, context: o.context, namespace: o.namespace });
  const kube = new Kube(target);
  const namespace = kube.namespace;
  ctx.debug(`kubeconfig ${target.files.join(':')}, context ${target.context}, namespace ${namespace}, API server ${target.server}`);

  // Reachable, the namespace exists, and RBAC allows what connect does: all before creating anything.
  await kube.serverNow();
  try {
    await kubeCall({ verb: 'get', resource: 'namespaces', name: namespace, server: kube.server }, () => kube.core.readNamespace({ name: namespace }));
  } catch (error) {
    if (isNotFound(error)) throw new KubeNotFoundError(`the namespace ${namespace} does not exist: pick an existing one with -n (kubectl get namespaces lists them)`, { cause: error });
    if (!(error instanceof KubeForbiddenError)) throw error;
  }
  await preflight(kube, ctx.log);

  if (o.cleanAtStart === false) {
    ctx.debug('clean at start: skipped (--skipCleanup)');
  } else {
    try {
      await cleanStale(kube, { thresholdMinutes: STALE_AFTER_MINUTES, dryRun: false, namespace, log: (l) => ctx.log(`clean: ${l}`) });
    } catch (error) {
      ctx.debug(`clean at start: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  const record = writeProcessRecord({ mode: o.mode, context: target.context, namespace, shadow: '', proxy: o.proxy });
  ctx.undo.add('the local state record', () => record.remove());
  // Credentials that cannot be renewed any more (the plugin fails, a 401 after a fresh token) end the session.
  let credentialsLost!: (error: Error) => void;
  const lost = new Promise<Error>((resolve) => (credentialsLost = resolve));
  const heartbeat = new Heartbeat(kube, { debug: ctx.debug, onCredentialsLost: (error) => credentialsLost(error) });
  ctx.undo.add('the heartbeat', () => heartbeat.stop());

  const name = o.attach?.name ?? (o.shareShadow ? sharedShadowName() : `ktctl-${randomBytes(3).toString('hex')}`);
  const spec: ShadowSpec = {
    name,
    namespace,
    image: o.image,
    role: o.role ?? 'connect',
    labels: o.labels,
    annotations: o.annotations,
    nodeSelector: o.nodeSelector,
    imagePullSecret: o.imagePullSecret,
    pod: o.pod,
    ports: o.ports,
    sysctls: o.sysctls,
  };
  let podName = name;
  let generation = 1;
  let keys: ShadowKeys;
  let mustWait = true;
  const progress = new Progress(o.stderr, ctx.log);
  const waitReady = (): Promise<unknown> =>
    waitForShadow(kube, { namespace, name: podName, image: o.image, timeoutMs: o.podCreationTimeoutMs, progress, signal: ctx.signal });

  if (o.attach) {
    keys = o.attach.keys;
  } else if (o.shareShadow) {
    const shared = await joinSharedShadow(kube, spec, ctx.undo, ctx.log);
    keys = shared.keys;
    mustWait = true;
  } else {
    keys = makeShadowKeys();
    const now = await kube.serverNow();
    await createSecret(kube, spec, keys, ctx.undo, now);
    await createPod(kube, spec, podName, ctx.undo, now);
    ctx.log(`created the shadow pod ${namespace}/${podName} (image ${o.image})`);
  }
  heartbeat.add({ kind: 'secret', namespace, name });
  heartbeat.add({ kind: 'pod', namespace, name: podName });
  heartbeat.start();
  record.update({ shadow: `${namespace}/${podName}` });

  const label = (): string => `shadow pod ${namespace}/${podName}`;
  let removeTunnelStep = (): void => undefined;

  /** Before each (re)connection: the pod exists and is ready, or is made again. */
  const ensurePod = async (): Promise<void> => {
    const pod = await unlessNotFound(kubeCall({ verb: 'get', resource: 'pods', namespace, name: podName, server: kube.server }, () => kube.core.readNamespacedPod({ name: podName, namespace })));
    const gone = !pod || pod.metadata?.deletionTimestamp !== undefined || pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded';
    if (gone) {
      if (o.attach) throw new ShadowPodError('lost', `${o.attach.what} (pod ${namespace}/${podName}) is gone; start again`);
      if (o.shareShadow) {
        throw new ShadowPodError('lost', `the shared shadow pod ${namespace}/${podName} is gone; start connect again (shared shadows are not made again)`);
      }
      const old = podName;
      generation++;
      podName = `${name}-${generation}`;
      ctx.log(`the shadow pod ${namespace}/${old} is gone; creating ${namespace}/${podName}`);
      await createPod(kube, spec, podName, ctx.undo, await kube.serverNow());
      heartbeat.remove({ kind: 'pod', namespace, name: old });
      heartbeat.add({ kind: 'pod', namespace, name: podName });
      record.update({ shadow: `${namespace}/${podName}` });
      // On exit the tunnel must close before its pods go (else it reports a drop): keep its step newest.
      removeTunnelStep();
      removeTunnelStep = ctx.undo.add(`the ssh connection to the ${label()}`, () => tunnel.close());
      await waitReady();
      return;
    }
    if (pod && !podReady(pod)) await waitReady();
  };

  const tunnel = new ReconnectingTunnel({
    label: `shadow pod ${namespace}/${name}`,
    isFatal,
    resume: o.resume,
    debug: ctx.debug,
    connect: async (signal) => {
      if (mustWait) {
        await waitReady();
        mustWait = false;
      } else {
        await ensurePod();
      }
      // A 401 on the upgrade (the token expired on the way): a fresh token, and once more.
      const sock = await retryUnauthorized(
        () => openPortForward({ kc: kube.kc, namespace, pod: podName, port: SHADOW_PORT, timeoutMs: o.portForwardTimeoutMs, debug: ctx.debug }),
        (e) => e instanceof KubeUnauthorizedError,
      );
      try {
        return await SshTunnel.open(
          { sock, username: 'ktctl', privateKey: keys.clientPrivate, hostKey: { pinned: keys.hostPublic }, serverLabel: label(), ciphers: o.ciphers, signal },
          (e) => ctx.debug(`ssh: ${e.type}: ${e.message}`),
        );
      } catch (error) {
        sock.destroy();
        throw error;
      }
    },
  });
  tunnel.on('log', ctx.log);
  removeTunnelStep = ctx.undo.add(`the ssh connection to the ${label()}`, () => tunnel.close());
  const fatal = Promise.race([new Promise<Error>((resolve) => tunnel.once('fatal', resolve)), lost]);
  const first = await tunnel.startUnlessAborted(ctx.signal);
  if (first) ctx.log(`connected to the ${label()} through the API server (cipher ${first.cipher || 'negotiated'})`);
  return {
    tunnel,
    label: label(),
    fatal,
    network: () => discoverNetwork(kube, { clusterDomain: o.clusterDomain, namespace, pods: o.podRoutes !== false, debug: ctx.debug }),
    services: (onChange) => watchServices(kube, namespace, onChange, ctx),
  };
}
