import { finish, sum, updateChecksum, verify } from './checksum.js';
import { WireError, type DropReason } from './error.js';

/**
 * Byte ranges of an ICMP message (RFC 792 for v4, RFC 4443 §2.1 for v6): the layout of the
 * first 8 bytes is the same for both; only the type numbers and the checksum's pseudo-header
 * (v6 only) differ.
 */
const field = { TYPE: 0, CODE: 1, CHECKSUM: 2, ECHO_IDENT: 4, ECHO_SEQNO: 6, UNUSED: 4, DATA: 8 } as const;
export const ICMP_HEADER_LEN = 8;

export const Icmpv4Type = { EchoReply: 0, DstUnreachable: 3, EchoRequest: 8 } as const;
/** RFC 792 destination unreachable codes (+ RFC 1812 §5.2.7.1 code 13). */
export const Icmpv4Unreachable = { NetUnreachable: 0, HostUnreachable: 1, PortUnreachable: 3, FragNeeded: 4, AdminProhibited: 13 } as const;
export const Icmpv6Type = { DstUnreachable: 1, EchoRequest: 128, EchoReply: 129 } as const;
/** RFC 4443 §3.1 codes. */
export const Icmpv6Unreachable = { NoRoute: 0, AdminProhibited: 1, AddressUnreachable: 3, PortUnreachable: 4 } as const;

/** A view of an ICMPv4 or ICMPv6 message; after `checkLen()` returned null the 8-byte header is readable. */
export class IcmpPacket {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  static newUnchecked(buffer: Buffer): IcmpPacket {
    return new IcmpPacket(buffer);
  }
  static newChecked(buffer: Buffer): IcmpPacket {
    const p = new IcmpPacket(buffer);
    const r = p.checkLen();
    if (r !== null) throw new WireError(r, `icmp: ${r}`);
    return p;
  }
  checkLen(): DropReason | null {
    return this.buffer.length < ICMP_HEADER_LEN ? 'truncated' : null;
  }

  // ---- getters
  get msgType(): number {
    return this.buffer[field.TYPE]!;
  }
  get msgCode(): number {
    return this.buffer[field.CODE]!;
  }
  get checksum(): number {
    return this.buffer.readUInt16BE(field.CHECKSUM);
  }
  get echoIdent(): number {
    return this.buffer.readUInt16BE(field.ECHO_IDENT);
  }
  get echoSeqNo(): number {
    return this.buffer.readUInt16BE(field.ECHO_SEQNO);
  }
  get data(): Buffer {
    return this.buffer.subarray(field.DATA);
  }
  /** `pseudo` is 0 for ICMPv4 and the IPv6 pseudo-header sum for ICMPv6 (RFC 4443 §2.3). */
  verifyChecksum(pseudo: number): boolean {
    return verify(sum(this.buffer, 0, this.buffer.length, pseudo));
  }

  // ---- setters
  set msgType(v: number) {
    this.buffer[field.TYPE] = v;
  }
  set msgCode(v: number) {
    this.buffer[field.CODE] = v;
  }
  set checksum(v: number) {
    this.buffer.writeUInt16BE(v, field.CHECKSUM);
  }
  set echoIdent(v: number) {
    this.buffer.writeUInt16BE(v, field.ECHO_IDENT);
  }
  set echoSeqNo(v: number) {
    this.buffer.writeUInt16BE(v, field.ECHO_SEQNO);
  }
  /** The 4 "unused" bytes of an error message (RFC 792, RFC 4443 §3.1): zero. */
  clearUnused(): void {
    this.buffer.writeUInt32BE(0, field.UNUSED);
  }
  fillChecksum(pseudo: number): void {
    this.checksum = 0;
    this.checksum = finish(sum(this.buffer, 0, this.buffer.length, pseudo));
  }
  /**
   * Turns an echo request into a reply in place: only the type word changes, so the checksum is
   * updated incrementally (RFC 1624 §3), the classic use of that RFC.
   */
  turnEchoIntoReply(replyType: number): void {
    const oldWord = (this.msgType << 8) | this.msgCode;
    this.msgType = replyType;
    const newWord = (replyType << 8) | this.msgCode;
    this.checksum = updateChecksum(this.checksum, oldWord, newWord);
  }
}

/** The ICMP messages we understand; everything else parses to 'unsupported'. */
export type IcmpRepr =
  | { kind: 'echoRequest' | 'echoReply'; ident: number; seqNo: number; data: Buffer }
  | { kind: 'dstUnreachable'; code: number; data: Buffer; /** ICMPv4 code 4: the next-hop MTU (RFC 1191 §4) */ mtu?: number };

function types(v6: boolean): { req: number; rep: number; unr: number } {
  return v6
    ? { req: Icmpv6Type.EchoRequest, rep: Icmpv6Type.EchoReply, unr: Icmpv6Type.DstUnreachable }
    : { req: Icmpv4Type.EchoRequest, rep: Icmpv4Type.EchoReply, unr: Icmpv4Type.DstUnreachable };
}

export const IcmpRepr = {
  /**
   * `pseudo` is 0 for v4. The checksum is always verified: no offload covers ICMP (virtio's
   * NEEDS_CSUM/DATA_VALID are for TCP and UDP), so no `ChecksumPolicy` applies here.
   */
  parse(packet: IcmpPacket, v6: boolean, pseudo: number): IcmpRepr | DropReason {
    if (!packet.verifyChecksum(pseudo)) return 'checksum';
    const t = types(v6);
    const type = packet.msgType;
    if ((type === t.req || type === t.rep) && packet.msgCode === 0) {
      return { kind: type === t.req ? 'echoRequest' : 'echoReply', ident: packet.echoIdent, seqNo: packet.echoSeqNo, data: packet.data };
    }
    if (type === t.unr) return { kind: 'dstUnreachable', code: packet.msgCode, data: packet.data };
    return 'unsupported';
  },
  bufferLen(repr: IcmpRepr): number {
    return ICMP_HEADER_LEN + repr.data.length;
  },
  emit(repr: IcmpRepr, packet: IcmpPacket, v6: boolean, pseudo: number): void {
    const t = types(v6);
    if (repr.kind === 'dstUnreachable') {
      packet.msgType = t.unr;
      packet.msgCode = repr.code;
      packet.clearUnused();
      // RFC 1191 §4: "Next-Hop MTU" in the low-order 16 bits of the unused field.
      if (repr.mtu !== undefined) packet.buffer.writeUInt16BE(repr.mtu & 0xffff, 6);
    } else {
      packet.msgType = repr.kind === 'echoRequest' ? t.req : t.rep;
      packet.msgCode = 0;
      packet.echoIdent = repr.ident;
      packet.echoSeqNo = repr.seqNo;
    }
    packet.buffer.set(repr.data, ICMP_HEADER_LEN);
    packet.fillChecksum(pseudo);
  },
};
