/**
 * Memory for bytes that wait on a far stream, reused instead of allocated per segment.
 *
 * A fresh Buffer per received super-segment (64 KiB) is a malloc, page faults and V8 external
 * memory that only a garbage collection gives back: at a few Gbit/s that was a tenth of the
 * engine's time. Blocks taken from a `BlockPool` live as long as the process and are handed out
 * again once nothing refers to them.
 */
export class BlockPool {
  private readonly free: Buffer[] = [];
  readonly blockSize: number;
  private readonly maxFree: number;

  /** Keeps at most `maxFree` unused blocks; more are left to the garbage collector. */
  constructor(blockSize: number, maxFree: number) {
    this.blockSize = blockSize;
    this.maxFree = maxFree;
  }

  get freeBlocks(): number {
    return this.free.length;
  }

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.blockSize);
  }

  give(block: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(block);
  }
}

/** 64 KiB blocks (the largest segment fits one), at most 4 MiB kept unused. */
export const SHARED_BLOCKS = new BlockPool(0x10000, 64);

/**
 * Copies for one stream's `write()` calls, packed into pooled blocks; a block goes back to the
 * pool once every write that used it called back. Writable streams call back in write order, so
 * the blocks in flight form a queue. An idle writer holds no block.
 */
export class WriteSlab {
  private readonly pool: BlockPool;
  private block: Buffer | null = null;
  private used = 0;
  /** The block of each write not yet called back, oldest first (null: an unpooled copy). */
  private queue: Array<Buffer | null> = [];
  private head = 0;

  constructor(pool: BlockPool = SHARED_BLOCKS) {
    this.pool = pool;
  }

  /** Writes not yet called back. */
  get pending(): number {
    return this.queue.length - this.head;
  }

  /** A copy of `data` for one write; call `written()` once that write called back. */
  copy(data: Buffer): Buffer {
    const size = this.pool.blockSize;
    if (data.length > size) {
      this.queue.push(null);
      return Buffer.from(data);
    }
    if (this.block === null || size - this.used < data.length) {
      // The old block (if any) goes back when its last write calls back.
      this.block = this.pool.take();
      this.used = 0;
    }
    const at = this.used;
    data.copy(this.block, at);
    this.used += data.length;
    this.queue.push(this.block);
    return this.block.subarray(at, at + data.length);
  }

  /** The oldest write called back. */
  written(): void {
    if (this.head >= this.queue.length) return;
    const b = this.queue[this.head]!;
    this.queue[this.head] = null;
    this.head++;
    const empty = this.head === this.queue.length;
    if (empty) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (b === null) return;
    if (b === this.block) {
      // Nothing in flight any more: give the current block back too (idle writers hold none).
      if (empty) {
        this.block = null;
        this.used = 0;
        this.pool.give(b);
      }
      return;
    }
    // A retired block: back to the pool with its last write.
    if (empty || this.queue[this.head] !== b) this.pool.give(b);
  }

  /**
   * The stream is gone: forget every block. Writes still in flight may refer to them, so they
   * are not given back (the garbage collector takes them).
   */
  abandon(): void {
    this.block = null;
    this.used = 0;
    this.queue = [];
    this.head = 0;
  }
}
