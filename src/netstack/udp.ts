import {
  errorResponse, Flag, flags, HEADER_LENGTH, isWellFormed, Rcode, truncateTo, udpPayloadLimit,
} from '../protocol/dns.js';
import type { UdpSession } from '../dialer.js';
import type { PacketBuilder } from './emit.js';
import { fragmentIpv4 } from './fragment.js';
import { UdpFlows, type UdpFlowCounters, type UdpFlowLimits } from './udp-flows.js';
import type { DropReason } from './wire/error.js';
import {
  ICMP_HEADER_LEN, IcmpPacket, Icmpv4Unreachable, Icmpv6Unreachable, type IcmpRepr,
} from './wire/icmp.js';
import { formatIpv4, IPV4_HEADER_LEN } from './wire/ipv4.js';
import { formatIpv6, IPV6_HEADER_LEN } from './wire/ipv6.js';
import { UDP_HEADER_LEN, type UdpRepr } from './wire/udp.js';

/** What the datagram side needs from the engine. */
export interface DatagramEnv {
  builder: PacketBuilder;
  /** Sends a built packet; false when the device refused it. */
  send(packet: Buffer): boolean;
  drop(reason: DropReason): void;
  now(): number;
}

export interface DatagramOptions {
  /** Addresses whose port 53 is answered by `resolveDns` (4- or 16-byte buffers). */
  dnsAddresses: Buffer[];
  resolveDns?: (query: Buffer) => Promise<Buffer>;
  /** Is this routed address reachable through the tunnel? Drives ICMP echo replies. */
  probe?: (ip: string) => Promise<boolean>;
  /** Largest IP packet we may emit (the link MTU). */
  mtu: number;
  maxPendingDns: number;
  maxPendingProbes: number;
  /** ICMP error messages per second (RFC 4443 §2.4(f), RFC 1812 §4.3.2.8: rate-limited). */
  icmpErrorsPerSecond: number;
  /** How long a probe's answer is reused (ms). */
  probeCacheTtl: number;
  /** UDP to routed addresses goes through this (udp-flows.ts); without it, port unreachable. */
  udp?: UdpSession;
  udpLimits?: Partial<UdpFlowLimits>;
}

export interface DatagramCounters extends UdpFlowCounters {
  dnsQueries: number;
  dnsAnswers: number;
  dnsErrors: number;
  echoReplies: number;
  portUnreachables: number;
}

const DNS_PORT = 53;
const PROBE_CACHE_MAX = 4096;
const PENDING_ECHOES_PER_PROBE = 8;

interface ProbeEntry {
  /** null while the probe runs. */
  reachable: boolean | null;
  expiresAt: number;
  /** Echo requests waiting for the answer (copies of the whole ICMP message and addresses). */
  waiting: Array<{ src: Buffer; dst: Buffer; icmp: Buffer }>;
}

/**
 * UDP and ICMP for the engine: DNS queries to the configured resolver addresses go to
 * `resolveDns` and are answered from the address and port they were sent to; any other UDP goes
 * through the tunnel's UDP session (udp-flows.ts) when there is one, and gets an ICMP port
 * unreachable otherwise (and when it is sent to ktctl's own DNS address); an ICMP echo request is answered when `probe` says the address is
 * reachable (answers cached for `probeCacheTtl`), and dropped otherwise.
 */
export class DatagramService {
  private readonly env: DatagramEnv;
  private readonly opts: DatagramOptions;
  private pendingDns = 0;
  private pendingProbes = 0;
  private readonly probes = new Map<string, ProbeEntry>();
  private tokens: number;
  private tokensAt: number;
  private closed = false;
  private readonly flows: UdpFlows | undefined;
  private readonly dnsCounters = { dnsQueries: 0, dnsAnswers: 0, dnsErrors: 0, echoReplies: 0, portUnreachables: 0 };

  constructor(env: DatagramEnv, opts: DatagramOptions) {
    this.env = env;
    this.opts = opts;
    this.tokens = opts.icmpErrorsPerSecond;
    this.tokensAt = env.now();
    if (opts.udp !== undefined) {
      this.flows = new UdpFlows(
        {
          sendUdp: (src, dst, srcPort, dstPort, payload) => this.sendUdp(src, dst, srcPort, dstPort, payload),
          icmpError: (peer, our, quote, code, mtu) => this.icmpError(peer, our, quote, code, mtu),
          drop: (reason) => env.drop(reason),
          now: () => env.now(),
          addrText,
        },
        opts.udp,
        opts.udpLimits,
      );
    }
  }

