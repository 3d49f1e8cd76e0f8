import { randomFillSync } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Dialer, UdpSession } from '../dialer.js';
import { DialError } from '../errors.js';
import { PacketBuilder, type TxOffload } from './emit.js';
import { Ipv4Reassembler } from './fragment.js';
import { BufferBudget, Flow, type FlowHost } from './flow.js';
import { FlowTable, flowHash } from './flow-table.js';
import { seq, seqGt } from './seq.js';
import {
  DEFAULT_TCP_CONFIG, TcpSocket, newTcpCounters, type TcpConfig, type TcpCounters,
} from './tcp/socket.js';
import { DEFAULT_RTT } from './tcp/rtt.js';
import { DatagramService, addrText } from './udp.js';
import { CHECKSUM_FULL, CHECKSUM_OFFLOADED, pseudoHeaderV4, pseudoHeaderV6, type ChecksumPolicy } from './wire/checksum.js';
import { DROP_REASONS, type DropReason } from './wire/error.js';
import { IcmpPacket, IcmpRepr, Icmpv4Unreachable, Icmpv6Unreachable } from './wire/icmp.js';
import { IPV4_HEADER_LEN, IpProtocol, Ipv4Packet, parseIpv4 } from './wire/ipv4.js';
import { IPV6_HEADER_LEN, Ipv6Packet, ipv6UpperLayer, parseIpv6 } from './wire/ipv6.js';
import { TcpPacket, TcpRepr } from './wire/tcp.js';
import { UdpPacket, UdpRepr } from './wire/udp.js';
import { VirtioNetHdr, VirtioRepr } from './wire/virtio.js';

/** Bounds that keep a hostile or overloaded peer from growing memory without end. */
export interface NetStackLimits {
  /**
   * Flows (dialing, open, TIME-WAIT) at once. A SYN that finds the table full evicts the oldest
   * half-open flow (SYN-RECEIVED, then dialing); with none to evict it is dropped.
   */
  maxFlows: number;
  /**
   * Dials in progress at once; SYNs beyond are dropped (a SYN flood opens no more dials). Not
   * evicted: a dial younger than its round trip would never complete under a flood.
   */
  maxPendingDials: number;
  /**
   * Flows in SYN-RECEIVED (dialed, SYN-ACK sent, never acknowledged) at once: beyond, the oldest
   * is reset and its far stream destroyed. The local kernel acknowledges a SYN-ACK within
   * microseconds, so the old ones are a flood's, and a flood holds at most this many far
   * connections (plus maxPendingDials dialing).
   */
  maxHalfOpen: number;
  /** A dial that takes longer is abandoned (the client gets an ICMP unreachable). */
  dialTimeout: number;
  /** Receive window per flow: bytes accepted from the local side but not yet taken by the far stream. */
  rxBufferPerFlow: number;
  /** Bytes read from the far stream and not yet acknowledged by the local side, per flow. */
  txBufferPerFlow: number;
  /**
   * Global budget over the bytes flows hold beyond their `flowShare`; windows close and far
   * reads pause for flows above their share when it is used up. Bound on everything buffered:
   * maxBufferedBytes + maxFlows x flowShare (plus one far read per flow, which arrives before a
   * pause can take effect).
   */
  maxBufferedBytes: number;
  /**
   * Bytes every flow may hold (receive backlog plus send queue) whatever the global budget says:
   * a flow that is drained keeps moving while readers that stopped hold the budget (finding
   * N2). At least a few MSS, so windows open past receiver-side SWS avoidance.
   */
  flowShare: number;
  maxPendingDns: number;
  maxPendingProbes: number;
  icmpErrorsPerSecond: number;
}

export const DEFAULT_LIMITS: NetStackLimits = {
  maxFlows: 16384,
  maxPendingDials: 256,
  maxHalfOpen: 1024,
  dialTimeout: 30_000,
  rxBufferPerFlow: 1 << 20,
  // One readable event of the tunnel's socket brings up to 2 MiB (libuv reads 32 x 64 KiB; an
  // ssh2 channel's window is 2 MiB too) while the bytes sent before are still unacknowledged: a
  // 1 MiB queue paused the far stream on every event and halved a bulk download.
  txBufferPerFlow: 4 << 20,
  maxBufferedBytes: 128 << 20,
  // 11 full segments: a drained flow moves ~16 KiB per round trip even when stopped readers hold
  // the whole budget; 16,384 flows x 16 KiB = 256 MiB is the worst case on top of the budget.
  flowShare: 16 << 10,
  maxPendingDns: 1024,
  maxPendingProbes: 64,
  icmpErrorsPerSecond: 200,
};

/**
 * Every resource bound of one engine, in one object (`NetStack.bounds`), for `ktctl status`.
 * Times in milliseconds, sizes in bytes.
 */
