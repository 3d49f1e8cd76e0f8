/**
 * The life of every serving command around its transport (connect, forward, exchange, mesh,
 * preview): `prepare`, the transport, `start`, serve until a signal or the transport's fatal error,
 * then undo everything, newest first. The commands differ only in their `prepare` and `start`.
 */
import type { Writable } from 'node:stream';
import { listenControl } from '../control/socket.js';
import { TunnelMeter, type SessionInfo } from '../control/meter.js';
import { PendingDialer, type Dialer } from '../dialer.js';
import { KtctlError } from '../errors.js';
import { STALE_AFTER_MINUTES } from '../kube/names.js';
import type { Transport, TransportBuilder, TransportContext } from '../transport.js';
import { Undo, type Logger } from '../undo.js';
import type { SignalWatch } from './signals.js';

/** Where a serving command prints, and its signal watch (installed when the command began, ShadowCommand's `execute`). */
export type ServeIo = Pick<CommandIo, 'stop' | 'log' | 'debug'>;

/** The steps a serving command adds to the common life. */
export interface ServeSteps {
  /** What runs, for the live figures on the control socket (src/control). */
  session: SessionInfo;
  buildTransport: TransportBuilder;
  /**
   * Before the transport: what must fail before any network traffic (a taken local port). `dialer`
   * is the tunnel's, usable before it exists: a dial made before the transport is up waits for it
   * (DIAL_WAIT_MS, as during a reconnect), and fails at once when the start-up fails or the user stops.
   */
  prepare?: (ctx: TransportContext, dialer: Dialer) => Promise<void>;
  /** With the transport up (skipped when a signal came while it was being built). */
  start: (transport: Transport, ctx: TransportContext) => Promise<void>;
  /** The service this run changed in place (exchange, mesh): named in the sentence about what could not be undone. */
  changedService?: () => { namespace: string; name: string } | undefined;
}

/**
 * A command's life around a transport: `prepare`, the transport, `start`; then it serves until
 * SIGINT/SIGTERM/SIGHUP or the transport's fatal error, and undoes everything it made, newest
 * first, also when a step fails. A signal before or during a step skips the steps after it (the
 * running one sees `ctx.signal`) and goes straight to the undo. Returns 0 after a signal, also one
 * that came during the start-up (a step's failure then is only a debug line); throws the failure
 * otherwise.
 */
export async function serveTransport(io: ServeIo, steps: ServeSteps): Promise<number> {
  const undo = new RecordingUndo();
  const { stop } = io;
  const ctx: TransportContext = { undo, log: io.log, debug: io.debug, signal: stop.aborted };
  const dialer = new PendingDialer();
  const stopping = (): void => dialer.fail('ktctl is stopping');
  if (stop.aborted.aborted) stopping();
  else stop.aborted.addEventListener('abort', stopping, { once: true });
  try {
    if (!stop.aborted.aborted) await steps.prepare?.(ctx, dialer);
    const built = stop.aborted.aborted ? undefined : await steps.buildTransport(ctx);
    const transport = built && !stop.aborted.aborted ? await metered(built, steps.session, ctx) : built;
    if (transport !== undefined && !stop.aborted.aborted) {
      dialer.ready(transport.tunnel);
      await steps.start(transport, ctx);
    }
    const error = await Promise.race([stop.signal.then(() => undefined), transport?.fatal ?? new Promise<never>(() => undefined)]);
    if (error !== undefined) throw error;
  } catch (error) {
    if (!stop.aborted.aborted) {
      dialer.fail(`ktctl could not start: ${error instanceof Error ? error.message : String(error)}`);
      await undo.run(io.log);
      const left = leftoverSentence(undo.failed, steps.changedService?.());
      if (left && error instanceof KtctlError) throw new KtctlError(error.code, `${error.message}; ${left}`, { cause: error });
      throw error;
    }
    io.debug(`stopped during the start-up: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    stop.aborted.removeEventListener('abort', stopping);
  }
  io.log(`got ${String(stop.aborted.reason)}; stopping`);
  await undo.run(io.log);
  const left = leftoverSentence(undo.failed, steps.changedService?.());
  if (left) io.log(left.replace(/^./, (c) => c.toUpperCase()));
  return 0;
}

/** An Undo that remembers which steps failed (their labels), for the one sentence at the end. */
class RecordingUndo extends Undo {
  readonly failed: string[] = [];

  override add(label: string, fn: () => Promise<void> | void): () => void {
    return super.add(label, async () => {
      try {
        await fn();
      } catch (error) {
        this.failed.push(label);
        throw error;
      }
    });
  }
}

/**
 * What could not be undone (the cluster refused or could not be reached: credentials that expired
 * and cannot be renewed) and which command removes it later; undefined when everything was undone.
 */
export function leftoverSentence(failed: readonly string[], service?: { namespace: string; name: string }): string | undefined {
  if (failed.length === 0) return undefined;
  const clean = `run ktctl clean once your credentials work again (it removes what ktctl made ${STALE_AFTER_MINUTES} minutes after its last heartbeat)`;
  const recover = service ? `, and ktctl recover ${service.name} -n ${service.namespace} to put service ${service.namespace}/${service.name} back at once` : '';
  return `ktctl could not undo ${failed.join(', ')}: ${clean}${recover}`;
}

/**
 * The transport with every stream counted (src/control/meter.ts) and the control socket that
 * serves the figures; both end with the session. A control socket that cannot be made (a state
 * directory path too long for a unix socket, no permission) costs the figures, not the session.
 */
async function metered(transport: Transport, session: SessionInfo, ctx: TransportContext): Promise<Transport> {
  const meter = new TunnelMeter(transport.tunnel, session, transport.label);
  meter.start();
  ctx.undo.add('the figures', () => meter.stop());
  try {
    const control = await listenControl(() => meter.figures());
    ctx.undo.add(`the control socket ${control.path}`, () => control.close());
    ctx.debug(`live figures on ${control.path}`);
  } catch (error) {
    ctx.log(`no live figures for ktctl status: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { ...transport, tunnel: meter.tunnel, fatal: transport.fatal, network: () => transport.network(), services: transport.services?.bind(transport) };
}

/** What a serving command hands down besides its own options: the signal watch and where it prints. */
export interface CommandIo {
  stop: SignalWatch;
  stdout: Writable;
  log: Logger;
  debug: Logger;
}