  get counters(): DatagramCounters {
    const f = this.flows?.counters;
    return { ...this.dnsCounters, udpFlowsOpened: f?.udpFlowsOpened ?? 0, udpDatagramsOut: f?.udpDatagramsOut ?? 0, udpDatagramsIn: f?.udpDatagramsIn ?? 0, udpIcmpErrors: f?.udpIcmpErrors ?? 0 };
  }

  /** UDP flows open now (0 without a UDP session). */
  get udpFlows(): number {
    return this.flows?.size ?? 0;
  }

  get pendingDnsQueries(): number {
    return this.pendingDns;
  }

  close(): void {
    this.closed = true;
    this.probes.clear();
    this.flows?.close();
  }

  /**
   * One UDP datagram. `src`/`dst` are copies of the addresses; `ipPacket` is the whole IP packet
   * (for quoting in an ICMP error).
   */
  udp(src: Buffer, dst: Buffer, repr: UdpRepr, ipPacket: Buffer): void {
    if (repr.dstPort === DNS_PORT && this.opts.resolveDns && this.isDnsAddress(dst)) {
      this.dns(src, dst, repr);
      return;
    }
    if (this.flows !== undefined && !this.isDnsAddress(dst)) {
      // Multicast and broadcast are not carried: a flow has one destination and one reply path.
      if (isUnicast(dst) && isUnicast(src)) this.flows.input(src, dst, repr, ipPacket);
      else this.env.drop('unsupported');
      return;
    }
    this.portUnreachable(src, dst, ipPacket);
  }

  /**
   * One UDP datagram to the local side, from `src`:srcPort (a routed address) to `dst`:dstPort.
   * Over IPv4, a packet longer than the MTU goes as fragments (RFC 791 §2.3; the local kernel
   * reassembles them); over IPv6 it is dropped ('tooBig': the source fragments there, RFC 8200 §4.5,
   * and the engine does not).
   */
  private sendUdp(src: Buffer, dst: Buffer, srcPort: number, dstPort: number, payload: Buffer): void {
    const v6 = src.length === 16;
    const room = 0xffff - (v6 ? 0 : IPV4_HEADER_LEN) - UDP_HEADER_LEN;
    if (payload.length > room) {
      this.env.drop('tooBig');
      return;
    }
    const packet = this.env.builder.udp(src, dst, { srcPort, dstPort, payload });
    const head = this.env.builder.headroom;
    if (packet.length - head <= this.opts.mtu) {
      this.env.send(packet);
      return;
    }
    if (v6) {
      this.env.drop('tooBig');
      return;
    }
    for (const fragment of fragmentIpv4(packet, this.opts.mtu, head)) this.env.send(fragment);
  }

  /** One ICMP message (ICMPv4 or ICMPv6 by the address length). */
  icmp(src: Buffer, dst: Buffer, repr: IcmpRepr, message: Buffer): void {
    if (repr.kind !== 'echoRequest') return; // replies and errors for us: nothing to do
    const probe = this.opts.probe;
    if (!probe || !isUnicast(dst) || !isUnicast(src)) {
      this.env.drop('unreachable');
      return;
    }
    const key = addrText(dst);
    const now = this.env.now();
    let entry = this.probes.get(key);
    if (entry && entry.reachable !== null && entry.expiresAt <= now) {
      this.probes.delete(key);
      entry = undefined;
    }
    if (entry) {
      if (entry.reachable === true) this.echoReply(src, dst, message);
      else if (entry.reachable === false) this.env.drop('unreachable');
      else if (entry.waiting.length < PENDING_ECHOES_PER_PROBE) entry.waiting.push({ src, dst, icmp: Buffer.from(message) });
      else this.env.drop('probeLimit');
      return;
    }
    if (this.pendingProbes >= this.opts.maxPendingProbes) {
      this.env.drop('probeLimit');
      return;
    }
    if (this.probes.size >= PROBE_CACHE_MAX) this.pruneProbes(now);
    const fresh: ProbeEntry = { reachable: null, expiresAt: Infinity, waiting: [{ src, dst, icmp: Buffer.from(message) }] };
    this.probes.set(key, fresh);
    this.pendingProbes++;
    let p: Promise<boolean>;
    try {
      p = probe(key);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (ok) => this.guard(() => this.probeDone(key, fresh, ok === true)),
      () => this.guard(() => this.probeDone(key, fresh, false)),
    );
  }