export interface NetStackBounds {
  maxFlows: number;
  maxPendingDials: number;
  maxHalfOpen: number;
  /** What a SYN does when the flow table is full. */
  synPolicy: 'evict-oldest-half-open';
  dialTimeout: number;
  /** Longest SYN-RECEIVED: the SYN-ACK and its retransmissions with back-off. */
  handshakeTimeout: number;
  maxBufferedBytes: number;
  flowShare: number;
  /** Worst case of all flows' buffers together: maxBufferedBytes + maxFlows x flowShare. */
  maxBufferedWorstCase: number;
  rxBufferPerFlow: number;
  txBufferPerFlow: number;
  maxOooEntriesPerFlow: number;
  maxRetransmits: number;
  maxSynAckRetransmits: number;
  /** Unanswered zero-window probes before a reset (the same R2 as retransmissions). */
  maxZeroWindowProbes: number;
  persistTimeout: number;
  finWait2Timeout: number;
  timeWait: number;
  maxRto: number;
  maxPendingDns: number;
  maxPendingProbes: number;
  icmpErrorsPerSecond: number;
}

/**
 * The bounds an engine with `limits` and `tcp` tuning keeps (the defaults: what `ktctl connect`
 * runs with), for `ktctl status --json` without an engine at hand.
 */
export function netstackBounds(limits: NetStackLimits = DEFAULT_LIMITS, tcp: Pick<TcpConfig, 'rtt' | 'maxSynAckRetransmits' | 'maxRetransmits' | 'maxOooEntries' | 'persistTimeout' | 'finWait2Timeout' | 'timeWait'> = { ...DEFAULT_TCP_CONFIG, rtt: DEFAULT_RTT }): NetStackBounds {
  const l = limits;
  // the SYN-ACK and its retransmissions, each RTO doubled up to the maximum
  let handshake = 0;
  let rto = tcp.rtt.initial;
  for (let i = 0; i <= tcp.maxSynAckRetransmits; i++) {
    handshake += rto;
    rto = Math.min(rto * 2, tcp.rtt.max);
  }
  return {
    maxFlows: l.maxFlows, maxPendingDials: l.maxPendingDials, maxHalfOpen: l.maxHalfOpen,
    synPolicy: 'evict-oldest-half-open', dialTimeout: l.dialTimeout, handshakeTimeout: handshake,
    maxBufferedBytes: l.maxBufferedBytes, flowShare: l.flowShare,
    maxBufferedWorstCase: l.maxBufferedBytes + l.maxFlows * l.flowShare,
    rxBufferPerFlow: l.rxBufferPerFlow, txBufferPerFlow: l.txBufferPerFlow, maxOooEntriesPerFlow: tcp.maxOooEntries,
    maxRetransmits: tcp.maxRetransmits, maxSynAckRetransmits: tcp.maxSynAckRetransmits,
    maxZeroWindowProbes: tcp.maxRetransmits, persistTimeout: tcp.persistTimeout, finWait2Timeout: tcp.finWait2Timeout,
    timeWait: tcp.timeWait, maxRto: tcp.rtt.max, maxPendingDns: l.maxPendingDns, maxPendingProbes: l.maxPendingProbes,
    icmpErrorsPerSecond: l.icmpErrorsPerSecond,
  };
}

