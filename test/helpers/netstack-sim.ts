/**
 * A NetStack on a simulated clock, with far sides in memory and small client-side TCPs (what the
 * local kernel would be), for tests that must be deterministic: timeouts of minutes run in
 * milliseconds, and every packet the engine emits is parsed with the checked constructors, its
 * checksums verified and its data checked against the window the client advertised.
 */
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type { Dialer, DialOptions } from '../../src/dialer.js';
import { DialError } from '../../src/errors.js';
import { PacketBuilder } from '../../src/netstack/emit.js';
import { NetStack, type NetStackLimits, type NetStackOptions, type NetStackTimers } from '../../src/netstack/stack.js';
import { seq, seqAdd, seqDiff, seqGt, type Seq } from '../../src/netstack/seq.js';
import { CHECKSUM_FULL, finish, pseudoHeaderV4, pseudoHeaderV6, sum } from '../../src/netstack/wire/checksum.js';
import { IcmpPacket, IcmpRepr } from '../../src/netstack/wire/icmp.js';
import { Ipv4Packet, IpProtocol } from '../../src/netstack/wire/ipv4.js';
import { Ipv6Packet, ipv6UpperLayer } from '../../src/netstack/wire/ipv6.js';
import { TcpPacket, TcpRepr } from '../../src/netstack/wire/tcp.js';
import { UdpPacket, UdpRepr } from '../../src/netstack/wire/udp.js';
import { VIRTIO_NET_HDR_LEN, VirtioNetHdr, VirtioRepr } from '../../src/netstack/wire/virtio.js';

/** Timers on a clock that moves only when told (`advance`). */
export class SimClock implements NetStackTimers {
  now = 0;
  /** Timers set, and run. */
  sets = 0;
  runs = 0;
  private nextId = 1;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();

  readonly nowFn = (): number => this.now;

  set(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.sets++;
    this.pending.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  }

  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  get armed(): number {
    return this.pending.size;
  }

  /** Runs every timer due within `ms`, in order, moving the clock to each; then to now + ms. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      let first: [number, { at: number; fn: () => void }] | null = null;
      for (const e of this.pending) if (e[1].at <= end && (first === null || e[1].at < first[1].at)) first = e;
      if (first === null) break;
      this.pending.delete(first[0]);
      this.now = Math.max(this.now, first[1].at);
      this.runs++;
      first[1].fn();
    }
    this.now = end;
  }
}

/** Lets promises, setImmediate flushes and stream events run. */
export async function settle(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await tick();
}

/**
 * Far sides by destination port: 7 echo, 19 a source of `sourceBytes` then end, 9 a sink that
 * never completes a write (a far side that stopped reading), 13 ends at once, 1 refused, 2 a dial
 * that never completes (until aborted). Dials resolve at once, or after `dialDelay` simulated ms.
 */
export class MemDialer implements Dialer {
  dials = 0;
  readonly open = new Set<Duplex>();
  dialDelay = 0;
  sourceBytes = 200_000;
  constructor(private readonly clock: SimClock) {}

