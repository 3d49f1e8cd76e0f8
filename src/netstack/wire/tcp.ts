import { seq, type Seq } from '../seq.js';
import { finish, fold, sum, verify, type ChecksumPolicy } from './checksum.js';
import { WireError, type DropReason } from './error.js';

/** Byte ranges of the TCP header (RFC 9293 §3.1). */
const field = {
  SRC_PORT: 0, // u16
  DST_PORT: 2, // u16
  SEQ_NUM: 4, // u32
  ACK_NUM: 8, // u32
  FLAGS: 12, // u16: data offset(4) reserved(4) CWR ECE URG ACK PSH RST SYN FIN
  WIN_SIZE: 14, // u16
  CHECKSUM: 16, // u16
  URGENT: 18, // u16
  OPTIONS: 20,
} as const;
const FLG_FIN = 0x001;
const FLG_SYN = 0x002;
const FLG_RST = 0x004;
const FLG_PSH = 0x008;
const FLG_ACK = 0x010;
const FLG_URG = 0x020;
const FLG_ECE = 0x040;
const FLG_CWR = 0x080;

export const TCP_HEADER_LEN = 20;
/** Offset of the checksum inside the header (virtio csum_offset). */
export const TCP_CHECKSUM_OFFSET = field.CHECKSUM;

/** Option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018). */
const OPT_END = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WS = 3;
const OPT_SACK_PERM = 4;

/**
 * A view of a TCP segment (header + payload, the buffer ending where the IP payload ends).
 * After `checkLen()` returned null, every getter is safe; options are validated by `TcpRepr.parse`.
 */
export class TcpPacket {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  static newUnchecked(buffer: Buffer): TcpPacket {
    return new TcpPacket(buffer);
  }
  static newChecked(buffer: Buffer): TcpPacket {
    const p = new TcpPacket(buffer);
    const r = p.checkLen();
    if (r !== null) throw new WireError(r, `tcp: ${r}`);
    return p;
  }
  /** 20 <= data offset * 4 <= buffer length (RFC 9293 §3.1 "Data Offset"). */
  checkLen(): DropReason | null {
    if (this.buffer.length < TCP_HEADER_LEN) return 'truncated';
    const hl = this.headerLen;
    if (hl < TCP_HEADER_LEN) return 'malformed';
    if (hl > this.buffer.length) return 'truncated';
    return null;
  }

  // ---- getters
  get srcPort(): number {
    return this.buffer.readUInt16BE(field.SRC_PORT);
  }
  get dstPort(): number {
    return this.buffer.readUInt16BE(field.DST_PORT);
  }
  get seqNumber(): Seq {
    return seq(this.buffer.readUInt32BE(field.SEQ_NUM));
  }
  get ackNumber(): Seq {
    return seq(this.buffer.readUInt32BE(field.ACK_NUM));
  }
  get headerLen(): number {
    return (this.buffer[field.FLAGS]! >> 4) * 4;
  }
  private flag(mask: number): boolean {
    return (this.buffer.readUInt16BE(field.FLAGS) & mask) !== 0;
  }
  get fin(): boolean {
    return this.flag(FLG_FIN);
  }
  get syn(): boolean {
    return this.flag(FLG_SYN);
  }
  get rst(): boolean {
    return this.flag(FLG_RST);
  }
  get psh(): boolean {
    return this.flag(FLG_PSH);
  }
  get ack(): boolean {
    return this.flag(FLG_ACK);
  }
  get urg(): boolean {
    return this.flag(FLG_URG);
  }
  get ece(): boolean {
    return this.flag(FLG_ECE);
  }
  get cwr(): boolean {
    return this.flag(FLG_CWR);
  }
  get windowLen(): number {
    return this.buffer.readUInt16BE(field.WIN_SIZE);
  }
  get checksum(): number {
    return this.buffer.readUInt16BE(field.CHECKSUM);
  }
  get urgentAt(): number {
    return this.buffer.readUInt16BE(field.URGENT);
  }
  get options(): Buffer {
    return this.buffer.subarray(field.OPTIONS, this.headerLen);
  }
  get payload(): Buffer {
    return this.buffer.subarray(this.headerLen);
  }
  /** Sequence space taken by the segment: payload plus one for SYN and one for FIN. */
  get segmentLen(): number {
    return this.buffer.length - this.headerLen + (this.syn ? 1 : 0) + (this.fin ? 1 : 0);
  }
  /** Verifies the checksum given the pseudo-header sum (which includes the TCP length). */
  verifyChecksum(pseudo: number): boolean {
    return verify(sum(this.buffer, 0, this.buffer.length, pseudo));
  }

