/**
 * The TCP state machine, one test per transition, grouped by state and named state_event.
 * Fixtures derive each state's socket from the previous one through real transitions; the clock
 * is explicit; both initial sequence numbers sit just below 2^32 so every test crosses the wrap.
 */
import test, { type ExecutionContext } from 'ava';
import { seq, seqAdd, type Seq } from '../src/netstack/seq.js';
import {
  DEFAULT_TCP_CONFIG, TcpSocket, newTcpCounters, type TcpConfig, type TcpSocketHost, type TcpState,
} from '../src/netstack/tcp/socket.js';
import { RttEstimator } from '../src/netstack/tcp/rtt.js';
import type { TcpRepr } from '../src/netstack/wire/tcp.js';

const LOCAL_PORT = 80;
const REMOTE_PORT = 49500;
/** Our ISS: the SYN-ACK takes 2^32-6, data starts at 2^32-5 and wraps after 5 bytes. */
const LOCAL_SEQ = seq(0xfffffffa);
/** The peer's ISN: its data starts at 2^32-3 and wraps after 3 bytes. */
const REMOTE_SEQ = seq(0xfffffffc);
const PEER_MSS = 1000;

const L = (n: number): Seq => seqAdd(LOCAL_SEQ, n);
const R = (n: number): Seq => seqAdd(REMOTE_SEQ, n);

/** The flow layer's side, for real: records what the socket hands over, with a receive buffer. */
class Host implements TcpSocketHost {
  data: Buffer[] = [];
  fins = 0;
  resets = 0;
  closed = 0;
  freed = 0;
  /** Receive buffer size, and bytes delivered but not yet consumed (the far side's backlog). */
  capacity: number;
  backlog = 0;
  /** Overrides the room (e.g. a global budget running out). */
  roomOverride: number | null = null;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  onData(d: Buffer): void {
    this.data.push(Buffer.from(d));
    this.backlog += d.length;
  }
  onFin(): void {
    this.fins++;
  }
  onReset(): void {
    this.resets++;
  }
  onTxFreed(): void {
    this.freed++;
  }
  onClosed(): void {
    this.closed++;
  }
  rxRoom(): number {
    return this.roomOverride ?? this.capacity - this.backlog;
  }
  consume(): void {
    this.backlog = 0;
  }
  get received(): string {
    return Buffer.concat(this.data).toString('latin1');
  }
}

interface Ctx {
  s: TcpSocket;
  host: Host;
  transitions: Array<[TcpState, TcpState]>;
}

function config(over: Partial<TcpConfig> = {}): TcpConfig {
  return { ...DEFAULT_TCP_CONFIG, mss: 1460, rxCapacity: 65535, ackDelay: 10, timeWait: 2000, ...over };
}

/** A segment from the peer. */
function seg(over: Partial<TcpRepr> = {}): TcpRepr {
  return {
    srcPort: REMOTE_PORT, dstPort: LOCAL_PORT, control: 'none', seqNumber: R(1), ackNumber: L(1),
    windowLen: 65535, windowScale: null, maxSegSize: null, sackPermitted: false, payload: Buffer.alloc(0), ...over,
  };
}

function data(n: number, fill = 'x'): Buffer {
  return Buffer.alloc(n, fill);
}

/** Dispatches once; returns a copy of the segment emitted, or null. */
function recv(c: Ctx, now: number): TcpRepr | null {
  let out: TcpRepr | null = null;
  c.s.dispatch(now, (r) => {
    out = { ...r, payload: Buffer.from(r.payload) };
    return true;
  });
  return out;
}

/** Dispatches until nothing more goes out. */
function recvAll(c: Ctx, now: number): TcpRepr[] {
  const all: TcpRepr[] = [];
  for (let r = recv(c, now); r !== null; r = recv(c, now)) all.push(r);
  return all;
}

type Expected = Partial<Omit<TcpRepr, 'payload'>> & { payload?: string };

function like(t: ExecutionContext, got: TcpRepr | null, want: Expected, what = ''): void {
  if (got === null) {
    t.fail(`expected a segment ${what}`);
    return;
  }
  const { payload, ...rest } = want;
  if (Object.keys(rest).length > 0) t.like(got, rest, what);
  if (payload !== undefined) t.is(got.payload.toString('latin1'), payload, what);
}

function expect(t: ExecutionContext, c: Ctx, now: number, want: Expected): void {
  like(t, recv(c, now), want, `at ${now}`);
}

function expectNothing(t: ExecutionContext, c: Ctx, now: number): void {
  const r = recv(c, now);
  t.is(r, null, r ? `unexpected ${r.control} seq=${r.seqNumber} len=${r.payload.length}` : '');
}

// ---- fixtures: each state from the previous one

interface Opts {
  cfg?: Partial<TcpConfig>;
  windowScale?: number | null;
  peerWindow?: number;
  capacity?: number;
}

