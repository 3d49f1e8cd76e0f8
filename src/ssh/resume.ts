/**
 * The client's end of the resume layer (src/protocol/resume.ts): one `ResumeClient` per
 * ReconnectingTunnel keeps the session id, the streams, the ACKs and the resume window. Each new
 * ssh connection is offered to `connect()`: it opens the control channel (or learns the server
 * has none: an OpenSSH server, an older shadow) and re-attaches every stream the shadow still holds.
 */
import { randomBytes } from 'node:crypto';
import type { ClientChannel } from 'ssh2';
import type { Duplex } from 'node:stream';
import type { DialOptions } from '../dialer.js';
import {
  ATTACH_COMPLETED,
  ATTACH_REFUSED,
  ControlDecoder,
  ControlWriter,
  PROTOCOL_VERSION,
  RESUME_SINCE_VERSION,
  RESUME_SUBSYSTEM,
  ResumableStream,
  ResumeBudget,
  attachOrigin,
  encodeFrame,
  parseStreamOrigin,
  streamOrigin,
  type ControlFrame,
  type ResumeLimits,
  type StreamChannel,
  type StreamHost,
} from '../protocol/index.js';
import type { SshTunnel } from './tunnel.js';

/** How long the shadow may take to answer HELLO, and an attach. */
const ANSWER_MS = 5000;

/** What the resume layer counted (the live figures, src/control). */
export interface ResumeCounts {
  /** streams carried over a reconnect */
  resumed: number;
  /** streams that could not be (window over, the shadow lost them, a bound exceeded) */
  lost: number;
}

interface Control {
  tunnel: SshTunnel;
  channel: ClientChannel;
  /** ATTACHED frames awaited, by stream id */
  attached: Map<number, (frame: { offset: number; fin: boolean } | Error) => void>;
}

export class ResumeClient implements StreamHost {
  readonly session = randomBytes(16).toString('hex');
  readonly budget: ResumeBudget;
  readonly streamBytes: number;
  readonly #limits: ResumeLimits;
  readonly #streams = new Map<number, ResumableStream>();
  #nextId = 1;
  #control: Control | undefined;
  readonly #writer = new ControlWriter();
  #windowTimer: NodeJS.Timeout | undefined;
  #said = false;
  readonly counts: ResumeCounts = { resumed: 0, lost: 0 };
  readonly #log: (line: string) => void;
  readonly #debug: (line: string) => void;

  constructor(limits: ResumeLimits, log: (line: string) => void, debug: (line: string) => void) {
    this.#limits = limits;
    this.budget = new ResumeBudget(limits.totalBytes);
    this.streamBytes = limits.streamBytes;
    this.#log = log;
    this.#debug = debug;
  }

  /** The tunnel's streams are resumable now. */
  active(tunnel: SshTunnel): boolean {
    return this.#control?.tunnel === tunnel;
  }

  /** Streams held now (attached or waiting for the tunnel). */
  get size(): number {
    return this.#streams.size;
  }