  // ---- setters
  set srcPort(v: number) {
    this.buffer.writeUInt16BE(v, field.SRC_PORT);
  }
  set dstPort(v: number) {
    this.buffer.writeUInt16BE(v, field.DST_PORT);
  }
  set seqNumber(v: Seq) {
    this.buffer.writeUInt32BE(v, field.SEQ_NUM);
  }
  set ackNumber(v: Seq) {
    this.buffer.writeUInt32BE(v, field.ACK_NUM);
  }
  /** Writes data offset and all flags at once (the reserved bits are cleared). */
  setHeaderLenAndFlags(headerLen: number, flags: number): void {
    this.buffer.writeUInt16BE((((headerLen / 4) & 0xf) << 12) | (flags & 0x1ff), field.FLAGS);
  }
  set windowLen(v: number) {
    this.buffer.writeUInt16BE(v, field.WIN_SIZE);
  }
  set checksum(v: number) {
    this.buffer.writeUInt16BE(v, field.CHECKSUM);
  }
  set urgentAt(v: number) {
    this.buffer.writeUInt16BE(v, field.URGENT);
  }
  /**
   * Fills the checksum: with `full`, the complete one; with `partial`, only the folded
   * pseudo-header sum, for a device to finish (virtio NEEDS_CSUM, csum_offset 16).
   */
  fillChecksum(pseudo: number, policy: ChecksumPolicy): void {
    if (policy.tx === 'partial') {
      this.checksum = fold(pseudo);
      return;
    }
    this.checksum = 0;
    this.checksum = finish(sum(this.buffer, 0, this.buffer.length, pseudo));
  }
}

/** The one control flag a segment carries besides ACK (smoltcp's `Control`). */
export type TcpControl = 'none' | 'psh' | 'syn' | 'fin' | 'rst';

/** The meaningful content of a TCP segment. */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  control: TcpControl;
  seqNumber: Seq;
  /** Present when ACK is set. */
  ackNumber: Seq | null;
  /** The raw 16-bit window field (not scaled). */
  windowLen: number;
  /** Window scale shift from a SYN's option (RFC 7323 §2), capped at 14; null when absent. */
  windowScale: number | null;
  /** MSS option (RFC 9293 §3.7.1); null when absent. */
  maxSegSize: number | null;
  /** SACK-permitted (RFC 2018): parsed, never acted upon. */
  sackPermitted: boolean;
  payload: Buffer;
}

