import { finish, fold, sum, verify, type ChecksumPolicy } from './checksum.js';
import { WireError, type DropReason } from './error.js';

/** Byte ranges of the UDP header (RFC 768). */
const field = { SRC_PORT: 0, DST_PORT: 2, LENGTH: 4, CHECKSUM: 6 } as const;
export const UDP_HEADER_LEN = 8;
export const UDP_CHECKSUM_OFFSET = field.CHECKSUM;

/** A view of a UDP datagram. After `checkLen()` returned null, 8 <= length <= buffer length. */
export class UdpPacket {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  static newUnchecked(buffer: Buffer): UdpPacket {
    return new UdpPacket(buffer);
  }
  static newChecked(buffer: Buffer): UdpPacket {
    const p = new UdpPacket(buffer);
    const r = p.checkLen();
    if (r !== null) throw new WireError(r, `udp: ${r}`);
    return p;
  }
  checkLen(): DropReason | null {
    if (this.buffer.length < UDP_HEADER_LEN) return 'truncated';
    const len = this.length;
    if (len < UDP_HEADER_LEN) return 'malformed';
    if (len > this.buffer.length) return 'truncated';
    return null;
  }

  // ---- getters
  get srcPort(): number {
    return this.buffer.readUInt16BE(field.SRC_PORT);
  }
  get dstPort(): number {
    return this.buffer.readUInt16BE(field.DST_PORT);
  }
  get length(): number {
    return this.buffer.readUInt16BE(field.LENGTH);
  }
  get checksum(): number {
    return this.buffer.readUInt16BE(field.CHECKSUM);
  }
  get payload(): Buffer {
    return this.buffer.subarray(UDP_HEADER_LEN, this.length);
  }
  verifyChecksum(pseudo: number): boolean {
    return verify(sum(this.buffer, 0, this.length, pseudo));
  }

  // ---- setters
  set srcPort(v: number) {
    this.buffer.writeUInt16BE(v, field.SRC_PORT);
  }
  set dstPort(v: number) {
    this.buffer.writeUInt16BE(v, field.DST_PORT);
  }
  set length(v: number) {
    this.buffer.writeUInt16BE(v, field.LENGTH);
  }
  set checksum(v: number) {
    this.buffer.writeUInt16BE(v, field.CHECKSUM);
  }
  /** RFC 768: a computed checksum of zero is sent as all ones (zero means "none"). */
  fillChecksum(pseudo: number, policy: ChecksumPolicy): void {
    if (policy.tx === 'partial') {
      this.checksum = fold(pseudo);
      return;
    }
    this.checksum = 0;
    const c = finish(sum(this.buffer, 0, this.length, pseudo));
    this.checksum = c === 0 ? 0xffff : c;
  }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export const UdpRepr = {
  /**
   * Parses a checked datagram. A zero checksum means "not computed" over IPv4 (RFC 768) but is
   * illegal over IPv6 (RFC 8200 §8.1), hence `ipv6`.
   */
  parse(packet: UdpPacket, pseudo: number, policy: ChecksumPolicy, ipv6: boolean): UdpRepr | DropReason {
    if (packet.dstPort === 0) return 'malformed';
    if (policy.rx === 'verify') {
      if (packet.checksum === 0) {
        if (ipv6) return 'checksum';
      } else if (!packet.verifyChecksum(pseudo)) {
        return 'checksum';
      }
    }
    return { srcPort: packet.srcPort, dstPort: packet.dstPort, payload: packet.payload };
  },
  bufferLen(repr: UdpRepr): number {
    return UDP_HEADER_LEN + repr.payload.length;
  },
  /** Writes the whole datagram; `pseudo` must include the UDP length. */
  emit(repr: UdpRepr, packet: UdpPacket, pseudo: number, policy: ChecksumPolicy): void {
    packet.srcPort = repr.srcPort;
    packet.dstPort = repr.dstPort;
    packet.length = UDP_HEADER_LEN + repr.payload.length;
    packet.buffer.set(repr.payload, UDP_HEADER_LEN);
    packet.fillChecksum(pseudo, policy);
  },
};
