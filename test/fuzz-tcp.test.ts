/**
 * The TCP state machine under random, mostly-plausible abuse: a chaotic peer (in-order data,
 * retransmissions, gaps, segments far outside the window, zero windows, stray SYN/FIN/RST, wild
 * acknowledgment numbers), a far side that queues data, closes and aborts at random, a receive
 * buffer that fills and drains, and a clock that jumps. Invariants checked after every step:
 * - nothing throws;
 * - every data byte the socket sends is the far side's byte at that stream offset, and every byte
 *   it delivers is the peer's byte at that offset (no corruption, loss or reordering of what it
 *   hands over, across the 2^32 wrap);
 * - after dispatching until nothing goes out, `pollAt()` lies in the future (no busy loop);
 * - queues stay within what was pushed and the out-of-order queue within the window.
 * Seeded (FUZZ_SEED) so a failure reproduces.
 */
import test from 'ava';
import { seq, seqAdd, seqDiff, type Seq } from '../src/netstack/seq.js';
import {
  DEFAULT_TCP_CONFIG, TcpSocket, newTcpCounters, type TcpConfig, type TcpSocketHost,
} from '../src/netstack/tcp/socket.js';
import type { TcpRepr } from '../src/netstack/wire/tcp.js';
import { prng } from './helpers/prng.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x7cb0011);


const rxByte = (k: number): number => (k * 31 + 7) & 0xff;
const txByte = (k: number): number => (k * 17 + 3) & 0xff;
function pattern(f: (k: number) => number, from: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = f(from + i);
  return b;
}

class Host implements TcpSocketHost {
  delivered = 0;
  backlog = 0;
  capacity: number;
  fins = 0;
  resets = 0;
  closed = 0;
  errors: string[] = [];
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  onData(d: Buffer): void {
    if (this.fins > 0) this.errors.push('data after FIN');
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== rxByte(this.delivered + i)) {
        this.errors.push(`delivered byte ${this.delivered + i} is wrong`);
        break;
      }
    }
    this.delivered += d.length;
    this.backlog += d.length;
  }
  onFin(): void {
    this.fins++;
  }
  onReset(): void {
    this.resets++;
  }
  onTxFreed(): void {}
  onClosed(): void {
    this.closed++;
  }
  rxRoom(): number {
    return this.capacity - this.backlog;
  }
}