/** The engine's one timer; injected by tests that run on a simulated clock. */
export interface NetStackTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const REAL_TIMERS: NetStackTimers = {
  set(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

/** A flow whose deadline is still due after it was serviced is retried this much later (and logged). */
const STALL_RETRY_MS = 1000;
/** A flow whose segment the device refused is retried this much later. */
const EMIT_RETRY_MS = 1;

export interface NetStackOptions {
  dialer: Dialer;
  /** MTU of the link (the TUN device): no packet we emit is longer, except GSO super-segments. */
  mtu: number;
  /**
   * Truthy: packets carry a 10-byte virtio_net_hdr in both directions (TUN with IFF_VNET_HDR):
   * inbound NEEDS_CSUM checksums are trusted and GSO super-segments accepted; outbound TCP
   * checksums are left to the device and segments up to 64 KiB go out with GSO metadata, unless
   * an object turns either off (`{ tso: false }`, `{ partialChecksum: false }`). The header's
   * presence is what matters on input: a device that refused TUNSETOFFLOAD simply never sends
   * NEEDS_CSUM or GSO packets.
   */
  offload?: boolean | TxOffload;
  /** Writes one packet to the device; returning false means "not sent" (retried later). */
  emit: (packet: Buffer) => boolean | void;
  /**
   * True when `emit` is done with the packet once it returns (a synchronous device write): TCP
   * packets are then built in one reused buffer instead of a fresh one each. Default false (the
   * packet is the emitter's to keep).
   */
  emitConsumes?: boolean;
  /**
   * Writes one TCP packet given as its headers and its payload apart (a gather write, writev(2)),
   * like `emit` otherwise. When given, segments that carry data go out this way: their payload,
   * a view of what the far side sent, is never copied into a packet. Both pieces are valid only
   * during the call (the headers' buffer is reused, and so is the payload when it had to be
   * joined from several chunks with `emitConsumes`): write them, or copy what you keep.
   */
  emitGather?: (head: Buffer, payload: Buffer) => boolean | void;
  /**
   * True when every far stream the dialer returns is done with a written chunk once that write
   * called back (ssh2 channels copy it into a packet, sockets into the kernel): bytes from the
   * device then reach the far side in reused blocks instead of a fresh Buffer per segment.
   * Default false: a stream may keep what it was given (a PassThrough does).
   */
  farCopiesOnWrite?: boolean;
  /** Addresses (text) whose UDP port 53 is answered by `resolveDns`. */
  dnsAddresses?: string[];
  resolveDns?: (query: Buffer) => Promise<Buffer>;
  /** Answers ICMP echo to a routed address when this resolves true; without it echo is dropped. */
  probe?: (ip: string) => Promise<boolean>;
  /**
   * UDP to routed addresses goes through this session (src/netstack/udp-flows.ts); without it, such
   * datagrams get ICMP port unreachable (DNS to `dnsAddresses` is answered either way).
   */
  udp?: UdpSession;
  /** Monotonic clock in milliseconds (default performance.now). */
  now?: () => number;
  /** The timer behind the clock (default setTimeout, unref'd); tests pass a simulated one with `now`. */
  timers?: NetStackTimers;
  /** Where the engine reports its own anomalies (a timer that would spin); default process.emitWarning. */
  log?: (message: string) => void;
  limits?: Partial<NetStackLimits>;
  /** TCP tuning (RTO bounds, delayed ACK, TIME-WAIT); mss/rxCapacity/maxBurst are derived. */
  tcp?: Partial<Pick<TcpConfig, 'ackDelay' | 'timeWait' | 'rtt' | 'maxRetransmits' | 'maxSynAckRetransmits' | 'maxOooEntries' | 'initialWindowSegments' | 'finWait2Timeout' | 'persistTimeout'>>;
  /** Initial sequence numbers (tests); default random (RFC 9293 §3.4.1 asks for unpredictable ISNs, RFC 6528). */
  iss?: () => number;
}

export interface NetStackStats {
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  dropped: Record<DropReason, number>;
  flows: number;
  pendingDials: number;
  flowsOpened: number;
  flowsClosed: number;
  dialsFailed: number;
  synsAbsorbed: number;
  resetsSent: number;
  /** Half-open flows reset to make room (maxHalfOpen, or a full flow table). */
  halfOpenEvicted: number;
  /** Flows in SYN-RECEIVED now. */
  halfOpen: number;
  /** Runs of the engine's timer, and flows they found due (the cost is per due flow, not per flow). */
  timerRuns: number;
  timerFlowsDue: number;
  /** A flow still due right after being serviced (a bug: retried after 1 s and logged, never spun on). */
  timerStalls: number;
  /** Bytes flows hold beyond their share (what the global budget limits). */
  bytesOverShare: number;
  /** Bytes held for flows: far-side backlog plus send queues plus out-of-order data. */
  bytesBuffered: number;
  tcp: TcpCounters;
  dnsQueries: number;
  dnsAnswers: number;
  echoReplies: number;
  portUnreachables: number;
  /** UDP through the tunnel: flows open now and since start, datagrams each way, ICMP errors passed on */
  udpFlows: number;
  udpFlowsOpened: number;
  udpDatagramsOut: number;
  udpDatagramsIn: number;
  udpIcmpErrors: number;
  /** IPv4 datagrams put back together from fragments */
  reassembled: number;
}

const IPV4_QUOTE = 576 - 28;

/**
 * The packet engine: IP packets in (`input`), IP packets out (`emit`), one TCP socket per flow
 * the local kernel opens, each joined to a stream from the `Dialer`. Never throws out of `input`;
 * every dropped packet is counted by reason in `stats()`.
 */
export class NetStack {
  private readonly dialer: Dialer;
  private readonly emitFn: (packet: Buffer) => boolean | void;
  private readonly emitGatherFn: ((head: Buffer, payload: Buffer) => boolean | void) | null;
  private readonly nowFn: () => number;
  private readonly timers: NetStackTimers;
  private readonly logFn: (message: string) => void;
  private readonly vnet: boolean;
  private readonly limits: NetStackLimits;
  private readonly tcpV4: TcpConfig;
  private readonly tcpV6: TcpConfig;
  private readonly builder: PacketBuilder;
  private readonly datagrams: DatagramService;
  private readonly reassembler = new Ipv4Reassembler();
  private readonly issFn: () => number;
  private readonly issPool = new Uint32Array(64);
  private issLeft = 0;

  // ---- flows: by 4-tuple, by deadline, half-open ones oldest first
  private readonly table = new FlowTable();
  /** What flows need of the engine (bound once per engine; not part of NetStack's public face). */
  private readonly host: FlowHost;

  // ---- deferred work
  private readonly dirty: Flow[] = [];
  private flushScheduled = false;
  private timer: unknown = null;
  private stallLogged = false;
  private timerAt = Infinity;
  private inInput = false;
  /** A flush is running (a stream event it causes must not start another). */
  private flushing = false;

  // ---- accounting
  /** Bytes flows hold, and the flows paused because the global budget ran out. */
  private readonly budget: BufferBudget;
  private readonly counters = {
    packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, flowsOpened: 0, flowsClosed: 0,
    dialsFailed: 0, synsAbsorbed: 0, resetsSent: 0, halfOpenEvicted: 0, timerRuns: 0, timerFlowsDue: 0,
    timerStalls: 0,
  };
  private readonly drops: Record<DropReason, number>;
  private readonly tcpCounters = newTcpCounters();
  private closedFlag = false;

  constructor(opts: NetStackOptions) {
    this.dialer = opts.dialer;
    this.emitFn = opts.emit;
    this.emitGatherFn = opts.emitGather ?? null;
    this.nowFn = opts.now ?? (() => performance.now());
    this.timers = opts.timers ?? REAL_TIMERS;
    this.logFn = opts.log ?? ((m) => process.emitWarning(m, 'KtctlNetStackWarning'));
    this.vnet = opts.offload !== undefined && opts.offload !== false;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.issFn = opts.iss ?? (() => this.randomIss());
    const base: TcpConfig = {
      ...DEFAULT_TCP_CONFIG,
      ...opts.tcp,
      rtt: opts.tcp?.rtt ?? DEFAULT_RTT,
      rxCapacity: this.limits.rxBufferPerFlow,
      reusePayloads: opts.emitConsumes === true,
    };
    // RFC 9293 §3.7.1: MSS = MTU - fixed IP and TCP headers. With offload, the device cuts our
    // segments: one may carry up to 64 KiB (the IP length field's limit, minus headers).
    this.builder = new PacketBuilder({
      vnetHdr: this.vnet, offload: typeof opts.offload === 'object' ? opts.offload : undefined, reuse: opts.emitConsumes === true,
    });
    const burst = this.builder.tso ? 65535 - IPV6_HEADER_LEN - 60 : 0;
    this.tcpV4 = { ...base, mss: Math.max(64, opts.mtu - IPV4_HEADER_LEN - 20), maxBurst: burst };
    this.tcpV6 = { ...base, mss: Math.max(64, opts.mtu - IPV6_HEADER_LEN - 20), maxBurst: burst };
    this.budget = new BufferBudget(this.limits);
    const engine = this;
    this.host = {
      limits: this.limits,
      budget: this.budget,
      pooledWrites: opts.farCopiesOnWrite === true,
      get closed() {
        return engine.closedFlag;
      },
      sendTcp: (src, dst, seg, mss) => this.sendTcp(src, dst, seg, mss),
      wake: (flow, now) => this.wake(flow, now),
      release: (flow) => {
        this.table.remove(flow);
        this.counters.flowsClosed++;
      },
      dialEnded: () => {
        this.table.pendingDials--;
      },
      drop: (reason) => this.drop(reason),
    };
    this.drops = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
    const dnsAddresses: Buffer[] = [];
    for (const a of opts.dnsAddresses ?? []) {
      const v4 = parseIpv4(a);
      if (v4 !== null) {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(v4, 0);
        dnsAddresses.push(b);
        continue;
      }
      const v6 = parseIpv6(a);
      if (v6 === null) throw new TypeError(`not an IP address: ${a}`);
      dnsAddresses.push(v6);
    }
    this.datagrams = new DatagramService(
      {
        builder: this.builder,
        send: (p) => this.send(p),
        drop: (r) => this.drop(r),
        now: () => this.nowFn(),
      },
      {
        dnsAddresses,
        resolveDns: opts.resolveDns,
        probe: opts.probe,
        mtu: opts.mtu,
        maxPendingDns: this.limits.maxPendingDns,
        maxPendingProbes: this.limits.maxPendingProbes,
        icmpErrorsPerSecond: this.limits.icmpErrorsPerSecond,
        probeCacheTtl: 5000,
        udp: opts.udp,
      },
    );
  }

  // ---- public API

  /** One packet from the device. Never throws. */
  input(packet: Buffer): void {
    if (this.closedFlag) return;
    this.inInput = true;
    try {
      this.inputOne(packet);
    } catch {
      this.drop('internal');
    } finally {
      this.inInput = false;
    }
    this.guard(this.flushFn);
  }

  /** A batch of packets (as one device read returns them); ACKs are sent once per flow at the end. */
  inputBatch(packets: readonly Buffer[]): void {
    if (this.closedFlag) return;
    this.inInput = true;
    for (const p of packets) {
      try {
        this.inputOne(p);
      } catch {
        this.drop('internal');
      }
    }
    this.inInput = false;
    this.guard(this.flushFn);
  }

  /**
   * Runs engine work from an event (device input, stream event, timer): an exception there is a
   * bug, counted as 'internal', never thrown at the caller or left uncaught.
   */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch {
      this.drop('internal');
    }
  }

  private readonly flushFn = (): void => this.flush();

  stats(): NetStackStats {
    let ooo = 0;
    this.table.forEach((f) => {
      if (f.socket) ooo += f.socket.oooBuffered;
    });
    const d = this.datagrams.counters;
    return {
      ...this.counters,
      dropped: { ...this.drops },
      flows: this.table.size,
      pendingDials: this.table.pendingDials,
      bytesBuffered: this.budget.buffered + ooo,
      halfOpen: this.table.halfOpen,
      bytesOverShare: this.budget.over,
      tcp: { ...this.tcpCounters },
      dnsQueries: d.dnsQueries,
      dnsAnswers: d.dnsAnswers,
      echoReplies: d.echoReplies,
      portUnreachables: d.portUnreachables,
      udpFlows: this.datagrams.udpFlows,
      udpFlowsOpened: d.udpFlowsOpened,
      udpDatagramsOut: d.udpDatagramsOut,
      udpDatagramsIn: d.udpDatagramsIn,
      udpIcmpErrors: d.udpIcmpErrors,
      reassembled: this.reassembler.reassembled,
    };
  }

  /** Every resource bound of this engine (limits and TCP timeouts), for status displays. */
  get bounds(): NetStackBounds {
    return netstackBounds(this.limits, this.tcpV4);
  }

  /** RSTs every flow, destroys every far stream, aborts every dial. Idempotent. */
  close(): void {
    if (this.closedFlag) return;
    this.table.forEach((f) => {
      const s = f.socket;
      if (s && !s.isClosed) {
        const st = s.state;
        if (st !== 'TIME-WAIT' && st !== 'CLOSED') f.abortNow(this.nowFn());
      }
      f.free();
    });
    this.closedFlag = true;
    this.datagrams.close();
    if (this.timer !== null) this.timers.clear(this.timer);
    this.timer = null;
  }

  // ---- input path

  private inputOne(packet: Buffer): void {
    this.counters.packetsIn++;
    this.counters.bytesIn += packet.length;
    let ip = packet;
    let policy: ChecksumPolicy = CHECKSUM_FULL;
    let gso = false;
    if (this.vnet) {
      const hdr = VirtioNetHdr.newUnchecked(packet);
      const bad = hdr.checkLen();
      if (bad) return this.drop(bad);
      const v = VirtioRepr.parse(hdr);
      if (typeof v === 'string') return this.drop(v);
      // virtio NEEDS_CSUM: the checksum is partial (the pseudo-header sum) and is not verified;
      // DATA_VALID: the kernel checked it already.
      if (v.csum || v.dataValid) policy = CHECKSUM_OFFLOADED;
      // A GSO super-segment is consumed as one big segment.
      gso = v.gso !== null;
      ip = hdr.payload;
    }
    if (ip.length < 1) return this.drop('truncated');
    const version = ip[0]! >> 4;
    if (version === 4) {
      const p = Ipv4Packet.newUnchecked(ip);
      const bad = p.checkLen();
      if (bad) return this.drop(bad);
      // The IPv4 header checksum is always complete, except in a super-segment whose header the
      // kernel may leave for segmentation to fill.
      if (!gso && !p.verifyChecksum()) return this.drop('checksum');
      if (p.moreFrags || p.fragOffset !== 0) {
        // A fragment (a UDP datagram above the MTU): held until its datagram is whole (fragment.ts).
        const whole = this.reassembler.push(p, this.nowFn());
        if (typeof whole === 'string') return this.drop(whole);
        if (whole === undefined) return;
        // Offloads do not apply to fragments: the kernel summed the whole datagram before cutting it.
        return this.inputIpv4(Ipv4Packet.newUnchecked(whole), whole, CHECKSUM_FULL);
      }
      return this.inputIpv4(p, ip, policy);
    }
    if (version === 6) {
      const p = Ipv6Packet.newUnchecked(ip);
      const bad = p.checkLen();
      if (bad) return this.drop(bad);
      const upper = ipv6UpperLayer(p);
      if (typeof upper === 'string') return this.drop(upper);
      const end = IPV6_HEADER_LEN + p.payloadLen;
      const l4 = ip.subarray(upper.offset, end);
      switch (upper.protocol) {
        case IpProtocol.Tcp:
          return this.tcpInput(ip.subarray(0, end), true, l4, policy);
        case IpProtocol.Udp:
          return this.udpInput(ip.subarray(0, end), true, l4, policy);
        case IpProtocol.Icmpv6:
          return this.icmpInput(ip.subarray(0, end), true, l4, policy);
        default:
          return this.drop('unsupported');
      }
    }
    this.drop('malformed');
  }

  private inputIpv4(p: Ipv4Packet, ip: Buffer, policy: ChecksumPolicy): void {
    const hl = p.headerLen;
    const end = p.totalLen;
    const l4 = ip.subarray(hl, end);
    switch (p.protocol) {
      case IpProtocol.Tcp:
        return this.tcpInput(ip.subarray(0, end), false, l4, policy);
      case IpProtocol.Udp:
        return this.udpInput(ip.subarray(0, end), false, l4, policy);
      case IpProtocol.Icmp:
        return this.icmpInput(ip.subarray(0, end), false, l4, policy);
      default:
        return this.drop('unsupported');
    }
  }

  private pseudo(ip: Buffer, v6: boolean, proto: number, len: number): number {
    return v6
      ? pseudoHeaderV6(ip, Ipv6Packet.SRC_OFFSET, ip, Ipv6Packet.DST_OFFSET, proto, len)
      : pseudoHeaderV4(ip, Ipv4Packet.SRC_OFFSET, ip, Ipv4Packet.DST_OFFSET, proto, len);
  }

  private tcpInput(ip: Buffer, v6: boolean, l4: Buffer, policy: ChecksumPolicy): void {
    const tp = TcpPacket.newUnchecked(l4);
    const bad = tp.checkLen();
    if (bad) return this.drop(bad);
    const seg = TcpRepr.parse(tp, this.pseudo(ip, v6, IpProtocol.Tcp, l4.length), policy);
    if (typeof seg === 'string') return this.drop(seg);
    const srcOff = v6 ? Ipv6Packet.SRC_OFFSET : Ipv4Packet.SRC_OFFSET;
    const dstOff = v6 ? Ipv6Packet.DST_OFFSET : Ipv4Packet.DST_OFFSET;
    const alen = v6 ? 16 : 4;
    const hash = flowHash(ip, srcOff, dstOff, alen, seg.srcPort, seg.dstPort);
    let flow = this.table.lookup(hash, ip, srcOff, dstOff, alen, seg.srcPort, seg.dstPort);
    const now = this.nowFn();

    if (flow && flow.socket && flow.socket.state === 'TIME-WAIT' && seg.control === 'syn' &&
      seg.ackNumber === null && seqGt(seg.seqNumber, flow.socket.remoteSeqNo)) {
      // RFC 9293 §3.10.7.4 / RFC 6191: a new SYN with a higher sequence number may reopen a
      // connection in TIME-WAIT: the old flow goes, the SYN starts a new one.
      flow.free();
      flow = null;
    }

    if (!flow) {
      if (seg.control === 'syn' && seg.ackNumber === null) {
        this.newFlow(ip, v6, srcOff, dstOff, alen, hash, seg);
        return;
      }
      // RFC 9293 §3.10.7.1: a segment for no connection is answered with a RST (unless RST).
      this.drop('noFlow');
      const rst = TcpSocket.rstFor(seg);
      if (rst) this.sendRaw(ip.subarray(dstOff, dstOff + alen), ip.subarray(srcOff, srcOff + alen), rst);
      return;
    }

    const socket = flow.socket;
    if (!socket) {
      // Still dialing: a repeated SYN is absorbed (the SYN-ACK comes when the dial is done), a
      // RST abandons the dial, anything else waits for the SYN-ACK like on a real network.
      if (seg.control === 'syn' && seg.ackNumber === null && flow.syn && seg.seqNumber === flow.syn.seqNumber) {
        this.counters.synsAbsorbed++;
      } else if (seg.control === 'rst') {
        flow.free();
      } else {
        this.drop('outOfWindow');
      }
      return;
    }

    const reply = socket.process(now, seg);
    if (reply) flow.emitSeg(reply);
    if (flow.halfOpen && socket.state !== 'SYN-RECEIVED') this.table.halfOpenRemove(flow);
    this.markDirty(flow);
  }

  private udpInput(ip: Buffer, v6: boolean, l4: Buffer, policy: ChecksumPolicy): void {
    const up = UdpPacket.newUnchecked(l4);
    const bad = up.checkLen();
    if (bad) return this.drop(bad);
    const repr = UdpRepr.parse(up, this.pseudo(ip, v6, IpProtocol.Udp, up.length), policy, v6);
    if (typeof repr === 'string') return this.drop(repr);
    const { src, dst } = this.addrs(ip, v6);
    this.datagrams.udp(src, dst, repr, ip);
  }

  private icmpInput(ip: Buffer, v6: boolean, l4: Buffer, _policy: ChecksumPolicy): void {
    const ic = IcmpPacket.newUnchecked(l4);
    const bad = ic.checkLen();
    if (bad) return this.drop(bad);
    const pseudo = v6 ? this.pseudo(ip, true, IpProtocol.Icmpv6, l4.length) : 0;
    // The checksum is verified whatever the virtio header says: its NEEDS_CSUM/DATA_VALID flags
    // carry the kernel's checksum offload (CHECKSUM_PARTIAL/UNNECESSARY, include/linux/skbuff.h),
    // which is for TCP and UDP, never ICMP. Replies get a checksum of their own (udp.ts, echoReply).
    const repr = IcmpRepr.parse(ic, v6, pseudo);
    if (typeof repr === 'string') return this.drop(repr);
    const { src, dst } = this.addrs(ip, v6);
    this.datagrams.icmp(src, dst, repr, l4);
  }

  private addrs(ip: Buffer, v6: boolean): { src: Buffer; dst: Buffer } {
    const srcOff = v6 ? Ipv6Packet.SRC_OFFSET : Ipv4Packet.SRC_OFFSET;
    const dstOff = v6 ? Ipv6Packet.DST_OFFSET : Ipv4Packet.DST_OFFSET;
    const alen = v6 ? 16 : 4;
    return {
      src: Buffer.from(ip.subarray(srcOff, srcOff + alen)),
      dst: Buffer.from(ip.subarray(dstOff, dstOff + alen)),
    };
  }

  // ---- flows

  private newFlow(ip: Buffer, v6: boolean, srcOff: number, dstOff: number, alen: number, hash: number, syn: TcpRepr): void {
    // Admission (SYN-flood policy): a full dial queue drops the SYN (evicting a dial younger than
    // its round trip would let no dial complete under a flood); a full flow table evicts the
    // oldest half-open flow, a flood's, since the local kernel completes real handshakes at once.
    // No memory check: every flow's share is guaranteed (flowShare) and the rest is budgeted.
    if (this.table.pendingDials >= this.limits.maxPendingDials) return this.drop('synFlood');
    if (this.table.size >= this.limits.maxFlows && !this.evictHalfOpen()) return this.drop('flowLimit');
    const ourAddr = Buffer.from(ip.subarray(dstOff, dstOff + alen));
    const peerAddr = Buffer.from(ip.subarray(srcOff, srcOff + alen));
    // Keep the SYN (its payload, if any, is not kept: we do not accept data on a SYN) and the
    // head of its packet to quote in an ICMP error.
    const synCopy: TcpRepr = { ...syn, payload: EMPTY };
    const quoteLen = Math.min(ip.length, v6 ? 1280 - 48 : IPV4_QUOTE);
    const flow = new Flow(this.host, v6, ourAddr, peerAddr, syn.dstPort, syn.srcPort, hash, synCopy, Buffer.from(ip.subarray(0, quoteLen)));
    this.table.insert(flow);
    this.counters.flowsOpened++;
    this.table.pendingDials++;
    const ac = new AbortController();
    flow.dialAbort = ac;
    const signal = ac.signal;
    flow.dialDeadline = this.nowFn() + this.limits.dialTimeout;
    this.schedule(flow, flow.dialDeadline);
    let dial: Promise<Duplex>;
    try {
      dial = this.dialer.dial(addrText(ourAddr), syn.dstPort, {
        signal, originHost: addrText(peerAddr), originPort: syn.srcPort,
      });
    } catch (e) {
      dial = Promise.reject(e);
    }
    dial.then(
      (far) => this.guard(() => this.dialDone(flow, far)),
      (err: unknown) => this.guard(() => this.dialFailed(flow, err)),
    );
  }

  private dialDone(flow: Flow, far: Duplex): void {
    if (flow.dialAbort) {
      flow.dialAbort = null;
      this.table.pendingDials--;
    }
    if (flow.closed || this.closedFlag) {
      far.destroy();
      return;
    }
    const syn = flow.syn!;
    flow.syn = null;
    flow.synPacket = null;
    const cfg = flow.v6 ? this.tcpV6 : this.tcpV4;
    // RFC 9293 §3.7.1 / RFC 8200 §5: without an MSS option assume 536 over IPv4, 1220 over IPv6.
    const synForSocket: TcpRepr = flow.v6 && syn.maxSegSize === null ? { ...syn, maxSegSize: 1220 } : syn;
    const socket = TcpSocket.fromSyn(synForSocket, seq(this.issFn()), cfg, flow, this.tcpCounters);
    this.table.halfOpenAppend(flow);
    flow.attach(far, socket);
    this.markDirty(flow);
    this.scheduleFlush();
    if (this.table.halfOpen > this.limits.maxHalfOpen) this.evictHalfOpen();
  }

  private dialFailed(flow: Flow, err: unknown): void {
    if (flow.dialAbort) {
      flow.dialAbort = null;
      this.table.pendingDials--;
    }
    if (flow.closed || this.closedFlag) return;
    this.counters.dialsFailed++;
    const syn = flow.syn!;
    const quote = flow.synPacket!;
    // A dial that ran out of time is "unreachable" (like a connect timeout), whatever the dialer says.
    const reason = flow.dialTimedOut ? 'unreachable' : err instanceof DialError ? err.reason : 'tunnel';
    flow.free();
    switch (reason) {
      case 'refused': {
        // Like a real host with nobody listening: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
        // (RFC 9293 §3.10.7.1), so the client reports "connection refused".
        const rst = TcpSocket.rstFor(syn);
        if (rst) this.sendRaw(flow.ourAddr, flow.peerAddr, rst);
        break;
      }
      case 'unreachable':
      case 'unresolvable':
        this.datagrams.icmpError(flow.peerAddr, flow.ourAddr, quote,
          flow.v6 ? Icmpv6Unreachable.AddressUnreachable : Icmpv4Unreachable.HostUnreachable);
        break;
      case 'prohibited':
        this.datagrams.icmpError(flow.peerAddr, flow.ourAddr, quote,
          flow.v6 ? Icmpv6Unreachable.AdminProhibited : Icmpv4Unreachable.AdminProhibited);
        break;
      default: {
        const rst = TcpSocket.rstFor(syn);
        if (rst) this.sendRaw(flow.ourAddr, flow.peerAddr, rst);
        break;
      }
    }
    this.scheduleFlush();
  }

  // ---- output

  private markDirty(flow: Flow): void {
    if (flow.dirty) return;
    flow.dirty = true;
    this.dirty.push(flow);
  }

  /**
   * A flow has something to dispatch: at once when `now` and no input or flush is running (a
   * reply must not wait for the end of the turn), else in the flush at the end of this turn.
   */
  private wake(flow: Flow, now: boolean): void {
    this.markDirty(flow);
    if (now && !this.inInput && !this.flushing) this.flush();
    else this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.inInput || this.closedFlag) return;
    this.flushScheduled = true;
    setImmediate(this.flushTick);
  }