function synReceived(o: Opts = {}): Ctx {
  const cfg = config(o.cfg);
  const host = new Host(o.capacity ?? cfg.rxCapacity);
  const syn = seg({
    control: 'syn', seqNumber: REMOTE_SEQ, ackNumber: null, windowLen: o.peerWindow ?? 65535,
    windowScale: o.windowScale ?? null, maxSegSize: PEER_MSS,
  });
  const s = TcpSocket.fromSyn(syn, LOCAL_SEQ, cfg, host, newTcpCounters());
  const c: Ctx = { s, host, transitions: [] };
  s.trace = (a, b) => c.transitions.push([a, b]);
  const synAck = recv(c, 0);
  if (!synAck || synAck.control !== 'syn') throw new Error('no SYN-ACK');
  return c;
}

function established(o: Opts = {}): Ctx {
  const c = synReceived(o);
  const reply = c.s.process(0, seg({ windowLen: o.peerWindow ?? 65535 }));
  if (reply !== null || c.s.state !== 'ESTABLISHED') throw new Error('not established');
  return c;
}

/** ESTABLISHED, we closed: our FIN (at L(1), no data) sent. */
function finWait1(o: Opts = {}): Ctx {
  const c = established(o);
  c.s.close();
  const fin = recv(c, 0);
  if (!fin || fin.control !== 'fin') throw new Error('no FIN');
  return c;
}

function finWait2(o: Opts = {}): Ctx {
  const c = finWait1(o);
  c.s.process(0, seg({ ackNumber: L(2) }));
  if (c.s.state !== 'FIN-WAIT-2') throw new Error('not FIN-WAIT-2');
  return c;
}

function closeWait(o: Opts = {}): Ctx {
  const c = established(o);
  c.s.process(0, seg({ control: 'fin' }));
  recvAll(c, 0);
  if (c.s.state !== 'CLOSE-WAIT') throw new Error('not CLOSE-WAIT');
  return c;
}

function lastAck(o: Opts = {}): Ctx {
  const c = closeWait(o);
  c.s.close();
  const fin = recv(c, 0);
  if (!fin || fin.control !== 'fin') throw new Error('no FIN');
  return c;
}

function closing(o: Opts = {}): Ctx {
  const c = finWait1(o);
  c.s.process(0, seg({ control: 'fin', ackNumber: L(1) }));
  recvAll(c, 0);
  if (c.s.state !== 'CLOSING') throw new Error('not CLOSING');
  return c;
}

function timeWait(o: Opts = {}): Ctx {
  const c = finWait2(o);
  c.s.process(0, seg({ control: 'fin', ackNumber: L(2) }));
  recvAll(c, 0);
  if (c.s.state !== 'TIME-WAIT') throw new Error('not TIME-WAIT');
  return c;
}

// ---- SYN-RECEIVED

test('synReceived_dispatchSendsSynAckWithOptions', (t) => {
  const cfg = config({ rxCapacity: 1 << 20 });
  const host = new Host(1 << 20);
  const s = TcpSocket.fromSyn(
    seg({ control: 'syn', seqNumber: REMOTE_SEQ, ackNumber: null, windowScale: 7, maxSegSize: PEER_MSS }),
    LOCAL_SEQ, cfg, host,
  );
  const c: Ctx = { s, host, transitions: [] };
  t.is(s.state, 'SYN-RECEIVED');
  // RFC 7323: a 1 MiB buffer needs shift 5; the SYN's own window is never scaled.
  expect(t, c, 0, {
    control: 'syn', seqNumber: LOCAL_SEQ, ackNumber: R(1), maxSegSize: 1460, windowScale: 5, windowLen: 65535,
    srcPort: LOCAL_PORT, dstPort: REMOTE_PORT,
  });
  t.is(s.sendMss, PEER_MSS);
  expectNothing(t, c, 0);
});

test('synReceived_noWindowScaleWhenPeerOffersNone', (t) => {
  const c = synReceived({ cfg: { rxCapacity: 1 << 20 }, capacity: 1 << 20 });
  t.is(c.s.windowShift, 0);
  // A retransmitted SYN (the SYN-ACK was lost) makes us send it again, unchanged.
  t.is(c.s.process(5, seg({ control: 'syn', seqNumber: REMOTE_SEQ, ackNumber: null })), null);
  expect(t, c, 5, { control: 'syn', seqNumber: LOCAL_SEQ, windowScale: null, windowLen: 65535 });
});

test('synReceived_ackEstablishes', (t) => {
  const c = synReceived();
  t.is(c.s.process(1, seg()), null);
  t.is(c.s.state, 'ESTABLISHED');
  t.deepEqual(c.transitions, [['SYN-RECEIVED', 'ESTABLISHED']]);
  t.is(c.s.timer.kind, 'idle');
  expectNothing(t, c, 1);
});

