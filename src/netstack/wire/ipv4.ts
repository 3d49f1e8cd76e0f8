import { finish, sum, verify } from './checksum.js';
import { WireError, type DropReason } from './error.js';

/** IP protocol numbers we handle (IANA "Assigned Internet Protocol Numbers"). */
export const IpProtocol = { HopByHop: 0, Icmp: 1, Tcp: 6, Udp: 17, Ipv6Route: 43, Ipv6Frag: 44, Icmpv6: 58, Ipv6NoNxt: 59, Ipv6Opts: 60 } as const;

/** Byte ranges of the IPv4 header (RFC 791 §3.1). */
const field = {
  VER_IHL: 0,
  DSCP_ECN: 1,
  LENGTH: 2, // u16
  IDENT: 4, // u16
  FLG_OFF: 6, // u16: 3 flag bits, 13-bit fragment offset
  TTL: 8,
  PROTOCOL: 9,
  CHECKSUM: 10, // u16
  SRC_ADDR: 12, // 4 bytes
  DST_ADDR: 16, // 4 bytes
} as const;
const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const OFFSET_MASK = 0x1fff;

export const IPV4_HEADER_LEN = 20;

/**
 * A view of an IPv4 packet over a Buffer. Built unchecked, any getter may read past the end;
 * after `checkLen()` returned null every getter is safe. Setters that change `headerLen` or
 * `totalLen` undo that guarantee.
 */
export class Ipv4Packet {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }

  static newUnchecked(buffer: Buffer): Ipv4Packet {
    return new Ipv4Packet(buffer);
  }

  /** Wraps and validates, throwing `WireError` on failure. */
  static newChecked(buffer: Buffer): Ipv4Packet {
    const p = new Ipv4Packet(buffer);
    const r = p.checkLen();
    if (r !== null) throw new WireError(r, `ipv4: ${r}`);
    return p;
  }

  /**
   * Compares the buffer with the length fields: version 4, IHL >= 5, IHL*4 <= total length <=
   * buffer length (RFC 791 §3.1). Trailing bytes beyond the total length (link padding) are allowed.
   */
  checkLen(): DropReason | null {
    const len = this.buffer.length;
    if (len < IPV4_HEADER_LEN) return 'truncated';
    if (this.version !== 4) return 'malformed';
    const hl = this.headerLen;
    if (hl < IPV4_HEADER_LEN) return 'malformed';
    const total = this.totalLen;
    if (total < hl) return 'malformed';
    if (len < total || len < hl) return 'truncated';
    return null;
  }

  // ---- getters
  get version(): number {
    return this.buffer[field.VER_IHL]! >> 4;
  }
  get headerLen(): number {
    return (this.buffer[field.VER_IHL]! & 0x0f) * 4;
  }
  get dscpEcn(): number {
    return this.buffer[field.DSCP_ECN]!;
  }
  get totalLen(): number {
    return this.buffer.readUInt16BE(field.LENGTH);
  }
  get ident(): number {
    return this.buffer.readUInt16BE(field.IDENT);
  }
  get dontFrag(): boolean {
    return (this.buffer.readUInt16BE(field.FLG_OFF) & FLAG_DF) !== 0;
  }
  get moreFrags(): boolean {
    return (this.buffer.readUInt16BE(field.FLG_OFF) & FLAG_MF) !== 0;
  }
  /** Fragment offset in bytes. */
  get fragOffset(): number {
    return (this.buffer.readUInt16BE(field.FLG_OFF) & OFFSET_MASK) * 8;
  }
  get ttl(): number {
    return this.buffer[field.TTL]!;
  }
  get protocol(): number {
    return this.buffer[field.PROTOCOL]!;
  }
  get checksum(): number {
    return this.buffer.readUInt16BE(field.CHECKSUM);
  }
  /** Source address as a big-endian u32. */
  get srcAddr(): number {
    return this.buffer.readUInt32BE(field.SRC_ADDR);
  }
  get dstAddr(): number {
    return this.buffer.readUInt32BE(field.DST_ADDR);
  }
  /** Offset of the source address in the buffer (for pseudo-headers and flow keys). */
  static readonly SRC_OFFSET = field.SRC_ADDR;
  static readonly DST_OFFSET = field.DST_ADDR;
  /** True when the header checksum verifies (RFC 791 §3.1, RFC 1071). */
  verifyChecksum(): boolean {
    return verify(sum(this.buffer, 0, this.headerLen));
  }
  /** The payload, bounded by the total length (not the buffer, which may carry padding). */
  get payload(): Buffer {
    return this.buffer.subarray(this.headerLen, this.totalLen);
  }

  // ---- setters
  setVersionAndHeaderLen(headerLen: number): void {
    this.buffer[field.VER_IHL] = 0x40 | ((headerLen / 4) & 0x0f);
  }
  set dscpEcn(v: number) {
    this.buffer[field.DSCP_ECN] = v;
  }
  set totalLen(v: number) {
    this.buffer.writeUInt16BE(v, field.LENGTH);
  }
  set ident(v: number) {
    this.buffer.writeUInt16BE(v & 0xffff, field.IDENT);
  }
  /** Writes flags and offset at once (DF as given, MF clear, offset 0): we never fragment. */
  setFlagsDontFragment(df: boolean): void {
    this.buffer.writeUInt16BE(df ? FLAG_DF : 0, field.FLG_OFF);
  }
  set ttl(v: number) {
    this.buffer[field.TTL] = v;
  }
  set protocol(v: number) {
    this.buffer[field.PROTOCOL] = v;
  }
  set checksum(v: number) {
    this.buffer.writeUInt16BE(v, field.CHECKSUM);
  }
  set srcAddr(v: number) {
    this.buffer.writeUInt32BE(v >>> 0, field.SRC_ADDR);
  }
  set dstAddr(v: number) {
    this.buffer.writeUInt32BE(v >>> 0, field.DST_ADDR);
  }
  fillChecksum(): void {
    this.checksum = 0;
    this.checksum = finish(sum(this.buffer, 0, this.headerLen));
  }
}

