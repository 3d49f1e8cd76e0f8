import {
  seq, seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax, type Seq,
} from '../seq.js';
import { TcpRepr } from '../wire/tcp.js';
import { Assembler, TxQueue } from './buffers.js';
import { DEFAULT_RTT, RttEstimator, type RttConfig } from './rtt.js';

/**
 * One TCP connection terminated by the engine, in the shape of smoltcp's `socket/tcp.rs`.
 *
 * We never open connections and never listen: the local kernel opens a flow towards a routed
 * address, the flow layer dials the far side first, and only when that succeeded builds a socket
 * from the SYN with `TcpSocket.fromSyn`, which starts in SYN-RECEIVED (RFC 9293 §3.5 figure 6,
 * the passive side after "rcv SYN"), its SYN-ACK not yet sent. LISTEN and SYN-SENT therefore do
 * not exist here; a refused dial never creates a socket (the flow layer answers with
 * `TcpSocket.rstFor`, RFC 9293 §3.10.7.1).
 *
 * Input is `process(now, segment)`, which may return an immediate reply (a challenge ACK, an
 * ACK for an unacceptable segment, a RST); output is `dispatch(now, emit)`, which builds at most
 * one segment and commits the state change only if `emit` returned true. Time is passed in
 * (milliseconds, any monotonic origin).
 */

/** RFC 9293 §3.3.2 state names (those a passively opened connection can be in). */
export type TcpState =
  | 'SYN-RECEIVED'
  | 'ESTABLISHED'
  | 'FIN-WAIT-1'
  | 'FIN-WAIT-2'
  | 'CLOSE-WAIT'
  | 'CLOSING'
  | 'LAST-ACK'
  | 'TIME-WAIT'
  | 'CLOSED';

/** The socket's one timer (smoltcp's `Timer`). The delayed ACK has its own deadline beside it. */
export type TcpTimer =
  | { kind: 'idle' }
  | { kind: 'retransmit'; expiresAt: number }
  /**
   * The persist timer: `probes` sent since the peer last acknowledged anything (bounded by
   * `maxRetransmits`), `since` when the window closed on queued data (bounded by `persistTimeout`).
   */
  | { kind: 'zeroWindowProbe'; expiresAt: number; delay: number; probes: number; since: number }
  /** FIN-WAIT-2 orphan timeout (`finWait2Timeout`), restarted by new data from the peer. */
  | { kind: 'finWait2'; expiresAt: number }
  | { kind: 'close'; expiresAt: number };

export interface TcpConfig {
  /** MSS we announce: our link MTU minus the IP and TCP headers (RFC 9293 §3.7.1). */
  mss: number;
  /** Receive buffer the window is sized from (the tunnel's buffer); chooses our window scale. */
  rxCapacity: number;
  /**
   * Largest payload of one segment we emit; above the MSS only when the device segments for
   * us (GSO/TSO). 0 means "the MSS".
   */
  maxBurst: number;
  /** Delayed ACK deadline (RFC 9293 §3.8.6.3: < 0.5 s); 0 acknowledges at once. */
  ackDelay: number;
  /** TIME-WAIT duration (2*MSL, shortened: we are the local end of a local link). */
  timeWait: number;
  rtt: RttConfig;
  /** Retransmissions of data before giving up (RFC 9293 §3.8.3 R2). */
  maxRetransmits: number;
  /** Retransmissions of our SYN-ACK before giving up (R2 for SYN segments). */
  maxSynAckRetransmits: number;
  /**
   * How long FIN-WAIT-2 may last without new data from the peer (our FIN is acknowledged, the
   * far side is done sending, the local program has not closed). Linux's `tcp_fin_timeout` for
   * orphaned sockets: 60 s. Then the flow is reset and its far stream destroyed.
   */
  finWait2Timeout: number;
  /**
   * Total time the send window may stay closed on queued data while the peer answers our
   * zero-window probes (RFC 1122 §4.2.2.17 keeps such a connection open; RFC 6429 lets resource
   * management end it). Unanswered probes are bounded apart, by `maxRetransmits`.
   */
  persistTimeout: number;
  /** Out-of-order queue entries (holes) kept. */
  maxOooEntries: number;
  /** Initial congestion window in segments (RFC 6928 allows 10). */
  initialWindowSegments: number;
  /**
   * The emitter is done with a segment's payload once `emit` returns: payloads that span the
   * send queue's chunks are then copied into one buffer shared by every socket instead of a
   * fresh one each (a 64 KiB ArrayBuffer per super-segment is what made V8 collect constantly).
   */
  reusePayloads?: boolean;
}

let sharedPayloadScratch: Buffer | null = null;
function payloadScratch(): Buffer {
  return (sharedPayloadScratch ??= Buffer.allocUnsafe(0x10000));
}

export const DEFAULT_TCP_CONFIG: TcpConfig = {
  mss: 1460,
  rxCapacity: 1 << 20,
  maxBurst: 0,
  ackDelay: 10,
  timeWait: 2000,
  rtt: DEFAULT_RTT,
  maxRetransmits: 10,
  maxSynAckRetransmits: 5,
  finWait2Timeout: 60_000,
  persistTimeout: 600_000,
  maxOooEntries: 32,
  initialWindowSegments: 10,
};

/** What the socket needs from its owner (the flow layer); one object per socket, no closures per packet. */
export interface TcpSocketHost {
  /** In-order bytes for the far side: a view valid only during the call (copy what you keep). */
  onData(data: Buffer): void;
  /** The peer sent FIN after all its data: half-close towards the far side. */
  onFin(): void;
  /** The connection was reset (peer RST, or we gave up): destroy the far side. */
  onReset(): void;
  /** Acknowledged bytes left the send queue. */
  onTxFreed(): void;
  /** The socket reached CLOSED: the flow can be freed. Called once. */
  onClosed(): void;
  /**
   * Bytes the socket may still accept beyond what it delivered: the tunnel's buffer minus what
   * the far side has not taken yet, bounded by the global budget. Sizes the receive window.
   */
  rxRoom(): number;
}

/** Counters shared by all sockets of an engine. */
export interface TcpCounters {
  retransmits: number;
  fastRetransmits: number;
  zeroWindowProbes: number;
  challengeAcks: number;
  outOfWindow: number;
  oooDropped: number;
  timeouts: number;
}

