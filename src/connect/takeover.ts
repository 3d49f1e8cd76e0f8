/**
 * What `exchange`, `mesh` and `preview` run: everything that can refuse first (src/kube/takeover.ts:
 * RBAC, the target and its ports, the service's lock), then the shadow (or the mesh router) as the
 * transport, then the remote forwards to the local ports (expose.ts) and the change in the cluster.
 * The Kubernetes layer is loaded when the command starts (it pulls in @kubernetes/client-node).
 */
import type { Writable } from 'node:stream';
import type { KubeFlags } from '../kube/session.js';
import type { ExposePort } from '../kube/target.js';
import type { PreviewTarget, ServiceTakeover } from '../kube/takeover.js';
import { meshBindAddress, type MeshMark } from '../protocol/index.js';
import { serveExposedPorts } from './expose.js';
import type { TransportContext } from '../transport.js';
import type { WorkloadEnv } from '../kube/env.js';
import { serveTransport, type CommandIo, type ServeSteps } from './serve.js';
import type { SignalWatch } from './signals.js';
import { kubeTransport, type KubeTransportOptions } from './transports.js';
import { checkWritable, formatDotenv, formatEnvJson, runLocalCommand, writeSecretFile, type LocalCommand } from './workload-env.js';

interface TakeoverOptions extends CommandIo {
  stderr: Writable & { isTTY?: boolean };
  flags: KubeFlags;
  /** the local ports (--expose) */
  ports: ExposePort[];
  /** the shadow's options, from the flags */
  shadow: KubeTransportOptions;
}

/** exchange and mesh: the workload's environment for this machine (src/kube/env.ts, ./workload-env.ts). */
export interface WorkloadEnvOptions {
  /** `--envFile PATH`: dotenv */
  envFile?: string;
  /** `--envJson PATH` */
  envJson?: string;
  /** `--container NAME` (default: the pod's default-container annotation, else the first) */
  container?: string;
  /** `-- command args`: runs with the environment; the exchange lasts as long as it */
  command: string[];
}

const wantsEnv = (e: WorkloadEnvOptions | undefined): e is WorkloadEnvOptions => e !== undefined && (e.envFile !== undefined || e.envJson !== undefined || e.command.length > 0);

/** How long a command that got ktctl's signal has to end after the undo, before SIGKILL. */
const COMMAND_GRACE_MS = 10_000;

/**
 * A SignalWatch that also ends when `end` is called (the local command exited): serveTransport then
 * undoes everything as after a signal.
 */
function endableWatch(stop: SignalWatch): SignalWatch & { end(reason: string): void } {
  const aborted = new AbortController();
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const end = (reason: unknown): void => {
    if (aborted.signal.aborted) return;
    aborted.abort(reason);
    resolve(reason as NodeJS.Signals);
  };
  if (stop.aborted.aborted) end(stop.aborted.reason);
  else stop.aborted.addEventListener('abort', () => end(stop.aborted.reason), { once: true });
  return { signal, aborted: aborted.signal, received: (s) => stop.received(s), release: () => stop.release(), end };
}

/**
 * Around serveTransport for exchange and mesh: reads the workload's environment in `prepare` (before
 * anything changes in the cluster), writes the files and starts the local command once the service
 * is taken over, ends the run when the command exits and returns its exit code. A signal to ktctl
 * is passed on to the command (a SIGINT only when ktctl has no terminal: a Ctrl-C on the terminal
 * reaches the command itself, being in ktctl's process group).
 */