test('synReceived_rstBadAck', (t) => {
  const c = synReceived();
  // RFC 9293 §3.10.7.4: an unacceptable ACK in SYN-RECEIVED gets <SEQ=SEG.ACK><CTL=RST>.
  like(t, c.s.process(1, seg({ ackNumber: L(2) })), { control: 'rst', seqNumber: L(2), ackNumber: null });
  like(t, c.s.process(1, seg({ ackNumber: LOCAL_SEQ })), { control: 'rst', seqNumber: LOCAL_SEQ, ackNumber: null });
  t.is(c.s.state, 'SYN-RECEIVED');
});

test('synReceived_rst', (t) => {
  const c = synReceived();
  t.is(c.s.process(1, seg({ control: 'rst', ackNumber: null })), null);
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
  t.is(c.host.closed, 1);
  expectNothing(t, c, 1);
});

test('synReceived_rstOutsideWindowIgnored', (t) => {
  const c = synReceived();
  t.is(c.s.process(1, seg({ control: 'rst', seqNumber: R(200_000), ackNumber: null })), null);
  t.is(c.s.state, 'SYN-RECEIVED');
  t.is(c.host.resets, 0);
});

test('synReceived_timeoutResendsSynAckWithBackoffThenGivesUp', (t) => {
  const c = synReceived({ cfg: { maxSynAckRetransmits: 2 } });
  t.is(c.s.timer.kind, 'retransmit');
  expectNothing(t, c, 999);
  expect(t, c, 1000, { control: 'syn', seqNumber: LOCAL_SEQ }); // RFC 6298 §2.1: 1 s
  t.is(c.s.rto, 2000); // §5.5 back-off
  expectNothing(t, c, 2999);
  expect(t, c, 3000, { control: 'syn', seqNumber: LOCAL_SEQ });
  t.is(c.s.rto, 4000);
  // Third expiry: past the limit, a RST and the end.
  expect(t, c, 7000, { control: 'rst', seqNumber: L(1) });
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
});

test('synReceived_closeQueuesFinUntilEstablished', (t) => {
  const c = synReceived();
  c.s.close();
  t.is(c.s.state, 'SYN-RECEIVED');
  expectNothing(t, c, 1);
  c.s.process(1, seg());
  t.is(c.s.state, 'FIN-WAIT-1');
  expect(t, c, 1, { control: 'fin', seqNumber: L(1), ackNumber: R(1) });
});

test('synReceived_dataQueuedUntilEstablished', (t) => {
  const c = synReceived();
  c.s.send(Buffer.from('hello'));
  expectNothing(t, c, 1);
  c.s.process(1, seg());
  expect(t, c, 1, { control: 'psh', seqNumber: L(1), payload: 'hello' });
});

test('synReceived_ackWithDataEstablishesAndDelivers', (t) => {
  const c = synReceived();
  c.s.process(1, seg({ payload: Buffer.from('abc') }));
  t.is(c.s.state, 'ESTABLISHED');
  t.is(c.host.received, 'abc');
  t.is(c.s.remoteSeqNo, R(4));
});

// ---- ESTABLISHED: receiving

test('established_recvDataDelayedAck', (t) => {
  const c = established();
  t.is(c.s.process(0, seg({ payload: Buffer.from('abcdef') })), null);
  t.is(c.host.received, 'abcdef'); // crossed 2^32 at the 4th byte
  expectNothing(t, c, 0);
  expectNothing(t, c, 9);
  expect(t, c, 10, { control: 'none', seqNumber: L(1), ackNumber: R(7) });
  expectNothing(t, c, 20);
});

test('established_recvTwoFullSegmentsAcksAtOnce', (t) => {
  const c = established();
  c.s.process(0, seg({ payload: data(1460) }));
  expectNothing(t, c, 0);
  c.s.process(0, seg({ seqNumber: R(1461), payload: data(1460) }));
  expect(t, c, 0, { ackNumber: R(2921) });
});

test('established_outOfOrderAssembly', (t) => {
  const c = established();
  // The second part first: held, and acknowledged at once (a duplicate ACK, RFC 5681 §4.2).
  c.s.process(0, seg({ seqNumber: R(4), payload: Buffer.from('def') }));
  t.is(c.host.received, '');
  t.is(c.s.oooBuffered, 3);
  expect(t, c, 0, { ackNumber: R(1) });
  c.s.process(0, seg({ seqNumber: R(10), payload: Buffer.from('jkl') }));
  expect(t, c, 0, { ackNumber: R(1) });
  // The hole filled: everything up to the next hole delivered, ACK at once.
  c.s.process(0, seg({ seqNumber: R(1), payload: Buffer.from('abc') }));
  t.is(c.host.received, 'abcdef');
  expect(t, c, 0, { ackNumber: R(7) });
  // Overlapping retransmission covering the second hole and part of what is held.
  c.s.process(0, seg({ seqNumber: R(5), payload: Buffer.from('efghijk') }));
  t.is(c.host.received, 'abcdefghijkl');
  t.is(c.s.oooBuffered, 0);
  expect(t, c, 0, { ackNumber: R(13) });
});

