/**
 * One TCP flow, from the dial to the end of TIME-WAIT: the socket that talks to the local
 * program, the far stream from the `Dialer`, and what moves between them. A flow is its socket's
 * host and its far stream's listener; it does its own flow control (pausing the far stream,
 * sizing the receive window) within its share of the engine's buffer budget. What it needs from
 * the engine (sending a segment, a place in the next flush, leaving the flow table) goes through
 * `FlowHost`, which NetStack implements privately.
 */
import type { Duplex } from 'node:stream';
import { WriteSlab } from './pool.js';
import type { TcpSocket, TcpSocketHost } from './tcp/socket.js';
import type { DropReason } from './wire/error.js';
import type { TcpRepr } from './wire/tcp.js';

/** Whether `stream` keeps written chunks after their callback (src/dialer.ts). */
function retainsWrites(stream: Duplex): boolean {
  return (stream as Duplex & { retainsWrites?: boolean }).retainsWrites === true;
}

/** Segments one flow may send in one flush before the others get their turn. */
const MAX_SEGMENTS_PER_FLUSH = 64;

/** The engine's limits a flow applies itself (NetStackLimits has them). */
export interface FlowLimits {
  rxBufferPerFlow: number;
  txBufferPerFlow: number;
  flowShare: number;
  maxBufferedBytes: number;
}

/** What a flow needs from its engine. */
export interface FlowHost {
  readonly limits: Readonly<FlowLimits>;
  readonly budget: BufferBudget;
  /** Far streams are done with a written chunk once its write called back (copies are reused). */
  readonly pooledWrites: boolean;
  /** The engine was closed. */
  readonly closed: boolean;
  /** Builds and sends one TCP segment (counting RSTs); false when the device refused it. */
  sendTcp(src: Buffer, dst: Buffer, seg: TcpRepr, mss: number): boolean;
  /**
   * The flow has something to dispatch: at once when `now` and the engine is neither reading
   * input nor flushing, else in the flush at the end of this turn of the event loop.
   */
  wake(flow: Flow, now: boolean): void;
  /** The flow is done: out of the flow table, its deadline and the half-open list. */
  release(flow: Flow): void;
  /** A dial in progress ended (abandoned here). */
  dialEnded(): void;
  /** Counts a drop ('internal': a bug caught in an event handler). */
  drop(reason: DropReason): void;
}

/**
 * The bytes all flows of an engine hold, and the flows whose far stream waits for the budget
 * (not for their own queue). Flows book their own changes; the engine reads the totals.
 */
export class BufferBudget {
  /** Bytes held for flows: far-side backlogs plus send queues. */
  buffered = 0;
  /** Σ max(0, flow's bytes - flowShare): what `maxBufferedBytes` limits. */
  over = 0;
  readonly paused = new Set<Flow>();
  private readonly share: number;
  private readonly max: number;

  constructor(limits: Readonly<FlowLimits>) {
    this.share = limits.flowShare;
    this.max = limits.maxBufferedBytes;
  }

  /** A flow's bytes went from `before` to `after`. */
  book(before: number, after: number): void {
    const share = this.share;
    this.buffered += after - before;
    this.over += Math.max(0, after - share) - Math.max(0, before - share);
  }

  /** The budget has room again: flows paused for it (and not for their own queue) read on. */
  resumePaused(): void {
    if (this.paused.size === 0 || this.over >= this.max * 0.75) return;
    for (const f of [...this.paused]) f.resumeIfRoom();
  }
}

export class Flow implements TcpSocketHost {
  private readonly host: FlowHost;
  readonly v6: boolean;
  /** The address the local program dialed (we answer from it) and the program's own. */
  readonly ourAddr: Buffer;
  readonly peerAddr: Buffer;
  readonly ourPort: number;
  readonly peerPort: number;
  readonly hash: number;

