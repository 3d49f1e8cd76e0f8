/**
 * The Internet checksum (RFC 1071), shared by IPv4, TCP, UDP, ICMPv4 and ICMPv6.
 *
 * Sums are kept unfolded in a JS number (safe up to 2^53, i.e. far beyond any packet) and folded
 * to 16 bits only at the end. `sum` + `combine` + `pseudoHeader*` build the value; `finish` turns
 * it into the field's value (one's complement of the folded sum).
 *
 * Offloads are a policy, not a special case: a `ChecksumPolicy` says whether received checksums
 * are verified and whether transmitted ones are filled completely or only with the pseudo-header
 * sum (virtio `NEEDS_CSUM`: the device completes it).
 */

/** How one packet's transport checksum is treated. */
export interface ChecksumPolicy {
  /** 'verify': a bad checksum drops the packet; 'trust': not looked at (e.g. NEEDS_CSUM input). */
  readonly rx: 'verify' | 'trust';
  /**
   * 'full': the complete checksum is written; 'partial': only the folded pseudo-header sum is
   * written (not complemented), for a device that finishes it from csum_start (virtio NEEDS_CSUM).
   */
  readonly tx: 'full' | 'partial';
}

export const CHECKSUM_FULL: ChecksumPolicy = Object.freeze({ rx: 'verify', tx: 'full' });
export const CHECKSUM_OFFLOADED: ChecksumPolicy = Object.freeze({ rx: 'trust', tx: 'partial' });

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Unfolded sum of `data[start, end)` read as big-endian 16-bit words (odd tail padded with 0).
 *
 * Long runs are summed as native 32-bit words through a Uint32Array view: the checksum does not
 * depend on byte order (RFC 1071 §2(B)), so the little-endian sum, folded and byte-swapped, equals
 * the big-endian one. Short or oddly placed runs use the byte loop.
 */
export function sum(data: Uint8Array, start = 0, end = data.length, initial = 0): number {
  let i = start;
  let acc = initial;
  if (LITTLE_ENDIAN && end - start >= 64 && ((data.byteOffset + start) & 1) === 0) {
    if (((data.byteOffset + i) & 3) !== 0) {
      acc += (data[i]! << 8) | data[i + 1]!;
      i += 2;
    }
    const words = (end - i) >>> 2;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    let le = 0;
    let w = 0;
    for (const w4 = words - (words & 3); w < w4; w += 4) le += view[w]! + view[w + 1]! + view[w + 2]! + view[w + 3]!;
    for (; w < words; w++) le += view[w]!;
    // fold to 16 bits, then swap the two bytes back into network order
    le = fold(le);
    acc += ((le & 0xff) << 8) | (le >>> 8);
    i += words * 4;
  }
  // Eight bytes per round keeps the loop short; every partial stays far below 2^53.
  const end8 = end - ((end - i) & 7);
  for (; i < end8; i += 8) {
    acc +=
      ((data[i]! << 8) | data[i + 1]!) +
      ((data[i + 2]! << 8) | data[i + 3]!) +
      ((data[i + 4]! << 8) | data[i + 5]!) +
      ((data[i + 6]! << 8) | data[i + 7]!);
  }
  for (; i + 1 < end; i += 2) acc += (data[i]! << 8) | data[i + 1]!;
  if (i < end) acc += data[i]! << 8;
  return acc;
}

/** Adds unfolded sums (RFC 1071 §2(B): the sum is commutative and associative). */
export function combine(...sums: number[]): number {
  let acc = 0;
  for (const s of sums) acc += s;
  return acc;
}

/** Folds an unfolded sum into 16 bits with end-around carry (RFC 1071 §2(C)). */
export function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc % 0x10000) + Math.floor(acc / 0x10000);
  return acc;
}

/** The value of a checksum field: one's complement of the folded sum. */
export function finish(acc: number): number {
  return ~fold(acc) & 0xffff;
}

/** True when data including its checksum field sums to 0xffff (RFC 1071 §1, verification). */
export function verify(acc: number): boolean {
  return fold(acc) === 0xffff;
}

/**
 * IPv4 pseudo-header (RFC 9293 §3.1, RFC 768): source, destination, zero, protocol, length.
 * Addresses are read from `src`/`dst` at the given offsets (4 bytes each).
 */
export function pseudoHeaderV4(
  src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, protocol: number, length: number,
): number {
  return sum(src, srcOff, srcOff + 4) + sum(dst, dstOff, dstOff + 4) + protocol + length;
}

/**
 * IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit upper-layer length, three zero
 * bytes, next header. Addresses are 16 bytes each at the given offsets.
 */
export function pseudoHeaderV6(
  src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, nextHeader: number, length: number,
): number {
  return (
    sum(src, srcOff, srcOff + 16) + sum(dst, dstOff, dstOff + 16) +
    Math.floor(length / 0x10000) + (length & 0xffff) + nextHeader
  );
}

/**
 * Incremental update of a checksum field when one 16-bit word changes from `oldWord` to
 * `newWord` (RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m')), which, unlike eqn. 2 of RFC 1141,
 * never yields 0x0000 for a non-zero sum (RFC 1624 §4).
 */
export function updateChecksum(hc: number, oldWord: number, newWord: number): number {
  return ~fold((~hc & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** Incremental update for a 32-bit field (two words), e.g. an IPv4 address or a sequence number. */
export function updateChecksum32(hc: number, oldValue: number, newValue: number): number {
  const h = updateChecksum(hc, oldValue >>> 16, newValue >>> 16);
  return updateChecksum(h, oldValue & 0xffff, newValue & 0xffff);
}