  private readonly flushTick = (): void => {
    this.flushScheduled = false;
    this.guard(this.flushFn);
  };

  /** Dispatches every dirty flow (bounded per flow per round), then re-arms the timer. */
  private flush(): void {
    if (this.closedFlag || this.flushing) return;
    this.flushing = true;
    try {
      this.flushDirty();
    } finally {
      this.flushing = false;
    }
  }

  private flushDirty(): void {
    const now = this.nowFn();
    let again = false;
    // Flows marked during this loop are appended and handled in the same pass.
    for (let i = 0; i < this.dirty.length; i++) {
      const flow = this.dirty[i]!;
      flow.dirty = false;
      if (flow.closed || !flow.socket) continue;
      const refusedBefore = this.drops.emitFailed;
      if (!flow.dispatch(now)) {
        // More to send than one round allows: come back after other work.
        again = true;
        this.markDirtyLater(flow);
        continue;
      }
      if (flow.closed) continue;
      let at = flow.socket.pollAt();
      if (at <= now) {
        if (this.drops.emitFailed !== refusedBefore) {
          // The device refused a segment: try again shortly (a device condition, not a spin).
          at = now + EMIT_RETRY_MS;
        } else {
          // Serviced and still due: a socket bug. Never re-arm at "now" for it; say so once.
          this.counters.timerStalls++;
          at = now + STALL_RETRY_MS;
          if (!this.stallLogged) {
            this.stallLogged = true;
            this.logFn(`netstack: a ${flow.socket.state} flow stayed due after dispatch (timer ${flow.socket.timer.kind}); retrying it every ${STALL_RETRY_MS} ms`);
          }
        }
      }
      this.schedule(flow, at);
    }
    this.dirty.length = 0;
    if (this.later.length > 0) {
      for (const f of this.later) this.markDirty(f);
      this.later.length = 0;
    }
    if (again) this.scheduleFlush();
  }

