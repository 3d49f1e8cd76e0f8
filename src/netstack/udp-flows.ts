/**
 * UDP beyond DNS in the TUN mode: each local 5-tuple (source address and port, destination address
 * and port, UDP) becomes one flow of the tunnel's `UdpSession` (src/dialer.ts). Datagrams from the
 * local sender go out on it; what comes back is written to the device as UDP from the destination
 * to the sender (cut into IPv4 fragments when it is larger than the MTU); an ICMP error the far
 * side saw for the flow comes back as the same ICMP error, quoting the flow's first packet
 * (rate-limited with the engine's other ICMP errors).
 *
 * Timeouts and bounds, as the shadow's (src/shadow/udp.ts says why): a flow idle for `idleMs`
 * (120 s, RFC 4787 REQ-5), `dnsIdleMs` for destination port 53 (30 s, REQ-5a), goes; at most
 * `maxFlows` flows, the least recently used goes first. Nothing queues here: a datagram the session
 * does not take is dropped ('udpDropped'); the session's own bound is src/ssh/udp.ts's.
 */
import type { UdpFailure, UdpFlow, UdpFlowHandler, UdpSession } from '../dialer.js';
import type { DropReason } from './wire/error.js';
import { Icmpv4Unreachable, Icmpv6Unreachable } from './wire/icmp.js';
import type { UdpRepr } from './wire/udp.js';

export interface UdpFlowLimits {
  maxFlows: number;
  idleMs: number;
  dnsIdleMs: number;
}

/** maxFlows as the shadow's per connection (src/shadow/udp.ts MAX_FLOWS): more here would only make it evict. */
export const DEFAULT_UDP_FLOW_LIMITS: UdpFlowLimits = { maxFlows: 1024, idleMs: 120_000, dnsIdleMs: 30_000 };

/** What the flows need of the engine. */
export interface UdpFlowEnv {
  /** Writes one UDP datagram from `src`:srcPort to `dst`:dstPort to the device (fragmented if needed). */
  sendUdp(src: Buffer, dst: Buffer, srcPort: number, dstPort: number, payload: Buffer): void;
  /** A destination unreachable about `quote` (the local sender's packet), rate-limited. */
  icmpError(peer: Buffer, our: Buffer, quote: Buffer, code: number, mtu?: number): void;
  drop(reason: DropReason): void;
  now(): number;
  /** Text of a 4- or 16-byte address. */
  addrText(addr: Buffer): string;
}

export interface UdpFlowCounters {
  udpFlowsOpened: number;
  udpDatagramsOut: number;
  udpDatagramsIn: number;
  udpIcmpErrors: number;
}

/** As much of the sender's first packet as an ICMPv4 error quotes (RFC 1812 §4.3.2.3: 576 - 28). */
const QUOTE_MAX = 548;

class LocalFlow implements UdpFlowHandler {
  flow!: UdpFlow;
  lastActive: number;

  constructor(
    readonly owner: UdpFlows,
    readonly key: string,
    readonly peer: Buffer,
    readonly peerPort: number,
    readonly our: Buffer,
    readonly ourPort: number,
    readonly quote: Buffer,
    readonly idleMs: number,
    now: number,
  ) {
    this.lastActive = now;
  }

  message(payload: Buffer): void {
    this.owner.fromFar(this, payload);
  }

  error(failure: UdpFailure, mtu: number): void {
    this.owner.farError(this, failure, mtu);
  }
}

export class UdpFlows {
  readonly #env: UdpFlowEnv;
  readonly #session: UdpSession;
  readonly #limits: UdpFlowLimits;
  readonly #flows = new Map<string, LocalFlow>();
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;
  readonly counters: UdpFlowCounters = { udpFlowsOpened: 0, udpDatagramsOut: 0, udpDatagramsIn: 0, udpIcmpErrors: 0 };

  constructor(env: UdpFlowEnv, session: UdpSession, limits: Partial<UdpFlowLimits> = {}) {
    this.#env = env;
    this.#session = session;
    this.#limits = { ...DEFAULT_UDP_FLOW_LIMITS, ...limits };
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(this.#limits.idleMs, this.#limits.dnsIdleMs) / 4));
    this.#sweeper.unref();
  }

  get size(): number {
    return this.#flows.size;
  }

  /** One datagram from the local sender `src` to `dst`; `ipPacket` is its whole IP packet. */
  input(src: Buffer, dst: Buffer, repr: UdpRepr, ipPacket: Buffer): void {
    if (this.#closed) return;
    const now = this.#env.now();
    const key = `${src.toString('latin1')}${repr.srcPort}>${dst.toString('latin1')}${repr.dstPort}`;
    let f = this.#flows.get(key);
    if (f === undefined) {
      if (this.#flows.size >= this.#limits.maxFlows) this.#evictOldest();
      const idle = repr.dstPort === 53 ? this.#limits.dnsIdleMs : this.#limits.idleMs;
      f = new LocalFlow(this, key, src, repr.srcPort, dst, repr.dstPort, Buffer.from(ipPacket.subarray(0, QUOTE_MAX)), idle, now);
      f.flow = this.#session.open(this.#env.addrText(dst), repr.dstPort, f);
      this.#flows.set(key, f);
      this.counters.udpFlowsOpened++;
    }
    f.lastActive = now;
    if (f.flow.send(repr.payload)) this.counters.udpDatagramsOut++;
    else this.#env.drop('udpDropped');
  }

  fromFar(f: LocalFlow, payload: Buffer): void {
    if (this.#closed || this.#flows.get(f.key) !== f) return;
    f.lastActive = this.#env.now();
    this.counters.udpDatagramsIn++;
    this.#env.sendUdp(f.our, f.peer, f.ourPort, f.peerPort, payload);
  }

  farError(f: LocalFlow, failure: UdpFailure, mtu: number): void {
    if (this.#closed || this.#flows.get(f.key) !== f) return;
    const v6 = f.peer.length === 16;
    let code: number;
    switch (failure) {
      case 'portUnreachable':
        code = v6 ? Icmpv6Unreachable.PortUnreachable : Icmpv4Unreachable.PortUnreachable;
        break;
      case 'hostUnreachable':
        code = v6 ? Icmpv6Unreachable.AddressUnreachable : Icmpv4Unreachable.HostUnreachable;
        break;
      case 'netUnreachable':
        code = v6 ? Icmpv6Unreachable.NoRoute : Icmpv4Unreachable.NetUnreachable;
        break;
      case 'prohibited':
        code = v6 ? Icmpv6Unreachable.AdminProhibited : Icmpv4Unreachable.AdminProhibited;
        break;
      case 'fragNeeded':
        // ICMPv6 says this with Packet Too Big (RFC 4443 §3.2), a message the engine does not build.
        if (v6) return;
        code = Icmpv4Unreachable.FragNeeded;
        break;
    }
    this.counters.udpIcmpErrors++;
    this.#env.icmpError(f.peer, f.our, f.quote, code, failure === 'fragNeeded' ? mtu : undefined);
  }

  #evictOldest(): void {
    let oldest: LocalFlow | undefined;
    for (const f of this.#flows.values()) if (oldest === undefined || f.lastActive < oldest.lastActive) oldest = f;
    if (oldest !== undefined) this.#remove(oldest);
  }

  #sweep(): void {
    const now = this.#env.now();
    for (const f of this.#flows.values()) if (now - f.lastActive >= f.idleMs) this.#remove(f);
  }

  #remove(f: LocalFlow): void {
    this.#flows.delete(f.key);
    f.flow.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const f of this.#flows.values()) f.flow.close();
    this.#flows.clear();
  }
}
