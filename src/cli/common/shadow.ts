/**
 * The flags of every command that makes a shadow pod (`connect`, `forward`, `exchange`, `mesh`,
 * `preview`): the kubeconfig ones plus the pod's, checked into the options of src/kube/transport.ts;
 * and the signal watch these serving commands install first.
 */
import { Option } from 'clipanion';
import type { CipherAlgorithm } from 'ssh2';
import { shadowProgram } from '../../kube/bundle.js';
import { DEFAULT_SHADOW_IMAGE } from '../../kube/names.js';
import { SHADOW_UID, type PodSettings } from '../../kube/pod-settings.js';
import type { KubeTransportOptions } from '../../kube/transport.js';
import type { CommandIo } from '../../connect/serve.js';
import { untilSignal, type SignalWatch } from '../../connect/signals.js';
import { takeEarlySignals } from '../early-signals.js';
import { VERSION } from '../../version.js';
import { UsageError } from '../../errors.js';
import { KubeCommand } from './command.js';
import { RESUME_DEFAULTS, RESUME_MAX, type ResumeLimits } from '../../protocol/index.js';
import { byteSize, duration, formatSize, keyValues, podQuota, runAsUser } from './validators.js';

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
  /** false: TUN mode routes no pod addresses (--disablePodIp) */
  podRoutes?: boolean;
  /** false: leave crashed runs' objects at start (--skipCleanup) */
  cleanAtStart?: boolean;
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
    const early = takeEarlySignals();
    if (early !== undefined) this.#stop.received(early);
    this.debugLog(`ktctl ${VERSION} ${this.path.join(' ')}, pid ${process.pid}: watching for SIGINT/SIGTERM/SIGHUP`);
    try {
      return await super.execute();
    } finally {
      this.#stop.release();
    }
  }

  /** The signal watch and where to print, for the function in src/connect the command calls. */
  protected io(): CommandIo {
    return { stop: this.stop, stdout: this.context.stdout, log: (l) => this.log(l), debug: (l) => this.debugLog(l) };
  }

  /** The signal watch `execute` installed, for `serveTransport`. */
  protected get stop(): SignalWatch {
    if (this.#stop === undefined) throw new TypeError('the signal watch exists only while execute() runs');
    return this.#stop;
  }

  // KT Connect's global flags that ktctl has no counterpart for: refused in checkFlags().
  useShadowDeployment = Option.Boolean('--useShadowDeployment,--use-shadow-deployment', false, { hidden: true });
  useLocalTime = Option.Boolean('--useLocalTime,--use-local-time', false, { hidden: true });
  ipVersion = Option.String('--ipVersion,--ip-version', { hidden: true });

  protected override checkFlags(): void {
    super.checkFlags();
    if (this.useShadowDeployment) throw new UsageError('--useShadowDeployment has no counterpart in ktctl: the shadow is always a bare pod, removed on exit and found by ktctl clean after a crash');
    if (this.useLocalTime) throw new UsageError('--useLocalTime has no counterpart in ktctl: heartbeats always use the API server\'s clock, so a skewed laptop clock cannot make objects look stale');
    if (this.ipVersion !== undefined) throw new UsageError('--ipVersion has no counterpart in ktctl: TUN mode routes the IPv4 and IPv6 ranges the cluster has, and the tunnel runs over the API server\'s own address');
  }

  image = Option.String('--image', { description: `image of the shadow and router pods (default ${DEFAULT_SHADOW_IMAGE})` });
  imagePullSecret = Option.String('--imagePullSecret,--image-pull-secret', { description: 'image pull secret for the shadow pod' });
  nodeSelector = Option.String('--nodeSelector,--node-selector', { description: 'node selector for the shadow pod (key=value,...)', validator: keyValues('--nodeSelector') });
  withLabel = Option.String('--withLabel,--with-label,-l', { description: 'extra labels on every object ktctl makes (key=value,...)', validator: keyValues('--withLabel') });
  withAnnotation = Option.String('--withAnnotation,--with-annotation', { description: 'extra annotations on every object ktctl makes (key=value,...)', validator: keyValues('--withAnnotation') });
  podCreationTimeout = Option.String('--podCreationTimeout,--pod-creation-timeout', '60', {
    description: 'seconds to wait for the shadow pod to be ready',
    validator: duration('--podCreationTimeout', { unit: 'seconds', zero: false }),
  });
  portForwardTimeout = Option.String('--portForwardTimeout,--port-forward-timeout', '10', {
    description: 'seconds to wait for the port-forward to the shadow',
    validator: duration('--portForwardTimeout', { unit: 'seconds', zero: false }),
  });
  clusterDomain = Option.String('--clusterDomain,--cluster-domain', 'cluster.local', { description: 'the cluster\'s DNS domain' });
  podQuota = Option.String('--podQuota,--pod-quota', {
    description: 'CPU,MEMORY requests and limits of the shadow and router pods (KT Connect\'s 0.5c,512m, or 500m,512Mi)',
    validator: podQuota,
  });
  serviceAccount = Option.String('--serviceAccount,--service-account', { description: 'service account of the shadow and router pods (its token is not mounted)' });
  forceUpdate = Option.Boolean('--forceUpdate,--force-update,-f', false, { description: 'pull the shadow image on every start (imagePullPolicy Always)' });
  runAsUser = Option.String('--runAsUser,--run-as-user', String(SHADOW_UID), {
    description: `user id of the shadow and router pods (default ${SHADOW_UID}, the Node.js image's user node); auto leaves it to the cluster (OpenShift's restricted SCC)`,
    validator: runAsUser,
  });

  resumeWindow = Option.String('--resumeWindow,--resume-window', String(RESUME_DEFAULTS.windowMs / 1000), {
    description: 'seconds open connections wait for a dropped tunnel to come back (0: they end with it)',
    validator: duration('--resumeWindow', { unit: 'seconds', zero: true }),
  });
  resumeBuffer = Option.String('--resumeBuffer,--resume-buffer', formatSize(RESUME_DEFAULTS.streamBytes), {
    description: 'bytes each connection keeps per direction until the other end confirms them',
    validator: byteSize('--resumeBuffer', 64 << 10, RESUME_MAX.streamBytes),
  });
  resumeBufferTotal = Option.String('--resumeBufferTotal,--resume-buffer-total', formatSize(RESUME_DEFAULTS.totalBytes), {
    description: 'bytes all connections keep together (each end: this machine and the shadow)',
    validator: byteSize('--resumeBufferTotal', 1 << 20, RESUME_MAX.totalBytes),
  });

  /** --resumeWindow, --resumeBuffer, --resumeBufferTotal (src/protocol/resume.ts). */
  protected resumeLimits(): ResumeLimits {
    return { windowMs: Math.round(this.resumeWindow * 1000), streamBytes: this.resumeBuffer, totalBytes: this.resumeBufferTotal };
  }

  /**
   * The shadow's options from the flags and the command's `run`. `labels` and `annotations` are the
   * user's (--withLabel, --withAnnotation) plus `run.labels`.
   */
  protected kubeTransportOptions(run: ShadowRun): KubeTransportOptions {
    // the program every shadow runs must be in this installation before anything is made
    shadowProgram();
    return {
      ...this.kubeFlags(),
      image: this.image ?? DEFAULT_SHADOW_IMAGE,
      imagePullSecret: this.imagePullSecret,
      pod: this.podSettings(),
      nodeSelector: this.nodeSelector ?? {},
      labels: { ...this.withLabel, ...run.labels },
      annotations: this.withAnnotation ?? {},
      podCreationTimeoutMs: this.podCreationTimeout * 1000,
      portForwardTimeoutMs: this.portForwardTimeout * 1000,
      shareShadow: run.shareShadow ?? false,
      clusterDomain: this.clusterDomain,
      ciphers: run.ciphers,
      resume: this.resumeLimits(),
      mode: run.mode,
      proxy: run.proxy,
      stderr: this.context.stderr,
      role: run.role,
      ports: run.ports,
      ...(run.podRoutes === false ? { podRoutes: false } : {}),
      ...(run.cleanAtStart === false ? { cleanAtStart: false } : {}),
    };
  }

  /** --runAsUser, --podQuota, --serviceAccount, --forceUpdate and the user's --withLabel. */
  protected podSettings(): PodSettings {
    return {
      runAsUser: this.runAsUser,
      resources: this.podQuota,
      serviceAccount: this.serviceAccount,
      pullPolicy: this.forceUpdate ? 'Always' : 'IfNotPresent',
      userLabels: this.withLabel ?? {},
    };
  }
}