export function newTcpCounters(): TcpCounters {
  return { retransmits: 0, fastRetransmits: 0, zeroWindowProbes: 0, challengeAcks: 0, outOfWindow: 0, oooDropped: 0, timeouts: 0 };
}

/** Endpoint ports of the flow, from our side (we are the address the kernel dialed). */
export interface TcpEndpoints {
  localPort: number;
  remotePort: number;
}

const MAX_WINDOW_SCALE = 14;
/** Congestion windows beyond this say nothing more (the peer's window limits long before). */
const MAX_CWND = 1 << 30;

export class TcpSocket {
  // ---- state
  private stateValue: TcpState = 'SYN-RECEIVED';
  private timerValue: TcpTimer = { kind: 'idle' };
  private ackDelayAt: number | null = null;
  /** An ACK must go out with the next dispatch (out-of-order data, FIN, 2 full segments, ...). */
  private ackPending = false;
  /** abort() asked for a RST. */
  private rstPending = false;
  private closedNotified = false;

  // ---- send sequence space (RFC 9293 §3.3.1)
  readonly iss: Seq;
  private sndUna: Seq;
  private sndNxt: Seq;
  /** Highest sequence number sent so far (SND.NXT may go back for a retransmission). */
  private sndMax: Seq;
  private sndWnd = 0;
  private maxSndWnd = 0;
  private sndWl1: Seq;
  private sndWl2: Seq;
  /** Peer's window scale (applied to the windows it sends). */
  private sndShift = 0;
  /** Effective send MSS: min(peer's MSS option, ours) (RFC 9293 §3.7.1). */
  readonly sendMss: number;
  /** Sequence number of queue offset 0. */
  private txBase: Seq;
  /** Sequence number after the last byte queued so far. */
  private txEnd: Seq;
  private readonly txq: TxQueue;
  /** Sequence number our FIN takes, once close() was called. */
  private finSeq: Seq | null = null;

  // ---- receive sequence space
  readonly irs: Seq;
  private rcvNxt: Seq;
  /** Right edge of the window we last advertised: never moved left (RFC 9293 §3.8.6.2.2). */
  private rcvAdvRight: Seq;
  /** Our window scale (RFC 7323 §2.2); 0 when the peer did not offer the option. */
  private readonly rcvShift: number;
  private readonly wsEnabled: boolean;
  private rcvSinceAck = 0;
  private readonly ooo: Assembler;
  /** A FIN seen beyond a hole: processed when RCV.NXT reaches it. */
  private rxFinSeq: Seq | null = null;
  private rxFinDone = false;

  // ---- retransmission and congestion control
  private readonly rtt: RttEstimator;
  private rttSeq: Seq | null = null;
  private rttAt = 0;
  private retransmits = 0;
  private synTimedOut = false;
  private dupAcks = 0;
  private fastRetransmitPending = false;
  private inRecovery = false;
  private recover: Seq;
  private probePending = false;
  private cwnd: number;
  private ssthresh = 0x7fffffff;

  private readonly cfg: TcpConfig;
  private readonly host: TcpSocketHost;
  private readonly counters: TcpCounters;
  readonly ports: TcpEndpoints;
  /** Reused for every segment this socket emits (the emitter copies it out synchronously). */
  private readonly out: TcpRepr;
  /** Window (bytes) carried by the segment last prepared. */
  private advertised = 0;
  /** Set to observe state changes (tests, debugging); null costs nothing. */
  trace: ((from: TcpState, to: TcpState) => void) | null = null;

  private constructor(
    syn: TcpRepr, iss: Seq, cfg: TcpConfig, host: TcpSocketHost, counters: TcpCounters,
  ) {
    this.cfg = cfg;
    this.txq = new TxQueue(cfg.reusePayloads === true ? payloadScratch() : null);
    this.host = host;
    this.counters = counters;
    this.ports = { localPort: syn.dstPort, remotePort: syn.srcPort };
    this.iss = iss;
    this.sndUna = iss;
    this.sndNxt = iss;
    this.sndMax = iss;
    this.sndWl1 = syn.seqNumber;
    this.sndWl2 = iss;
    this.recover = iss;
    this.txBase = seqAdd(iss, 1);
    this.txEnd = this.txBase;
    this.irs = syn.seqNumber;
    // RFC 9293 §3.10.7.2 (LISTEN, SYN): "Set RCV.NXT to SEG.SEQ+1, IRS is set to SEG.SEQ".
    this.rcvNxt = seqAdd(syn.seqNumber, 1);
    this.rcvAdvRight = this.rcvNxt;
    // RFC 7323 §2.2: window scaling is used only when both SYNs carry the option; we answer a
    // SYN that has it with the shift our buffer needs.
    this.wsEnabled = syn.windowScale !== null;
    if (this.wsEnabled) {
      this.sndShift = syn.windowScale!;
      let shift = 0;
      while (shift < MAX_WINDOW_SCALE && 0xffff * 2 ** shift < cfg.rxCapacity) shift++;
      this.rcvShift = shift;
    } else {
      this.rcvShift = 0;
    }
    // RFC 9293 §3.7.1: without the option, assume 536 (IPv4; the flow layer passes 1220 for
    // IPv6 through `mss` limits); never send more than our own link takes either.
    this.sendMss = Math.max(64, Math.min(syn.maxSegSize ?? 536, cfg.mss));
    // RFC 9293 §3.10.7.2: SND.WND from the SYN's window (never scaled in a SYN, RFC 7323 §2.2).
    this.sndWnd = syn.windowLen;
    this.maxSndWnd = this.sndWnd;
    this.rtt = new RttEstimator(cfg.rtt);
    this.ooo = new Assembler(cfg.maxOooEntries);
    // RFC 5681 §3.1 / RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)).
    this.cwnd = Math.min(cfg.initialWindowSegments * this.sendMss, Math.max(2 * this.sendMss, 14600));
    this.out = {
      srcPort: syn.dstPort, dstPort: syn.srcPort, control: 'none', seqNumber: iss, ackNumber: null,
      windowLen: 0, windowScale: null, maxSegSize: null, sackPermitted: false, payload: EMPTY,
    };
  }

