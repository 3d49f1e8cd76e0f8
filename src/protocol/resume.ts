/**
 * The resume layer (protocol version 2): byte streams between ktctl and its shadow that outlive the
 * ssh connection they started on.
 *
 * ## On the wire
 * - A **control channel** per ssh connection: a session channel with the subsystem RESUME_SUBSYSTEM,
 *   opened by the client right after authentication. It carries frames of a 4-byte big-endian
 *   length, then a 1-byte type, then the body (ControlFrame below). The client's first frame is
 *   HELLO (its session id, limits, and the ids of the streams it still holds); the shadow answers
 *   WELCOME (the limits it applies, and the ids of that session it still holds). After that both
 *   ends send ACK (a stream's received byte count, and whether its FIN came), RESET (a stream is
 *   given up, with a reason) and the shadow sends ATTACHED (its received count for a stream being
 *   re-attached).
 * - **Each stream is an ordinary channel** (`direct-tcpip` from the client, `forwarded-tcpip` from the
 *   shadow), raw bytes as before, so data costs nothing extra; only its originator address is
 *   `ktctl-stream:<session>:<id>[:<origin>]` (STREAM_ORIGIN) to name it. Ids are odd when the client
 *   opened the stream, even when the shadow did. The client re-attaches a stream after a reconnect
 *   with a `direct-tcpip` whose originator is `ktctl-attach:<session>:<id>:<received>` (ATTACH_ORIGIN):
 *   the shadow sends ATTACHED with its own received count, then accepts the channel, and each end
 *   resends what it holds past the count the other end gave. A shadow that no longer has the stream
 *   refuses the channel, saying why.
 *
 * ## The guarantees
 * Each end keeps every byte it sent until the other end's ACK covers it (bounded per stream and in
 * total: a writer waits when a bound is reached, which is the end-to-end flow control); FIN counts
 * as one more position, so a half-close survives a drop too. When the connection drops, both ends
 * keep their streams for the resume window; the far sockets keep being read only until the bounds
 * are reached. Bytes are neither lost nor duplicated: a receiver counts what it took from channels,
 * and a resend starts exactly at that count. A stream is finished when its end received the peer's
 * FIN and the peer acknowledged its own; a stream that cannot be resumed (window over, bound
 * exceeded, the peer no longer has it) is reset on both ends with its reason.
 *
 * This module is the state machine both ends share (ResumableStream, ResumeBudget) and the framing;
 * the client (src/ssh/resume.ts) and the shadow (src/shadow/resume.ts) add how channels are opened.
 */
import { Duplex } from 'node:stream';

/** The control channel's subsystem name. */
export const RESUME_SUBSYSTEM = 'ktctl-resume@ktctl.dev';
/** Originator address prefix of a new resumable stream's channel. */
export const STREAM_ORIGIN = 'ktctl-stream:';
/** Originator address prefix of a channel that re-attaches a held stream. */
export const ATTACH_ORIGIN = 'ktctl-attach:';
/** Open-failure description of an attach the shadow cannot serve: then `<reason>`. */
export const ATTACH_REFUSED = 'ktctl-resume: ';
/** The shadow finished the stream (it got everything): an attach refused with this is no loss. */
export const ATTACH_COMPLETED = 'completed';

/** The first protocol version with the resume layer (SHADOW_IDENT `ktctl-shadow_<version>`). */
export const RESUME_SINCE_VERSION = 2;

export interface ResumeLimits {
  /** How long both ends keep a dropped connection's streams (ms); 0 turns the layer off. */
  windowMs: number;
  /** Bytes a stream keeps unconfirmed in each direction before its writer waits. */
  streamBytes: number;
  /** Bytes all streams of one end keep unconfirmed together. */
  totalBytes: number;
}

/**
 * The defaults: 60 s (the issue's), 4 MiB per stream (ssh2's 2 MiB channel window plus the ACKs on
 * their way: a stream never waits for ACKs while the window is open), 256 MiB in total (64 streams at
 * their bound; more streams share it).
 */
export const RESUME_DEFAULTS: ResumeLimits = { windowMs: 60_000, streamBytes: 4 << 20, totalBytes: 256 << 20 };

/** What the shadow accepts at most, whatever a client asks for. */
export const RESUME_MAX: ResumeLimits = { windowMs: 15 * 60_000, streamBytes: 64 << 20, totalBytes: 1 << 30 };

