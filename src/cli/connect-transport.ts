import { Option } from 'clipanion';
import type { CipherAlgorithm } from 'ssh2';
import { PendingDialer, type Dialer } from '../dialer.js';
import { UsageError } from '../errors.js';
import { DEFAULT_SHADOW_IMAGE, parseKeyValues } from '../kube/names.js';
import { parsePodQuota, SHADOW_UID, type PodSettings } from '../kube/pod-settings.js';
import { shadowProgram } from '../kube/bundle.js';
import type { ReconnectingTunnel } from '../ssh/reconnect.js';
import { CIPHERS } from '../ssh/tunnel.js';
import { KubeCommand } from './base.js';
import { Undo, type Logger } from '../undo.js';
import { untilSignal, type SignalWatch } from './lifecycle.js';
import { VERSION } from './version.js';
import type { KubeTransportOptions } from './transport-kube.js';
import { viaTransport } from './transport-via.js';
import { defaultKnownHosts, loadIdentity, parseVia } from './via.js';

/**
 * Where `connect` and `forward` get their streams from: an ssh connection that survives drops, plus
 * what the front ends need to know about the far side. Made by `transport-via.ts` (any SSH server)
 * or `transport-kube.ts` (a shadow pod reached through the API server). Every change a transport
 * makes is registered on the `Undo` it was given before it is made.
 */
export interface Transport {
  /** The Dialer (and remote forwards) the front ends use. */
  readonly tunnel: ReconnectingTunnel;
  /** What the tunnel leads to, for messages ("root@198.18.0.9:22", "shadow pod default/ktctl-ab12"). */
  readonly label: string;
  /** Settles when the transport cannot go on (host key changed, shadow cannot be recreated). */
  readonly fatal: Promise<Error>;
  /** The far side as a network, for the TUN mode: what to route there and what never to. */
  network(): Promise<TransportNetwork>;
  /**
   * The cluster's Services, kept current (Kubernetes only; `--dnsMode hosts`): `onChange` gets the
   * whole list after the first listing (before the promise resolves) and again after each change,
   * until `stop()`.
   */
  services?(onChange: (services: ClusterService[]) => void): Promise<ServiceWatch>;
}

/** A Service as `--dnsMode hosts` needs it. */
export interface ClusterService {
  namespace: string;
  name: string;
  /** its cluster IPs (none for headless and ExternalName services) */
  ips: string[];
}

export interface ServiceWatch {
  /** `cluster`: every namespace's Services; `namespace`: the connected one's (listing all was not allowed) */
  readonly scope: 'cluster' | 'namespace';
  stop(): Promise<void>;
}

export interface TransportNetwork {
  /** CIDRs reachable through the tunnel (Kubernetes: pod and service ranges discovered; --via: none). */
  routes: string[];
  /** Addresses that must keep their normal route (the API server, the ssh server itself). */
  avoid: string[];
  /** Cluster DNS naming, when there is a cluster. */
  cluster?: { domain: string; namespace: string; dnsServiceIp?: string };
}

/** What every transport builder gets. */
export interface TransportContext {
  undo: Undo;
  log: (line: string) => void;
  debug: (line: string) => void;
  /** Aborted when the user asked to stop (SIGINT/SIGTERM) while the transport is being built. */
  signal: AbortSignal;
}

/** What a command adds to the shadow's options: its mode (`ktctl status`), role, labels and ports. */
export interface ShadowRun {
  mode: string;
  proxy?: string;
  role?: KubeTransportOptions['role'];
  /** labels beside --withLabel (the command's own win) */
  labels?: Record<string, string>;
  ports?: KubeTransportOptions['ports'];
  shareShadow?: boolean;
  ciphers?: CipherAlgorithm[];
}

/**
 * The kubeconfig flags plus the shadow pod's (`connect`, `forward`, `exchange`, `mesh`, `preview`;
 * kebab-case accepted), checked into the options of `kubeTransport`.
 */
export abstract class ShadowCommand extends KubeCommand {
  #stop: SignalWatch | undefined;

  /**
   * These commands serve until a signal: they watch for it before anything else happens, so a
   * Ctrl-C at any moment of the start-up ends in `serveTransport`'s undo and exit 0.
   */
  override async execute(): Promise<number> {
    this.#stop = untilSignal((l) => this.log(l));
    this.debugLog(`ktctl ${VERSION} ${this.path.join(' ')}, pid ${process.pid}: watching for SIGINT/SIGTERM/SIGHUP`);
    try {
      return await super.execute();
    } finally {
      this.#stop.release();
    }
  }

