/**
 * IPv4 fragments, both ways (RFC 791 §2.3 "Fragmentation", §3.2 "Reassembly").
 *
 * In: the local kernel fragments a UDP datagram larger than the TUN's MTU (an 8000-byte echo over a
 * 1500-byte link leaves as six fragments: UDP sockets do not set DF for a datagram above the link
 * MTU under IP_PMTUDISC_WANT, Linux's default), and the engine sees the fragments. `Ipv4Reassembler`
 * puts them back together, bounded: at most `maxDatagrams` datagrams and `maxBytes` of fragments
 * held at once (the oldest goes first when either is reached), each for at most `timeoutMs` (Linux's
 * net.ipv4.ipfrag_time, 30 s). A fragment that overlaps another of its datagram (other than an exact
 * duplicate) discards the whole datagram, as RFC 5722 asks for IPv6 and Linux does for IPv4 since
 * 4.19 (ip_frag_queue: "Drop the datagram if overlapping"): overlaps are only ever an attack.
 * Not sent: the ICMP time exceeded (code 1) of RFC 1122 §3.3.2 for an expired datagram.
 *
 * Out: a UDP answer larger than the MTU is cut into fragments by `fragmentIpv4`, each a whole packet
 * with its own header (DF clear, MF and the offset set, checksum filled).
 * IPv6 fragments are not handled either way (RFC 8200 §4.5 leaves fragmenting to the source, and
 * the engine drops them as before).
 */
import { finish, sum } from './wire/checksum.js';
import type { DropReason } from './wire/error.js';
import { Ipv4Packet } from './wire/ipv4.js';

const FLG_OFF = 6;
const MF = 0x2000;
const OFFSET_MASK = 0x1fff;
const LENGTH = 2;
const CHECKSUM = 10;

export interface ReassemblyLimits {
  maxDatagrams: number;
  maxBytes: number;
  timeoutMs: number;
}

export const DEFAULT_REASSEMBLY_LIMITS: ReassemblyLimits = { maxDatagrams: 64, maxBytes: 1 << 20, timeoutMs: 30_000 };

interface Pending {
  /** fragments by offset (bytes), their payloads copied */
  frags: Array<{ off: number; data: Buffer }>;
  /** the header of the fragment at offset 0, once it came */
  header: Buffer | undefined;
  /** the datagram's payload length, once the last fragment (MF clear) came; -1 before */
  total: number;
  bytes: number;
  expiresAt: number;
}

export class Ipv4Reassembler {
  readonly #limits: ReassemblyLimits;
  readonly #pending = new Map<string, Pending>();
  #bytes = 0;
  /** datagrams completed, and discarded (timeout, limit, overlap) */
  reassembled = 0;
  discarded = 0;

  constructor(limits: Partial<ReassemblyLimits> = {}) {
    this.#limits = { ...DEFAULT_REASSEMBLY_LIMITS, ...limits };
  }