/**
 * Acknowledge after this many received bytes (or a quarter of the stream bound, when smaller: the
 * sender must never wait long for room), or ACK_DELAY_MS after the first unacknowledged one.
 * Measured (bench/resume.ts): every ACK is an ssh packet of its own to encrypt and send, so fewer is cheaper.
 */
export const ACK_EVERY = 1 << 20;

/** The ACK step for a stream bound. */
export function ackEvery(streamBytes: number): number {
  return Math.min(ACK_EVERY, Math.max(16 << 10, streamBytes >> 2));
}
export const ACK_DELAY_MS = 5;

/** A writer that ignores backpressure and pushes this many times the stream bound is cut off. */
const HARD_LIMIT_FACTOR = 2;

export const FrameType = { HELLO: 1, WELCOME: 2, ACK: 3, RESET: 4, ATTACHED: 5 } as const;

export type ControlFrame =
  | { type: 'hello'; version: number; session: string; limits: ResumeLimits; streams: number[] }
  | { type: 'welcome'; version: number; limits: ResumeLimits; streams: number[] }
  | { type: 'ack'; id: number; offset: number; fin: boolean }
  | { type: 'reset'; id: number; reason: string }
  | { type: 'attached'; id: number; offset: number; fin: boolean };

/** A session id: 16 random bytes, hex (an unguessable name: a shared shadow serves several clients). */
export const SESSION_ID = /^[0-9a-f]{32}$/;

const MAX_FRAME = 1 << 20;

export function encodeFrame(frame: ControlFrame): Buffer {
  let body: Buffer;
  switch (frame.type) {
    case 'hello':
    case 'welcome': {
      const session = frame.type === 'hello' ? Buffer.from(frame.session, 'hex') : Buffer.alloc(0);
      body = Buffer.alloc(2 + 1 + session.length + 12 + 4 + 4 * frame.streams.length);
      let o = body.writeUInt8(frame.type === 'hello' ? FrameType.HELLO : FrameType.WELCOME, 0);
      o = body.writeUInt8(frame.version, o);
      o = body.writeUInt8(session.length, o);
      o += session.copy(body, o);
      o = body.writeUInt32BE(frame.limits.windowMs, o);
      o = body.writeUInt32BE(frame.limits.streamBytes, o);
      o = body.writeUInt32BE(frame.limits.totalBytes, o);
      o = body.writeUInt32BE(frame.streams.length, o);
      for (const id of frame.streams) o = body.writeUInt32BE(id, o);
      body = body.subarray(0, o);
      break;
    }
    case 'ack':
    case 'attached':
      body = Buffer.alloc(1 + 4 + 8 + 1);
      body.writeUInt8(frame.type === 'ack' ? FrameType.ACK : FrameType.ATTACHED, 0);
      body.writeUInt32BE(frame.id, 1);
      body.writeBigUInt64BE(BigInt(frame.offset), 5);
      body.writeUInt8(frame.fin ? 1 : 0, 13);
      break;
    case 'reset': {
      const reason = Buffer.from(frame.reason.slice(0, 512), 'utf8');
      body = Buffer.alloc(1 + 4 + reason.length);
      body.writeUInt8(FrameType.RESET, 0);
      body.writeUInt32BE(frame.id, 1);
      reason.copy(body, 5);
      break;
    }
  }
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

/** Cuts the control channel's byte stream into frames; throws a RangeError on bytes that are not one. */
export class ControlDecoder {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): ControlFrame[] {
    let buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const out: ControlFrame[] = [];
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME) throw new RangeError(`a control frame of ${len} bytes`);
      if (buf.length < 4 + len) break;
      out.push(decodeBody(buf.subarray(4, 4 + len)));
      buf = buf.subarray(4 + len);
    }
    this.#pending = Buffer.from(buf);
    return out;
  }
}