  dial(host: string, port: number, options?: DialOptions): Promise<Duplex> {
    this.dials++;
    if (port === 1) return Promise.reject(new DialError('refused', host, port, 'Connection refused'));
    return new Promise((resolve, reject) => {
      const signal = options?.signal;
      let timer: unknown = null;
      const onAbort = (): void => {
        if (timer !== null) this.clock.clear(timer);
        reject(new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (port === 2) return;
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(this.far(port));
      };
      if (this.dialDelay > 0) timer = this.clock.set(done, this.dialDelay);
      else done();
    });
  }

  private far(port: number): Duplex {
    let left = port === 19 ? this.sourceBytes : 0;
    let offset = 0;
    const d = new Duplex({
      allowHalfOpen: true,
      read() {
        if (port !== 19) return;
        while (left > 0) {
          const n = Math.min(left, 16384);
          const b = Buffer.allocUnsafe(n);
          for (let i = 0; i < n; i++) b[i] = (offset + i) & 0xff;
          offset += n;
          left -= n;
          if (!this.push(b)) return;
        }
        this.push(null);
      },
      write(chunk: Buffer, _e, cb) {
        if (port === 9) return; // never taken: the far side stopped reading
        if (port === 7) this.push(Buffer.from(chunk));
        cb();
      },
      final(cb) {
        if (port === 7) this.push(null);
        cb();
      },
    });
    if (port === 13) d.push(null);
    this.open.add(d);
    d.on('close', () => this.open.delete(d));
    d.on('error', () => {});
    return d;
  }

  /** Every far side ends its stream (and a source stops early). */
  endAll(): void {
    for (const d of this.open) if (!d.readableEnded) d.push(null);
  }
}

export interface Emitted {
  tcp: TcpRepr | null;
  v6: boolean;
  src: Buffer;
  dst: Buffer;
}

/** The engine on the simulated clock, its output parsed and checked. */
export class SimNet {
  readonly clock = new SimClock();
  readonly dialer: MemDialer;
  readonly stack: NetStack;
  readonly builder: PacketBuilder;
  readonly vnet: boolean;
  readonly peers = new Map<number, Peer>();
  /** Packets emitted, and those that failed the checked parse or a checksum. */
  emitted = 0;
  badPackets = 0;
  readonly failures: string[] = [];
  logs: string[] = [];
  /** Fraction of packets the device refuses (deterministic through `rnd`). */
  refuse = 0;
  rnd: () => number = Math.random;

  /** `realTime`: the engine keeps its own clock and timers (benchmarks of real CPU time). */
  constructor(opts: { limits?: Partial<NetStackLimits>; offload?: boolean; tcp?: NetStackOptions['tcp']; realTime?: boolean } = {}) {
    this.dialer = new MemDialer(this.clock);
    this.vnet = opts.offload === true;
    this.builder = new PacketBuilder({ vnetHdr: this.vnet });
    this.stack = new NetStack({
      dialer: this.dialer, mtu: 1500, offload: opts.offload, limits: opts.limits, tcp: opts.tcp,
      ...(opts.realTime === true ? {} : { now: this.clock.nowFn, timers: this.clock }), log: (m) => this.logs.push(m),
      emit: (p) => this.onEmit(p),
    });
  }

  fail(why: string): void {
    if (this.failures.length < 20) this.failures.push(why);
  }

  private onEmit(p: Buffer): boolean {
    if (this.refuse > 0 && this.rnd() < this.refuse) return false;
    this.emitted++;
    const o = checkPacket(p, this.vnet);
    if (typeof o === 'string') {
      this.badPackets++;
      this.fail(`emitted packet: ${o}: ${p.toString('hex').slice(0, 160)}`);
      return true;
    }
    if (o.tcp) this.peers.get(o.tcp.dstPort)?.onSegment(o.tcp);
    return true;
  }