  /** Work done in a promise callback: a bug there is counted, never an unhandled rejection. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch {
      this.env.drop('internal');
    }
  }

  private probeDone(key: string, entry: ProbeEntry, ok: boolean): void {
    this.pendingProbes--;
    if (this.closed) return;
    entry.reachable = ok;
    entry.expiresAt = this.env.now() + this.opts.probeCacheTtl;
    const waiting = entry.waiting;
    entry.waiting = [];
    if (this.probes.get(key) !== entry) return;
    for (const w of waiting) {
      if (ok) this.echoReply(w.src, w.dst, w.icmp);
      else this.env.drop('unreachable');
    }
  }

  private pruneProbes(now: number): void {
    for (const [k, e] of this.probes) {
      if (e.reachable !== null && e.expiresAt <= now) this.probes.delete(k);
    }
    if (this.probes.size >= PROBE_CACHE_MAX) {
      for (const [k, e] of this.probes) if (e.reachable !== null) this.probes.delete(k);
    }
  }

  /**
   * RFC 792 / RFC 4443 §4.2: the reply carries the request's identifier, sequence number and
   * data, from the address the request was sent to. Its checksum is computed over the reply as it
   * goes out, never carried over from the request.
   *
   * A reply never exceeds the link MTU: we do not fragment. A request longer than the MTU cannot
   * have crossed this link whole (the kernel fragments it, and we drop fragments), so it is broken
   * or hostile input, and the two ICMP versions say different things about it:
   * - ICMPv4, RFC 1122 §3.2.2.6: "Data received in an ICMP Echo Request MUST be entirely included
   *   in the resulting Echo Reply. However, if sending the Echo Reply requires intentional
   *   fragmentation that is not implemented, the datagram MUST be truncated to maximum
   *   transmission size (see Section 3.3.3) and sent." The data is cut to fit the MTU.
   * - ICMPv6, RFC 4443 §4.2: "The data received in the ICMPv6 Echo Request message MUST be
   *   returned entirely and unmodified in the ICMPv6 Echo Reply message." No cut is allowed, so the
   *   request goes unanswered (counted 'tooBig').
   * Neither "fragmentation needed" (RFC 792) nor Packet Too Big (RFC 4443 §3.2) fits: both report a
   * packet that could not be forwarded, and this one was delivered.
   */
  private echoReply(src: Buffer, dst: Buffer, message: Buffer): void {
    const v6 = src.length === 16;
    const room = this.opts.mtu - (v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN) - ICMP_HEADER_LEN;
    const request = IcmpPacket.newUnchecked(message); // length checked on input (>= 8 bytes)
    let data = request.data;
    if (data.length > room) {
      if (v6 || room < 0) {
        this.env.drop('tooBig');
        return;
      }
      data = data.subarray(0, room);
    }
    const reply: IcmpRepr = { kind: 'echoReply', ident: request.echoIdent, seqNo: request.echoSeqNo, data };
    if (this.env.send(this.env.builder.icmp(dst, src, reply))) this.dnsCounters.echoReplies++;
  }

  private isDnsAddress(dst: Buffer): boolean {
    for (const a of this.opts.dnsAddresses) if (a.equals(dst)) return true;
    return false;
  }

  private dns(src: Buffer, dst: Buffer, repr: UdpRepr): void {
    if (this.pendingDns >= this.opts.maxPendingDns) {
      this.env.drop('dnsLimit');
      return;
    }
    this.pendingDns++;
    this.dnsCounters.dnsQueries++;
    const query = Buffer.from(repr.payload);
    const srcPort = repr.srcPort;
    const resolve = this.opts.resolveDns!;
    let p: Promise<Buffer>;
    try {
      p = resolve(query);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (answer) => this.guard(() => {
        this.pendingDns--;
        if (this.closed) return;
        if (!Buffer.isBuffer(answer)) {
          this.dnsCounters.dnsErrors++;
          return;
        }
        const payload = this.fitDns(query, answer, src.length === 16);
        if (payload === null) return;
        const pkt = this.env.builder.udp(dst, src, { srcPort: DNS_PORT, dstPort: srcPort, payload });
        if (this.env.send(pkt)) this.dnsCounters.dnsAnswers++;
      }),
      () => {
        this.pendingDns--;
        this.dnsCounters.dnsErrors++;
      },
    );
  }