  // ---- the flow table's links (FlowTable changes them)
  /** Next flow in the same hash bucket. */
  next: Flow | null = null;
  slot = -1;
  /** When the engine must look at this flow again (its place in the timer heap), Infinity: never. */
  due = Infinity;
  heapIdx = -1;
  /** Neighbours in the SYN-RECEIVED list (oldest first), while in it. */
  hoPrev: Flow | null = null;
  hoNext: Flow | null = null;
  halfOpen = false;

  // ---- the engine's: the dial, the flush
  /** While dialing: the SYN, and the first bytes of its IP packet for an ICMP quote. */
  syn: TcpRepr | null;
  synPacket: Buffer | null;
  dialAbort: AbortController | null = null;
  /** While dialing: when the dial is given up (checked by the engine's one timer). */
  dialDeadline = Infinity;
  dialTimedOut = false;
  /** In the engine's list of flows to dispatch. */
  dirty = false;

  socket: TcpSocket | null = null;
  closed = false;
  private far: Duplex | null = null;
  /** The far stream keeps written chunks (no pooled copies for it). */
  private farRetains = false;
  private farPaused = false;
  private farEnded = false;
  /** far.writableLength as last seen (booked in the budget). */
  private backlog = 0;
  /** socket.txBuffered as last booked in the budget. */
  private txCounted = 0;
  /** Copies of the bytes written to the far stream, until each write calls back. */
  private readonly rxCopies = new WriteSlab();

  constructor(host: FlowHost, v6: boolean, ourAddr: Buffer, peerAddr: Buffer, ourPort: number, peerPort: number, hash: number, syn: TcpRepr, synPacket: Buffer) {
    this.host = host;
    this.v6 = v6;
    this.ourAddr = ourAddr;
    this.peerAddr = peerAddr;
    this.ourPort = ourPort;
    this.peerPort = peerPort;
    this.hash = hash;
    this.syn = syn;
    this.synPacket = synPacket;
  }

  /** Sends this flow's segments (bound once per flow; the socket's emitter). */
  readonly emitSeg = (seg: TcpRepr): boolean => this.host.sendTcp(this.ourAddr, this.peerAddr, seg, this.socket!.sendMss);

  /** The dial succeeded: `socket` (SYN-RECEIVED) now runs over `far`. */
  attach(far: Duplex, socket: TcpSocket): void {
    this.far = far;
    this.farRetains = retainsWrites(far);
    this.socket = socket;
    far.on('data', this.onFarData);
    far.on('end', this.onFarEnd);
    far.on('drain', this.onFarDrain);
    far.on('error', this.onFarError);
    far.on('close', this.onFarClose);
    // A stream that died between its creation and now will not tell us again.
    if (far.destroyed) this.farAbort();
  }

  /** Sends what the socket has, at most MAX_SEGMENTS_PER_FLUSH segments; false if more remained. */
  dispatch(now: number): boolean {
    const s = this.socket!;
    for (let n = 0; n < MAX_SEGMENTS_PER_FLUSH; n++) {
      if (this.closed) return true;
      let sent: boolean;
      try {
        sent = s.dispatch(now, this.emitSeg);
      } catch {
        this.host.drop('internal');
        return true;
      }
      if (!sent) return true;
    }
    return s.pollAt() > now;
  }

  /** RFC 9293 §3.10.5 ABORT, sent at once: a RST to the local side. The socket must exist. */
  abortNow(now: number): void {
    const s = this.socket!;
    s.abort();
    try {
      s.dispatch(now, this.emitSeg);
    } catch {
      this.host.drop('internal');
    }
  }

  /** Called by the socket (onClosed), by RST while dialing, by the engine. Idempotent. */
  free(): void {
    if (this.closed) return;
    this.closed = true;
    const host = this.host;
    host.release(this);
    if (this.dialAbort) {
      const ac = this.dialAbort;
      this.dialAbort = null;
      host.dialEnded();
      ac.abort();
    }
    const budget = host.budget;
    budget.book(this.backlog + this.txCounted, 0);
    this.backlog = 0;
    this.txCounted = 0;
    budget.paused.delete(this);
    budget.resumePaused();
    // A far stream that ended both ways is left to flush what it still holds; any other is aborted.
    const far = this.far;
    if (far && this.farEnded && far.writableEnded && !host.closed) this.detachFar();
    else this.destroyFar();
  }