  /**
   * A new ssh connection: opens the control channel, says HELLO, and re-attaches what the shadow
   * still holds; streams it no longer has are reset. Resolves false when the server has no resume
   * layer (said once: streams then end with the connection, as before).
   */
  async connect(tunnel: SshTunnel): Promise<boolean> {
    // At once when it drops, before ssh2 ends its channels: their end is not the peer's FIN.
    tunnel.once('close', () => this.detachAll());
    const software = tunnel.serverSoftware;
    const version = /^ktctl-shadow_(\d+)/.exec(software);
    let channel: ClientChannel | undefined;
    if (version !== null && Number(version[1]) >= RESUME_SINCE_VERSION) channel = await tunnel.subsystem(RESUME_SUBSYSTEM);
    if (!tunnel.ready) return false; // it dropped meanwhile: the streams wait for the next one
    if (channel === undefined) {
      if (!this.#said) {
        this.#said = true;
        const what = version !== null ? `an older shadow (${software})` : `not a ktctl shadow (${software || 'unknown software'})`;
        this.#log(`open connections will not survive a dropped tunnel: the ssh server is ${what}, without ktctl's resume layer`);
      }
      this.#failAll('the new ssh server has no resume layer');
      return false;
    }
    const control: Control = { tunnel, channel, attached: new Map() };
    const welcome = await this.#hello(control);
    if (welcome === undefined) {
      channel.close();
      if (!tunnel.ready) return false;
      this.#failAll('the shadow did not answer the resume HELLO');
      return false;
    }
    this.#control = control;
    this.#writer.channel = channel;
    clearTimeout(this.#windowTimer);
    this.#windowTimer = undefined;
    const held = new Set(welcome.streams);
    const attaching: Array<Promise<void>> = [];
    for (const stream of [...this.#streams.values()]) {
      if (stream.attached) continue;
      if (!held.has(stream.id)) {
        this.counts.lost++;
        stream.fail('the shadow no longer has this stream (it restarted, or its resume window ran out)', false);
        continue;
      }
      attaching.push(this.#attach(control, stream));
    }
    await Promise.all(attaching);
    return true;
  }

  async #hello(control: Control): Promise<{ streams: number[] } | undefined> {
    const decoder = new ControlDecoder();
    let onWelcome!: (w: { streams: number[] } | undefined) => void;
    const welcome = new Promise<{ streams: number[] } | undefined>((resolve) => (onWelcome = resolve));
    const timer = setTimeout(() => onWelcome(undefined), ANSWER_MS);
    control.channel.on('data', (chunk: Buffer) => {
      let frames: ControlFrame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.#debug(`resume: the shadow sent a broken control frame (${(err as Error).message}); closing the control channel`);
        control.channel.close();
        return;
      }
      for (const f of frames) {
        if (f.type === 'welcome') onWelcome(f);
        else this.#onFrame(control, f);
      }
    });
    control.channel.on('error', () => undefined);
    control.channel.on('close', () => {
      onWelcome(undefined);
      for (const waiter of control.attached.values()) waiter(new Error('the control channel closed'));
      control.attached.clear();
      if (this.#control === control) {
        this.#control = undefined;
        this.#writer.channel = undefined;
      }
    });
    const held = [...this.#streams.values()].map((s) => s.id);
    control.channel.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, session: this.session, limits: this.#limits, streams: held }));
    const w = await welcome;
    clearTimeout(timer);
    return w;
  }

  #onFrame(control: Control, f: ControlFrame): void {
    switch (f.type) {
      case 'ack':
        this.#streams.get(f.id)?.confirm(f.offset, f.fin);
        break;
      case 'reset':
        this.#streams.get(f.id)?.fail(`the shadow reset it: ${f.reason}`, false);
        break;
      case 'attached': {
        const waiter = control.attached.get(f.id);
        control.attached.delete(f.id);
        waiter?.(f);
        break;
      }
      default:
        break;
    }
  }

  async #attach(control: Control, stream: ResumableStream): Promise<void> {
    const answer = new Promise<{ offset: number; fin: boolean } | Error>((resolve) => {
      control.attached.set(stream.id, resolve);
      setTimeout(() => resolve(new Error(`no ATTACHED within ${ANSWER_MS / 1000} s`)), ANSWER_MS).unref();
    });
    let channel: Duplex;
    try {
      channel = await control.tunnel.dial('ktctl-resume', stream.id, { originHost: attachOrigin(this.session, stream.id, stream.received, stream.peerFin) });
    } catch (err) {
      control.attached.delete(stream.id);
      if (!control.tunnel.ready) return; // it dropped meanwhile: the stream waits for the next one
      const text = openFailureText(err);
      if (text === `${ATTACH_REFUSED}${ATTACH_COMPLETED}`) {
        // The shadow had our FIN and we confirmed its: nothing was left to move.
        stream.peerCompleted();
        this.counts.resumed++;
        return;
      }
      this.counts.lost++;
      stream.fail(`re-attaching failed: ${text || (err as Error).message}`, false);
      return;
    }
    const got = await answer;
    if (got instanceof Error) {
      channel.destroy();
      if (!control.tunnel.ready) return;
      this.counts.lost++;
      stream.fail(`re-attaching failed: ${got.message}`, false);
      return;
    }
    this.counts.resumed++;
    this.#debug(`resume: stream ${stream.id} re-attached (the shadow had ${got.offset} bytes${got.fin ? ' and our FIN' : ''}, we had ${stream.received})`);
    stream.attach(channel as unknown as StreamChannel, got.offset, got.fin);
  }

