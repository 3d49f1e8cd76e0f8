/**
 * The engine's TCP flows, indexed three ways, with no allocation per lookup: by 4-tuple (hash
 * buckets chained through the flows, read straight from the packet), by deadline (a min-heap, so
 * a timer run costs O(due flows x log n), not O(flows)) and, for the SYN-flood policy, the flows
 * in SYN-RECEIVED oldest first. The links live in the flows themselves (`next`, `slot`, `heapIdx`,
 * `hoPrev`/`hoNext`); only this file changes them. It keeps counts; the policy (when to evict,
 * what a due flow does) is the engine's.
 */
import type { Flow } from './flow.js';

export class FlowTable {
  // ---- hash buckets with chaining, flows in a slot array with a free list
  private readonly buckets = new Map<number, Flow>();
  private readonly slots: Array<Flow | null> = [];
  private readonly freeSlots: number[] = [];
  private flowCount = 0;
  /** Flows whose dial is in progress (counted by the engine, which starts and ends dials). */
  pendingDials = 0;

  /** Flows by `due`, earliest first. */
  private readonly heap: Flow[] = [];

  /** SYN-RECEIVED flows, oldest first (for maxHalfOpen and a full table). */
  private hoHead: Flow | null = null;
  private hoTail: Flow | null = null;
  private hoCount = 0;

  /** Flows in the table (dialing, open, TIME-WAIT). */
  get size(): number {
    return this.flowCount;
  }

  /** Flows in the half-open list. */
  get halfOpen(): number {
    return this.hoCount;
  }

  /** Calls `fn` for every flow in the table; `fn` may remove the flow it is given. */
  forEach(fn: (flow: Flow) => void): void {
    const slots = this.slots;
    for (let i = 0; i < slots.length; i++) {
      const f = slots[i];
      if (f) fn(f);
    }
  }

  // ---- by 4-tuple

  /** The flow from `ip`'s source to its destination with these ports, or null. */
  lookup(hash: number, ip: Buffer, srcOff: number, dstOff: number, alen: number, srcPort: number, dstPort: number): Flow | null {
    for (let f = this.buckets.get(hash) ?? null; f !== null; f = f.next) {
      if (f.peerPort !== srcPort || f.ourPort !== dstPort || f.ourAddr.length !== alen) continue;
      if (bytesEqual(f.peerAddr, ip, srcOff, alen) && bytesEqual(f.ourAddr, ip, dstOff, alen)) return f;
    }
    return null;
  }

  insert(flow: Flow): void {
    const head = this.buckets.get(flow.hash) ?? null;
    flow.next = head;
    this.buckets.set(flow.hash, flow);
    const slot = this.freeSlots.pop();
    if (slot === undefined) {
      flow.slot = this.slots.length;
      this.slots.push(flow);
    } else {
      flow.slot = slot;
      this.slots[slot] = flow;
    }
    this.flowCount++;
  }

  /** Takes the flow out of every index: buckets, slots, deadlines, half-open list. */
  remove(flow: Flow): void {
    // Unlink from the bucket chain.
    let prev: Flow | null = null;
    for (let f = this.buckets.get(flow.hash) ?? null; f !== null; prev = f, f = f.next) {
      if (f !== flow) continue;
      if (prev) prev.next = f.next;
      else if (f.next) this.buckets.set(flow.hash, f.next);
      else this.buckets.delete(flow.hash);
      break;
    }
    flow.next = null;
    if (flow.slot >= 0) {
      this.slots[flow.slot] = null;
      this.freeSlots.push(flow.slot);
      flow.slot = -1;
    }
    this.flowCount--;
    if (flow.heapIdx >= 0) this.heapRemove(flow);
    flow.due = Infinity;
    if (flow.halfOpen) this.halfOpenRemove(flow);
  }

  // ---- by deadline

  /** Sets when the engine must look at `flow` again (Infinity: never). Closed flows are ignored. */
  schedule(flow: Flow, at: number): void {
    if (flow.closed) return;
    if (at === Infinity) {
      if (flow.heapIdx >= 0) this.heapRemove(flow);
      flow.due = Infinity;
      return;
    }
    const earlier = at < flow.due;
    flow.due = at;
    if (flow.heapIdx < 0) {
      flow.heapIdx = this.heap.length;
      this.heap.push(flow);
      this.siftUp(flow.heapIdx);
    } else if (earlier) {
      this.siftUp(flow.heapIdx);
    } else {
      this.siftDown(flow.heapIdx);
    }
  }

  /** The earliest deadline, Infinity with none. */
  get nextDue(): number {
    return this.heap.length > 0 ? this.heap[0]!.due : Infinity;
  }

  /** Takes the earliest flow whose deadline is at or before `now` off the heap (its `due` becomes Infinity), or null. */
  popDue(now: number): Flow | null {
    if (this.heap.length === 0 || this.heap[0]!.due > now) return null;
    const f = this.heap[0]!;
    this.heapRemove(f);
    f.due = Infinity;
    return f;
  }

  private heapRemove(flow: Flow): void {
    const i = flow.heapIdx;
    const last = this.heap.pop()!;
    flow.heapIdx = -1;
    if (last === flow) return;
    this.heap[i] = last;
    last.heapIdx = i;
    this.siftDown(i);
    this.siftUp(last.heapIdx);
  }

  private siftUp(i: number): void {
    const h = this.heap;
    const f = h[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pf = h[p]!;
      if (pf.due <= f.due) break;
      h[i] = pf;
      pf.heapIdx = i;
      i = p;
    }
    h[i] = f;
    f.heapIdx = i;
  }

  private siftDown(i: number): void {
    const h = this.heap;
    const n = h.length;
    const f = h[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1]!.due < h[c]!.due) c++;
      const cf = h[c]!;
      if (cf.due >= f.due) break;
      h[i] = cf;
      cf.heapIdx = i;
      i = c;
    }
    h[i] = f;
    f.heapIdx = i;
  }

  // ---- SYN-RECEIVED flows, oldest first

  /** The oldest flow in the half-open list, or null. */
  get oldestHalfOpen(): Flow | null {
    return this.hoHead;
  }

  halfOpenAppend(flow: Flow): void {
    flow.halfOpen = true;
    flow.hoPrev = this.hoTail;
    flow.hoNext = null;
    if (this.hoTail) this.hoTail.hoNext = flow;
    else this.hoHead = flow;
    this.hoTail = flow;
    this.hoCount++;
  }

  halfOpenRemove(flow: Flow): void {
    if (!flow.halfOpen) return;
    flow.halfOpen = false;
    if (flow.hoPrev) flow.hoPrev.hoNext = flow.hoNext;
    else this.hoHead = flow.hoNext;
    if (flow.hoNext) flow.hoNext.hoPrev = flow.hoPrev;
    else this.hoTail = flow.hoPrev;
    flow.hoPrev = null;
    flow.hoNext = null;
    this.hoCount--;
  }
}

function bytesEqual(a: Buffer, b: Buffer, off: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (a[i] !== b[off + i]) return false;
  return true;
}

/** FNV-1a over both addresses and ports, read straight from the packet (no key object). */
export function flowHash(ip: Buffer, srcOff: number, dstOff: number, alen: number, srcPort: number, dstPort: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < alen; i++) h = Math.imul(h ^ ip[srcOff + i]!, 0x01000193);
  for (let i = 0; i < alen; i++) h = Math.imul(h ^ ip[dstOff + i]!, 0x01000193);
  h = Math.imul(h ^ srcPort, 0x01000193);
  h = Math.imul(h ^ dstPort, 0x01000193);
  return h >>> 0;
}