test('established_outOfWindowSegmentGetsAck', (t) => {
  const c = established();
  like(t, c.s.process(0, seg({ seqNumber: R(100_000), payload: Buffer.from('zz') })), {
    control: 'none', seqNumber: L(1), ackNumber: R(1),
  });
  // An old duplicate wholly before RCV.NXT, likewise.
  c.s.process(0, seg({ payload: Buffer.from('abc') }));
  like(t, c.s.process(0, seg({ payload: Buffer.from('abc') })), { ackNumber: R(4) });
  t.is(c.host.received, 'abc');
});

test('established_dataTrimmedToAdvertisedWindow', (t) => {
  const c = established({ capacity: 4000, cfg: { rxCapacity: 4000 } });
  // We advertised 4000 bytes; 5000 arrive: only 4000 are taken.
  c.s.process(0, seg({ payload: data(5000) }));
  t.is(c.host.received.length, 4000);
  t.is(c.s.remoteSeqNo, R(4001));
  // Window now 0: a further byte is not acceptable and is answered with an ACK carrying window 0.
  like(t, c.s.process(0, seg({ seqNumber: R(4001), payload: data(1) })), { ackNumber: R(4001), windowLen: 0 });
});

test('established_windowShrinksWithBacklogAndReopens', (t) => {
  const c = established({ capacity: 8000, cfg: { rxCapacity: 8000 } });
  c.s.process(0, seg({ payload: data(3000) }));
  expect(t, c, 0, { ackNumber: R(3001), windowLen: 5000 });
  c.s.process(0, seg({ seqNumber: R(3001), payload: data(5000) }));
  expect(t, c, 0, { ackNumber: R(8001), windowLen: 0 });
  // The far side takes 1000 bytes: below min(RCV.BUFF/2, MSS) we do not open (SWS avoidance).
  c.host.backlog -= 1000;
  expectNothing(t, c, 1);
  // It takes everything: a window update goes out by itself (RFC 9293 §3.8.6.2.2).
  c.host.consume();
  t.is(c.s.pollAt(), 0);
  expect(t, c, 2, { ackNumber: R(8001), windowLen: 8000 });
  expectNothing(t, c, 2);
});

test('established_neverShrinksTheRightEdge', (t) => {
  const c = established({ capacity: 8000, cfg: { rxCapacity: 8000 } });
  c.host.roomOverride = 0; // e.g. the global budget ran out
  c.s.send(Buffer.from('x'));
  // The window we advertised (8000) stays: the edge never moves left.
  expect(t, c, 0, { payload: 'x', windowLen: 8000 });
  c.s.process(0, seg({ payload: data(100) }));
  expect(t, c, 10, { ackNumber: R(101), windowLen: 7900 });
});

test('established_windowScaleBothWays', (t) => {
  const c = established({ windowScale: 7, cfg: { rxCapacity: 1 << 20 }, capacity: 1 << 20 });
  c.s.process(0, seg({ windowLen: 10 }));
  t.is(c.s.sendWindow, 1280); // RFC 7323 §2.3: SEG.WND << Snd.Wind.Shift
  c.s.send(Buffer.from('q'));
  expect(t, c, 0, { payload: 'q', windowLen: (1 << 20) >> 5 });
});

test('established_rstExact', (t) => {
  const c = established();
  t.is(c.s.process(0, seg({ control: 'rst' })), null);
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
  t.is(c.host.closed, 1);
});

test('established_rstInWindowNotExactGetsChallengeAck', (t) => {
  const c = established();
  like(t, c.s.process(0, seg({ control: 'rst', seqNumber: R(10) })), { control: 'none', ackNumber: R(1) });
  t.is(c.s.state, 'ESTABLISHED');
  t.is(c.host.resets, 0);
});

test('established_synGetsChallengeAck', (t) => {
  const c = established();
  like(t, c.s.process(0, seg({ control: 'syn', seqNumber: R(50), ackNumber: null })), { control: 'none', ackNumber: R(1) });
  t.is(c.s.state, 'ESTABLISHED');
});

test('established_ackOfUnsentDataGetsAck', (t) => {
  const c = established();
  like(t, c.s.process(0, seg({ ackNumber: L(100) })), { control: 'none', seqNumber: L(1), ackNumber: R(1) });
  t.is(c.s.unacked, L(1));
});

