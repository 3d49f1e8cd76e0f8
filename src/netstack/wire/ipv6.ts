import { WireError, type DropReason } from './error.js';
import { IpProtocol } from './ipv4.js';

/** Byte ranges of the IPv6 fixed header (RFC 8200 §3). */
const field = {
  VER_TC_FLOW: 0, // u32: version(4) traffic class(8) flow label(20)
  LENGTH: 4, // u16 payload length
  NXT_HDR: 6,
  HOP_LIMIT: 7,
  SRC_ADDR: 8, // 16 bytes
  DST_ADDR: 24, // 16 bytes
} as const;

export const IPV6_HEADER_LEN = 40;

/**
 * A view of an IPv6 packet. After `checkLen()` returned null the fixed header and the payload
 * (bounded by the payload length) are readable. Jumbograms (payload length 0 with a hop-by-hop
 * jumbo option) are not supported and fail the check as 'unsupported' when the buffer is longer.
 */
export class Ipv6Packet {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  static newUnchecked(buffer: Buffer): Ipv6Packet {
    return new Ipv6Packet(buffer);
  }
  static newChecked(buffer: Buffer): Ipv6Packet {
    const p = new Ipv6Packet(buffer);
    const r = p.checkLen();
    if (r !== null) throw new WireError(r, `ipv6: ${r}`);
    return p;
  }
  checkLen(): DropReason | null {
    if (this.buffer.length < IPV6_HEADER_LEN) return 'truncated';
    if (this.version !== 6) return 'malformed';
    if (this.buffer.length < IPV6_HEADER_LEN + this.payloadLen) return 'truncated';
    return null;
  }

  // ---- getters
  get version(): number {
    return this.buffer[field.VER_TC_FLOW]! >> 4;
  }
  get trafficClass(): number {
    return (this.buffer.readUInt16BE(field.VER_TC_FLOW) >> 4) & 0xff;
  }
  get flowLabel(): number {
    return this.buffer.readUInt32BE(field.VER_TC_FLOW) & 0xfffff;
  }
  get payloadLen(): number {
    return this.buffer.readUInt16BE(field.LENGTH);
  }
  get nextHeader(): number {
    return this.buffer[field.NXT_HDR]!;
  }
  get hopLimit(): number {
    return this.buffer[field.HOP_LIMIT]!;
  }
  static readonly SRC_OFFSET = field.SRC_ADDR;
  static readonly DST_OFFSET = field.DST_ADDR;
  get srcAddr(): Buffer {
    return this.buffer.subarray(field.SRC_ADDR, field.SRC_ADDR + 16);
  }
  get dstAddr(): Buffer {
    return this.buffer.subarray(field.DST_ADDR, field.DST_ADDR + 16);
  }
  /** Everything after the fixed header, bounded by the payload length. */
  get payload(): Buffer {
    return this.buffer.subarray(IPV6_HEADER_LEN, IPV6_HEADER_LEN + this.payloadLen);
  }

  // ---- setters
  /** Version 6, traffic class 0, flow label as given. */
  setVersionAndFlow(flowLabel: number): void {
    this.buffer.writeUInt32BE((0x60000000 | (flowLabel & 0xfffff)) >>> 0, field.VER_TC_FLOW);
  }
  set payloadLen(v: number) {
    this.buffer.writeUInt16BE(v, field.LENGTH);
  }
  set nextHeader(v: number) {
    this.buffer[field.NXT_HDR] = v;
  }
  set hopLimit(v: number) {
    this.buffer[field.HOP_LIMIT] = v;
  }
  set srcAddr(v: Uint8Array) {
    this.buffer.set(v.subarray(0, 16), field.SRC_ADDR);
  }
  set dstAddr(v: Uint8Array) {
    this.buffer.set(v.subarray(0, 16), field.DST_ADDR);
  }
}

/** Where the upper-layer header starts, after any extension headers. */
export interface Ipv6Upper {
  protocol: number;
  /** Offset from the start of the IPv6 packet. */
  offset: number;
}

