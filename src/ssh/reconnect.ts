import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { DIAL_WAIT_MS, type DialOptions, type Dialer, type UdpSession } from '../dialer.js';
import { AuthError, DialError, DnsQueryError, HostKeyError, InputFileError, TunnelClosedError, type KtctlError } from '../errors.js';
import type { ResumeLimits } from '../protocol/index.js';
import { ResumeClient, type ResumeCounts } from './resume.js';
import type { ForwardHandler, SshTunnel } from './tunnel.js';
import { TunnelUdpSession } from './udp.js';

export interface ReconnectingTunnelOptions {
  /**
   * Makes a new tunnel and connects it (a fresh TCP socket or port-forward stream each time);
   * `signal` aborts when this tunnel is closed, so an attempt under way ends with it.
   */
  connect: (signal: AbortSignal) => Promise<SshTunnel>;
  /** What the tunnel leads to, for log lines ("root@198.18.0.9:22", "shadow pod default/ktctl-x"). */
  label: string;
  /** Back-off between attempts after the first, which is made at once: starts at `initialDelayMs`, doubles up to `maxDelayMs`. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** How long a dial waits for a dropped tunnel to come back before failing with reason 'tunnel' (default DIAL_WAIT_MS). */
  dialWaitMs?: number;
  /** Errors that make retrying pointless (a changed host key, a refused key): the tunnel gives up. */
  isFatal?: (error: unknown) => boolean;
  /**
   * The resume layer's limits (src/protocol/resume.ts): open streams outlive a drop for
   * `windowMs` when the server has the layer. Absent, or a window of 0: streams end with their connection.
   */
  resume?: ResumeLimits;
  /** Debug lines (the resume layer's). */
  debug?: (line: string) => void;
}

export interface ReconnectingTunnel {
  /** A line for the user: dropped, reconnecting, reconnected. */
  on(event: 'log', listener: (line: string) => void): this;
  /** Reconnecting is impossible (fatal error); the tunnel is closed. */
  on(event: 'fatal', listener: (error: KtctlError | Error) => void): this;
  /** A new tunnel is up (after the first one). */
  on(event: 'reconnected', listener: (tunnel: SshTunnel) => void): this;
}

interface Forward {
  bindAddr: string;
  bindPort: number;
  handler: ForwardHandler;
  cancel?: () => Promise<void>;
}

const defaultFatal = (e: unknown): boolean => e instanceof HostKeyError || e instanceof AuthError || e instanceof InputFileError;

/**
 * A `Dialer` that outlives its ssh connections: when the tunnel drops (keepalive timeout, the
 * transport closed, the shadow restarted) it connects again with back-off, re-asks for every remote
 * forward, and holds new dials until the tunnel is back (KT Connect's users had to restart it
 * after every port-forward drop). With the resume layer (a shadow of protocol 2 and `resume`
 * limits: src/ssh/resume.ts) the streams that were open go on after the reconnect; without it
 * (OpenSSH, an older shadow, a window of 0) they end with an error. New ones succeed as soon as the
 * far side is reachable again.
 */
export class ReconnectingTunnel extends EventEmitter implements Dialer {
  readonly #options: Required<Omit<ReconnectingTunnelOptions, 'isFatal' | 'resume' | 'debug'>> & { isFatal: (e: unknown) => boolean };
  readonly #resume: ResumeClient | undefined;
  #tunnel: SshTunnel | undefined;
  /** Resolves when a tunnel is up; replaced while reconnecting. */
  #up: Promise<SshTunnel>;
  #resolveUp!: (t: SshTunnel) => void;
  #closed = false;
  /** Aborted by close(): ends a connection attempt under way. */
  readonly #closing = new AbortController();
  #dropped: Promise<void> = Promise.resolve();
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #forwards = new Set<Forward>();
  #reconnects = 0;
  #udp: Promise<UdpSession | undefined> | undefined;