test('established_segmentWithoutAckDropped', (t) => {
  const c = established();
  t.is(c.s.process(0, seg({ ackNumber: null, payload: Buffer.from('a') })), null);
  t.is(c.host.received, '');
});

test('established_fin', (t) => {
  const c = established();
  c.s.process(0, seg({ control: 'fin', payload: Buffer.from('bye') }));
  t.is(c.host.received, 'bye');
  t.is(c.host.fins, 1);
  t.is(c.s.state, 'CLOSE-WAIT');
  expect(t, c, 0, { ackNumber: R(5) }); // the FIN is acknowledged at once
});

test('established_finBeyondHoleWaitsForTheHole', (t) => {
  const c = established();
  c.s.process(0, seg({ control: 'fin', seqNumber: R(4), payload: Buffer.from('def') }));
  t.is(c.host.fins, 0);
  t.is(c.s.state, 'ESTABLISHED');
  expect(t, c, 0, { ackNumber: R(1) });
  c.s.process(0, seg({ seqNumber: R(1), payload: Buffer.from('abc') }));
  t.is(c.host.received, 'abcdef');
  t.is(c.host.fins, 1);
  t.is(c.s.state, 'CLOSE-WAIT');
  expect(t, c, 0, { ackNumber: R(8) });
});

// ---- ESTABLISHED: sending

test('established_sendSegmentsAtPeerMss', (t) => {
  const c = established();
  c.s.send(data(2500, 'a'));
  const segs = recvAll(c, 0);
  t.deepEqual(segs.map((s) => [s.seqNumber, s.payload.length, s.control]), [
    [L(1), 1000, 'none'], [L(1001), 1000, 'none'], [L(2001), 500, 'psh'],
  ]);
  t.is(c.s.timer.kind, 'retransmit');
  // A cumulative ACK frees the queue and stops the timer (RFC 6298 §5.2).
  c.s.process(5, seg({ ackNumber: L(2501) }));
  t.is(c.s.txBuffered, 0);
  t.true(c.host.freed > 0);
  t.is(c.s.timer.kind, 'idle');
});

test('established_sendRespectsPeerWindow', (t) => {
  const c = established({ peerWindow: 1500 });
  c.s.send(data(4000));
  expect(t, c, 0, { seqNumber: L(1), payload: 'x'.repeat(1000) });
  // 500 usable bytes left, less than a segment while data is in flight: wait (SWS avoidance).
  expectNothing(t, c, 0);
  c.s.process(1, seg({ ackNumber: L(1001), windowLen: 1500 }));
  expect(t, c, 1, { seqNumber: L(1001) });
  t.is(recvAll(c, 1).length, 0);
});

test('established_superSegmentsWhenTheDeviceSegments', (t) => {
  const c = established({ cfg: { maxBurst: 64000 } });
  c.s.send(data(30000));
  const first = recv(c, 0)!;
  // The initial congestion window (10 segments) is the limit, not the MSS.
  t.is(first.payload.length, 10 * PEER_MSS);
  t.is(first.payload.length % PEER_MSS, 0);
});

test('established_slowStartCountsEveryByteAcked', (t) => {
  // The kernel acknowledges a GRO super-segment with one ACK: slow start grows the congestion
  // window by all the bytes it covers (Linux counts segments), not by one MSS per ACK.
  const c = established({ cfg: { maxBurst: 64000 } });
  c.s.send(data(40000));
  t.is(recv(c, 0)!.payload.length, 10 * PEER_MSS);
  expectNothing(t, c, 0);
  const before = c.s.congestionWindow;
  c.s.process(1, seg({ ackNumber: L(10001) }));
  t.is(c.s.congestionWindow, before + 10 * PEER_MSS);
  expect(t, c, 1, { seqNumber: L(10001), payload: 'x'.repeat(20 * PEER_MSS) });
});

test('established_close', (t) => {
  const c = established();
  c.s.send(Buffer.from('xyz'));
  c.s.close();
  t.is(c.s.state, 'FIN-WAIT-1');
  // The FIN rides on the last data segment.
  expect(t, c, 0, { control: 'fin', seqNumber: L(1), payload: 'xyz' });
  expectNothing(t, c, 0);
});

test('established_abortSendsRst', (t) => {
  const c = established();
  c.s.abort();
  expect(t, c, 0, { control: 'rst', seqNumber: L(1), ackNumber: R(1) });
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
  t.is(c.host.closed, 1);
});

test('established_retransmitWithBackoff', (t) => {
  const c = established();
  c.s.send(Buffer.from('abc'));
  expect(t, c, 0, { seqNumber: L(1), payload: 'abc' });
  expectNothing(t, c, 999);
  expect(t, c, 1000, { seqNumber: L(1), payload: 'abc' });
  t.is(c.s.rto, 2000);
  expectNothing(t, c, 2999);
  expect(t, c, 3000, { seqNumber: L(1), payload: 'abc' });
  t.is(c.s.rto, 4000);
  // The late ACK: no RTT sample from a retransmitted segment (Karn), timer off.
  c.s.process(3001, seg({ ackNumber: L(4) }));
  t.is(c.s.rto, 4000);
  t.is(c.s.timer.kind, 'idle');
});