async function serveWithEnv(
  o: TakeoverOptions & { env?: WorkloadEnvOptions },
  steps: Omit<ServeSteps, 'prepare'> & {
    /** calls `readEnv` with the target as soon as it is known, before anything is changed */
    prepare: (ctx: TransportContext, readEnv: (t: ServiceTakeover) => Promise<void>) => Promise<void>;
  },
): Promise<number> {
  const env = o.env;
  if (!wantsEnv(env)) return serveTransport(o, { ...steps, prepare: (ctx) => steps.prepare(ctx, async () => undefined) });
  checkWritable([env.envFile, env.envJson]);
  const stop = endableWatch(o.stop);
  let workload: WorkloadEnv | undefined;
  let command: LocalCommand | undefined;
  const forward = (): void => {
    const s = String(o.stop.aborted.reason) as NodeJS.Signals;
    if (s === 'SIGINT' && process.stdin.isTTY) return;
    command?.signal(s);
  };
  o.stop.aborted.addEventListener('abort', forward, { once: true });
  try {
    const code = await serveTransport(
      { ...o, stop },
      {
        ...steps,
        prepare: (ctx) =>
          steps.prepare(ctx, async (t) => {
            const k = await import('../kube/env.js');
            const { originalSelectorOf } = await import('../kube/selector.js');
            const selector = originalSelectorOf(t.target.service) ?? t.target.service.spec?.selector ?? {};
            workload = await k.readWorkloadEnv(t.kube, { namespace: t.namespace, service: t.service, selector, container: env.container });
            ctx.log(`the environment of container ${workload.container} of pod ${workload.namespace}/${workload.pod}: ${workload.vars.size} variable(s)`);
          }),
        start: async (transport, ctx) => {
          await steps.start(transport, ctx);
          const w = workload!;
          if (env.envFile !== undefined) writeSecretFile(env.envFile, formatDotenv(w));
          if (env.envJson !== undefined) writeSecretFile(env.envJson, formatEnvJson(w));
          for (const f of [env.envFile, env.envJson]) if (f !== undefined) o.stdout.write(`wrote the environment of ${w.namespace}/${w.pod} (container ${w.container}) to ${f}
`);
          if (env.command.length > 0) {
            ctx.log(`running ${env.command.join(' ')}; ktctl stops when it exits`);
            const c = runLocalCommand(env.command, w.vars, ctx.log);
            command = c;
            void c.exited.then((code) => stop.end(`the end of ${env.command[0]} (exit code ${code})`));
          }
        },
      },
    );
    if (!command) return code;
    const c: LocalCommand = command;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, COMMAND_GRACE_MS)));
    const done = await Promise.race([c.exited, late.then(() => undefined)]);
    clearTimeout(timer);
    if (done !== undefined) return done;
    o.log(`${env.command[0]} did not end ${COMMAND_GRACE_MS / 1000} s after ktctl stopped; killing it`);
    c.signal('SIGKILL');
    return await c.exited;
  } finally {
    o.stop.aborted.removeEventListener('abort', forward);
    command?.signal('SIGTERM');
  }
}

/** `ktctl exchange`: the service's traffic to the local ports until Ctrl-C. */
export async function exchangeService(o: TakeoverOptions & { service: string; mode: 'selector' | 'scale'; recoverWaitMs: number; env?: WorkloadEnvOptions }): Promise<number> {
  const { shadow, mode } = o;
  const k = await import('../kube/takeover.js');
  let t!: ServiceTakeover;
  let labels: Record<string, string> = {};
  return serveWithEnv(o, {
    session: { command: 'exchange', mode, target: o.service, via: false },
    // Everything that can refuse comes before the shadow: RBAC, the target, its ports, the lock
    // (and the workload's environment, read before scale mode scales its pods away).
    prepare: async (ctx, readEnv) => {
      t = await k.prepareServiceTakeover({ ...ctx, flags: o.flags, role: 'exchange', target: o.service, expose: o.ports, check: mode === 'scale' ? k.requireDeployment : undefined });
      await readEnv(t);
      labels = k.exchangeLabels(t, mode);
    },
    buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...labels }, ports: k.shadowPorts(t.exposed) }, ctx),
    changedService: () => (t ? { namespace: t.namespace, name: t.service } : undefined),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo);
      await k.divertService(t, { ...ctx, mode, labels, recoverWaitMs: o.recoverWaitMs, stderr: o.stderr });
      // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
      ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
      for (const p of t.exposed) {
        o.stdout.write(`exchanged service ${t.namespace}/${t.service} port ${p.servicePort}${p.listen !== p.servicePort ? ` (pods' port ${p.listen})` : ''} -> 127.0.0.1:${p.local} (--mode ${mode}); Ctrl-C restores it\n`);
      }
    },
  });
}

