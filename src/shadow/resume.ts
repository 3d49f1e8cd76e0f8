/**
 * The shadow's end of the resume layer (src/protocol/resume.ts): sessions by id, each with its
 * streams, the control channel of the connection it is on now, and the resume window once that
 * connection is gone. The server (server.ts) hands it what carries a resume name: the control
 * subsystem, `direct-tcpip` channels named STREAM_ORIGIN or ATTACH_ORIGIN, and asks it whether a
 * `forwarded-tcpip` it opens should be resumable (the connection said HELLO).
 */
import type { ServerChannel } from 'ssh2';
import {
  ATTACH_COMPLETED,
  ControlDecoder,
  ControlWriter,
  PROTOCOL_VERSION,
  RESUME_MAX,
  ResumableStream,
  ResumeBudget,
  SESSION_ID,
  encodeFrame,
  type ControlFrame,
  type ResumeLimits,
  type StreamChannel,
  type StreamHost,
} from '../protocol/index.js';
import type { ShadowLogger } from './log.js';


/** A connection, as the server knows it: its id for the log, and whether it is gone. */
export interface ResumeConnection {
  readonly id: number;
  readonly closed: boolean;
}

interface Held {
  stream: ResumableStream;
  what: string;
}

class ShadowSession implements StreamHost {
  readonly budget: ResumeBudget;
  readonly streamBytes: number;
  readonly limits: ResumeLimits;
  readonly streams = new Map<number, Held>();
  /** ids finished or reset while the session lived, with why (for a late attach) */
  readonly ended = new Map<number, string>();
  conn: ResumeConnection | undefined;
  #control: ServerChannel | undefined;
  readonly #writer = new ControlWriter();
  #nextId = 2;
  #windowTimer: NodeJS.Timeout | undefined;
  counts = { resumed: 0, lost: 0 };

  constructor(
    readonly id: string,
    asked: ResumeLimits,
    readonly log: ShadowLogger,
    readonly onEmpty: (s: ShadowSession) => void,
  ) {
    this.limits = {
      windowMs: Math.min(asked.windowMs, RESUME_MAX.windowMs),
      streamBytes: Math.max(64 << 10, Math.min(asked.streamBytes, RESUME_MAX.streamBytes)),
      totalBytes: Math.max(1 << 20, Math.min(asked.totalBytes, RESUME_MAX.totalBytes)),
    };
    this.budget = new ResumeBudget(this.limits.totalBytes);
    this.streamBytes = this.limits.streamBytes;
  }

  nextId(): number {
    const id = this.#nextId;
    this.#nextId += 2;
    return id;
  }

  hold(stream: ResumableStream, what: string): void {
    this.streams.set(stream.id, { stream, what });
  }

  /** The connection went: keep the streams for the window. */
  get control(): ServerChannel | undefined {
    return this.#control;
  }

  set control(channel: ServerChannel | undefined) {
    this.#control = channel;
    this.#writer.channel = channel;
  }