  input(packets: Buffer[]): void {
    if (packets.length === 1) this.stack.input(packets[0]!);
    else if (packets.length > 1) this.stack.inputBatch(packets);
  }
}

/** Parses an emitted packet with the checked constructors and verifies every checksum (completing a partial one as a device would). */
export function checkPacket(packet: Buffer, vnet: boolean): Emitted | string {
  let ip = packet;
  if (vnet) {
    const h = VirtioNetHdr.newUnchecked(packet);
    const bad = h.checkLen();
    if (bad) return `virtio ${bad}`;
    const r = VirtioRepr.parse(h);
    if (typeof r === 'string') return `virtio ${r}`;
    ip = Buffer.from(packet.subarray(VIRTIO_NET_HDR_LEN));
    if (r.csum) ip.writeUInt16BE(finish(sum(ip, r.csum.start)), r.csum.start + r.csum.offset);
  }
  if (ip.length < 1) return 'empty';
  const v6 = ip[0]! >> 4 === 6;
  let l4: Buffer;
  let proto: number;
  let pseudo: number;
  let src: Buffer;
  let dst: Buffer;
  if (v6) {
    const p = Ipv6Packet.newUnchecked(ip);
    const bad = p.checkLen();
    if (bad) return `ipv6 ${bad}`;
    const u = ipv6UpperLayer(p);
    if (typeof u === 'string') return `ipv6 ${u}`;
    l4 = ip.subarray(u.offset, 40 + p.payloadLen);
    proto = u.protocol;
    pseudo = pseudoHeaderV6(ip, 8, ip, 24, proto, l4.length);
    src = ip.subarray(8, 24);
    dst = ip.subarray(24, 40);
  } else {
    const p = Ipv4Packet.newUnchecked(ip);
    const bad = p.checkLen();
    if (bad) return `ipv4 ${bad}`;
    if (!p.verifyChecksum()) return 'ipv4 checksum';
    l4 = ip.subarray(p.headerLen, p.totalLen);
    proto = p.protocol;
    pseudo = pseudoHeaderV4(ip, 12, ip, 16, proto, l4.length);
    src = ip.subarray(12, 16);
    dst = ip.subarray(16, 20);
  }
  if (proto === IpProtocol.Tcp) {
    const tp = TcpPacket.newUnchecked(l4);
    const bad = tp.checkLen();
    if (bad) return `tcp ${bad}`;
    const r = TcpRepr.parse(tp, pseudo, CHECKSUM_FULL);
    if (typeof r === 'string') return `tcp ${r}`;
    return { tcp: r, v6, src, dst };
  }
  if (proto === IpProtocol.Udp) {
    const up = UdpPacket.newUnchecked(l4);
    const bad = up.checkLen();
    if (bad) return `udp ${bad}`;
    const r = UdpRepr.parse(up, pseudo, CHECKSUM_FULL, v6);
    if (typeof r === 'string') return `udp ${r}`;
    return { tcp: null, v6, src, dst };
  }
  if (proto === IpProtocol.Icmp || proto === IpProtocol.Icmpv6) {
    const ic = IcmpPacket.newUnchecked(l4);
    const bad = ic.checkLen();
    if (bad) return `icmp ${bad}`;
    const r = IcmpRepr.parse(ic, v6, v6 ? pseudo : 0);
    if (typeof r === 'string') return `icmp ${r}`;
    return { tcp: null, v6, src, dst };
  }
  return `protocol ${proto}`;
}

export const LOCAL4 = Buffer.from([198, 18, 191, 2]);
export const OUR4 = Buffer.from([198, 18, 191, 10]);
export const LOCAL6 = Buffer.from('fd00ff00000000000000000000000002', 'hex');
export const OUR6 = Buffer.from('fd00ff00000000000000000000000010', 'hex');

/** The byte at offset `i` of what a peer sends (so an echo can be checked without keeping it). */
export function streamByte(key: number, i: number): number {
  return (i * 31 + key * 7 + (i >>> 8)) & 0xff;
}

/**
 * A client-side TCP (the local kernel's part), one per source port. Sends within the engine's
 * window, retransmits from SND.UNA when nothing moved for `rto`, acknowledges in-order data,
 * and checks that the engine never sends beyond the window it advertised (a one-byte
 * zero-window probe excepted).
 */
export class Peer {
  state: 'idle' | 'syn-sent' | 'established' | 'reset' | 'done' = 'idle';
  readonly isn: Seq;
  sndUna: Seq;
  sndNxt: Seq;
  rcvNxt: Seq = seq(0);
  /** The engine's ISS + 1 (its first data byte), once its SYN-ACK came. */
  irs1: Seq = seq(0);
  /** Right edge of the window we advertised (the engine must not send beyond it). */
  advRight: Seq = seq(0);
  peerWnd = 0;
  peerShift = 0;
  mss = 536;
  /** Our receive window in bytes; 0 models a program that stopped reading. */
  window = 65535 << 4;
  readonly shift = 4;
  /** Bytes of our stream queued (written by the program), sent so far, received in order. */
  toSend = 0;
  finQueued = false;
  finSent = false;
  finAcked = false;
  finReceived = false;
  received = 0;
  corrupt = false;
  windowViolations = 0;
  lastProgress = 0;
  synAt = 0;
  synTries = 0;
  ackDue = false;
  readonly expectEcho: boolean;
  readonly expectSource: number;