export const TcpRepr = {
  /**
   * Parses a checked segment. Rejects: an illegal flag combination (more than one of SYN, FIN,
   * RST; smoltcp's rule), a malformed option (length < 2 or running past the header, RFC 9293
   * §3.2 "options ... must be checked"), a bad checksum when `policy.rx` is 'verify'.
   * `pseudo` is the pseudo-header sum (with the TCP length) for the checksum.
   */
  parse(packet: TcpPacket, pseudo: number, policy: ChecksumPolicy): TcpRepr | DropReason {
    if (packet.srcPort === 0 || packet.dstPort === 0) return 'malformed';
    if (policy.rx === 'verify' && !packet.verifyChecksum(pseudo)) return 'checksum';
    const syn = packet.syn;
    const fin = packet.fin;
    const rst = packet.rst;
    if ((syn ? 1 : 0) + (fin ? 1 : 0) + (rst ? 1 : 0) > 1) return 'badFlags';
    const control: TcpControl = syn ? 'syn' : fin ? 'fin' : rst ? 'rst' : packet.psh ? 'psh' : 'none';
    let windowScale: number | null = null;
    let maxSegSize: number | null = null;
    let sackPermitted = false;
    const opts = packet.options;
    let i = 0;
    while (i < opts.length) {
      const kind = opts[i]!;
      if (kind === OPT_END) break;
      if (kind === OPT_NOP) {
        i++;
        continue;
      }
      if (i + 1 >= opts.length) return 'malformed';
      const len = opts[i + 1]!;
      if (len < 2 || i + len > opts.length) return 'malformed';
      if (kind === OPT_MSS) {
        if (len !== 4) return 'malformed';
        maxSegSize = opts.readUInt16BE(i + 2);
      } else if (kind === OPT_WS) {
        if (len !== 3) return 'malformed';
        // RFC 7323 §2.3: a shift above 14 is treated as 14 (and may be logged).
        windowScale = Math.min(opts[i + 2]!, 14);
      } else if (kind === OPT_SACK_PERM) {
        if (len !== 2) return 'malformed';
        sackPermitted = true;
      }
      // Unknown options (SACK blocks, timestamps, ...) are skipped by their length.
      i += len;
    }
    return {
      srcPort: packet.srcPort,
      dstPort: packet.dstPort,
      control,
      seqNumber: packet.seqNumber,
      ackNumber: packet.ack ? packet.ackNumber : null,
      windowLen: packet.windowLen,
      windowScale,
      maxSegSize,
      sackPermitted,
      payload: packet.payload,
    };
  },

  /** Header length including options, padded to 4 bytes. */
  headerLen(repr: TcpRepr): number {
    return (TCP_HEADER_LEN + tcpOptionsLen(repr) + 3) & ~3;
  },

  bufferLen(repr: TcpRepr): number {
    return TcpRepr.headerLen(repr) + repr.payload.length;
  },

  /** Sequence space the segment occupies. */
  segmentLen(repr: TcpRepr): number {
    return repr.payload.length + (repr.control === 'syn' || repr.control === 'fin' ? 1 : 0);
  },

  /**
   * Writes every byte of the segment (options padded with END/NOP) into `packet`, whose buffer is
   * exactly `bufferLen(repr)` long, then the checksum per `policy`. The payload is copied unless it
   * already is the buffer's tail.
   */
  emit(repr: TcpRepr, packet: TcpPacket, pseudo: number, policy: ChecksumPolicy): void {
    const hl = emitHeader(repr, packet);
    const b = packet.buffer;
    const p = repr.payload;
    if (p.length > 0 && !(p.buffer === b.buffer && p.byteOffset === b.byteOffset + hl)) b.set(p, hl);
    packet.fillChecksum(pseudo, policy);
  },

  /**
   * Writes the header alone into `packet`, whose buffer is exactly `headerLen(repr)` long: the
   * payload stays where it is, for a gather write that sends both. The checksum (per `policy`)
   * still covers the payload; `pseudo` is the pseudo-header sum for the whole segment's length.
   */
  emitHeaderOnly(repr: TcpRepr, packet: TcpPacket, pseudo: number, policy: ChecksumPolicy): void {
    emitHeader(repr, packet);
    if (policy.tx === 'partial') {
      packet.checksum = fold(pseudo);
      return;
    }
    packet.checksum = 0;
    // The header is a multiple of 4 bytes long: the payload's 16-bit words keep their alignment.
    const p = repr.payload;
    packet.checksum = finish(sum(p, 0, p.length, sum(packet.buffer, 0, packet.buffer.length, pseudo)));
  },
};

/** Every header field and option of `repr` into `packet`; returns the header length. */
function emitHeader(repr: TcpRepr, packet: TcpPacket): number {
  const hl = TcpRepr.headerLen(repr);
  packet.srcPort = repr.srcPort;
  packet.dstPort = repr.dstPort;
  packet.seqNumber = repr.seqNumber;
  packet.ackNumber = repr.ackNumber ?? seq(0);
  let flags = 0;
  switch (repr.control) {
    case 'syn':
      flags = FLG_SYN;
      break;
    case 'fin':
      flags = FLG_FIN;
      break;
    case 'rst':
      flags = FLG_RST;
      break;
    case 'psh':
      flags = FLG_PSH;
      break;
    case 'none':
      break;
  }
  if (repr.ackNumber !== null) flags |= FLG_ACK;
  packet.setHeaderLenAndFlags(hl, flags);
  packet.windowLen = repr.windowLen;
  packet.urgentAt = 0;
  const b = packet.buffer;
  let o = TCP_HEADER_LEN;
  if (repr.maxSegSize !== null) {
    b[o] = OPT_MSS;
    b[o + 1] = 4;
    b.writeUInt16BE(repr.maxSegSize, o + 2);
    o += 4;
  }
  if (repr.sackPermitted) {
    b[o] = OPT_SACK_PERM;
    b[o + 1] = 2;
    o += 2;
  }
  if (repr.windowScale !== null) {
    b[o] = OPT_NOP; // keeps the three-byte option from ending on an odd boundary
    b[o + 1] = OPT_WS;
    b[o + 2] = 3;
    b[o + 3] = repr.windowScale;
    o += 4;
  }
  while (o < hl) b[o++] = OPT_END;
  return hl;
}

/** Total option length emitted for a repr: `headerLen` must agree (NOP + WS = 4 bytes). */
export function tcpOptionsLen(repr: Pick<TcpRepr, 'maxSegSize' | 'windowScale' | 'sackPermitted'>): number {
  return (repr.maxSegSize !== null ? 4 : 0) + (repr.windowScale !== null ? 4 : 0) + (repr.sackPermitted ? 2 : 0);
}