  private readonly later: Flow[] = [];
  private markDirtyLater(flow: Flow): void {
    this.later.push(flow);
  }

  /** Sends one TCP segment from `src` to `dst`: a flow's, or a RST outside any flow (mss 0xffff). */
  private sendTcp(src: Buffer, dst: Buffer, seg: TcpRepr, mss: number): boolean {
    if (seg.control === 'rst') this.counters.resetsSent++;
    if (this.emitGatherFn !== null && seg.payload.length > 0) {
      return this.sendGather(this.builder.tcpHeader(src, dst, seg, mss), seg.payload);
    }
    return this.send(this.builder.tcp(src, dst, seg, mss));
  }

  /** A TCP segment outside any flow (RSTs, which carry no payload). */
  private sendRaw(src: Buffer, dst: Buffer, seg: TcpRepr): void {
    this.sendTcp(src, dst, seg, 0xffff);
  }

  private send(packet: Buffer): boolean {
    let ok: boolean | void;
    try {
      ok = this.emitFn(packet);
    } catch {
      ok = false;
    }
    return this.sent(ok, packet.length);
  }

  private sendGather(head: Buffer, payload: Buffer): boolean {
    let ok: boolean | void;
    try {
      ok = this.emitGatherFn!(head, payload);
    } catch {
      ok = false;
    }
    return this.sent(ok, head.length + payload.length);
  }