  /** A new resumable stream to host:port over `tunnel` (which must be `active`). */
  async open(tunnel: SshTunnel, host: string, port: number, options: DialOptions): Promise<ResumableStream> {
    const id = this.#nextId;
    this.#nextId += 2;
    const origin = options.originHost === undefined ? undefined : `${options.originHost}`;
    const channel = await tunnel.dial(host, port, { ...options, originHost: streamOrigin(this.session, id, origin) });
    const stream = new ResumableStream(id, this);
    this.#streams.set(id, stream);
    stream.attach(channel as unknown as StreamChannel, 0);
    return stream;
  }

  /**
   * A `forwarded-tcpip` channel from the shadow: a resumable stream when its originator names our
   * session, with the real originator back in `srcIP`; else the channel itself.
   */
  adopt(channel: Duplex, srcIP: string): { stream: Duplex; srcIP: string } {
    const named = parseStreamOrigin(srcIP);
    if (named === undefined || named.session !== this.session) return { stream: channel, srcIP };
    const stream = new ResumableStream(named.id, this);
    this.#streams.set(named.id, stream);
    stream.attach(channel as unknown as StreamChannel, 0);
    return { stream, srcIP: named.origin };
  }

  /** The ssh connection dropped: every stream waits for the next one, for the resume window. */
  detachAll(): void {
    this.#control = undefined;
    this.#writer.channel = undefined;
    if (this.#streams.size === 0) return;
    for (const s of this.#streams.values()) s.detach();
    if (this.#windowTimer !== undefined) return; // the window runs from the first drop, not the last attempt
    this.#debug(`resume: ${this.#streams.size} stream(s) wait for the tunnel (${this.#limits.windowMs / 1000} s)`);
    this.#windowTimer = setTimeout(() => {
      this.#windowTimer = undefined;
      this.#failAll(`the tunnel did not come back within the resume window (${this.#limits.windowMs / 1000} s)`);
    }, this.#limits.windowMs);
    this.#windowTimer.unref();
  }

  /** Ends every stream (the tunnel is closed for good). */
  close(): void {
    clearTimeout(this.#windowTimer);
    this.#writer.stop();
    for (const s of [...this.#streams.values()]) s.fail('ktctl is stopping', false);
  }

  #failAll(reason: string): void {
    for (const s of [...this.#streams.values()]) {
      if (s.attached) continue;
      this.counts.lost++;
      s.fail(reason, false);
    }
  }

  // ---- StreamHost

  ackSoon(stream: ResumableStream, now: boolean): void {
    this.#writer.ackSoon(stream, now);
  }

  sendReset(stream: ResumableStream, reason: string): void {
    this.#writer.reset(stream, reason);
  }

  release(stream: ResumableStream): void {
    this.#streams.delete(stream.id);
    this.#writer.forget(stream);
  }

  debug(line: string): void {
    this.#debug(`resume: ${line}`);
  }
}

function openFailureText(err: unknown): string {
  const cause: unknown = err instanceof Error ? err.cause : undefined;
  const message = cause instanceof Error ? cause.message : err instanceof Error ? err.message : '';
  return message.replace(/^\(SSH\) Channel open failure:\s*/, '');
}