/**
 * Walks the extension headers (RFC 8200 §4) far enough to find the upper-layer header:
 * hop-by-hop options, routing and destination options are skipped by their length field
 * ((len+1)*8 bytes); a fragment header (8 bytes) is accepted only for an atomic fragment
 * (offset 0, M=0, RFC 8200 §4.5 / RFC 6946), other fragments are dropped (no reassembly).
 * At most 8 extension headers are followed.
 */
export function ipv6UpperLayer(packet: Ipv6Packet): Ipv6Upper | DropReason {
  const buf = packet.buffer;
  const end = IPV6_HEADER_LEN + packet.payloadLen;
  let next = packet.nextHeader;
  let off = IPV6_HEADER_LEN;
  for (let n = 0; n < 8; n++) {
    switch (next) {
      case IpProtocol.HopByHop:
      case IpProtocol.Ipv6Route:
      case IpProtocol.Ipv6Opts: {
        if (off + 8 > end) return 'truncated';
        const len = (buf[off + 1]! + 1) * 8;
        if (off + len > end) return 'truncated';
        next = buf[off]!;
        off += len;
        break;
      }
      case IpProtocol.Ipv6Frag: {
        if (off + 8 > end) return 'truncated';
        const offM = buf.readUInt16BE(off + 2);
        if ((offM & 0xfff8) !== 0 || (offM & 1) !== 0) return 'fragment';
        next = buf[off]!;
        off += 8;
        break;
      }
      case IpProtocol.Ipv6NoNxt:
        return 'unsupported';
      default:
        return { protocol: next, offset: off };
    }
  }
  return 'unsupported';
}

export interface Ipv6Repr {
  srcAddr: Buffer;
  dstAddr: Buffer;
  nextHeader: number;
  payloadLen: number;
  hopLimit: number;
}

export const Ipv6Repr = {
  parse(packet: Ipv6Packet): Ipv6Repr {
    return {
      srcAddr: Buffer.from(packet.srcAddr),
      dstAddr: Buffer.from(packet.dstAddr),
      nextHeader: packet.nextHeader,
      payloadLen: packet.payloadLen,
      hopLimit: packet.hopLimit,
    };
  },
  /** Writes every byte of the 40-byte fixed header. */
  emit(repr: Ipv6Repr, packet: Ipv6Packet): void {
    packet.setVersionAndFlow(0);
    packet.payloadLen = repr.payloadLen;
    packet.nextHeader = repr.nextHeader;
    packet.hopLimit = repr.hopLimit;
    packet.srcAddr = repr.srcAddr;
    packet.dstAddr = repr.dstAddr;
  },
  bufferLen(repr: Ipv6Repr): number {
    return IPV6_HEADER_LEN + repr.payloadLen;
  },
};

/** RFC 5952 text of a 16-byte address (lower case, longest zero run compressed, first on ties). */
export function formatIpv6(addr: Uint8Array, offset = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((addr[offset + 2 * i]! << 8) | addr[offset + 2 * i + 1]!);
  // IPv4-mapped ::ffff:a.b.c.d (RFC 5952 §5)
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Parses IPv6 text (with :: and an optional dotted IPv4 tail) into 16 bytes, or null. */
export function parseIpv6(text: string): Buffer | null {
  let s = text;
  const tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = s.slice(lastColon + 1).split('.');
    if (v4.length !== 4) return null;
    const b = v4.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : 256));
    if (b.some((x) => x > 255)) return null;
    tail.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
    s = s.slice(0, lastColon + 1); // "::ffff:" or "1:2:3:4:5:6:" or "::"
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0]!);
  const rest = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (head === null || rest === null) return null;
  const given = head.length + rest.length + tail.length;
  let words: number[];
  if (halves.length === 2) {
    if (given > 7) return null;
    words = [...head, ...new Array<number>(8 - given).fill(0), ...rest, ...tail];
  } else {
    if (given !== 8) return null;
    words = [...head, ...tail];
  }
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, 2 * i));
  return out;
}