function decodeBody(b: Buffer): ControlFrame {
  const need = (n: number): void => {
    if (b.length < n) throw new RangeError(`a control frame of type ${b[0]} is ${b.length} bytes, shorter than ${n}`);
  };
  need(1);
  switch (b[0]) {
    case FrameType.HELLO:
    case FrameType.WELCOME: {
      need(3);
      const version = b.readUInt8(1);
      const sl = b.readUInt8(2);
      need(3 + sl + 16);
      const session = b.subarray(3, 3 + sl).toString('hex');
      let o = 3 + sl;
      const limits = { windowMs: b.readUInt32BE(o), streamBytes: b.readUInt32BE(o + 4), totalBytes: b.readUInt32BE(o + 8) };
      const n = b.readUInt32BE(o + 12);
      o += 16;
      need(o + 4 * n);
      const streams: number[] = [];
      for (let i = 0; i < n; i++) streams.push(b.readUInt32BE(o + 4 * i));
      return b[0] === FrameType.HELLO ? { type: 'hello', version, session, limits, streams } : { type: 'welcome', version, limits, streams };
    }
    case FrameType.ACK:
    case FrameType.ATTACHED: {
      need(14);
      const id = b.readUInt32BE(1);
      const offset = Number(b.readBigUInt64BE(5));
      const fin = b.readUInt8(13) === 1;
      return b[0] === FrameType.ACK ? { type: 'ack', id, offset, fin } : { type: 'attached', id, offset, fin };
    }
    case FrameType.RESET:
      need(5);
      return { type: 'reset', id: b.readUInt32BE(1), reason: b.subarray(5).toString('utf8') };
    default:
      throw new RangeError(`unknown control frame type ${b[0]}`);
  }
}

/** `ktctl-stream:<session>:<id>[:<origin>]` */
export function streamOrigin(session: string, id: number, origin?: string): string {
  return `${STREAM_ORIGIN}${session}:${id}${origin === undefined ? '' : `:${origin}`}`;
}

export function parseStreamOrigin(text: string): { session: string; id: number; origin: string } | undefined {
  if (!text.startsWith(STREAM_ORIGIN)) return undefined;
  const m = /^([0-9a-f]{32}):(\d{1,10})(?::(.*))?$/.exec(text.slice(STREAM_ORIGIN.length));
  if (!m) return undefined;
  const id = Number(m[2]);
  return id > 0 && id <= 0xffffffff ? { session: m[1]!, id, origin: m[3] ?? '' } : undefined;
}

/** `ktctl-attach:<session>:<id>:<received>[:fin]` */
export function attachOrigin(session: string, id: number, received: number, fin: boolean): string {
  return `${ATTACH_ORIGIN}${session}:${id}:${received}${fin ? ':fin' : ''}`;
}

export function parseAttachOrigin(text: string): { session: string; id: number; received: number; fin: boolean } | undefined {
  if (!text.startsWith(ATTACH_ORIGIN)) return undefined;
  const m = /^([0-9a-f]{32}):(\d{1,10}):(\d{1,16})(:fin)?$/.exec(text.slice(ATTACH_ORIGIN.length));
  if (!m) return undefined;
  const received = Number(m[3]);
  return Number.isSafeInteger(received) ? { session: m[1]!, id: Number(m[2]), received, fin: m[4] !== undefined } : undefined;
}

/** The bytes all streams of one end keep unconfirmed, and the streams that wait for room. */
export class ResumeBudget {
  used = 0;
  readonly #waiting = new Set<ResumableStream>();

  constructor(readonly total: number) {}

  get full(): boolean {
    return this.used >= this.total;
  }

  take(n: number): void {
    this.used += n;
  }

  /** Gives bytes back and lets waiting writers on (each checks its own bound again). */
  give(n: number): void {
    this.used -= n;
    if (this.#waiting.size === 0 || this.full) return;
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const s of waiting) s.budgetFreed();
  }

  wait(s: ResumableStream): void {
    this.#waiting.add(s);
  }

  forget(s: ResumableStream): void {
    this.#waiting.delete(s);
  }
}

/**
 * An end's writer of ACK and RESET frames on its current control channel: ACKs are batched (one
 * timer of ACK_DELAY_MS for all streams, or at once when asked); with no control channel nothing
 * is sent (the counts go with the next attach, the resets with the next HELLO/WELCOME).
 */
export class ControlWriter {
  channel: { write(frame: Buffer): unknown } | undefined;
  readonly #dirty = new Set<ResumableStream>();
  #timer: NodeJS.Timeout | undefined;

