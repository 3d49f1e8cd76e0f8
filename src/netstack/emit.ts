import { CHECKSUM_FULL, CHECKSUM_OFFLOADED, pseudoHeaderV4, pseudoHeaderV6 } from './wire/checksum.js';
import { IcmpPacket, IcmpRepr } from './wire/icmp.js';
import { IPV4_HEADER_LEN, IpProtocol, Ipv4Packet } from './wire/ipv4.js';
import { IPV6_HEADER_LEN, Ipv6Packet } from './wire/ipv6.js';
import { TCP_CHECKSUM_OFFSET, TcpPacket, TcpRepr } from './wire/tcp.js';
import { UdpPacket, UdpRepr } from './wire/udp.js';
import { VIRTIO_NET_HDR_LEN, VirtioGso, VirtioNetHdr, VirtioRepr } from './wire/virtio.js';

/** What the device does for us on output (only with a virtio_net_hdr). */
export interface TxOffload {
  /** TCP checksums are left partial (NEEDS_CSUM) for the device to finish. Default true. */
  partialChecksum?: boolean;
  /** Segments longer than the MSS go out with GSO metadata (TSO). Default true. */
  tso?: boolean;
}

/**
 * Builds whole packets (optional virtio_net_hdr, IP header, transport) for the engine. The policy
 * is the emitter's: with `vnetHdr` (and by default), TCP checksums are left partial (NEEDS_CSUM,
 * the kernel finishes them) and segments longer than the MSS carry GSO metadata so the kernel
 * cuts them up; without it every checksum is complete and no segment should exceed the MSS.
 */
export class PacketBuilder {
  private readonly vnetHdr: boolean;
  private readonly partial: boolean;
  /** Whether super-segments may be emitted (the engine sizes segments by this). */
  readonly tso: boolean;
  private ident = 0;
  private readonly hopLimit: number;

  /** The one buffer TCP packets are built in when the emitter consumes each before returning. */
  private readonly scratch: Buffer | null;

  constructor(opts: { vnetHdr: boolean; hopLimit?: number; offload?: TxOffload; reuse?: boolean }) {
    this.vnetHdr = opts.vnetHdr;
    // The largest TCP packet: the header room, 60 bytes of IP (v6: 40), 60 of TCP, 64 KiB of data.
    this.scratch = opts.reuse === true ? Buffer.allocUnsafe(VIRTIO_NET_HDR_LEN + 60 + 60 + 0x10000) : null;
    this.partial = opts.vnetHdr && opts.offload?.partialChecksum !== false;
    this.tso = opts.vnetHdr && opts.offload?.tso !== false;
    this.hopLimit = opts.hopLimit ?? 64;
  }

  get headroom(): number {
    return this.vnetHdr ? VIRTIO_NET_HDR_LEN : 0;
  }

  /**
   * A TCP segment from `src` to `dst` (4- or 16-byte addresses). `gsoSize` is the MSS to cut a
   * longer payload at (needs `vnetHdr`).
   */
  tcp(src: Buffer, dst: Buffer, seg: TcpRepr, gsoSize: number): Buffer {
    return this.buildTcp(src, dst, seg, gsoSize, false);
  }

  /**
   * The headers of that segment alone (virtio header, IP, TCP; lengths and checksum as if the
   * payload followed): the payload goes out beside it in a gather write, never copied.
   */
  tcpHeader(src: Buffer, dst: Buffer, seg: TcpRepr, gsoSize: number): Buffer {
    return this.buildTcp(src, dst, seg, gsoSize, true);
  }