  /**
   * The socket for a SYN whose far side is connected: SYN-RECEIVED, SYN-ACK due at the next
   * dispatch. `syn` must be a SYN without ACK (the flow layer checks).
   */
  static fromSyn(
    syn: TcpRepr, iss: Seq, cfg: TcpConfig, host: TcpSocketHost, counters: TcpCounters = newTcpCounters(),
  ): TcpSocket {
    return new TcpSocket(syn, iss, cfg, host, counters);
  }

  /**
   * The reply to a segment no connection wants (RFC 9293 §3.10.7.1, CLOSED state): "If the ACK
   * bit is off, sequence number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; if the
   * ACK bit is on, <SEQ=SEG.ACK><CTL=RST>". An incoming RST is never answered (null).
   */
  static rstFor(seg: TcpRepr): TcpRepr | null {
    if (seg.control === 'rst') return null;
    const base = {
      srcPort: seg.dstPort, dstPort: seg.srcPort, control: 'rst' as const, windowLen: 0,
      windowScale: null, maxSegSize: null, sackPermitted: false, payload: EMPTY,
    };
    if (seg.ackNumber === null) {
      return { ...base, seqNumber: seq(0), ackNumber: seqAdd(seg.seqNumber, TcpRepr.segmentLen(seg)) };
    }
    return { ...base, seqNumber: seg.ackNumber, ackNumber: null };
  }

  // ---- observation (tests and the flow layer)
  get state(): TcpState {
    return this.stateValue;
  }
  get timer(): Readonly<TcpTimer> {
    return this.timerValue;
  }
  get localSeqNo(): Seq {
    return this.sndNxt;
  }
  get unacked(): Seq {
    return this.sndUna;
  }
  get remoteSeqNo(): Seq {
    return this.rcvNxt;
  }
  get sendWindow(): number {
    return this.sndWnd;
  }
  get congestionWindow(): number {
    return this.cwnd;
  }
  get rto(): number {
    return this.rtt.rto;
  }
  get windowShift(): number {
    return this.rcvShift;
  }
  /** Bytes queued for sending (sent but unacknowledged, and unsent). */
  get txBuffered(): number {
    return this.txq.length;
  }
  /** Bytes held out of order. */
  get oooBuffered(): number {
    return this.ooo.size;
  }
  get delayedAckAt(): number | null {
    return this.ackDelayAt;
  }
  /** True once the socket will send nothing more and expects nothing (CLOSED). */
  get isClosed(): boolean {
    return this.stateValue === 'CLOSED';
  }

  // ---- the owner's calls

  /** Queues bytes from the far side (RFC 9293 §3.10.2 SEND). Ignored once we closed. */
  send(data: Buffer): void {
    if (this.finSeq !== null || data.length === 0) return;
    switch (this.stateValue) {
      case 'SYN-RECEIVED': // §3.10.2: "queue the data for transmission after entering ESTABLISHED"
      case 'ESTABLISHED':
      case 'CLOSE-WAIT':
        this.txq.push(data);
        this.txEnd = seqAdd(this.txEnd, data.length);
        return;
      default:
        return;
    }
  }

  /**
   * The far side ended its stream: RFC 9293 §3.10.4 CLOSE. ESTABLISHED -> FIN-WAIT-1 and
   * CLOSE-WAIT -> LAST-ACK, the FIN going out after all queued data; in SYN-RECEIVED the FIN is
   * "queued for processing after entering ESTABLISHED".
   */
  close(): void {
    if (this.finSeq !== null) return;
    switch (this.stateValue) {
      case 'SYN-RECEIVED':
        this.finSeq = this.txEnd;
        return;
      case 'ESTABLISHED':
        this.finSeq = this.txEnd;
        this.setState('FIN-WAIT-1');
        return;
      case 'CLOSE-WAIT':
        this.finSeq = this.txEnd;
        this.setState('LAST-ACK');
        return;
      default:
        return;
    }
  }

  /**
   * The far side failed: RFC 9293 §3.10.5 ABORT. In SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1/2 and
   * CLOSE-WAIT "a reset segment should be sent" (at the next dispatch, then CLOSED); in CLOSING,
   * LAST-ACK and TIME-WAIT the connection is simply deleted.
   */
  abort(): void {
    switch (this.stateValue) {
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
      case 'FIN-WAIT-1':
      case 'FIN-WAIT-2':
      case 'CLOSE-WAIT':
        this.rstPending = true;
        return;
      case 'CLOSING':
      case 'LAST-ACK':
      case 'TIME-WAIT':
        this.enterClosed();
        return;
      case 'CLOSED':
        return;
    }
  }

  /** The earliest time `dispatch` has something to do: 0 = now, Infinity = nothing planned. */
  pollAt(): number {
    if (this.stateValue === 'CLOSED') return Infinity;
    if (this.rstPending || this.ackPending || this.fastRetransmitPending || this.probePending) return 0;
    if (this.stateValue === 'SYN-RECEIVED' && this.sndNxt === this.iss) return 0;
    if (this.canSendData()) return 0;
    let at = this.timerValue.kind === 'idle' ? Infinity : this.timerValue.expiresAt;
    if (this.ackDelayAt !== null && this.ackDelayAt < at) at = this.ackDelayAt;
    if (this.windowUpdateDue()) return 0;
    return at;
  }

  // ---- input