  // ---- TcpSocketHost

  onData(data: Buffer): void {
    const far = this.far;
    if (!far || far.destroyed || far.writableEnded) {
      // The far side is gone (closed both ways): like a host whose socket is closed, answer
      // more data with a RST (RFC 9293 §3.10.7.4 seventh, "connection closing").
      this.socket?.abort();
      this.host.wake(this, false);
      return;
    }
    // The write callback, not only 'drain', reports progress: a far stream whose highWaterMark
    // is above our window (ssh2 channels: 2 MiB) never says 'drain' before our window is closed.
    // `data` is a view into the device's read buffer: the far stream gets a copy, from reused
    // blocks when it is known to be done with each chunk once the write calls back.
    // A far stream that keeps what it is given until the peer confirms it (the resume layer)
    // gets a copy of its own.
    far.write(this.host.pooledWrites && !this.farRetains ? this.rxCopies.copy(data) : Buffer.from(data), this.onFarWritten);
    this.setBacklog(far.writableLength);
  }

  onFin(): void {
    const far = this.far;
    if (far && !far.destroyed) far.end();
  }

  onReset(): void {
    this.destroyFar();
  }

  onTxFreed(): void {
    const s = this.socket;
    if (!s) return;
    this.setTxCounted(s.txBuffered);
    if (this.farPaused) this.resumeIfRoom();
  }

  onClosed(): void {
    this.free();
  }

  /**
   * The receive window's room: the flow's own buffer, and of that what its guaranteed share
   * still holds plus what the global budget has left.
   */
  rxRoom(): number {
    const l = this.host.limits;
    const own = l.rxBufferPerFlow - this.backlog;
    const share = Math.max(0, l.flowShare - this.backlog - this.txCounted);
    const global = Math.max(0, l.maxBufferedBytes - this.host.budget.over);
    return Math.min(own, share + global);
  }

  // ---- far stream events (bound once per flow; a bug in them must not become an uncaught exception)

  private readonly onFarData = (chunk: Buffer): void => {
    try {
      this.farData(chunk);
    } catch {
      this.host.drop('internal');
    }
  };

  private readonly onFarEnd = (): void => {
    try {
      this.farEnd();
    } catch {
      this.host.drop('internal');
    }
  };

  private readonly onFarDrain = (): void => {
    try {
      this.farDrain();
    } catch {
      this.host.drop('internal');
    }
  };

  /** Write callback (one per flow, shared by all its writes): what the far side took. */
  private readonly onFarWritten = (): void => {
    try {
      this.farWritten();
    } catch {
      this.host.drop('internal');
    }
  };

  private readonly onFarError = (): void => {
    try {
      this.farAbort();
    } catch {
      this.host.drop('internal');
    }
  };

  private readonly onFarClose = (): void => {
    try {
      this.farClose();
    } catch {
      this.host.drop('internal');
    }
  };

  private farData(chunk: Buffer): void {
    const s = this.socket;
    if (!s || this.closed) return;
    s.send(chunk);
    this.setTxCounted(s.txBuffered);
    if (!this.farPaused && this.far) {
      // Flow control towards the far side: stop reading until the local side acknowledged, when
      // this flow's send queue is full or every flow's buffers together use up the budget.
      // Beyond its share a flow reads on only while the global budget has room (finding N2: the
      // readers that stopped wait, a flow that is drained keeps its share and moves).
      const l = this.host.limits;
      const own = s.txBuffered >= l.txBufferPerFlow;
      const overBudget = this.backlog + this.txCounted >= l.flowShare && this.host.budget.over >= l.maxBufferedBytes;
      if (own || overBudget) {
        this.farPaused = true;
        this.far.pause();
        if (!own) this.host.budget.paused.add(this);
      }
    }
    // Nagle's rule (RFC 896 §2) turned to latency: with nothing unacknowledged the bytes go out
    // at once, within the far stream's event (a reply must not wait for the end of the event
    // loop's turn: that cost ~10 us a round trip); with bytes in flight they wait for the flush at
    // the end of the turn, which packs what else the tunnel delivers meanwhile into the same
    // super-segment.
    this.host.wake(this, s.unacked === s.localSeqNo);
  }