  private buildTcp(src: Buffer, dst: Buffer, seg: TcpRepr, gsoSize: number, headerOnly: boolean): Buffer {
    const v6 = src.length === 16;
    const ipHl = v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN;
    const tcpHl = TcpRepr.headerLen(seg);
    const tcpLen = tcpHl + seg.payload.length;
    const head = this.headroom;
    const len = head + ipHl + (headerOnly ? tcpHl : tcpLen);
    // A fresh buffer per packet costs an ArrayBuffer of up to 64 KiB each: at a few Gbit/s that
    // external memory alone keeps V8's mark-compact running every ~100 ms.
    const buf = this.scratch !== null && len <= this.scratch.length ? this.scratch.subarray(0, len) : Buffer.allocUnsafe(len);
    const ip = buf.subarray(head);
    this.writeIp(ip, src, dst, IpProtocol.Tcp, tcpLen);
    const pseudo = v6
      ? pseudoHeaderV6(src, 0, dst, 0, IpProtocol.Tcp, tcpLen)
      : pseudoHeaderV4(src, 0, dst, 0, IpProtocol.Tcp, tcpLen);
    // A GSO packet always needs NEEDS_CSUM: the device computes each segment's checksum.
    const gso = this.tso && seg.payload.length > gsoSize;
    const partial = this.partial || gso;
    const tcp = TcpPacket.newUnchecked(ip.subarray(ipHl));
    const policy = partial ? CHECKSUM_OFFLOADED : CHECKSUM_FULL;
    if (headerOnly) TcpRepr.emitHeaderOnly(seg, tcp, pseudo, policy);
    else TcpRepr.emit(seg, tcp, pseudo, policy);
    if (this.vnetHdr) {
      VirtioRepr.emit({
        csum: partial ? { start: ipHl, offset: TCP_CHECKSUM_OFFSET } : null,
        gso: gso ? { type: v6 ? VirtioGso.TcpV6 : VirtioGso.TcpV4, size: gsoSize, hdrLen: ipHl + tcpHl } : null,
      }, VirtioNetHdr.newUnchecked(buf));
    }
    return buf;
  }

  udp(src: Buffer, dst: Buffer, repr: UdpRepr): Buffer {
    const v6 = src.length === 16;
    const ipHl = v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN;
    const len = UdpRepr.bufferLen(repr);
    const buf = this.alloc(ipHl + len);
    const ip = buf.subarray(this.headroom);
    this.writeIp(ip, src, dst, IpProtocol.Udp, len);
    const pseudo = v6
      ? pseudoHeaderV6(src, 0, dst, 0, IpProtocol.Udp, len)
      : pseudoHeaderV4(src, 0, dst, 0, IpProtocol.Udp, len);
    UdpRepr.emit(repr, UdpPacket.newUnchecked(ip.subarray(ipHl)), pseudo, CHECKSUM_FULL);
    return buf;
  }

  icmp(src: Buffer, dst: Buffer, repr: IcmpRepr): Buffer {
    const v6 = src.length === 16;
    const ipHl = v6 ? IPV6_HEADER_LEN : IPV4_HEADER_LEN;
    const len = IcmpRepr.bufferLen(repr);
    const buf = this.alloc(ipHl + len);
    const ip = buf.subarray(this.headroom);
    const proto = v6 ? IpProtocol.Icmpv6 : IpProtocol.Icmp;
    this.writeIp(ip, src, dst, proto, len);
    const pseudo = v6 ? pseudoHeaderV6(src, 0, dst, 0, proto, len) : 0;
    IcmpRepr.emit(repr, IcmpPacket.newUnchecked(ip.subarray(ipHl)), v6, pseudo);
    return buf;
  }

  /** A buffer with the (zeroed: no offload requested) virtio header in front. */
  private alloc(ipLen: number): Buffer {
    const buf = Buffer.allocUnsafe(this.headroom + ipLen);
    if (this.vnetHdr) buf.fill(0, 0, VIRTIO_NET_HDR_LEN);
    return buf;
  }

  private writeIp(ip: Buffer, src: Buffer, dst: Buffer, protocol: number, payloadLen: number): void {
    if (src.length === 16) {
      const p = Ipv6Packet.newUnchecked(ip);
      p.setVersionAndFlow(0);
      p.payloadLen = payloadLen;
      p.nextHeader = protocol;
      p.hopLimit = this.hopLimit;
      p.srcAddr = src;
      p.dstAddr = dst;
      return;
    }
    const p = Ipv4Packet.newUnchecked(ip);
    p.setVersionAndHeaderLen(IPV4_HEADER_LEN);
    p.dscpEcn = 0;
    p.totalLen = IPV4_HEADER_LEN + payloadLen;
    this.ident = (this.ident + 1) & 0xffff;
    p.ident = this.ident;
    p.setFlagsDontFragment(true);
    p.ttl = this.hopLimit;
    p.protocol = protocol;
    ip.set(src, Ipv4Packet.SRC_OFFSET);
    ip.set(dst, Ipv4Packet.DST_OFFSET);
    p.fillChecksum();
  }
}