  /**
   * One segment from the peer (its ports already matched). Returns a segment to send at once, or
   * null. Follows RFC 9293 §3.10.7.4 ("SEGMENT ARRIVES, otherwise") step by step.
   */
  process(now: number, seg: TcpRepr): TcpRepr | null {
    const state = this.stateValue;
    if (state === 'CLOSED') return null;

    if (seg.control === 'syn') {
      // A retransmission of the SYN that created us: our SYN-ACK was lost. The sequence check of
      // §3.10.7.4 would call it old and answer with a bare ACK; in SYN-RECEIVED the answer the
      // peer needs is our SYN-ACK again (as listening hosts do), which dispatch now resends.
      if (state === 'SYN-RECEIVED' && seg.ackNumber === null && seg.seqNumber === this.irs) {
        if (this.sndNxt !== this.iss) this.sndNxt = this.iss;
        return null;
      }
      // RFC 5961 §4.2 (updating RFC 9293 §3.10.7.4 fourth): a SYN in a synchronized state,
      // whatever its sequence number, is answered with a challenge ACK and dropped.
      this.counters.challengeAcks++;
      return this.ackReply();
    }

    // First, check the sequence number (§3.10.7.4 first). The window is the one we advertised.
    const segLen = seg.payload.length + (seg.control === 'fin' ? 1 : 0);
    const wnd = Math.max(0, seqDiff(this.rcvAdvRight, this.rcvNxt));
    if (!this.acceptable(seg.seqNumber, segLen, wnd)) {
      // "If an incoming segment is not acceptable, an acknowledgment should be sent in reply
      // (unless the RST bit is set, if so drop the segment and return)".
      this.counters.outOfWindow++;
      if (seg.control === 'rst') return null;
      return this.ackReply();
    }

    // Second, check the RST bit (§3.10.7.4 second, with RFC 5961 §3.2): only a RST exactly at
    // RCV.NXT resets; another in-window RST gets a challenge ACK.
    if (seg.control === 'rst') {
      if (seg.seqNumber !== this.rcvNxt) {
        this.counters.challengeAcks++;
        return this.ackReply();
      }
      switch (state) {
        case 'SYN-RECEIVED': // passive open: "return this connection to LISTEN": for us, gone
        case 'ESTABLISHED':
        case 'FIN-WAIT-1':
        case 'FIN-WAIT-2':
        case 'CLOSE-WAIT':
          // "any outstanding RECEIVEs and SEND should receive reset responses ... enter CLOSED"
          this.host.onReset();
          this.enterClosed();
          return null;
        default:
          // CLOSING, LAST-ACK, TIME-WAIT: "enter the CLOSED state, delete the TCB, and return"
          this.enterClosed();
          return null;
      }
    }

    // Fifth, check the ACK field (§3.10.7.4 fifth): "if the ACK bit is off, drop the segment".
    const ack = seg.ackNumber;
    if (ack === null) return null;

    if (state === 'SYN-RECEIVED') {
      // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and continue processing
      // with the variables SND.WND <- SEG.WND, SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK. If the
      // segment acknowledgment is not acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>".
      if (!(seqLt(this.sndUna, ack) && seqLe(ack, this.sndNxt))) {
        return this.rstReply(ack);
      }
      this.sndWnd = seg.windowLen * 2 ** this.sndShift;
      this.maxSndWnd = Math.max(this.maxSndWnd, this.sndWnd);
      this.sndWl1 = seg.seqNumber;
      this.sndWl2 = ack;
      if (this.synTimedOut) this.rtt.resetAfterSynTimeout();
      this.setState(this.finSeq !== null ? 'FIN-WAIT-1' : 'ESTABLISHED');
    }

    // ESTABLISHED and the others: "If the ACK acks something not yet sent (SEG.ACK > SND.NXT)
    // then send an ACK, drop the segment, and return." (SND.MAX: we may have gone back for a
    // retransmission, and an ACK for the original transmission is still valid.)
    if (seqGt(ack, this.sndMax)) {
      return this.ackReply();
    }
    // RFC 5961 §5.2: an ACK older than SND.UNA - MAX.SND.WND is answered with a challenge ACK.
    if (seqLt(ack, seqAdd(this.sndUna, -Math.max(this.maxSndWnd, 1)))) {
      this.counters.challengeAcks++;
      return this.ackReply();
    }
    if (seqGt(ack, this.sndUna)) {
      // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK."
      this.onNewAck(now, ack);
    } else if (
      // RFC 5681 §2 DUPLICATE ACKNOWLEDGMENT: outstanding data, no data, no SYN/FIN, SEG.ACK =
      // SND.UNA, same window.
      ack === this.sndUna && seqGt(this.sndMax, this.sndUna) && seg.payload.length === 0 &&
      seg.control !== 'fin' && seg.windowLen * 2 ** this.sndShift === this.sndWnd &&
      // The answer to a zero-window probe repeats SND.UNA: it says "window still closed", not
      // "a segment was lost" (RFC 9293 §3.8.6.1), and must not start a fast retransmit.
      this.timerValue.kind !== 'zeroWindowProbe'
    ) {
      this.onDupAck();
    }
    // RFC 1122 §4.2.2.17: the peer answered; only probes nobody answers count towards giving up.
    if (this.timerValue.kind === 'zeroWindowProbe') this.timerValue.probes = 0;
    // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If (SND.WL1 < SEG.SEQ
    // or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)), set SND.WND <- SEG.WND, SND.WL1 <- SEG.SEQ,
    // and SND.WL2 <- SEG.ACK." (scaled per RFC 7323 §2.3)
    if (seqLt(this.sndWl1, seg.seqNumber) || (this.sndWl1 === seg.seqNumber && seqLe(this.sndWl2, ack))) {
      this.updateWindow(now, seg.windowLen * 2 ** this.sndShift);
      this.sndWl1 = seg.seqNumber;
      this.sndWl2 = ack;
    }

    const finAcked = this.finSeq !== null && seqGt(this.sndUna, this.finSeq);
    switch (this.stateValue) {
      case 'FIN-WAIT-1':
        // "In addition to the processing for the ESTABLISHED state, if the FIN segment is now
        // acknowledged, then enter FIN-WAIT-2 and continue processing in that state."
        if (finAcked) this.enterFinWait2(now);
        break;
      case 'CLOSING':
        // "if the ACK acknowledges our FIN, then enter the TIME-WAIT state; otherwise, ignore".
        if (finAcked) this.enterTimeWait(now);
        return null;
      case 'LAST-ACK':
        // "The only thing that can arrive in this state is an acknowledgment of our FIN. If our
        // FIN is now acknowledged, delete the TCB, enter the CLOSED state, and return."
        if (finAcked) this.enterClosed();
        return null;
      case 'TIME-WAIT':
        // "The only thing that can arrive in this state is a retransmission of the remote FIN.
        // Acknowledge it, and restart the 2 MSL timeout."
        if (seg.control === 'fin') {
          this.timerValue = { kind: 'close', expiresAt: now + this.cfg.timeWait };
          this.ackPending = true;
        }
        return null;
      default:
        break;
    }

    // Seventh, process the segment text (ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2 only: in the other
    // states "a FIN has been received from the remote side. Ignore the segment text.").
    const st = this.stateValue;
    if (seg.payload.length > 0 && (st === 'ESTABLISHED' || st === 'FIN-WAIT-1' || st === 'FIN-WAIT-2')) {
      const before = this.rcvNxt;
      this.receiveText(now, seg.seqNumber, seg.payload);
      // A peer still sending is not an orphan: the FIN-WAIT-2 timeout starts again.
      if (st === 'FIN-WAIT-2' && this.rcvNxt !== before) this.startFinWait2Timer(now);
    }

    // Eighth, check the FIN bit (§3.10.7.4 eighth).
    if (seg.control === 'fin' && !this.rxFinDone) {
      const finAt = seqAdd(seg.seqNumber, seg.payload.length);
      if (seqGe(finAt, this.rcvNxt) && seqLt(finAt, seqAdd(this.rcvNxt, Math.max(wnd, 1)))) {
        this.rxFinSeq = finAt;
      }
    }
    this.maybeReceiveFin(now);
    return null;
  }