  constructor(
    readonly net: SimNet, readonly sport: number, readonly dport: number, readonly v6: boolean, isn: number,
  ) {
    this.isn = seq(isn);
    this.sndUna = this.isn;
    this.sndNxt = this.isn;
    this.expectEcho = dport === 7;
    this.expectSource = dport === 19 ? net.dialer.sourceBytes : -1;
    net.peers.set(sport, this);
  }

  get src(): Buffer {
    return this.v6 ? LOCAL6 : LOCAL4;
  }
  get dst(): Buffer {
    return this.v6 ? OUR6 : OUR4;
  }

  /** Offset (from our ISN+1) of SND.UNA and SND.NXT in our stream. */
  private off(s: Seq): number {
    return seqDiff(s, seqAdd(this.isn, 1));
  }

  packet(over: Partial<TcpRepr>): Buffer {
    const wl = Math.min(0xffff, Math.floor(this.window / 2 ** this.shift));
    const seg: TcpRepr = {
      srcPort: this.sport, dstPort: this.dport, control: 'none', seqNumber: this.sndNxt,
      ackNumber: this.state === 'syn-sent' || this.state === 'idle' ? null : this.rcvNxt, windowLen: wl,
      windowScale: null, maxSegSize: null, sackPermitted: false, payload: EMPTY, ...over,
    };
    if (seg.ackNumber !== null && seg.control !== 'syn') {
      const right = seqAdd(seg.ackNumber, seg.windowLen * 2 ** this.shift);
      if (seqGt(right, this.advRight)) this.advRight = right;
    }
    return this.net.builder.tcp(this.src, this.dst, seg, 0xffff);
  }

  syn(): Buffer {
    this.state = 'syn-sent';
    this.synAt = this.net.clock.now;
    this.synTries++;
    return this.packet({ control: 'syn', seqNumber: this.isn, ackNumber: null, windowLen: 65535, windowScale: this.shift, maxSegSize: 1460 });
  }

  /** The segments this peer would send now (data within the window, FIN, or a due ACK). */
  output(now: number): Buffer[] {
    const out: Buffer[] = [];
    if (this.state === 'syn-sent') {
      if (now - this.synAt >= 1000 * 2 ** (this.synTries - 1) && this.synTries < 4) out.push(this.syn());
      return out;
    }
    if (this.state === 'done' && this.ackDue) {
      this.ackDue = false;
      out.push(this.packet({}));
    }
    if (this.state !== 'established') return out;
    // Go back to SND.UNA when nothing was acknowledged for a while (our retransmission).
    if (seqGt(this.sndNxt, this.sndUna) && now - this.lastProgress >= 300) {
      this.sndNxt = this.sndUna;
      if (this.finSent && !this.finAcked) this.finSent = false;
      this.lastProgress = now;
    }
    for (let n = 0; n < 16; n++) {
      const sent = this.off(this.sndNxt);
      const unsent = this.toSend - Math.min(sent, this.toSend);
      const inFlight = seqDiff(this.sndNxt, this.sndUna);
      const room = this.peerWnd - inFlight;
      if (unsent > 0 && room > 0) {
        const len = Math.min(unsent, room, this.mss);
        const payload = Buffer.allocUnsafe(len);
        for (let i = 0; i < len; i++) payload[i] = streamByte(this.sport, sent + i);
        out.push(this.packet({ payload, control: len === unsent && !this.finQueued ? 'psh' : 'none' }));
        this.sndNxt = seqAdd(this.sndNxt, len);
        this.ackDue = false;
        continue;
      }
      if (unsent === 0 && this.finQueued && !this.finSent && sent === this.toSend) {
        out.push(this.packet({ control: 'fin' }));
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.finSent = true;
        this.ackDue = false;
      }
      break;
    }
    if (this.ackDue) {
      out.push(this.packet({}));
      this.ackDue = false;
    }
    return out;
  }