  /** The signal watch `execute` installed, for `serveTransport`. */
  protected get stop(): SignalWatch {
    if (this.#stop === undefined) throw new TypeError('the signal watch exists only while execute() runs');
    return this.#stop;
  }

  image = Option.String('--image', { description: 'shadow image' });
  imagePullSecret = Option.String('--imagePullSecret,--image-pull-secret', { description: 'image pull secret for the shadow pod' });
  nodeSelector = Option.String('--nodeSelector,--node-selector', { description: 'node selector for the shadow pod (key=value,...)' });
  withLabel = Option.String('--withLabel,--with-label', { description: 'extra labels on every object ktctl makes (key=value,...)' });
  withAnnotation = Option.String('--withAnnotation,--with-annotation', { description: 'extra annotations on every object ktctl makes (key=value,...)' });
  podCreationTimeout = Option.String('--podCreationTimeout,--pod-creation-timeout', '60', { description: 'seconds to wait for the shadow pod to be ready' });
  portForwardTimeout = Option.String('--portForwardTimeout,--port-forward-timeout', '10', { description: 'seconds to wait for the port-forward to the shadow' });
  clusterDomain = Option.String('--clusterDomain,--cluster-domain', 'cluster.local', { description: 'the cluster\'s DNS domain' });
  podQuota = Option.String('--podQuota,--pod-quota', { description: 'CPU,MEMORY requests and limits of the shadow and router pods (KT Connect\'s 0.5c,512m, or 500m,512Mi)' });
  serviceAccount = Option.String('--serviceAccount,--service-account', { description: 'service account of the shadow and router pods (its token is not mounted)' });
  forceUpdate = Option.Boolean('--forceUpdate,--force-update,-f', false, { description: 'pull the shadow image on every start (imagePullPolicy Always)' });
  runAsUser = Option.String('--runAsUser,--run-as-user', String(SHADOW_UID), {
    description: `user id of the shadow and router pods (default ${SHADOW_UID}, the Node.js image's user node); auto leaves it to the cluster (OpenShift's restricted SCC)`,
  });

  /**
   * The shadow's options from the flags and the command's `run`; bad flags throw a UsageError.
   * `labels` and `annotations` are the user's (--withLabel, --withAnnotation) plus `run.labels`.
   */
  protected kubeTransportOptions(run: ShadowRun): KubeTransportOptions {
    // the program every shadow runs must be in this installation before anything is made
    shadowProgram();
    return {
      ...this.kubeFlags(),
      image: this.image ?? DEFAULT_SHADOW_IMAGE,
      imagePullSecret: this.imagePullSecret,
      pod: this.podSettings(),
      nodeSelector: keyValues(this.nodeSelector, '--nodeSelector'),
      labels: { ...keyValues(this.withLabel, '--withLabel'), ...run.labels },
      annotations: keyValues(this.withAnnotation, '--withAnnotation'),
      podCreationTimeoutMs: seconds(this.podCreationTimeout, '--podCreationTimeout'),
      portForwardTimeoutMs: seconds(this.portForwardTimeout, '--portForwardTimeout'),
      shareShadow: run.shareShadow ?? false,
      clusterDomain: this.clusterDomain,
      ciphers: run.ciphers,
      mode: run.mode,
      proxy: run.proxy,
      stderr: this.context.stderr,
      role: run.role,
      ports: run.ports,
    };
  }

  /** --runAsUser, --podQuota, --serviceAccount, --forceUpdate and the user's --withLabel, checked. */
  protected podSettings(): PodSettings {
    let runAsUser: PodSettings['runAsUser'] = 'auto';
    if (this.runAsUser !== 'auto') {
      if (!/^\d+$/.test(this.runAsUser) || Number(this.runAsUser) === 0 || Number(this.runAsUser) > 2 ** 31 - 1) {
        throw new UsageError(`--runAsUser takes a user id other than 0 (the pods run as non-root) or auto (got "${this.runAsUser}")`);
      }
      runAsUser = Number(this.runAsUser);
    }
    let resources: PodSettings['resources'];
    if (this.podQuota !== undefined) {
      try {
        resources = parsePodQuota(this.podQuota);
      } catch (error) {
        throw new UsageError(`--podQuota ${(error as Error).message} (got "${this.podQuota}")`);
      }
    }
    return { runAsUser, resources, serviceAccount: this.serviceAccount, pullPolicy: this.forceUpdate ? 'Always' : 'IfNotPresent', userLabels: keyValues(this.withLabel, '--withLabel') };
  }
}

/**
 * Builds the transport to a shadow pod. Loaded only when needed: @kubernetes/client-node alone is
 * ~90 MiB of RSS, which a --via run (and the TUN engine's memory budget) should not carry.
 */
export async function kubeTransport(options: KubeTransportOptions, ctx: TransportContext): Promise<Transport> {
  return (await import('./transport-kube.js')).kubeTransport(options, ctx);
}

function seconds(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} takes a number of seconds greater than 0 (got "${text}")`);
  return n * 1000;
}

function keyValues(text: string | undefined, flag: string): Record<string, string> {
  try {
    return parseKeyValues(text, flag);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/**
 * What every command that needs a tunnel shares (`connect`, `forward`): the `--via` flags beside
 * the Kubernetes ones, checked, and how to build the transport they ask for. Subclasses declare
 * their own flags and call `transportBuilder()` before anything is made, so bad flags fail first.
 */
export abstract class TransportCommand extends ShadowCommand {
  via = Option.String('--via', { description: 'user@host[:port] of an SSH server to tunnel through instead of a Kubernetes cluster' });
  identity = Option.String('--identity,-i', { description: 'private key file for --via (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)' });
  knownHosts = Option.String('--knownHosts,--known-hosts', { description: 'known_hosts file that holds the --via server\'s host key (default ~/.ssh/known_hosts)' });
  sshCipher = Option.String('--sshCipher,--ssh-cipher', { description: `ssh cipher to prefer (default order: ${CIPHERS.join(', ')})` });
  shareShadow = Option.Boolean('--shareShadow,--share-shadow', false, { description: 'share one shadow pod among this user\'s ktctl processes in the namespace' });

  /**
   * Checks the flags of the transport asked for and returns how to build it. `mode` and `proxy` go
   * into the local state record (`ktctl status`); `dnsServer` is the --via server's resolver.
   */
  protected transportBuilder(run: { mode: string; proxy?: string; dnsServer?: string }): (ctx: TransportContext) => Promise<Transport> {
    let ciphers: CipherAlgorithm[] | undefined;
    if (this.sshCipher !== undefined) {
      if (!CIPHERS.includes(this.sshCipher as CipherAlgorithm)) throw new UsageError(`--sshCipher must be one of ${CIPHERS.join(', ')} (got "${this.sshCipher}")`);
      ciphers = [this.sshCipher as CipherAlgorithm, ...CIPHERS.filter((c) => c !== this.sshCipher)];
    }
    if (this.via === undefined) {
      const options = this.kubeTransportOptions({ mode: run.mode, proxy: run.proxy, shareShadow: this.shareShadow, ciphers });
      return (ctx) => kubeTransport(options, ctx);
    }
    const target = parseVia(this.via);
    const identity = loadIdentity(this.identity);
    const knownHostsFile = this.knownHosts ?? defaultKnownHosts();
    return (ctx) => viaTransport({ target, identity, knownHostsFile, dnsServer: run.dnsServer, ciphers }, ctx);
  }
}

export interface ServeTransportOptions {
  buildTransport: (ctx: TransportContext) => Promise<Transport>;
  log: Logger;
  debug: Logger;
  /** The signal watch, installed when the command began (ShadowCommand's `execute`). */
  stop: SignalWatch;
  /**
   * Before the transport: what must fail before any network traffic (a taken local port). `dialer`
   * is the tunnel's, usable before it exists: a dial made before the transport is up waits for it
   * (DIAL_WAIT_MS, as during a reconnect), and fails at once when the start-up fails or the user stops.
   */
  prepare?: (ctx: TransportContext, dialer: Dialer) => Promise<void>;
  /** With the transport up (skipped when a signal came while it was being built). */
  start: (transport: Transport, ctx: TransportContext) => Promise<void>;
}

/**
 * A command's life around a transport: `prepare`, the transport, `start`; then it serves until
 * SIGINT/SIGTERM/SIGHUP or the transport's fatal error, and undoes everything it made, newest
 * first, also when a step fails. A signal before or during a step skips the steps after it (the
 * running one sees `ctx.signal`) and goes straight to the undo. Returns 0 after a signal, also one
 * that came during the start-up (a step's failure then is only a debug line); throws the failure
 * otherwise.
 */
export async function serveTransport(o: ServeTransportOptions): Promise<number> {
  const undo = new Undo();
  const { stop } = o;
  const ctx: TransportContext = { undo, log: o.log, debug: o.debug, signal: stop.aborted };
  const dialer = new PendingDialer();
  const stopping = (): void => dialer.fail('ktctl is stopping');
  if (stop.aborted.aborted) stopping();
  else stop.aborted.addEventListener('abort', stopping, { once: true });
  try {
    if (!stop.aborted.aborted) await o.prepare?.(ctx, dialer);
    const transport = stop.aborted.aborted ? undefined : await o.buildTransport(ctx);
    if (transport !== undefined && !stop.aborted.aborted) {
      dialer.ready(transport.tunnel);
      await o.start(transport, ctx);
    }
    const error = await Promise.race([stop.signal.then(() => undefined), transport?.fatal ?? new Promise<never>(() => undefined)]);
    if (error !== undefined) throw error;
  } catch (error) {
    if (!stop.aborted.aborted) {
      dialer.fail(`ktctl could not start: ${error instanceof Error ? error.message : String(error)}`);
      await undo.run(o.log);
      throw error;
    }
    o.debug(`stopped during the start-up: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    stop.aborted.removeEventListener('abort', stopping);
  }
  o.log(`got ${String(stop.aborted.reason)}; stopping`);
  await undo.run(o.log);
  return 0;
}