  // ---- output

  /**
   * Builds at most one segment and hands it to `emit`; the socket's state changes only when
   * `emit` returns true (smoltcp's dispatch). Returns whether a segment went out. Timer expiries
   * are acted upon here.
   */
  dispatch(now: number, emit: (seg: TcpRepr) => boolean): boolean {
    if (this.stateValue === 'CLOSED') return false;

    if (this.rstPending) {
      // RFC 9293 §3.10.5: "<SEQ=SND.NXT><CTL=RST>" (with an ACK so any peer state accepts it),
      // but never beyond the peer's window (a probe byte it refused): RFC 5961 §3.2 peers accept
      // only a RST inside it, so, like Linux's tcp_acceptable_seq, SND.UNA + SND.WND then.
      const wndEnd = seqAdd(this.sndUna, this.sndWnd);
      const out = this.prepare('rst', seqGt(this.sndNxt, wndEnd) ? wndEnd : this.sndNxt, EMPTY);
      out.ackNumber = this.rcvNxt;
      out.windowLen = 0;
      if (!emit(out)) return false;
      this.rstPending = false;
      this.host.onReset();
      this.enterClosed();
      return true;
    }

    this.handleTimers(now);
    if ((this.stateValue as TcpState) === 'CLOSED') return false;
    if (this.rstPending) return this.dispatch(now, emit);

    if (this.stateValue === 'SYN-RECEIVED') {
      if (this.sndNxt !== this.iss) return this.dispatchAck(now, emit);
      // RFC 9293 §3.10.7.2: "<SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>" with our MSS (§3.7.1) and, when
      // the peer offered it, our window scale (RFC 7323 §2.2); the window in a SYN is not scaled.
      const out = this.prepare('syn', this.iss, EMPTY);
      out.maxSegSize = this.cfg.mss;
      out.windowScale = this.wsEnabled ? this.rcvShift : null;
      const w = Math.min(this.rcvWindow(), 0xffff);
      out.windowLen = w;
      this.advertised = w;
      if (!emit(out)) return false;
      this.sndNxt = seqAdd(this.iss, 1);
      this.sndMax = seqMax(this.sndMax, this.sndNxt);
      this.ackSent();
      if (this.timerValue.kind === 'idle') this.startRetransmitTimer(now);
      return true;
    }

    if (this.dispatchData(now, emit)) return true;
    return this.dispatchAck(now, emit);
  }

  // ---- internals: input helpers

  /** §3.10.7.4 first: the four cases of segment acceptability. */
  private acceptable(segSeq: Seq, segLen: number, wnd: number): boolean {
    const nxt = this.rcvNxt;
    const end = seqAdd(nxt, wnd);
    if (segLen === 0) {
      if (wnd === 0) return segSeq === nxt;
      return seqLe(nxt, segSeq) && seqLt(segSeq, end);
    }
    if (wnd === 0) return false;
    const last = seqAdd(segSeq, segLen - 1);
    return (seqLe(nxt, segSeq) && seqLt(segSeq, end)) || (seqLe(nxt, last) && seqLt(last, end));
  }

  private onNewAck(now: number, ack: Seq): void {
    const acked = seqDiff(ack, this.sndUna);
    // Data bytes acknowledged (the SYN and FIN take sequence space but no queue bytes).
    const dataAcked = Math.min(Math.max(0, seqDiff(ack, this.txBase)), this.txq.length);
    if (dataAcked > 0) {
      this.txq.discard(dataAcked);
      this.txBase = seqAdd(this.txBase, dataAcked);
    }
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
    // RFC 6298 §3 / Karn: sample only segments not retransmitted (rttSeq is cleared on every
    // retransmission).
    if (this.rttSeq !== null && seqGe(ack, this.rttSeq)) {
      this.rtt.sample(now - this.rttAt);
      this.rttSeq = null;
    }
    this.retransmits = 0;
    if (this.inRecovery) {
      if (seqGe(ack, this.recover)) {
        // RFC 6582 §3.2 step 3 (full acknowledgment): cwnd <- ssthresh, leave recovery.
        this.inRecovery = false;
        this.cwnd = this.ssthresh;
      } else {
        // RFC 6582 §3.2 step 4 (partial acknowledgment): retransmit the first unacknowledged
        // segment, deflate cwnd by the amount acknowledged.
        this.fastRetransmitPending = true;
        this.cwnd = Math.max(this.sendMss, this.cwnd - acked + this.sendMss);
      }
    } else if (this.cwnd < this.ssthresh) {
      // Slow start (RFC 5681 §3.1), counting bytes acknowledged as RFC 3465 §2.2 does, without
      // its cap of L*SMSS per ACK: our only peer is the local kernel, which acknowledges GRO
      // super-segments (up to 64 KiB, dozens of wire segments) with one ACK, so "cwnd +=
      // min(N, SMSS)" would grow the window by 1 MSS per 64 KiB and keep a new flow slow for
      // hundreds of round trips. Linux itself grows by the number of segments acknowledged. The
      // cap guards against ACK division by a remote receiver, which a virtual link does not have.
      this.cwnd = Math.min(this.cwnd + acked, MAX_CWND);
    } else {
      // Congestion avoidance: cwnd += SMSS*SMSS/cwnd per ACK (RFC 5681 eqn. 3).
      this.cwnd += Math.max(1, Math.floor((this.sendMss * this.sendMss) / this.cwnd));
    }
    this.dupAcks = 0;
    // RFC 6298 §5.2: all outstanding data acknowledged -> turn off the timer; §5.3: an ACK for new
    // data restarts it.
    if (this.sndUna === this.sndMax) {
      // Nothing outstanding: nothing left to retransmit fast either.
      this.fastRetransmitPending = false;
      if (this.timerValue.kind === 'retransmit') this.timerValue = { kind: 'idle' };
    } else if (this.timerValue.kind === 'retransmit') {
      this.startRetransmitTimer(now);
    }
    if (dataAcked > 0) this.host.onTxFreed();
  }