  /**
   * What goes back to the client for `query` when the resolver answered `answer`, or null when
   * nothing may (counted). RFC 1035 §4.2.1: "Messages carried by UDP are restricted to 512 bytes
   * (not counting the IP or UDP headers). Longer messages are truncated and the TC bit is set in
   * the header." The limit is the smaller of
   * - what the client takes: its EDNS0 requestor's payload size (RFC 6891 §6.2.3; "Values lower
   *   than 512 MUST be treated as equal to 512", §6.2.5), else 512;
   * - what one packet on the link carries: the MTU less the IP and UDP headers (we never fragment).
   * The cut is `truncateTo`, the one the resolver's DnsServer uses: header + question with TC set
   * and no records, never a record cut in the middle (RFC 2181 §9), so the client asks again over
   * TCP. An answer whose header counts more questions or records than it holds cannot be parsed
   * (RFC 1035 §4.1) and is not sent: the client gets SERVFAIL built from its own query (id, RD,
   * question), counted as 'dnsMalformed'.
   */
  private fitDns(query: Buffer, answer: Buffer, v6: boolean): Buffer | null {
    const room = this.opts.mtu - (v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN) - UDP_HEADER_LEN;
    let payload: Buffer;
    if (isWellFormed(answer)) {
      payload = truncateTo(answer, Math.min(udpPayloadLimit(query), room));
    } else {
      this.env.drop('dnsMalformed');
      // A query without a whole header, or itself a response (answering could loop), gets nothing.
      if (query.length < HEADER_LENGTH || (flags(query) & Flag.QR) !== 0) return null;
      payload = errorResponse(query, Rcode.SERVFAIL);
    }
    // Header + question is at most 271 bytes; only a link below ~320 bytes cannot carry that.
    if (payload.length > room) {
      this.env.drop('tooBig');
      return null;
    }
    return payload;
  }

  /** RFC 792 code 3 / RFC 4443 §3.1 code 4, quoting as much of the datagram as fits. */
  private portUnreachable(src: Buffer, dst: Buffer, ipPacket: Buffer): void {
    const v6 = src.length === 16;
    this.icmpError(src, dst, ipPacket, v6 ? Icmpv6Unreachable.PortUnreachable : Icmpv4Unreachable.PortUnreachable);
    this.dnsCounters.portUnreachables++;
  }

  /**
   * Sends a destination unreachable with `code` about `ipPacket` (from `src` to `dst`), from the
   * address the packet was sent to. Not for multicast/broadcast or unspecified sources (RFC 1122
   * §3.2.2, RFC 4443 §2.4(e)); rate-limited by a token bucket (RFC 4443 §2.4(f)).
   */
  icmpError(src: Buffer, dst: Buffer, ipPacket: Buffer, code: number, mtu?: number): void {
    if (!isUnicast(dst) || !isUnicast(src)) return;
    const now = this.env.now();
    const rate = this.opts.icmpErrorsPerSecond;
    this.tokens = Math.min(rate, this.tokens + ((now - this.tokensAt) * rate) / 1000);
    this.tokensAt = now;
    if (this.tokens < 1) {
      this.env.drop('icmpRateLimit');
      return;
    }
    this.tokens -= 1;
    const v6 = src.length === 16;
    // RFC 1812 §4.3.2.3: as much of the original as fits in 576 bytes (IPv4); RFC 4443 §3.1: as
    // much as fits in the minimum IPv6 MTU (1280).
    const limit = Math.min(this.opts.mtu, v6 ? 1280 : 576) - (v6 ? 40 : 20) - 8;
    const quote = ipPacket.subarray(0, Math.max(0, limit));
    const pkt = this.env.builder.icmp(dst, src, { kind: 'dstUnreachable', code, data: quote, mtu });
    this.env.send(pkt);
  }
}

/** Not multicast, broadcast or unspecified. */
export function isUnicast(addr: Buffer): boolean {
  if (addr.length === 4) {
    const a = addr[0]!;
    if (a >= 224) return false; // 224/4 multicast, 240/4 reserved and broadcast
    return !(addr[0] === 0 && addr[1] === 0 && addr[2] === 0 && addr[3] === 0);
  }
  if (addr[0] === 0xff) return false;
  for (let i = 0; i < 16; i++) if (addr[i] !== 0) return true;
  return false;
}

export function addrText(addr: Buffer): string {
  return addr.length === 4 ? formatIpv4(addr.readUInt32BE(0)) : formatIpv6(addr);
}