/** The meaningful part of an IPv4 header (no options, never fragmented). */
export interface Ipv4Repr {
  srcAddr: number;
  dstAddr: number;
  protocol: number;
  payloadLen: number;
  ttl: number;
}

export const Ipv4Repr = {
  /** Parses a checked packet: rejects fragments and (unless `verifyChecksum` is false) bad checksums. */
  parse(packet: Ipv4Packet, verifyChecksum = true): Ipv4Repr | DropReason {
    if (verifyChecksum && !packet.verifyChecksum()) return 'checksum';
    if (packet.moreFrags || packet.fragOffset !== 0) return 'fragment';
    return {
      srcAddr: packet.srcAddr,
      dstAddr: packet.dstAddr,
      protocol: packet.protocol,
      payloadLen: packet.totalLen - packet.headerLen,
      ttl: packet.ttl,
    };
  },
  /** Every byte of the 20-byte header, checksum included. */
  emit(repr: Ipv4Repr, packet: Ipv4Packet, ident = 0): void {
    packet.setVersionAndHeaderLen(IPV4_HEADER_LEN);
    packet.dscpEcn = 0;
    packet.totalLen = IPV4_HEADER_LEN + repr.payloadLen;
    packet.ident = ident;
    packet.setFlagsDontFragment(true);
    packet.ttl = repr.ttl;
    packet.protocol = repr.protocol;
    packet.srcAddr = repr.srcAddr;
    packet.dstAddr = repr.dstAddr;
    packet.fillChecksum();
  },
  bufferLen(repr: Ipv4Repr): number {
    return IPV4_HEADER_LEN + repr.payloadLen;
  },
};

/** Dotted-quad text of a big-endian u32 address. */
export function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

/** Parses dotted-quad text into a u32, or null. */
export function parseIpv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v >>> 0;
}