test('established_retransmitGivesUp', (t) => {
  const c = established({ cfg: { maxRetransmits: 2 } });
  c.s.send(Buffer.from('abc'));
  recv(c, 0);
  expect(t, c, 1000, { payload: 'abc' });
  expect(t, c, 3000, { payload: 'abc' });
  expect(t, c, 7000, { control: 'rst' });
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
});

test('established_rttSampleSetsRto', (t) => {
  const c = established();
  c.s.send(Buffer.from('abc'));
  recv(c, 0);
  c.s.process(50, seg({ ackNumber: L(4) }));
  // RFC 6298 §2.2: SRTT 50, RTTVAR 25, RTO = 50 + 4*25 = 150 -> our 200 ms floor.
  t.is(c.s.rto, 200);
  c.s.send(Buffer.from('def'));
  recv(c, 100);
  t.like(c.s.timer, { kind: 'retransmit', expiresAt: 300 });
});

test('established_fastRetransmitOnThreeDupAcks', (t) => {
  const c = established();
  c.s.send(data(5000));
  t.is(recvAll(c, 0).length, 5);
  const cwnd = c.s.congestionWindow;
  c.s.process(1, seg({ ackNumber: L(1001) }));
  for (let i = 0; i < 2; i++) c.s.process(2, seg({ ackNumber: L(1001) }));
  expectNothing(t, c, 2);
  c.s.process(2, seg({ ackNumber: L(1001) }));
  // RFC 5681 §3.2: the third duplicate ACK retransmits the first unacknowledged segment.
  expect(t, c, 2, { seqNumber: L(1001), payload: 'x'.repeat(1000) });
  t.true(c.s.congestionWindow < cwnd + 3000);
  // Partial ACK (RFC 6582): the next hole goes out at once.
  c.s.process(3, seg({ ackNumber: L(2001) }));
  expect(t, c, 3, { seqNumber: L(2001) });
  c.s.process(4, seg({ ackNumber: L(5001) }));
  t.is(c.s.txBuffered, 0);
  t.is(c.s.timer.kind, 'idle');
});

test('established_zeroWindowPersistTimer', (t) => {
  const c = established();
  c.s.process(0, seg({ windowLen: 0 }));
  c.s.send(Buffer.from('abc'));
  expectNothing(t, c, 0);
  t.like(c.s.timer, { kind: 'zeroWindowProbe', expiresAt: 1000 });
  expectNothing(t, c, 999);
  // RFC 9293 §3.8.6.1: a one-byte probe beyond the zero window.
  expect(t, c, 1000, { seqNumber: L(1), payload: 'a' });
  t.like(c.s.timer, { kind: 'zeroWindowProbe', expiresAt: 3000 }); // backed off
  c.s.process(1001, seg({ windowLen: 0 })); // the probe was not taken
  expectNothing(t, c, 2999);
  expect(t, c, 3000, { seqNumber: L(1), payload: 'a' });
  t.like(c.s.timer, { kind: 'zeroWindowProbe', expiresAt: 7000 });
  // The window opens: everything goes, from SND.UNA.
  c.s.process(3001, seg({ windowLen: 1000 }));
  expect(t, c, 3001, { seqNumber: L(1), payload: 'abc' });
  t.is(c.s.timer.kind, 'retransmit');
});

test('established_zeroWindowForeverKeepsProbingBounded', (t) => {
  const c = established({ cfg: { rtt: { initial: 1000, min: 200, max: 4000 } } });
  c.s.process(0, seg({ windowLen: 0 }));
  c.s.send(data(10_000));
  let probes = 0;
  for (let now = 0; now < 120_000; now += 500) {
    for (const s of recvAll(c, now)) {
      probes++;
      t.true(s.payload.length <= 1);
      c.s.process(now, seg({ windowLen: 0 }));
    }
  }
  t.true(probes >= 25, `probes ${probes}`); // capped back-off: still probing, never closing
  t.is(c.s.state, 'ESTABLISHED');
  t.is(c.s.txBuffered, 10_000);
});