  detach(): void {
    this.conn = undefined;
    this.control = undefined;
    for (const h of this.streams.values()) h.stream.detach();
    clearTimeout(this.#windowTimer);
    if (this.streams.size === 0) {
      this.onEmpty(this);
      return;
    }
    this.log('resume-wait', { session: this.id.slice(0, 8), streams: this.streams.size, windowMs: this.limits.windowMs });
    this.#windowTimer = setTimeout(() => {
      for (const h of [...this.streams.values()]) {
        this.counts.lost++;
        h.stream.fail(`the client did not come back within the resume window (${this.limits.windowMs / 1000} s)`, false);
      }
      this.onEmpty(this);
    }, this.limits.windowMs);
    this.#windowTimer.unref();
  }

  /** A connection said HELLO: it is this session's now; streams the client no longer holds go. */
  adopt(conn: ResumeConnection, control: ServerChannel, clientHolds: number[]): void {
    if (this.conn !== undefined && this.conn !== conn) {
      // The old connection is not known to be gone yet (its transport may take long to say so).
      for (const h of this.streams.values()) h.stream.detach();
    }
    clearTimeout(this.#windowTimer);
    this.#windowTimer = undefined;
    this.conn = conn;
    this.control = control;
    const holds = new Set(clientHolds);
    for (const h of [...this.streams.values()]) {
      if (holds.has(h.stream.id)) continue;
      // The client gave it up while away (its window ran out, its program aborted).
      this.counts.lost++;
      h.stream.fail('the client no longer has it', false);
    }
  }

  close(): void {
    clearTimeout(this.#windowTimer);
    this.#writer.stop();
    for (const h of [...this.streams.values()]) h.stream.fail('the shadow is stopping');
  }

  // ---- StreamHost

  ackSoon(stream: ResumableStream, now: boolean): void {
    this.#writer.ackSoon(stream, now);
  }

  sendReset(stream: ResumableStream, reason: string): void {
    this.#writer.reset(stream, reason);
  }

  release(stream: ResumableStream, outcome: 'done' | 'reset'): void {
    this.streams.delete(stream.id);
    this.#writer.forget(stream);
    this.ended.set(stream.id, outcome === 'done' ? ATTACH_COMPLETED : 'it was reset');
    if (this.conn === undefined && this.streams.size === 0) {
      clearTimeout(this.#windowTimer);
      this.onEmpty(this);
    }
  }

  debug(line: string): void {
    this.log('resume-debug', { session: this.id.slice(0, 8), line });
  }
}

export class ShadowResume {
  readonly #sessions = new Map<string, ShadowSession>();
  readonly #byConn = new Map<ResumeConnection, ShadowSession>();
  readonly #log: ShadowLogger;

  constructor(log: ShadowLogger) {
    this.#log = log;
  }

  /** The control subsystem of `conn`: HELLO first, then ACK and RESET frames. */
  control(conn: ResumeConnection, channel: ServerChannel): void {
    const decoder = new ControlDecoder();
    let session: ShadowSession | undefined;
    channel.on('data', (chunk: Buffer) => {
      let frames: ControlFrame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.#log('resume-error', { client: conn.id, message: (err as Error).message });
        channel.close();
        return;
      }
      for (const f of frames) {
        if (f.type === 'hello') {
          if (session !== undefined || !SESSION_ID.test(f.session)) {
            this.#log('resume-error', { client: conn.id, message: 'a second HELLO, or a malformed session id' });
            channel.close();
            return;
          }
          session = this.#hello(conn, channel, f);
        } else if (session === undefined) {
          this.#log('resume-error', { client: conn.id, message: `a ${f.type} frame before HELLO` });
          channel.close();
          return;
        } else if (f.type === 'ack') {
          session.streams.get(f.id)?.stream.confirm(f.offset, f.fin);
        } else if (f.type === 'reset') {
          session.streams.get(f.id)?.stream.fail(`the client reset it: ${f.reason}`, false);
        }
      }
    });
    channel.on('error', () => undefined);
  }

  #hello(conn: ResumeConnection, channel: ServerChannel, f: Extract<ControlFrame, { type: 'hello' }>): ShadowSession {
    let session = this.#sessions.get(f.session);
    if (session === undefined) {
      session = new ShadowSession(f.session, f.limits, this.#log, (s) => this.#forget(s));
      this.#sessions.set(f.session, session);
    }
    session.adopt(conn, channel, f.streams);
    this.#byConn.set(conn, session);
    const held = [...session.streams.keys()];
    this.#log('resume-hello', { client: conn.id, session: f.session.slice(0, 8), clientHolds: f.streams.length, held: held.length });
    channel.write(encodeFrame({ type: 'welcome', version: PROTOCOL_VERSION, limits: session.limits, streams: held }));
    return session;
  }

  #forget(s: ShadowSession): void {
    if (s.streams.size > 0 || s.conn !== undefined) return;
    if (this.#sessions.get(s.id) === s) this.#sessions.delete(s.id);
    this.#log('resume-end', { session: s.id.slice(0, 8), resumed: s.counts.resumed, lost: s.counts.lost });
  }

  /** The session `conn` said HELLO for (its forwarded streams are resumable then). */
  sessionOf(conn: ResumeConnection): { id: string; nextId(): number } | undefined {
    const s = this.#byConn.get(conn);
    return s?.conn === conn ? s : undefined;
  }

  /**
   * A new resumable stream on `channel` (a `direct-tcpip` named STREAM_ORIGIN, or a
   * `forwarded-tcpip` this shadow named); the caller joins it to its socket. Undefined when the
   * session is not this connection's (the caller closes both).
   */
  open(conn: ResumeConnection, sessionId: string, id: number, channel: ServerChannel, what: string): ResumableStream | undefined {
    const session = this.#sessions.get(sessionId);
    if (session === undefined || session.conn !== conn || session.streams.has(id)) return undefined;
    const stream = new ResumableStream(id, session);
    session.hold(stream, what);
    stream.attach(channel as unknown as StreamChannel, 0);
    return stream;
  }

  /** A channel that re-attaches a held stream: ATTACHED, then the channel; or why not. */
  attach(conn: ResumeConnection, sessionId: string, id: number, clientReceived: number, clientFin: boolean, accept: () => ServerChannel | undefined): string | undefined {
    const session = this.#sessions.get(sessionId);
    if (session === undefined) return 'unknown session (the shadow restarted, or the resume window ran out)';
    if (session.conn !== conn) return 'the session is on another connection';
    const held = session.streams.get(id);
    if (held === undefined) return session.ended.get(id) ?? 'unknown stream (its resume window ran out, or it was reset)';
    const { stream } = held;
    session.control?.write(encodeFrame({ type: 'attached', id, offset: stream.received, fin: stream.peerFin }));
    const channel = accept();
    if (channel === undefined) return undefined;
    session.counts.resumed++;
    this.#log('resume-attach', { client: conn.id, session: sessionId.slice(0, 8), stream: id, what: held.what, clientHad: clientReceived, shadowHad: stream.received });
    stream.attach(channel as unknown as StreamChannel, clientReceived, clientFin);
    return undefined;
  }

  /** `conn` is gone: its session's streams wait for the window. */
  detach(conn: ResumeConnection): void {
    const session = this.#byConn.get(conn);
    this.#byConn.delete(conn);
    if (session !== undefined && session.conn === conn) session.detach();
  }

  /** Streams held, over all sessions (the log's and the tests' view). */
  get held(): number {
    let n = 0;
    for (const s of this.#sessions.values()) n += s.streams.size;
    return n;
  }

  close(): void {
    for (const s of this.#sessions.values()) s.close();
    this.#sessions.clear();
    this.#byConn.clear();
  }
}
