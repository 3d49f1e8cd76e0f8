import { seqDiff, seqAdd, type Seq } from '../seq.js';

/**
 * The send queue: chunks as handed over by the far stream, unacknowledged and unsent alike.
 * Offset 0 is SND.UNA's byte. Chunks sit in an array used as a queue with a moving head
 * (compacted now and then), so acknowledging costs no copying.
 */
export class TxQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  /** Bytes of chunks[head] already acknowledged. */
  private headOff = 0;
  private len = 0;
  /** Where a slice across chunks is copied, when its caller is done with it before the next. */
  private readonly scratch: Buffer | null;

  /** `scratch`: reused for slices that span chunks (each is then valid until the next slice). */
  constructor(scratch: Buffer | null = null) {
    this.scratch = scratch;
  }

  get length(): number {
    return this.len;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.len += chunk.length;
  }

  /** Drops `n` bytes from the front (they were acknowledged). */
  discard(n: number): void {
    let left = Math.min(n, this.len);
    this.len -= left;
    while (left > 0) {
      const c = this.chunks[this.head]!;
      const avail = c.length - this.headOff;
      if (left < avail) {
        this.headOff += left;
        break;
      }
      left -= avail;
      this.chunks[this.head] = EMPTY;
      this.head++;
      this.headOff = 0;
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * `len` bytes from `offset`: a view of one chunk when the range lies in it (no copy), else a
   * copy of the pieces.
   */
  slice(offset: number, len: number): Buffer {
    if (len <= 0) return EMPTY;
    let i = this.head;
    let off = offset + this.headOff;
    while (off >= this.chunks[i]!.length) {
      off -= this.chunks[i]!.length;
      i++;
    }
    const first = this.chunks[i]!;
    if (off + len <= first.length) return first.subarray(off, off + len);
    const out = this.scratch !== null && len <= this.scratch.length ? this.scratch.subarray(0, len) : Buffer.allocUnsafe(len);
    let w = 0;
    while (w < len) {
      const c = this.chunks[i]!;
      const n = Math.min(c.length - off, len - w);
      c.copy(out, w, off, off + n);
      w += n;
      off = 0;
      i++;
    }
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.headOff = 0;
    this.len = 0;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * The out-of-order queue (smoltcp's assembler, with the data kept): segments beyond RCV.NXT,
 * kept sorted and without overlap, bounded by a number of entries (holes) and by the receive
 * window the caller allows. Data is copied in once.
 */
export class Assembler {
  private readonly starts: Seq[] = [];
  private readonly datas: Buffer[] = [];
  private bytes = 0;
  private readonly maxEntries: number;

  constructor(maxEntries = 32) {
    this.maxEntries = maxEntries;
  }

  get size(): number {
    return this.bytes;
  }
  get entries(): number {
    return this.starts.length;
  }
  isEmpty(): boolean {
    return this.starts.length === 0;
  }

  /**
   * Adds `data` at `start` (RCV.NXT < start is the caller's check), keeping only the parts not
   * already held. Returns false when that would exceed the entry bound (nothing is added then).
   */
  insert(rcvNxt: Seq, start: Seq, data: Buffer): boolean {
    const s = seqDiff(start, rcvNxt);
    const e = s + data.length;
    // Collect the pieces of [s, e) that no entry covers.
    const pieces: Array<[number, number]> = [];
    let cur = s;
    for (let i = 0; i < this.starts.length && cur < e; i++) {
      const es = seqDiff(this.starts[i]!, rcvNxt);
      const ee = es + this.datas[i]!.length;
      if (ee <= cur) continue;
      if (es >= e) break;
      if (es > cur) pieces.push([cur, es]);
      cur = Math.max(cur, ee);
    }
    if (cur < e) pieces.push([cur, e]);
    if (pieces.length === 0) return true;
    if (this.starts.length + pieces.length > this.maxEntries) return false;
    for (const [ps, pe] of pieces) {
      const copy = Buffer.from(data.subarray(ps - s, pe - s));
      const at = seqAdd(rcvNxt, ps);
      let idx = 0;
      while (idx < this.starts.length && seqDiff(this.starts[idx]!, rcvNxt) < ps) idx++;
      this.starts.splice(idx, 0, at);
      this.datas.splice(idx, 0, copy);
      this.bytes += copy.length;
    }
    return true;
  }

  /**
   * Removes and returns the data that now continues RCV.NXT (trimming what was received
   * meanwhile), or null. Entries wholly before RCV.NXT are discarded.
   */
  pop(rcvNxt: Seq): Buffer | null {
    while (this.starts.length > 0) {
      const off = seqDiff(this.starts[0]!, rcvNxt);
      if (off > 0) return null;
      const d = this.datas[0]!;
      this.starts.shift();
      this.datas.shift();
      this.bytes -= d.length;
      if (-off < d.length) return d.subarray(-off);
    }
    return null;
  }

  clear(): void {
    this.starts.length = 0;
    this.datas.length = 0;
    this.bytes = 0;
  }
}