  /** Datagrams held, and the bytes of their fragments. */
  get held(): { datagrams: number; bytes: number } {
    return { datagrams: this.#pending.size, bytes: this.#bytes };
  }

  /**
   * One checked fragment (`checkLen()` passed, the header checksum verified). Returns the whole IP
   * packet (a new buffer, not fragmented) when this fragment completes its datagram, undefined when
   * it is held, or the reason it was dropped.
   */
  push(p: Ipv4Packet, now: number): Buffer | DropReason | undefined {
    this.#expire(now);
    const ip = p.buffer;
    const hl = p.headerLen;
    const off = p.fragOffset;
    const data = ip.subarray(hl, p.totalLen);
    const more = p.moreFrags;
    // RFC 791: every fragment but the last carries a multiple of 8 bytes; nothing ends past 65,535.
    if ((more && (data.length === 0 || data.length % 8 !== 0)) || hl + off + data.length > 0xffff) return 'malformed';
    const key = `${p.srcAddr}>${p.dstAddr}/${p.protocol}#${p.ident}`;
    let entry = this.#pending.get(key);
    if (entry === undefined) {
      if (this.#pending.size >= this.#limits.maxDatagrams) this.#evictOldest();
      entry = { frags: [], header: undefined, total: -1, bytes: 0, expiresAt: now + this.#limits.timeoutMs };
      this.#pending.set(key, entry);
    }
    const end = off + data.length;
    for (const f of entry.frags) {
      const fEnd = f.off + f.data.length;
      if (f.off === off && fEnd === end) return undefined; // an exact duplicate: nothing new
      if (off < fEnd && f.off < end) {
        this.#discard(key, entry);
        return 'malformed';
      }
    }
    if (!more) {
      if (entry.total !== -1 && entry.total !== end) {
        this.#discard(key, entry);
        return 'malformed';
      }
      entry.total = end;
    }
    if (entry.total !== -1 && end > entry.total) {
      this.#discard(key, entry);
      return 'malformed';
    }
    while (this.#bytes + data.length > this.#limits.maxBytes && this.#pending.size > 1) this.#evictOldest(key);
    if (this.#bytes + data.length > this.#limits.maxBytes) {
      this.#discard(key, entry);
      return 'fragLimit';
    }
    entry.frags.push({ off, data: Buffer.from(data) });
    entry.bytes += data.length;
    this.#bytes += data.length;
    if (off === 0) entry.header = Buffer.from(ip.subarray(0, hl));
    if (entry.total === -1 || entry.header === undefined) return undefined;
    let have = 0;
    for (const f of entry.frags) have += f.data.length;
    if (have !== entry.total) return undefined;
    // Whole: no overlaps and as many bytes as the total, so every byte is covered once.
    this.#pending.delete(key);
    this.#bytes -= entry.bytes;
    this.reassembled++;
    const header = entry.header;
    const out = Buffer.allocUnsafe(header.length + entry.total);
    header.copy(out, 0);
    for (const f of entry.frags) f.data.copy(out, header.length + f.off);
    out.writeUInt16BE(header.length + entry.total, LENGTH);
    out.writeUInt16BE(0, FLG_OFF);
    fillChecksum(out, header.length);
    return out;
  }

  #expire(now: number): void {
    // Insertion order is age order: stop at the first that is still alive.
    for (const [key, e] of this.#pending) {
      if (e.expiresAt > now) break;
      this.#discard(key, e);
    }
  }

  #evictOldest(except?: string): void {
    for (const [key, e] of this.#pending) {
      if (key === except) continue;
      this.#discard(key, e);
      return;
    }
  }

  #discard(key: string, e: Pending): void {
    this.#pending.delete(key);
    this.#bytes -= e.bytes;
    this.discarded++;
  }
}

/**
 * `packet` (an IPv4 packet whose header has no options worth copying per fragment, as the engine
 * builds them) cut into packets of at most `mtu` bytes, each preceded by `headroom` zero bytes (the
 * virtio header). Returns `[packet]` unchanged when it fits. RFC 791: the data of every fragment
 * but the last is a multiple of 8 bytes.
 */
export function fragmentIpv4(packet: Buffer, mtu: number, headroom: number): Buffer[] {
  const ip = packet.subarray(headroom);
  if (ip.length <= mtu) return [packet];
  const hl = (ip[0]! & 0x0f) * 4;
  const payload = ip.subarray(hl, ip.readUInt16BE(LENGTH));
  const step = Math.floor((mtu - hl) / 8) * 8;
  if (step <= 0) return [];
  const out: Buffer[] = [];
  for (let off = 0; off < payload.length; off += step) {
    const chunk = payload.subarray(off, Math.min(payload.length, off + step));
    const last = off + chunk.length >= payload.length;
    const frag = Buffer.alloc(headroom + hl + chunk.length);
    const f = frag.subarray(headroom);
    ip.copy(f, 0, 0, hl);
    chunk.copy(f, hl);
    f.writeUInt16BE(hl + chunk.length, LENGTH);
    f.writeUInt16BE((last ? 0 : MF) | ((off / 8) & OFFSET_MASK), FLG_OFF);
    fillChecksum(f, hl);
    out.push(frag);
  }
  return out;
}

function fillChecksum(ip: Buffer, hl: number): void {
  ip.writeUInt16BE(0, CHECKSUM);
  ip.writeUInt16BE(finish(sum(ip, 0, hl)), CHECKSUM);
}