  constructor(options: ReconnectingTunnelOptions) {
    super();
    this.#options = {
      initialDelayMs: 250,
      maxDelayMs: 2000,
      dialWaitMs: DIAL_WAIT_MS,
      isFatal: defaultFatal,
      ...options,
    };
    this.#up = this.#pending();
    const limits = options.resume;
    const debug = options.debug ?? ((): void => undefined);
    if (limits !== undefined && limits.windowMs > 0) this.#resume = new ResumeClient(limits, (line) => this.emit('log', line), debug);
  }

  /** Streams carried over a reconnect, and those lost (undefined without the resume layer). */
  get resumeCounts(): ResumeCounts | undefined {
    return this.#resume?.counts;
  }

  #pending(): Promise<SshTunnel> {
    const p = new Promise<SshTunnel>((resolve) => (this.#resolveUp = resolve));
    p.catch(() => undefined);
    return p;
  }

  /** The tunnel in use now (undefined while reconnecting). */
  get current(): SshTunnel | undefined {
    return this.#tunnel;
  }

  /** How many times the tunnel came back after a drop (for the live figures, src/control). */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** The round trip of the tunnel in use now, in ms (SshTunnel.ping); rejects while reconnecting. */
  ping(timeoutMs?: number): Promise<number> {
    const t = this.#tunnel;
    if (!t) return Promise.reject(new TunnelClosedError(`the tunnel to ${this.#options.label} is down`));
    return t.ping(timeoutMs);
  }

  /** First connection: its errors go to the caller (nothing to reconnect to yet). */
  async start(): Promise<SshTunnel> {
    const tunnel = await this.#options.connect(this.#closing.signal);
    await this.#resume?.connect(tunnel);
    this.#adopt(tunnel);
    return tunnel;
  }

  /** `start()`, or undefined as soon as `signal` aborts (the user pressed Ctrl-C while connecting). */
  startUnlessAborted(signal: AbortSignal): Promise<SshTunnel | undefined> {
    if (signal.aborted) return Promise.resolve(undefined);
    return Promise.race([this.start(), new Promise<undefined>((resolve) => signal.addEventListener('abort', () => resolve(undefined), { once: true }))]);
  }

  #adopt(tunnel: SshTunnel): void {
    if (this.#closed) {
      void tunnel.close();
      return;
    }
    if (!tunnel.ready) {
      // It dropped while being set up (re-attaching streams takes round trips): try again, with
      // the dials that wait for a tunnel still waiting.
      this.#resume?.detachAll();
      this.#retry(this.#options.initialDelayMs, 1);
      return;
    }
    this.#tunnel = tunnel;
    // One promise per tunnel for every dial that waits on its drop (one listener, not one each).
    this.#dropped = new Promise<void>((resolve) =>
      tunnel.once('close', (error) => {
        resolve();
        this.#onDrop(tunnel, error);
      }),
    );
    this.#resolveUp(tunnel);
  }

  #onDrop(tunnel: SshTunnel, error: TunnelClosedError | undefined): void {
    if (this.#closed || this.#tunnel !== tunnel) return;
    this.#tunnel = undefined;
    this.#up = this.#pending();
    for (const f of this.#forwards) f.cancel = undefined;
    this.#resume?.detachAll();
    this.emit('log', `the tunnel to ${this.#options.label} dropped (${error?.message ?? 'closed by the server'}); reconnecting`);
    // The first attempt at once: a cut transport (the commonest drop) is back within a round trip,
    // and open streams wait for it (the resume layer); the back-off starts with the second.
    this.#retry(0, 1);
  }

  /** The delay after one of `delay`: doubled, at least initialDelayMs, at most maxDelayMs. */
  #next(delay: number): number {
    return Math.min(Math.max(delay * 2, this.#options.initialDelayMs), this.#options.maxDelayMs);
  }

  #retry(delay: number, attempt: number): void {
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#attempt(delay, attempt);
    }, delay);
  }

  async #attempt(delay: number, attempt: number): Promise<void> {
    if (this.#closed) return;
    let tunnel: SshTunnel;
    try {
      tunnel = await this.#options.connect(this.#closing.signal);
    } catch (error) {
      if (this.#closed) return;
      if (this.#options.isFatal(error)) {
        this.emit('log', `cannot reconnect to ${this.#options.label}: ${(error as Error).message}`);
        this.#closed = true;
        this.emit('fatal', error as Error);
        return;
      }
      if (attempt === 1 || attempt % 10 === 0) {
        this.emit('log', `still reconnecting to ${this.#options.label} (attempt ${attempt}: ${(error as Error).message})`);
      }
      this.#retry(this.#next(delay), attempt + 1);
      return;
    }
    if (this.#closed) {
      void tunnel.close();
      return;
    }
    try {
      // Streams first: what the shadow held is moving again before new connections arrive.
      await this.#resume?.connect(tunnel);
      for (const f of this.#forwards) {
        const rf = await tunnel.forwardIn(f.bindAddr, f.bindPort, f.handler);
        f.cancel = () => rf.cancel();
      }
    } catch (error) {
      // The far side refused a forward it accepted before (its port is taken now): try again later.
      this.emit('log', `reconnected to ${this.#options.label}, but a remote forward failed (${(error as Error).message}); retrying`);
      void tunnel.close();
      this.#retry(this.#next(delay), attempt + 1);
      return;
    }
    this.emit('log', `reconnected to ${this.#options.label}`);
    this.#reconnects++;
    this.#adopt(tunnel);
    this.emit('reconnected', tunnel);
  }

  /** Waits for a tunnel up to `dialWaitMs`; undefined when none came (or the tunnel is closed). */
  async #waitUp(signal: AbortSignal | undefined): Promise<SshTunnel | undefined> {
    if (this.#tunnel) return this.#tunnel;
    if (this.#closed) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), this.#options.dialWaitMs);
      signal?.addEventListener('abort', () => resolve(undefined), { once: true });
    });
    try {
      return await Promise.race([this.#up, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async dial(host: string, port: number, options: DialOptions = {}): Promise<Duplex> {
    const tunnel = await this.#waitUp(options.signal);
    if (!tunnel) {
      throw new DialError('tunnel', host, port, this.#closed ? 'the tunnel is closed' : `the tunnel to ${this.#options.label} is down and did not come back within ${this.#options.dialWaitMs / 1000} s`);
    }
    try {
      return await this.#dialOn(tunnel, host, port, options);
    } catch (error) {
      // The tunnel died under this dial before anyone noticed the drop: wait for the next one and
      // try once more, so a dial racing a reconnect does not fail.
      if (!(error instanceof DialError) || error.reason !== 'tunnel' || this.#closed || options.signal?.aborted) throw error;
      if (this.#tunnel === tunnel) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.#dropped, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.dialWaitMs)))]);
        clearTimeout(timer);
      }
      const next = await this.#waitUp(options.signal);
      if (!next) throw error;
      return this.#dialOn(next, host, port, options);
    }
  }

  #dialOn(tunnel: SshTunnel, host: string, port: number, options: DialOptions): Promise<Duplex> {
    const resume = this.#resume;
    return resume !== undefined && resume.active(tunnel) ? resume.open(tunnel, host, port, options) : tunnel.dial(host, port, options);
  }

  async dnsQuery(message: Buffer, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const tunnel = await this.#waitUp(options.signal);
    if (!tunnel) throw new DnsQueryError('tunnel', `the tunnel to ${this.#options.label} is down`);
    return tunnel.dnsQuery(message, options);
  }

  /**
   * UDP over whichever tunnel is up: one session whose flows open again on the next tunnel's
   * channel after a drop. Undefined when the first tunnel's server has no UDP subsystem.
   */
  udp(): Promise<UdpSession | undefined> {
    this.#udp ??= (async () => {
      const tunnel = await this.#waitUp(undefined);
      const first = await tunnel?.udpChannel();
      if (first === undefined) {
        // Refused: no UDP for this run. Down meanwhile: ask again next time.
        if (tunnel === undefined || !tunnel.udpUnsupported) this.#udp = undefined;
        return undefined;
      }
      return new TunnelUdpSession(async () => this.#tunnel?.udpChannel(), first);
    })();
    return this.#udp;
  }

  /** A remote forward that is asked for again on every new tunnel. */
  async forwardIn(bindAddr: string, bindPort: number, given: ForwardHandler): Promise<{ port: number; cancel(): Promise<void> }> {
    const resume = this.#resume;
    const handler: ForwardHandler =
      resume === undefined
        ? given
        : (channel, info) => {
            const adopted = resume.adopt(channel, info.srcIP);
            given(adopted.stream, { ...info, srcIP: adopted.srcIP });
          };
    const tunnel = this.#tunnel ?? (await this.#waitUp(undefined));
    if (!tunnel) throw new TunnelClosedError(`the tunnel to ${this.#options.label} is down`);
    const rf = await tunnel.forwardIn(bindAddr, bindPort, handler);
    // After a reconnect ask for the same port the server gave us, so the far side's address holds.
    const forward: Forward = { bindAddr, bindPort: rf.port, handler, cancel: () => rf.cancel() };
    this.#forwards.add(forward);
    return {
      port: rf.port,
      cancel: async () => {
        this.#forwards.delete(forward);
        await forward.cancel?.();
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#forwards.clear();
    this.#resume?.close();
    const t = this.#tunnel;
    this.#tunnel = undefined;
    await t?.close();
  }
}