  onSegment(s: TcpRepr): void {
    if (s.control === 'rst') {
      if (this.state !== 'done') this.state = 'reset';
      return;
    }
    if (this.state === 'syn-sent') {
      if (s.control === 'syn' && s.ackNumber === seqAdd(this.isn, 1)) {
        this.state = 'established';
        this.rcvNxt = seqAdd(s.seqNumber, 1);
        this.irs1 = this.rcvNxt;
        this.advRight = seqAdd(this.rcvNxt, this.window);
        this.peerShift = s.windowScale ?? 0;
        this.mss = Math.min(1460, s.maxSegSize ?? 536);
        this.peerWnd = s.windowLen;
        this.sndUna = s.ackNumber;
        this.sndNxt = s.ackNumber;
        this.lastProgress = this.net.clock.now;
        this.ackDue = true;
      }
      return;
    }
    if (this.state !== 'established' && this.state !== 'done') return;
    if (s.control === 'syn') {
      this.ackDue = true; // a retransmitted SYN-ACK: our ACK was lost
      return;
    }
    // The engine must stay inside the window we advertised (RFC 9293 §3.8.6: a zero-window probe
    // of one byte excepted).
    const end = seqAdd(s.seqNumber, s.payload.length);
    const beyond = seqDiff(end, this.advRight);
    if (beyond > (s.payload.length === 1 ? 1 : 0)) {
      this.windowViolations++;
      this.net.fail(`port ${this.sport}: ${s.payload.length} bytes at ${s.seqNumber} end ${beyond} beyond our window edge ${this.advRight}`);
    }
    if (s.ackNumber !== null) {
      if (seqGt(s.ackNumber, this.sndUna) && !seqGt(s.ackNumber, this.sndNxt)) {
        this.sndUna = s.ackNumber;
        this.lastProgress = this.net.clock.now;
        if (this.finSent && s.ackNumber === this.sndNxt) this.finAcked = true;
      }
      this.peerWnd = s.windowLen * 2 ** this.peerShift;
    }
    if (s.payload.length > 0) {
      this.ackDue = true;
      if (s.seqNumber === this.rcvNxt && this.window > 0) {
        const take = Math.min(s.payload.length, Math.max(0, seqDiff(this.advRight, this.rcvNxt)));
        for (let i = 0; i < take && !this.corrupt; i++) {
          const want = this.expectEcho ? streamByte(this.sport, this.received + i) : this.expectSource >= 0 ? (this.received + i) & 0xff : -1;
          if (want >= 0 && s.payload[i] !== want) {
            this.corrupt = true;
            this.net.fail(`port ${this.sport}: byte ${this.received + i} is ${s.payload[i]}, expected ${want}`);
          }
        }
        this.received += take;
        this.rcvNxt = seqAdd(this.rcvNxt, take);
      }
    }
    if (s.control === 'fin' && seqAdd(s.seqNumber, s.payload.length) === this.rcvNxt && !this.finReceived) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.finReceived = true;
      this.ackDue = true;
    }
    if (this.finReceived && this.finAcked) this.state = 'done';
  }

  /** A connection that did what it was for: the whole echo (or source) back, both FINs exchanged. */
  get verified(): boolean {
    if (this.state !== 'done' || this.corrupt || this.windowViolations > 0) return false;
    if (this.expectEcho) return this.received === this.toSend;
    if (this.expectSource >= 0) return this.received === this.expectSource;
    return true;
  }
}

const EMPTY = Buffer.alloc(0);
