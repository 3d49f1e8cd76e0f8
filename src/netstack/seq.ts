/**
 * TCP sequence numbers (RFC 9293 §3.4): 32-bit values compared modulo 2^32. Every comparison of
 * sequence numbers in the netstack goes through this module; a bare `<` on a `Seq` is a bug
 * because it breaks when the space wraps (RFC 9293 §3.4: "all arithmetic dealing with sequence
 * numbers must be performed modulo 2**32").
 */
export type Seq = number & { readonly __seq: unique symbol };

/** Wraps any integer into the sequence space. */
export function seq(n: number): Seq {
  return (n >>> 0) as Seq;
}

/** a + n (n may be negative), modulo 2^32. */
export function seqAdd(a: Seq, n: number): Seq {
  return ((a + n) >>> 0) as Seq;
}

/**
 * The signed distance a - b, in [-2^31, 2^31). Meaningful while the two numbers are less than
 * 2^31 apart, which TCP guarantees (windows are at most 2^30, RFC 7323 §2.3).
 */
export function seqDiff(a: Seq, b: Seq): number {
  return (a - b) | 0;
}

export function seqLt(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLe(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqGt(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) > 0;
}
export function seqGe(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) >= 0;
}
export function seqMax(a: Seq, b: Seq): Seq {
  return seqGe(a, b) ? a : b;
}
export function seqMin(a: Seq, b: Seq): Seq {
  return seqLe(a, b) ? a : b;
}
/** lo <= x < hi, modulo 2^32. */
export function seqInRange(x: Seq, lo: Seq, hi: Seq): boolean {
  return seqLe(lo, x) && seqLt(x, hi);
}