  private sent(ok: boolean | void, bytes: number): boolean {
    if (ok === false) {
      this.drop('emitFailed');
      return false;
    }
    this.counters.packetsOut++;
    this.counters.bytesOut += bytes;
    return true;
  }

  private drop(reason: DropReason): void {
    this.drops[reason]++;
  }

  // ---- the one timer, over a min-heap of flows keyed by their deadline

  /** Sets when the engine must look at `flow` again (Infinity: never) and re-arms if earlier. */
  private schedule(flow: Flow, at: number): void {
    if (flow.closed) return;
    this.table.schedule(flow, at);
    this.armFor(at);
  }

  private armFor(at: number): void {
    if (at === Infinity || this.closedFlag) return;
    if (at >= this.timerAt) return;
    this.timerAt = at;
    if (this.timer !== null) this.timers.clear(this.timer);
    // At least 1 ms: a deadline in the past is serviced at the next run and then moves forward
    // (flushDirty never leaves a serviced flow due at "now").
    const delay = Math.max(1, Math.ceil(at - this.nowFn()));
    this.timer = this.timers.set(this.onTimer, delay);
  }

  private readonly onTimer = (): void => this.guard(this.timerFn);

  private readonly timerFn = (): void => {
    this.timer = null;
    this.timerAt = Infinity;
    if (this.closedFlag) return;
    this.counters.timerRuns++;
    const now = this.nowFn();
    // Only the flows whose deadline passed: idle flows cost nothing here.
    for (let f = this.table.popDue(now); f !== null; f = this.table.popDue(now)) {
      this.counters.timerFlowsDue++;
      if (!f.socket) {
        if (f.dialAbort && !f.dialTimedOut && f.dialDeadline <= now) {
          // The dial ran out of time: abort it; the rejection answers the client.
          f.dialTimedOut = true;
          f.dialAbort.abort();
        }
        continue;
      }
      this.markDirty(f);
    }
    this.flush();
    this.armFor(this.table.nextDue);
  };

  // ---- SYN-flood policy, initial sequence numbers

  /**
   * Resets the oldest SYN-RECEIVED flow (RFC 9293 §3.10.5 ABORT: a RST to the local side) and
   * destroys its far stream. Returns false when there is none.
   */
  private evictHalfOpen(): boolean {
    const f = this.table.oldestHalfOpen;
    if (f === null) return false;
    this.table.halfOpenRemove(f);
    this.counters.halfOpenEvicted++;
    const s = f.socket;
    if (s && !s.isClosed) f.abortNow(this.nowFn());
    f.free();
    return true;
  }

  private randomIss(): number {
    if (this.issLeft === 0) {
      randomFillSync(this.issPool);
      this.issLeft = this.issPool.length;
    }
    return this.issPool[--this.issLeft]!;
  }
}

const EMPTY = Buffer.alloc(0);