/** `ktctl mesh`: requests with the mark to the local ports (auto: through the shared router; manual: a shadow and Istio rules). */
export async function meshService(
  o: TakeoverOptions & { service: string; mode: 'auto' | 'manual'; mark: MeshMark; clusterDomain: string; routerImage: string | undefined; env?: WorkloadEnvOptions },
): Promise<number> {
  const { shadow, mode, mark } = o;
  const header = `${mark.key}: ${mark.value}`;
  const k = await import('../kube/takeover.js');
  let t!: ServiceTakeover;
  let manifests = '';
  let transportOptions!: KubeTransportOptions;
  return serveWithEnv(o, {
    session: { command: 'mesh', mode, target: o.service, via: false },
    // Everything that can refuse comes before the tunnel: RBAC, the target, its ports, the lock, the mark.
    prepare: async (ctx, readEnv) => {
      t = await k.prepareServiceTakeover({ ...ctx, flags: o.flags, role: 'mesh', target: o.service, expose: o.ports });
      await readEnv(t);
      if (mode === 'manual') {
        const manual = k.meshManual(t, mark, o.clusterDomain);
        manifests = manual.manifests;
        transportOptions = { ...shadow, labels: { ...shadow.labels, ...manual.labels }, ports: k.shadowPorts(t.exposed) };
        return;
      }
      const image = o.routerImage ?? shadow.image;
      const router = await k.joinMeshRouter(t, { ...ctx, ...shadow, image, mark, signal: ctx.signal });
      transportOptions = { ...shadow, image, attach: { name: router.name, keys: router.keys, what: router.what } };
    },
    buildTransport: (ctx) => kubeTransport(transportOptions, ctx),
    changedService: () => (t ? { namespace: t.namespace, name: t.service } : undefined),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, t.exposed, ctx.log, ctx.undo, mode === 'auto' ? meshBindAddress(mark) : undefined);
      // Stopped first on exit, so no heartbeat lands on an object whose annotations were just removed.
      ctx.undo.add('the heartbeat', () => t.heartbeat.stop());
      const out = o.stdout;
      if (mode === 'manual') {
        out.write(`a shadow with the labels of service ${t.namespace}/${t.service} and version=${mark.value} takes a share of its traffic; for routing by header, apply:\n${manifests}`);
      }
      out.write(`version mark: ${header}\n`);
      for (const p of t.exposed) {
        out.write(`meshed service ${t.namespace}/${t.service} port ${p.servicePort} (--mode ${mode}): requests with "${header}" -> 127.0.0.1:${p.local}; Ctrl-C stops\n`);
      }
    },
  });
}

/** `ktctl preview`: a new Service answered by the local ports until Ctrl-C. */
export async function previewService(o: TakeoverOptions & { name: string; external: boolean }): Promise<number> {
  const { shadow, ports } = o;
  const k = await import('../kube/takeover.js');
  let p!: PreviewTarget;
  return serveTransport(o, {
    session: { command: 'preview', mode: '', target: o.name, via: false },
    prepare: async (ctx) => {
      p = await k.preparePreview({ ...ctx, flags: o.flags, name: o.name });
    },
    buildTransport: (ctx) => kubeTransport({ ...shadow, labels: { ...shadow.labels, ...k.previewLabels(p) } }, ctx),
    start: async (transport, ctx) => {
      await serveExposedPorts(transport.tunnel, ports.map((x) => ({ local: x.local, listen: x.remote })), ctx.log, ctx.undo);
      await k.publishPreview(p, { ...ctx, labels: shadow.labels, annotations: shadow.annotations, ports, external: o.external });
      for (const x of ports) {
        o.stdout.write(`previewing service ${p.namespace}/${p.name} port ${x.remote} -> 127.0.0.1:${x.local}${o.external ? ' (LoadBalancer)' : ''}; Ctrl-C removes it\n`);
      }
    },
  });
}