  ackSoon(stream: ResumableStream, now: boolean): void {
    this.#dirty.add(stream);
    if (now) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), ACK_DELAY_MS);
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const channel = this.channel;
    if (channel !== undefined) {
      // One write for all of them: one ssh packet, not one per stream.
      const frames: Buffer[] = [];
      for (const s of this.#dirty) {
        const ack = s.takeAck();
        if (ack !== undefined) frames.push(encodeFrame({ type: 'ack', id: s.id, ...ack }));
      }
      if (frames.length > 0) channel.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
    }
    this.#dirty.clear();
  }

  reset(stream: ResumableStream, reason: string): void {
    this.channel?.write(encodeFrame({ type: 'reset', id: stream.id, reason }));
  }

  forget(stream: ResumableStream): void {
    this.#dirty.delete(stream);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dirty.clear();
  }
}

/** The channel a stream rides: ssh2's ClientChannel and ServerChannel both are one. */
export interface StreamChannel extends Duplex {
  /** Sends EOF only (a ServerChannel's `end()` would also close). */
  eof(): void;
  /** Sends CLOSE. */
  close(): void;
}

/** What a stream needs from its end of the control channel. */
export interface StreamHost {
  readonly budget: ResumeBudget;
  readonly streamBytes: number;
  /** Sends an ACK for the stream soon (the host batches them); `now` when it must not wait. */
  ackSoon(stream: ResumableStream, now: boolean): void;
  /** Tells the peer the stream is given up (when connected; else the next HELLO/WELCOME leaves it out). */
  sendReset(stream: ResumableStream, reason: string): void;
  /** The stream is finished or reset: forget it. */
  release(stream: ResumableStream, outcome: 'done' | 'reset'): void;
  /** A line for the debug log. */
  debug(line: string): void;
}

export class StreamResetError extends Error {
  readonly code = 'ERESUMERESET';
}

const EMPTY = Buffer.alloc(0);

/**
 * One end of a resumable stream, as a Duplex to whoever uses it (the netstack, the proxy, a far
 * socket in the shadow): what it writes is sent on the current channel and kept until the peer
 * confirms it; what the channel brings is handed on and counted. Between channels (`detach`, then
 * `attach` with the peer's count) it only keeps what it is given, up to its bound.
 *
 * A writer's callback waits while the stream keeps its bound (or the budget is spent) or the
 * channel's window is full: backpressure reaches the writer as before, from the far reader.
 */
export class ResumableStream extends Duplex {
  /** Chunks written and not yet confirmed, oldest first; `base` is the offset of the first byte. */
  readonly #kept: Buffer[] = [];
  #keptBytes = 0;
  #base = 0;
  /** Bytes written by our user (the next offset). */
  #written = 0;
  /** Our user ended its side; the peer confirmed our FIN. */
  #finWritten = false;
  #finConfirmed = false;
  #eofSent = false;
  /** Bytes received from channels and handed on; the peer's FIN came. */
  #received = 0;
  #acked = 0;
  #peerFin = false;
  #finAcked = false;
  #channel: StreamChannel | undefined;
  #pendingWrite: ((error?: Error | null) => void) | undefined;
  #readWanted = true;
  #state: 'open' | 'done' | 'reset' = 'open';
  readonly #host: StreamHost;
  readonly #ackEvery: number;

  /** Writers must not reuse a chunk after its callback: the stream keeps it (src/dialer.ts). */
  readonly retainsWrites = true;

  constructor(
    readonly id: number,
    host: StreamHost,
  ) {
    // Not autoDestroy: both sides ending is not the end here, the peer's confirmation of our FIN is.
    super({ allowHalfOpen: true, autoDestroy: false, highWaterMark: 64 << 10 });
    this.#host = host;
    this.#ackEvery = ackEvery(host.streamBytes);
  }

  get attached(): boolean {
    return this.#channel !== undefined;
  }

  /** What we received (and will not need again): the count a re-attach gives the peer. */
  get received(): number {
    return this.#received;
  }

  get peerFin(): boolean {
    return this.#peerFin;
  }

  /** Bytes kept for the peer now. */
  get keptBytes(): number {
    return this.#keptBytes;
  }

  get finished(): boolean {
    return this.#state !== 'open';
  }