  private onDupAck(): void {
    this.dupAcks++;
    if (this.inRecovery) {
      // RFC 6582 §3.2 step 5 / RFC 5681 §3.2 step 4: inflate cwnd for every further dup ACK.
      this.cwnd += this.sendMss;
      return;
    }
    if (this.dupAcks === 3) {
      // RFC 5681 §3.2: on the third duplicate ACK, ssthresh = max(FlightSize/2, 2*SMSS),
      // retransmit the lost segment, cwnd = ssthresh + 3*SMSS.
      this.counters.fastRetransmits++;
      const flight = seqDiff(this.sndMax, this.sndUna);
      this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.sendMss);
      this.cwnd = this.ssthresh + 3 * this.sendMss;
      this.inRecovery = true;
      this.recover = this.sndMax;
      this.fastRetransmitPending = true;
      this.rttSeq = null;
    }
  }

  private updateWindow(now: number, wnd: number): void {
    this.sndWnd = wnd;
    this.maxSndWnd = Math.max(this.maxSndWnd, wnd);
    const unsent = this.unsentBytes();
    if (wnd === 0 && (unsent > 0 || this.finUnsent())) {
      // RFC 9293 §3.8.6.1 / RFC 1122 §4.2.2.17: a zero window with data to send starts the
      // persist timer (probes until the window opens; the connection is kept as long as the
      // peer answers).
      if (this.timerValue.kind !== 'zeroWindowProbe' && this.sndUna === this.sndMax) this.startPersistTimer(now);
    } else if (wnd > 0 && this.timerValue.kind === 'zeroWindowProbe') {
      // The window opened: what the probe carried was not taken (or SND.UNA would have moved),
      // so sending resumes at SND.UNA.
      this.timerValue = { kind: 'idle' };
      this.probePending = false;
      this.sndNxt = this.sndUna;
    }
  }

  private receiveText(now: number, segSeq: Seq, payload: Buffer): void {
    // Trim what was received already, and what lies beyond the window we advertised.
    let data = payload;
    let start = segSeq;
    const dup = seqDiff(this.rcvNxt, start);
    if (dup > 0) {
      data = data.subarray(dup);
      start = this.rcvNxt;
    }
    const room = seqDiff(this.rcvAdvRight, start);
    if (room <= 0) {
      this.ackPending = true;
      return;
    }
    if (data.length > room) data = data.subarray(0, room);
    if (data.length === 0) {
      this.ackPending = true;
      return;
    }
    if (start === this.rcvNxt) {
      const filledHole = !this.ooo.isEmpty();
      this.deliver(data);
      for (let more = this.ooo.pop(this.rcvNxt); more !== null; more = this.ooo.pop(this.rcvNxt)) {
        this.deliver(more);
      }
      if (filledHole) {
        // RFC 5681 §4.2: a segment that fills (part of) a gap SHOULD be acknowledged at once.
        this.ackPending = true;
      } else {
        this.noteDataForAck(now, data.length);
      }
    } else {
      // RFC 9293 §3.10.7.4 seventh (segments beyond RCV.NXT are held) and RFC 5681 §4.2: an
      // out-of-order segment SHOULD be acknowledged at once (the duplicate ACK drives the
      // sender's fast retransmit).
      if (!this.ooo.insert(this.rcvNxt, start, data)) this.counters.oooDropped++;
      this.ackPending = true;
    }
  }

  private deliver(data: Buffer): void {
    this.rcvNxt = seqAdd(this.rcvNxt, data.length);
    this.host.onData(data);
  }

  /**
   * RFC 9293 §3.8.6.3 / RFC 1122 §4.2.3.2: ACKs may be delayed (less than 0.5 s), but "there
   * SHOULD be an ACK for at least every second full-sized segment".
   */
  private noteDataForAck(now: number, len: number): void {
    this.rcvSinceAck += len;
    if (this.cfg.ackDelay <= 0 || this.rcvSinceAck >= 2 * this.cfg.mss) {
      this.ackPending = true;
    } else if (this.ackDelayAt === null) {
      this.ackDelayAt = now + this.cfg.ackDelay;
    }
  }

  private maybeReceiveFin(now: number): void {
    if (this.rxFinSeq === null || this.rxFinDone || this.rxFinSeq !== this.rcvNxt) return;
    // §3.10.7.4 eighth: "advance RCV.NXT over the FIN ... and return an acknowledgment".
    this.rxFinDone = true;
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    this.rcvAdvRight = seqMax(this.rcvAdvRight, this.rcvNxt);
    this.ackPending = true;
    this.host.onFin();
    switch (this.stateValue) {
      case 'SYN-RECEIVED':
      case 'ESTABLISHED':
        this.setState('CLOSE-WAIT'); // "Enter the CLOSE-WAIT state."
        break;
      case 'FIN-WAIT-1':
        // "If our FIN has been ACKed ... enter TIME-WAIT ... otherwise, enter the CLOSING state."
        if (this.finSeq !== null && seqGt(this.sndUna, this.finSeq)) this.enterTimeWait(now);
        else this.setState('CLOSING');
        break;
      case 'FIN-WAIT-2':
        this.enterTimeWait(now); // "Enter the TIME-WAIT state. Start the time-wait timer."
        break;
      default:
        break;
    }
  }

  // ---- internals: output helpers

  private handleTimers(now: number): void {
    const t = this.timerValue;
    if (t.kind === 'idle' || now < t.expiresAt) return;
    switch (t.kind) {
      case 'close':
        // TIME-WAIT over: "delete the TCB, enter the CLOSED state".
        this.enterClosed();
        return;
      case 'zeroWindowProbe':
        if (this.unsentBytes() === 0 && !this.finUnsent() && this.sndNxt === this.sndUna) {
          // Everything was acknowledged meanwhile: nothing left to probe with.
          this.timerValue = { kind: 'idle' };
          return;
        }
        if (t.probes >= this.cfg.maxRetransmits || now - t.since >= this.cfg.persistTimeout) {
          // Every wait has an end: a peer that answers no probe is dead (R2 of RFC 9293 §3.8.3,
          // as for retransmissions); one that keeps its window closed past the persist time
          // holds our queue and the far stream for nothing (RFC 6429). Reset; onReset ends the
          // far stream.
          this.counters.timeouts++;
          this.rstPending = true;
          this.timerValue = { kind: 'idle' };
          return;
        }
        // RFC 1122 §4.2.2.17: probe, and back off exponentially between probes.
        this.counters.zeroWindowProbes++;
        this.probePending = true;
        this.sndNxt = this.sndUna;
        t.probes++;
        t.delay = Math.min(t.delay * 2, this.cfg.rtt.max);
        t.expiresAt = now + t.delay;
        return;
      case 'finWait2':
        // The orphan timeout (Linux tcp_fin_timeout): reset, so the local program learns that
        // nobody will read what it might still send, and the far stream is destroyed.
        this.counters.timeouts++;
        this.rstPending = true;
        this.timerValue = { kind: 'idle' };
        return;
      case 'retransmit': {
        const limit = this.stateValue === 'SYN-RECEIVED' ? this.cfg.maxSynAckRetransmits : this.cfg.maxRetransmits;
        if (this.retransmits >= limit) {
          // RFC 9293 §3.8.3: past R2, close the connection (we send a RST so the peer knows).
          this.counters.timeouts++;
          this.rstPending = true;
          this.timerValue = { kind: 'idle' };
          return;
        }
        this.retransmits++;
        this.counters.retransmits++;
        // RFC 6298 §5.4-5.6: retransmit the earliest unacknowledged segment (we go back to
        // SND.UNA), back off the RTO, restart the timer when it is sent.
        this.rtt.backoff();
        if (this.stateValue === 'SYN-RECEIVED') this.synTimedOut = true;
        // RFC 5681 §3.1 eqn. 4 and "loss window": ssthresh = max(FlightSize/2, 2*SMSS), cwnd = 1 SMSS.
        const flight = seqDiff(this.sndMax, this.sndUna);
        this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.sendMss);
        this.cwnd = this.sendMss;
        this.inRecovery = false;
        this.dupAcks = 0;
        this.rttSeq = null;
        this.sndNxt = this.sndUna;
        this.timerValue = { kind: 'idle' };
        return;
      }
    }
  }

  /** Bytes in the queue not yet sent at SND.NXT. */
  private unsentBytes(): number {
    const sent = Math.min(Math.max(0, seqDiff(this.sndNxt, this.txBase)), this.txq.length);
    return this.txq.length - sent;
  }

  private finUnsent(): boolean {
    return this.finSeq !== null && seqLe(this.sndNxt, this.finSeq);
  }

  private sendingState(): boolean {
    const s = this.stateValue;
    return s === 'ESTABLISHED' || s === 'CLOSE-WAIT' || s === 'FIN-WAIT-1' || s === 'LAST-ACK' || s === 'CLOSING';
  }

  private canSendData(): boolean {
    if (!this.sendingState()) return false;
    const unsent = this.unsentBytes();
    if (unsent === 0) return this.finUnsent();
    const inFlight = seqDiff(this.sndNxt, this.sndUna);
    const usable = Math.min(this.sndWnd, this.cwnd) - inFlight;
    return usable >= Math.min(unsent, this.sendMss) || (usable > 0 && inFlight === 0);
  }

  private dispatchData(now: number, emit: (seg: TcpRepr) => boolean): boolean {
    if (!this.sendingState()) {
      // Nothing is ever sent from here (FIN-WAIT-2, TIME-WAIT): a request left over from before
      // must not keep pollAt() at "now" (finding N1: the engine re-armed every 1 ms for ever).
      this.fastRetransmitPending = false;
      this.probePending = false;
      return false;
    }
    const mss = this.sendMss;

    if (this.fastRetransmitPending) {
      // RFC 5681 §3.2 step 2 / RFC 6582: resend one segment at SND.UNA, SND.NXT unchanged.
      const len = Math.min(mss, this.txq.length - Math.max(0, seqDiff(this.sndUna, this.txBase)), seqDiff(this.sndMax, this.sndUna));
      const dataOff = Math.max(0, seqDiff(this.sndUna, this.txBase));
      const payload = this.txq.slice(dataOff, Math.max(0, len));
      const withFin = this.finSeq !== null && seqAdd(this.sndUna, payload.length) === this.finSeq &&
        seqGt(this.sndMax, this.finSeq);
      const out = this.prepare(withFin ? 'fin' : payload.length > 0 ? 'psh' : 'none', this.sndUna, payload);
      if (payload.length === 0 && !withFin) {
        this.fastRetransmitPending = false;
        return false;
      }
      if (!emit(out)) return false;
      this.fastRetransmitPending = false;
      this.ackSent();
      this.startRetransmitTimer(now);
      return true;
    }

    const unsent = this.unsentBytes();
    const finUnsent = this.finUnsent();
    if (unsent === 0 && !finUnsent) {
      this.probePending = false;
      return false;
    }
    const inFlight = seqDiff(this.sndNxt, this.sndUna);
    let usable = Math.min(this.sndWnd, this.cwnd) - inFlight;
    if (this.probePending) usable = Math.max(usable, 1); // the probe ignores the zero window
    let len = Math.min(unsent, Math.max(0, usable), this.maxSegment());
    if (len > mss && len < unsent) len -= len % mss; // keep super-segments whole MSS multiples while more follows
    // RFC 9293 §3.8.6.2.1 sender-side SWS avoidance: send a full segment, or everything that is
    // queued, or (nothing in flight) what the window allows; otherwise wait for an ACK.
    if (len > 0 && len < mss && len < unsent && inFlight > 0 && !this.probePending) len = 0;
    const dataOff = unsent === 0 ? this.txq.length : this.txq.length - unsent;
    const payload = len > 0 ? this.txq.slice(dataOff, len) : EMPTY;
    // Our FIN rides on the segment that carries the last queued byte (or alone).
    const withFin = finUnsent && len === unsent;
    if (len === 0 && !withFin) {
      // Nothing fits: with a zero window and nothing in flight to bring an ACK, only the persist
      // timer can get us going again (RFC 9293 §3.8.6.1).
      if (this.sndWnd === 0 && this.sndNxt === this.sndUna && this.timerValue.kind === 'idle') this.startPersistTimer(now);
      return false;
    }
    const pushed = len > 0 && len === unsent;
    const out = this.prepare(withFin ? 'fin' : pushed ? 'psh' : 'none', this.sndNxt, payload);
    if (!emit(out)) return false;

    const before = this.sndNxt;
    const isNew = seqGe(before, this.sndMax);
    this.sndNxt = seqAdd(this.sndNxt, len + (withFin ? 1 : 0));
    this.sndMax = seqMax(this.sndMax, this.sndNxt);
    if (isNew && this.rttSeq === null) {
      this.rttSeq = this.sndNxt;
      this.rttAt = now;
    }
    if (this.probePending) {
      this.probePending = false;
    } else if (this.timerValue.kind === 'idle') {
      // RFC 6298 §5.1: "Every time a packet containing data is sent (including a
      // retransmission), if the timer is not running, start it".
      this.startRetransmitTimer(now);
    }
    this.ackSent();
    return true;
  }

  private dispatchAck(now: number, emit: (seg: TcpRepr) => boolean): boolean {
    const due = this.ackPending || (this.ackDelayAt !== null && now >= this.ackDelayAt) || this.windowUpdateDue();
    if (!due) return false;
    const out = this.prepare('none', this.sndNxt, EMPTY);
    if (!emit(out)) return false;
    this.ackSent();
    return true;
  }

  /** RFC 9293 §3.8.6.2.2: send a window update when the window grew by min(RCV.BUFF/2, MSS). */
  private windowUpdateDue(): boolean {
    const s = this.stateValue;
    if (s !== 'ESTABLISHED' && s !== 'FIN-WAIT-1' && s !== 'FIN-WAIT-2') return false;
    const grow = seqDiff(seqAdd(this.rcvNxt, this.rcvWindow()), this.rcvAdvRight);
    return grow >= Math.min(this.cfg.rxCapacity / 2, this.cfg.mss);
  }

  /** Largest payload of one segment (the emitter's policy, via `maxBurst`). */
  private maxSegment(): number {
    return Math.max(this.sendMss, this.cfg.maxBurst);
  }

  /**
   * The receive window to advertise: the room the host gives, capped by what the window field
   * can say, never moving the right edge left (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4), and with
   * receiver-side SWS avoidance (a window below min(RCV.BUFF/2, MSS) is not opened).
   */
  private rcvWindow(): number {
    let w = Math.min(Math.max(0, this.host.rxRoom()), 0xffff * 2 ** this.rcvShift);
    const edge = Math.max(0, seqDiff(this.rcvAdvRight, this.rcvNxt));
    if (w > edge && w < Math.min(this.cfg.rxCapacity / 2, this.cfg.mss)) w = edge;
    return Math.max(w, edge);
  }

  private prepare(control: TcpRepr['control'], seqNumber: Seq, payload: Buffer): TcpRepr {
    const out = this.out;
    out.control = control;
    out.seqNumber = seqNumber;
    out.ackNumber = this.rcvNxt;
    out.payload = payload;
    out.maxSegSize = null;
    out.windowScale = null;
    const w = this.rcvWindow();
    // Round up so that the right edge we advertise is never left of the last one.
    out.windowLen = Math.min(0xffff, Math.ceil(w / 2 ** this.rcvShift));
    this.advertised = out.windowLen * 2 ** this.rcvShift;
    return out;
  }

  /** Bookkeeping after any segment with an ACK went out. */
  private ackSent(): void {
    this.ackPending = false;
    this.ackDelayAt = null;
    this.rcvSinceAck = 0;
    this.rcvAdvRight = seqMax(this.rcvAdvRight, seqAdd(this.rcvNxt, this.advertised));
  }

  private startPersistTimer(now: number): void {
    this.timerValue = { kind: 'zeroWindowProbe', expiresAt: now + this.rtt.rto, delay: this.rtt.rto, probes: 0, since: now };
  }

  private enterFinWait2(now: number): void {
    this.setState('FIN-WAIT-2');
    this.startFinWait2Timer(now);
  }

  private startFinWait2Timer(now: number): void {
    this.timerValue = { kind: 'finWait2', expiresAt: now + this.cfg.finWait2Timeout };
  }

  private startRetransmitTimer(now: number): void {
    this.timerValue = { kind: 'retransmit', expiresAt: now + this.rtt.rto };
  }

  /**
   * An immediate ACK (returned by `process`, emitted by the caller at once). The window it
   * carries counts as advertised: otherwise a peer probing a closed window would be told of an
   * opening we would then refuse to accept.
   */
  private ackReply(): TcpRepr {
    const reply = { ...this.prepare('none', this.sndNxt, EMPTY) };
    this.rcvAdvRight = seqMax(this.rcvAdvRight, seqAdd(this.rcvNxt, this.advertised));
    return reply;
  }

  private rstReply(ack: Seq): TcpRepr {
    return {
      srcPort: this.ports.localPort, dstPort: this.ports.remotePort, control: 'rst', seqNumber: ack,
      ackNumber: null, windowLen: 0, windowScale: null, maxSegSize: null, sackPermitted: false, payload: EMPTY,
    };
  }

  private enterTimeWait(now: number): void {
    this.setState('TIME-WAIT');
    this.txq.clear();
    this.ooo.clear();
    this.timerValue = { kind: 'close', expiresAt: now + this.cfg.timeWait };
  }

  private enterClosed(): void {
    this.setState('CLOSED');
    this.timerValue = { kind: 'idle' };
    this.ackDelayAt = null;
    this.ackPending = false;
    this.txq.clear();
    this.ooo.clear();
    if (!this.closedNotified) {
      this.closedNotified = true;
      this.host.onClosed();
    }
  }

  /** Every state change goes through here (and is traced when someone listens). */
  private setState(next: TcpState): void {
    const prev = this.stateValue;
    if (prev === next) return;
    this.stateValue = next;
    if (this.trace !== null) this.trace(prev, next);
  }
}

const EMPTY = Buffer.alloc(0);