test('fuzz_tcpSocketInvariants', (t) => {
  const rnd = prng(SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  let steps = 0;
  let delivered = 0;
  let sentBytes = 0;
  const states = new Map<string, number>();
  const SOCKETS = 600;
  for (let n = 0; n < SOCKETS; n++) {
    const ws = rnd() < 0.6 ? int(15) : null;
    const cfg: TcpConfig = {
      ...DEFAULT_TCP_CONFIG,
      mss: 536 + int(1000),
      rxCapacity: [4096, 65535, 1 << 20][int(3)]!,
      maxBurst: rnd() < 0.3 ? 30000 : 0,
      ackDelay: int(3) * 10,
      timeWait: 500,
      maxOooEntries: 4 + int(8),
    };
    const host = new Host(cfg.rxCapacity);
    const irs = seq(0xffffffff - int(20000));
    const iss = seq(0xffffffff - int(20000));
    const syn: TcpRepr = {
      srcPort: 5000, dstPort: 80, control: 'syn', seqNumber: irs, ackNumber: null, windowLen: int(65536),
      windowScale: ws, maxSegSize: rnd() < 0.8 ? 200 + int(9000) : null, sackPermitted: false, payload: Buffer.alloc(0),
    };
    const s = TcpSocket.fromSyn(syn, iss, cfg, host, newTcpCounters());
    s.trace = (_from, to) => states.set(to, (states.get(to) ?? 0) + 1);
    let now = 0;
    /** Peer: next offset it sends (stream offset from irs+1), the highest seq it has seen from us. */
    let peerOff = 0;
    let peerFin = false;
    let highestFromUs: Seq = iss;
    /** Far side: bytes pushed so far, closed? */
    let pushed = 0;
    let farClosed = false;
    let failure: string | null = null;
    const dataStart = seqAdd(iss, 1);

    let refused = false;
    const emit = (seg: TcpRepr): boolean => {
      if (rnd() < 0.03) {
        refused = true; // the device refuses now and then
        return false;
      }
      if (seg.payload.length > 0) {
        sentBytes += seg.payload.length;
        const off = seqDiff(seg.seqNumber, dataStart);
        if (off < 0 || off + seg.payload.length > pushed) failure ??= `sent bytes [${off}, +${seg.payload.length}) never pushed (${pushed})`;
        else if (!seg.payload.equals(pattern(txByte, off, seg.payload.length))) failure ??= `sent wrong bytes at ${off}`;
      }
      const end = seqAdd(seg.seqNumber, seg.payload.length + (seg.control === 'syn' || seg.control === 'fin' ? 1 : 0));
      if (seqDiff(end, highestFromUs) > 0) highestFromUs = end;
      return true;
    };
    /** Dispatches until nothing goes out for a reason of the socket's own (not a refusal). */
    const drain = (): void => {
      for (let i = 0; i < 500; i++) {
        refused = false;
        if (!s.dispatch(now, emit) && !refused) break;
      }
    };
    drain();

    for (let step = 0; step < 400 && !s.isClosed && failure === null; step++) {
      steps++;
      const r = rnd();
      if (r < 0.45) {
        // a segment from the peer
        const kind = rnd();
        let seqNumber = seqAdd(irs, 1 + peerOff);
        let payload: Buffer = Buffer.alloc(0);
        let control: TcpRepr['control'] = 'none';
        if (kind < 0.5 && !peerFin) {
          const len = int(3000);
          payload = pattern(rxByte, peerOff, len);
          if (rnd() < 0.8) peerOff += len; // else: this one is "lost", the next is out of order
        } else if (kind < 0.6) {
          // a retransmission of older data
          const back = int(Math.min(peerOff, 5000) + 1);
          const len = int(back + 1);
          seqNumber = seqAdd(irs, 1 + peerOff - back);
          payload = pattern(rxByte, peerOff - back, len);
        } else if (kind < 0.65) {
          seqNumber = seq(int(2 ** 32)); // garbage
          payload = Buffer.alloc(int(100));
        } else if (kind < 0.7 && !peerFin) {
          control = 'fin';
          peerFin = true;
        } else if (kind < 0.71) {
          control = 'rst';
          if (rnd() < 0.7) seqNumber = seq(int(2 ** 32));
        } else if (kind < 0.74) {
          control = 'syn';
          seqNumber = rnd() < 0.5 ? irs : seq(int(2 ** 32));
        }
        const ackKind = rnd();
        const ackNumber = control === 'syn' && rnd() < 0.5 ? null
          : ackKind < 0.6 ? highestFromUs
          : ackKind < 0.8 ? seqAdd(highestFromUs, -int(4000))
          : ackKind < 0.9 ? seq(int(2 ** 32))
          : ackKind < 0.95 ? null : seqAdd(highestFromUs, int(1000));
        const seg: TcpRepr = {
          srcPort: 5000, dstPort: 80, control, seqNumber, ackNumber, windowLen: rnd() < 0.15 ? 0 : int(65536),
          windowScale: null, maxSegSize: null, sackPermitted: false, payload,
        };
        const reply = s.process(now, seg);
        if (reply) emit(reply);
      } else if (r < 0.6) {
        if (!farClosed) {
          const len = int(5000);
          s.send(pattern(txByte, pushed, len));
          // what the socket accepted is what counts as pushed (it ignores data after close)
          pushed += len;
        }
      } else if (r < 0.63) {
        if (!farClosed) {
          farClosed = true;
          s.close();
        }
      } else if (r < 0.635) {
        s.abort();
      } else if (r < 0.75) {
        host.backlog = Math.max(0, host.backlog - int(host.capacity)); // the far side takes data
      } else {
        now += [0, 1, 5, 10, 50, 200, 1000, 5000][int(8)]!;
      }
      drain();
      if (!s.isClosed) {
        const at = s.pollAt();
        if (at <= now) failure ??= `pollAt ${at} <= now ${now} after draining (state ${s.state}, timer ${JSON.stringify(s.timer)})`;
      }
      if (s.txBuffered > pushed) failure ??= 'send queue larger than what was pushed';
      if (s.oooBuffered > Math.max(cfg.rxCapacity, 0xffff) * 2) failure ??= 'out-of-order queue beyond the window';
      if (host.errors.length > 0) failure ??= host.errors[0]!;
    }
    if (failure !== null) {
      t.fail(`seed ${SEED}, socket ${n}: ${failure}`);
      return;
    }
    delivered += host.delivered;
    if (host.closed > 1) t.fail(`seed ${SEED}, socket ${n}: onClosed called ${host.closed} times`);
  }
  t.log(`seed ${SEED}: ${SOCKETS} sockets, ${steps} steps, ${delivered} bytes delivered, ${sentBytes} sent`);
  t.log(`states entered: ${JSON.stringify(Object.fromEntries(states))}`);
  // The chaos did reach every state.
  for (const st of ['ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2', 'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT', 'CLOSED']) {
    t.true((states.get(st) ?? 0) > 0, `never reached ${st}`);
  }
  t.pass();
});