  private farEnd(): void {
    this.farEnded = true;
    const s = this.socket;
    if (!s || this.closed) return;
    s.close();
    this.host.wake(this, false);
  }

  private farDrain(): void {
    if (this.closed || !this.far) return;
    this.setBacklog(this.far.writableLength);
    this.host.wake(this, false);
  }

  private farWritten(): void {
    const far = this.far;
    if (this.host.pooledWrites && !this.farRetains) this.rxCopies.written();
    if (this.closed || !far) return;
    const before = this.backlog;
    this.setBacklog(far.writableLength);
    if (this.backlog < before) this.host.wake(this, false);
  }

  private farClose(): void {
    // A close before the far side's end is an abort (RST); after it, the stream is simply gone
    // (more data from the local side would then be answered with a RST, see onData).
    if (this.farEnded) {
      this.detachFar();
      return;
    }
    this.farAbort();
  }

  private farAbort(): void {
    const s = this.socket;
    if (!s || this.closed) return;
    this.destroyFar();
    s.abort();
    this.host.wake(this, false);
  }

  private destroyFar(): void {
    // A destroyed stream calls back its queued writes out of order with the one in progress:
    // its copies are left to the garbage collector, never reused.
    this.rxCopies.abandon();
    const far = this.detachFar();
    if (far && !far.destroyed) far.destroy();
  }

  /** Stops listening to the far stream (which may still flush what it holds) and returns it. */
  private detachFar(): Duplex | null {
    const far = this.far;
    if (!far) return null;
    this.far = null;
    far.off('data', this.onFarData);
    far.off('end', this.onFarEnd);
    far.off('drain', this.onFarDrain);
    far.off('close', this.onFarClose);
    // Keep an error listener: a late error must not become an uncaught exception.
    far.on('error', noop);
    far.off('error', this.onFarError);
    this.setBacklog(0);
    return far;
  }

  /** Reads on when its queue and the budget allow (or waits in the budget's paused set). */
  resumeIfRoom(): void {
    const s = this.socket;
    if (!s || !this.far || this.closed) return;
    const l = this.host.limits;
    if (s.txBuffered >= l.txBufferPerFlow / 2) return;
    // Under its share a flow always reads on; above it, once the budget is below 3/4.
    const budget = this.host.budget;
    if (this.backlog + this.txCounted >= l.flowShare && budget.over >= l.maxBufferedBytes * 0.75) {
      budget.paused.add(this);
      return;
    }
    budget.paused.delete(this);
    this.farPaused = false;
    this.far.resume();
  }

  // ---- budget accounting

  private setBacklog(n: number): void {
    const before = this.backlog + this.txCounted;
    this.backlog = n;
    this.booked(before);
  }

  private setTxCounted(n: number): void {
    const before = this.backlog + this.txCounted;
    this.txCounted = n;
    this.booked(before);
  }

  /** Books a change of this flow's bytes (was `before`); a decrease may resume reads. */
  private booked(before: number): void {
    const used = this.backlog + this.txCounted;
    if (used === before) return;
    const budget = this.host.budget;
    budget.book(before, used);
    if (used < before) {
      if (this.farPaused && budget.paused.has(this)) this.resumeIfRoom();
      budget.resumePaused();
    }
  }
}

function noop(): void {}
