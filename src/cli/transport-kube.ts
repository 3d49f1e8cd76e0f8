import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { CipherAlgorithm } from 'ssh2';
import { AuthError, HostKeyError, InputFileError } from '../errors.js';
import { SHADOW_PORT } from '../protocol/index.js';
import { ReconnectingTunnel } from '../ssh/reconnect.js';
import { SshTunnel } from '../ssh/tunnel.js';
import { firstDenied, NEEDS } from '../kube/access.js';
import { Kube } from '../kube/api.js';
import { cleanStale } from '../kube/clean.js';
import { loadKubeConfig } from '../kube/config.js';
import { isNotFound, kubeCall, KubeForbiddenError, KubeNotFoundError, KubeUnauthorizedError, ShadowPodError } from '../kube/errors.js';
import { Heartbeat } from '../kube/heartbeat.js';
import { discoverNetwork } from '../kube/network.js';
import { openPortForward } from '../kube/portforward.js';
import { Progress } from '../kube/progress.js';
import { joinSharedShadow, sharedShadowName } from '../kube/shared.js';
import { createPod, createSecret, makeShadowKeys, podReady, waitForShadow, type ShadowKeys, type ShadowSpec } from '../kube/shadow.js';
import { writeProcessRecord } from '../kube/state.js';
import type { Transport, TransportContext } from './connect-transport.js';

export interface KubeTransportOptions {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  image: string;
  imagePullSecret?: string;
  nodeSelector: Record<string, string>;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  podCreationTimeoutMs: number;
  portForwardTimeoutMs: number;
  shareShadow: boolean;
  clusterDomain: string;
  ciphers?: CipherAlgorithm[];
  /** for `ktctl status`: the mode and where the proxy listens */
  mode: string;
  proxy?: string;
  /** where the spinner goes (a TTY gets a spinner, anything else plain lines) */
  stderr: Writable & { isTTY?: boolean };
}

const isFatal = (e: unknown): boolean =>
  e instanceof HostKeyError ||
  e instanceof AuthError ||
  e instanceof InputFileError ||
  e instanceof KubeForbiddenError ||
  e instanceof KubeUnauthorizedError ||
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
  const denied = await firstDenied(kube, NEEDS.connect, namespace).catch(() => undefined);
  if (denied) throw new KubeForbiddenError(denied.verb, denied.resource, namespace);

  try {
    await cleanStale(kube, { thresholdMinutes: 5, dryRun: false, namespace, log: (l) => ctx.log(`clean: ${l}`) });
  } catch (error) {
    ctx.debug(`clean at start: ${error instanceof Error ? error.message : String(error)}`);
  }

  const record = writeProcessRecord({ mode: o.mode, context: target.context, namespace, shadow: '', proxy: o.proxy });
  ctx.undo.add('the local state record', () => record.remove());
  const heartbeat = new Heartbeat(kube, { debug: ctx.debug });
  ctx.undo.add('the heartbeat', () => heartbeat.stop());

  const name = o.shareShadow ? sharedShadowName() : `ktctl-${randomBytes(3).toString('hex')}`;
  const spec: ShadowSpec = {
    name,
    namespace,
    image: o.image,
    role: 'connect',
    labels: o.labels,
    annotations: o.annotations,
    nodeSelector: o.nodeSelector,
    imagePullSecret: o.imagePullSecret,
  };
  let podName = name;
  let generation = 1;
  let keys: ShadowKeys;
  let mustWait = true;
  const progress = new Progress(o.stderr, ctx.log);
  const waitReady = (): Promise<unknown> =>
    waitForShadow(kube, { namespace, name: podName, image: o.image, timeoutMs: o.podCreationTimeoutMs, progress, signal: ctx.signal });

  if (o.shareShadow) {
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
    let pod;
    try {
      pod = await kubeCall({ verb: 'get', resource: 'pods', namespace, name: podName, server: kube.server }, () => kube.core.readNamespacedPod({ name: podName, namespace }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    const gone = !pod || pod.metadata?.deletionTimestamp !== undefined || pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded';
    if (gone) {
      if (o.shareShadow) {
        throw new ShadowPodError('gone', `the shared shadow pod ${namespace}/${podName} is gone; start connect again (shared shadows are not made again)`);
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
    connect: async () => {
      if (mustWait) {
        await waitReady();
        mustWait = false;
      } else {
        await ensurePod();
      }
      const sock = await openPortForward({ kc: kube.kc, namespace, pod: podName, port: SHADOW_PORT, timeoutMs: o.portForwardTimeoutMs });
      try {
        return await SshTunnel.open(
          { sock, username: 'ktctl', privateKey: keys.clientPrivate, hostKey: { pinned: keys.hostPublic }, serverLabel: label(), ciphers: o.ciphers },
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
  const fatal = new Promise<Error>((resolve) => tunnel.once('fatal', resolve));
  const first = await tunnel.startUnlessAborted(ctx.signal);
  if (first) ctx.log(`connected to the ${label()} through the API server (cipher ${first.cipher || 'negotiated'})`);
  return {
    tunnel,
    label: label(),
    fatal,
    network: () => discoverNetwork(kube, { clusterDomain: o.clusterDomain, namespace, debug: ctx.debug }),
  };
}
