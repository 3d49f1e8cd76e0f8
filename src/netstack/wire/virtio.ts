import { WireError, type DropReason } from './error.js';

/**
 * `struct virtio_net_hdr` (virtio spec 1.x §5.1.6, include/uapi/linux/virtio_net.h), the 10 bytes
 * a TUN device opened with IFF_VNET_HDR puts in front of every packet. Multi-byte fields are
 * little-endian (the kernel's default for tun/tap on little-endian hosts and for virtio 1.0).
 */
const field = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2, // u16le: length of the headers to copy into each GSO segment
  GSO_SIZE: 4, // u16le: payload bytes per segment
  CSUM_START: 6, // u16le: where checksumming starts (from the IP header)
  CSUM_OFFSET: 8, // u16le: where to store the checksum, from csum_start
} as const;

export const VIRTIO_NET_HDR_LEN = 10;
export const VirtioFlags = { NeedsCsum: 1, DataValid: 2 } as const;
export const VirtioGso = { None: 0, TcpV4: 1, Udp: 3, TcpV6: 4, Ecn: 0x80 } as const;

export class VirtioNetHdr {
  readonly buffer: Buffer;
  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  static newUnchecked(buffer: Buffer): VirtioNetHdr {
    return new VirtioNetHdr(buffer);
  }
  static newChecked(buffer: Buffer): VirtioNetHdr {
    const h = new VirtioNetHdr(buffer);
    const r = h.checkLen();
    if (r !== null) throw new WireError(r, `virtio_net_hdr: ${r}`);
    return h;
  }
  checkLen(): DropReason | null {
    return this.buffer.length < VIRTIO_NET_HDR_LEN ? 'truncated' : null;
  }

  // ---- getters
  get flags(): number {
    return this.buffer[field.FLAGS]!;
  }
  get needsCsum(): boolean {
    return (this.flags & VirtioFlags.NeedsCsum) !== 0;
  }
  get gsoType(): number {
    return this.buffer[field.GSO_TYPE]!;
  }
  get hdrLen(): number {
    return this.buffer.readUInt16LE(field.HDR_LEN);
  }
  get gsoSize(): number {
    return this.buffer.readUInt16LE(field.GSO_SIZE);
  }
  get csumStart(): number {
    return this.buffer.readUInt16LE(field.CSUM_START);
  }
  get csumOffset(): number {
    return this.buffer.readUInt16LE(field.CSUM_OFFSET);
  }
  /** The packet behind the header. */
  get payload(): Buffer {
    return this.buffer.subarray(VIRTIO_NET_HDR_LEN);
  }

  // ---- setters
  set flags(v: number) {
    this.buffer[field.FLAGS] = v;
  }
  set gsoType(v: number) {
    this.buffer[field.GSO_TYPE] = v;
  }
  set hdrLen(v: number) {
    this.buffer.writeUInt16LE(v, field.HDR_LEN);
  }
  set gsoSize(v: number) {
    this.buffer.writeUInt16LE(v, field.GSO_SIZE);
  }
  set csumStart(v: number) {
    this.buffer.writeUInt16LE(v, field.CSUM_START);
  }
  set csumOffset(v: number) {
    this.buffer.writeUInt16LE(v, field.CSUM_OFFSET);
  }
}

/** The meaningful content of a virtio_net_hdr. */
export interface VirtioRepr {
  /** null: the checksum is complete; else the partial checksum's start and field offset. */
  csum: { start: number; offset: number } | null;
  /** null: not a super-segment; else the segmentation type and segment payload size. */
  gso: { type: number; size: number; hdrLen: number } | null;
  /** VIRTIO_NET_HDR_F_DATA_VALID: the device already validated the checksum (input only). */
  dataValid?: boolean;
}

export const VirtioRepr = {
  /** A header with an unknown GSO type (UDP/USO, ...) parses to 'unsupported'. */
  parse(hdr: VirtioNetHdr): VirtioRepr | DropReason {
    const gsoType = hdr.gsoType & ~VirtioGso.Ecn;
    let gso: VirtioRepr['gso'] = null;
    if (gsoType !== VirtioGso.None) {
      if (gsoType !== VirtioGso.TcpV4 && gsoType !== VirtioGso.TcpV6) return 'unsupported';
      if (hdr.gsoSize === 0) return 'malformed';
      gso = { type: gsoType, size: hdr.gsoSize, hdrLen: hdr.hdrLen };
    }
    const csum = hdr.needsCsum ? { start: hdr.csumStart, offset: hdr.csumOffset } : null;
    return { csum, gso, dataValid: (hdr.flags & VirtioFlags.DataValid) !== 0 };
  },
  emit(repr: VirtioRepr, hdr: VirtioNetHdr): void {
    hdr.flags = (repr.csum ? VirtioFlags.NeedsCsum : 0) | (repr.dataValid ? VirtioFlags.DataValid : 0);
    hdr.gsoType = repr.gso ? repr.gso.type : VirtioGso.None;
    hdr.hdrLen = repr.gso ? repr.gso.hdrLen : 0;
    hdr.gsoSize = repr.gso ? repr.gso.size : 0;
    hdr.csumStart = repr.csum ? repr.csum.start : 0;
    hdr.csumOffset = repr.csum ? repr.csum.offset : 0;
  },
};