test('established_zeroWindowSilentPeerGivesUp', (t) => {
  // Finding N3: a peer that never answers a probe is as dead as one that never acknowledges a
  // retransmission: after maxRetransmits unanswered probes the connection is reset (and the far
  // stream with it, onReset), not kept for ever with its queue.
  const c = established({ cfg: { rtt: { initial: 1000, min: 200, max: 60_000 } } });
  c.s.process(0, seg({ windowLen: 0 }));
  c.s.send(data(4 << 20));
  let probes = 0;
  let rst: TcpRepr | null = null;
  for (let now = 0; now < 24 * 3600_000 && rst === null; now += 1000) {
    for (const s of recvAll(c, now)) {
      if (s.control === 'rst') rst = s;
      else probes++;
    }
  }
  t.is(probes, 10);
  like(t, rst, { control: 'rst', seqNumber: L(1) });
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
  t.is(c.host.closed, 1);
  t.is(c.s.txBuffered, 0);
  t.is(c.s.pollAt(), Infinity);
});

test('established_zeroWindowAnsweredGivesUpAfterPersistTimeout', (t) => {
  // A peer that answers every probe with a zero window keeps the connection (RFC 1122
  // §4.2.2.17) until the total persist time runs out (RFC 6429: resource management may end it).
  const c = established({ cfg: { persistTimeout: 600_000 } });
  c.s.process(0, seg({ windowLen: 0 }));
  c.s.send(data(10_000));
  let rstAt = -1;
  for (let now = 0; now < 3600_000 && rstAt < 0; now += 500) {
    for (const s of recvAll(c, now)) {
      if (s.control === 'rst') rstAt = now;
      else c.s.process(now, seg({ windowLen: 0 }));
    }
  }
  t.true(rstAt >= 600_000 && rstAt <= 600_000 + 60_000, `reset at ${rstAt}`);
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
});

// ---- FIN-WAIT-1

test('finWait1_ackOfFin', (t) => {
  const c = finWait1();
  c.s.process(1, seg({ ackNumber: L(2) }));
  t.is(c.s.state, 'FIN-WAIT-2');
  t.like(c.s.timer, { kind: 'finWait2', expiresAt: 60_001 });
});

test('finWait1_fullAckAfterThreeDupAcksLeavesNothingDue', (t) => {
  // Finding N1: three duplicate ACKs ask for a fast retransmit; an ACK of everything (data and
  // FIN) in the same batch then takes the socket to FIN-WAIT-2, where nothing is sent. The
  // request must not stay pending, or pollAt() says "now" for ever and the engine spins.
  const c = established();
  c.s.send(data(3000));
  c.s.close();
  const sent = recvAll(c, 0);
  t.is(sent.length, 3);
  t.is(sent[2]!.control, 'fin');
  for (let i = 0; i < 3; i++) c.s.process(1, seg({ ackNumber: L(1) }));
  c.s.process(1, seg({ ackNumber: L(3002) }));
  t.is(c.s.state, 'FIN-WAIT-2');
  expectNothing(t, c, 1);
  t.true(c.s.pollAt() > 1, `pollAt ${c.s.pollAt()}`);
});

test('finWait1_finWithoutAckOfOurs', (t) => {
  const c = closing();
  t.is(c.host.fins, 1);
  t.deepEqual(c.transitions.slice(-1), [['FIN-WAIT-1', 'CLOSING']]);
});

test('finWait1_finWithAckOfOurs', (t) => {
  const c = finWait1();
  c.s.process(1, seg({ control: 'fin', ackNumber: L(2) }));
  t.is(c.s.state, 'TIME-WAIT');
  expect(t, c, 1, { control: 'none', ackNumber: R(2), seqNumber: L(2) });
});

test('finWait1_recvDataHalfClosed', (t) => {
  const c = finWait1();
  c.s.process(1, seg({ payload: Buffer.from('still talking') }));
  t.is(c.host.received, 'still talking');
  t.is(c.s.state, 'FIN-WAIT-1');
});

test('finWait1_finRetransmitted', (t) => {
  const c = finWait1();
  expect(t, c, 1000, { control: 'fin', seqNumber: L(1) });
});

// ---- FIN-WAIT-2

test('finWait2_recvData', (t) => {
  const c = finWait2();
  c.s.process(1, seg({ payload: Buffer.from('more') }));
  t.is(c.host.received, 'more');
  expect(t, c, 11, { ackNumber: R(5) });
});

test('finWait2_orphanTimeoutResets', (t) => {
  // Finding N1: FIN-WAIT-2 has an end (Linux tcp_fin_timeout, 60 s), restarted by new data.
  const c = finWait2();
  t.like(c.s.timer, { kind: 'finWait2', expiresAt: 60_000 });
  expectNothing(t, c, 30_000);
  c.s.process(30_000, seg({ payload: Buffer.from('more') }));
  t.like(c.s.timer, { kind: 'finWait2', expiresAt: 90_000 });
  recvAll(c, 30_100);
  expectNothing(t, c, 89_999);
  expect(t, c, 90_000, { control: 'rst', seqNumber: L(2) });
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.resets, 1);
  t.is(c.host.closed, 1);
  t.is(c.s.pollAt(), Infinity);
});