  /** The ACK to send now (and marks it sent), or undefined when nothing is new. */
  takeAck(): { offset: number; fin: boolean } | undefined {
    if (this.#received === this.#acked && this.#peerFin === this.#finAcked) return undefined;
    this.#acked = this.#received;
    this.#finAcked = this.#peerFin;
    return { offset: this.#received, fin: this.#peerFin };
  }

  /**
   * Rides `channel` from now on; `peerReceived` is the count the peer gave (0 for a new stream):
   * what we kept past it is sent again, then our FIN if we had one.
   */
  attach(channel: StreamChannel, peerReceived: number, peerFinReceived = false): void {
    if (this.#state !== 'open') {
      channel.close();
      return;
    }
    if (peerReceived < this.#base || peerReceived > this.#written) {
      this.fail(`the peer confirmed byte ${peerReceived}, outside the ${this.#base}..${this.#written} this end keeps`);
      channel.close();
      return;
    }
    this.#channel?.close();
    this.#confirm(peerReceived, peerFinReceived);
    this.#channel = channel;
    channel.on('data', (chunk: Buffer) => this.#onData(channel, chunk));
    channel.on('end', () => this.#onEof(channel));
    channel.on('drain', () => this.#maybeLetWriterOn());
    channel.on('error', () => undefined); // a dying connection: its close says the rest
    channel.on('close', () => this.#onChannelClose(channel));
    this.#eofSent = false;
    for (const chunk of this.#kept) channel.write(chunk);
    if (this.#finWritten && !this.#finConfirmed) this.#sendEof(channel);
    if (!this.#readWanted) channel.pause();
    this.#maybeLetWriterOn();
    this.#maybeDone();
  }

  /** The connection under the channel is gone: keep everything for the next `attach`. */
  detach(): void {
    const ch = this.#channel;
    if (ch === undefined) return;
    this.#channel = undefined;
    ch.removeAllListeners('data');
    ch.removeAllListeners('end');
    ch.removeAllListeners('drain');
    ch.removeAllListeners('close');
    ch.on('error', () => undefined);
    this.#maybeLetWriterOn();
  }

  /** The peer's ACK. */
  confirm(offset: number, fin: boolean): void {
    if (this.#state !== 'open') return;
    if (offset < this.#base || offset > this.#written || (fin && !this.#finWritten)) {
      this.fail(`the peer confirmed byte ${offset}${fin ? ' and a FIN' : ''}, outside what this end sent (${this.#base}..${this.#written})`);
      return;
    }
    this.#confirm(offset, fin);
    this.#maybeLetWriterOn();
    this.#maybeDone();
  }

  #confirm(offset: number, fin: boolean): void {
    let drop = offset - this.#base;
    if (drop > 0) {
      this.#base = offset;
      this.#keptBytes -= drop;
      this.#host.budget.give(drop);
      while (drop > 0) {
        const head = this.#kept[0]!;
        if (head.length <= drop) {
          this.#kept.shift();
          drop -= head.length;
        } else {
          this.#kept[0] = head.subarray(drop);
          drop = 0;
        }
      }
    }
    if (fin) this.#finConfirmed = true;
  }

  /** The peer finished the stream (it had everything, our FIN too) while we were away. */
  peerCompleted(): void {
    if (!this.#peerFin || !this.#finWritten) {
      this.fail('the peer says it finished a stream this end has not finished', false);
      return;
    }
    this.confirm(this.#written, true);
  }

  /** The peer gave the stream up (RESET), or the stream cannot go on here: both sides end, with `reason`. */
  fail(reason: string, tellPeer = true): void {
    if (this.#state !== 'open') return;
    this.#state = 'reset';
    this.#host.debug(`stream ${this.id} reset: ${reason}`);
    if (tellPeer) this.#host.sendReset(this, reason);
    this.#closeChannel();
    const error = new StreamResetError(reason);
    this.#dropKept(error);
    this.#host.release(this, 'reset');
    this.destroy(error);
  }

  /** The budget has room again. */
  budgetFreed(): void {
    this.#maybeLetWriterOn();
  }

  #onData(channel: StreamChannel, chunk: Buffer): void {
    if (channel !== this.#channel || this.#state !== 'open') return;
    if (this.#peerFin) return; // nothing comes after a FIN; a confused peer's bytes are not ours
    this.#received += chunk.length;
    this.#host.ackSoon(this, this.#received - this.#acked >= this.#ackEvery);
    if (!this.push(chunk)) {
      this.#readWanted = false;
      channel.pause();
    }
  }

  #onEof(channel: StreamChannel): void {
    if (channel !== this.#channel || this.#state !== 'open' || this.#peerFin) return;
    this.#peerFin = true;
    this.push(null);
    this.#host.ackSoon(this, true);
    this.#maybeDone();
  }

  #onChannelClose(channel: StreamChannel): void {
    if (channel !== this.#channel) return;
    this.#channel = undefined;
    if (this.#state !== 'open') return;
    // The connection is alive (its loss detaches first): the peer closed before the stream was
    // done, as a peer without the resume layer does on a reset.
    if (this.#peerFin && this.#finConfirmed) this.#maybeDone();
    else this.fail('the peer closed the channel', false);
  }

  #maybeDone(): void {
    if (this.#state !== 'open' || !this.#peerFin || !this.#finConfirmed) return;
    this.#state = 'done';
    this.#closeChannel();
    this.#host.release(this, 'done');
    const closeWhenRead = (): void => {
      if (this.readableEnded && this.writableFinished && !this.destroyed) this.destroy();
    };
    this.once('end', closeWhenRead);
    this.once('finish', closeWhenRead);
    closeWhenRead();
  }

  #closeChannel(): void {
    const ch = this.#channel;
    this.#channel = undefined;
    if (ch !== undefined) {
      ch.removeAllListeners('close');
      ch.on('error', () => undefined);
      ch.close();
    }
  }

  #dropKept(error: Error): void {
    if (this.#keptBytes > 0) this.#host.budget.give(this.#keptBytes);
    this.#host.budget.forget(this);
    this.#kept.length = 0;
    this.#keptBytes = 0;
    const cb = this.#pendingWrite;
    this.#pendingWrite = undefined;
    cb?.(error);
  }

  #sendEof(channel: StreamChannel): void {
    if (this.#eofSent) return;
    this.#eofSent = true;
    // EOF after every byte written before it: the empty write calls back once they are all with ssh2.
    channel.write(EMPTY, () => {
      if (channel === this.#channel) channel.eof();
    });
  }

  #overBound(): boolean {
    return this.#keptBytes >= this.#host.streamBytes || this.#host.budget.full;
  }

  #maybeLetWriterOn(): void {
    const cb = this.#pendingWrite;
    if (cb === undefined) return;
    if (this.#channel?.writableNeedDrain === true) return;
    if (this.#overBound()) {
      if (this.#host.budget.full) this.#host.budget.wait(this);
      return;
    }
    this.#pendingWrite = undefined;
    cb();
  }

  /**
   * As Writable's, and a writer that ignores `write()` returning false (its chunks pile up in
   * `writableLength` while our callback waits) past twice the bound gets the stream reset. A single
   * large write is kept whole.
   */
  override write(chunk: unknown, encoding?: BufferEncoding | ((error: Error | null | undefined) => void), cb?: (error: Error | null | undefined) => void): boolean {
    const ok = typeof encoding === 'function' ? super.write(chunk, encoding) : super.write(chunk, encoding as BufferEncoding, cb);
    if (this.#state === 'open' && this.#keptBytes > 0 && this.#keptBytes + this.writableLength > this.#host.streamBytes * HARD_LIMIT_FACTOR) {
      this.fail(`its writer went past the buffer bound of ${this.#host.streamBytes} bytes`);
    }
    return ok;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#state !== 'open') {
      callback(new StreamResetError('the stream was reset'));
      return;
    }
    if (chunk.length === 0) {
      callback();
      return;
    }
    this.#kept.push(chunk);
    this.#keptBytes += chunk.length;
    this.#written += chunk.length;
    this.#host.budget.take(chunk.length);
    const ch = this.#channel;
    const roomy = ch === undefined ? true : ch.write(chunk);
    if (roomy && !this.#overBound()) {
      callback();
      return;
    }
    this.#pendingWrite = callback;
    this.#maybeLetWriterOn();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#finWritten = true;
    if (this.#channel !== undefined) this.#sendEof(this.#channel);
    callback();
  }

  override _read(): void {
    this.#readWanted = true;
    this.#channel?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#state === 'open') {
      // Our user aborted (a RST from the local program, the far socket failed).
      this.#state = 'reset';
      const reason = error ? `aborted: ${error.message}` : 'aborted';
      this.#host.debug(`stream ${this.id} reset: ${reason}`);
      this.#host.sendReset(this, reason);
      this.#closeChannel();
      this.#dropKept(new StreamResetError(reason));
      this.#host.release(this, 'reset');
    }
    callback(error);
  }
}