test('finWait2_fin', (t) => {
  const c = finWait2();
  c.s.process(1, seg({ control: 'fin', ackNumber: L(2) }));
  t.is(c.s.state, 'TIME-WAIT');
  t.is(c.host.fins, 1);
  expect(t, c, 1, { ackNumber: R(2) });
  t.like(c.s.timer, { kind: 'close', expiresAt: 2001 });
});

// ---- CLOSE-WAIT

test('closeWait_sendData', (t) => {
  const c = closeWait();
  c.s.send(Buffer.from('response'));
  expect(t, c, 1, { control: 'psh', payload: 'response', ackNumber: R(2) });
});

test('closeWait_close', (t) => {
  const c = lastAck();
  t.is(c.s.state, 'LAST-ACK');
  t.deepEqual(c.transitions.map(([, b]) => b), ['ESTABLISHED', 'CLOSE-WAIT', 'LAST-ACK']);
});

test('closeWait_dataAfterFinIgnored', (t) => {
  const c = closeWait();
  c.s.process(1, seg({ seqNumber: R(2), payload: Buffer.from('late') }));
  t.is(c.host.received, '');
});

// ---- CLOSING

test('closing_ackOfFin', (t) => {
  const c = closing();
  c.s.process(1, seg({ seqNumber: R(2), ackNumber: L(2) }));
  t.is(c.s.state, 'TIME-WAIT');
});

// ---- LAST-ACK

test('lastAck_ackOfFin', (t) => {
  const c = lastAck();
  c.s.process(1, seg({ seqNumber: R(2), ackNumber: L(2) }));
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.closed, 1);
  t.is(c.host.resets, 0);
  expectNothing(t, c, 1);
});

test('lastAck_finRetransmitted', (t) => {
  const c = lastAck();
  expect(t, c, 1000, { control: 'fin', seqNumber: L(1), ackNumber: R(2) });
});

test('lastAck_rst', (t) => {
  const c = lastAck();
  c.s.process(1, seg({ control: 'rst', seqNumber: R(2) }));
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.closed, 1);
});

// ---- TIME-WAIT

test('timeWait_finRetransmissionReAcked', (t) => {
  const c = timeWait();
  like(t, c.s.process(100, seg({ control: 'fin', ackNumber: L(2) })), { control: 'none', ackNumber: R(2) });
  t.is(c.s.state, 'TIME-WAIT');
});

test('timeWait_expiry', (t) => {
  const c = timeWait();
  expectNothing(t, c, 1999);
  t.is(c.s.state, 'TIME-WAIT');
  t.is(c.s.pollAt(), 2000);
  expectNothing(t, c, 2000);
  t.is(c.s.state, 'CLOSED');
  t.is(c.host.closed, 1);
});

test('timeWait_rst', (t) => {
  const c = timeWait();
  c.s.process(1, seg({ control: 'rst', seqNumber: R(2) }));
  t.is(c.s.state, 'CLOSED');
});

// ---- CLOSED

test('closed_ignoresEverything', (t) => {
  const c = established();
  c.s.process(0, seg({ control: 'rst' }));
  t.is(c.s.process(1, seg({ payload: Buffer.from('x') })), null);
  c.s.send(Buffer.from('y'));
  expectNothing(t, c, 5000);
  t.is(c.s.pollAt(), Infinity);
});

// ---- segments for no connection, RTT estimator

test('rstFor_noConnection', (t) => {
  // RFC 9293 §3.10.7.1
  like(t, TcpSocket.rstFor(seg({ control: 'syn', seqNumber: REMOTE_SEQ, ackNumber: null })), {
    control: 'rst', seqNumber: seq(0), ackNumber: R(1), srcPort: LOCAL_PORT, dstPort: REMOTE_PORT,
  });
  like(t, TcpSocket.rstFor(seg({ ackNumber: L(77), payload: Buffer.from('ab') })), { control: 'rst', seqNumber: L(77), ackNumber: null });
  like(t, TcpSocket.rstFor(seg({ ackNumber: null, payload: Buffer.from('ab') })), { control: 'rst', ackNumber: R(3) });
  t.is(TcpSocket.rstFor(seg({ control: 'rst' })), null);
});

test('rtt_rfc6298', (t) => {
  const r = new RttEstimator({ initial: 1000, min: 1, max: 60_000 });
  t.is(r.rto, 1000);
  r.sample(100);
  t.is(r.rto, 100 + 4 * 50);
  r.sample(200);
  // RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5
  t.is(r.rto, 112.5 + 4 * 62.5);
  r.backoff();
  t.is(r.rto, 2 * (112.5 + 250));
  const floor = new RttEstimator({ initial: 1000, min: 200, max: 600 });
  floor.sample(1);
  t.is(floor.rto, 200);
  floor.backoff();
  floor.backoff();
  t.is(floor.rto, 600);
});
