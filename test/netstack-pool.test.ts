import test from 'ava';
import { BlockPool, WriteSlab } from '../src/netstack/pool.js';

test('writeSlab_copiesAreIndependentOfTheSource', (t) => {
  const slab = new WriteSlab(new BlockPool(64, 8));
  const src = Buffer.from('hello');
  const copy = slab.copy(src);
  src.fill(0);
  t.is(copy.toString(), 'hello');
  t.is(slab.pending, 1);
});

test('writeSlab_blockReusedOnlyAfterEveryWriteCalledBack', (t) => {
  const pool = new BlockPool(16, 8);
  const slab = new WriteSlab(pool);
  const a = slab.copy(Buffer.alloc(10, 'a'));
  const b = slab.copy(Buffer.alloc(10, 'b')); // does not fit: a second block
  const c = slab.copy(Buffer.alloc(4, 'c')); // same block as b
  t.is(a.buffer === b.buffer, false);
  t.is(b.buffer, c.buffer);
  t.is(pool.freeBlocks, 0);
  slab.written(); // a: its block is retired, back to the pool
  t.is(pool.freeBlocks, 1);
  slab.written(); // b: c still uses that block
  t.is(pool.freeBlocks, 1);
  t.is(c.toString(), 'cccc');
  slab.written(); // c: nothing in flight, the current block goes back too
  t.is(pool.freeBlocks, 2);
  t.is(slab.pending, 0);
  // The next copy reuses a pooled block.
  const d = slab.copy(Buffer.from('d'));
  t.is(pool.freeBlocks, 1);
  t.is(d.toString(), 'd');
});

test('writeSlab_oversizedCopyIsUnpooled', (t) => {
  const pool = new BlockPool(16, 8);
  const slab = new WriteSlab(pool);
  const big = slab.copy(Buffer.alloc(40, 'z'));
  t.is(big.length, 40);
  t.is(big.toString(), 'z'.repeat(40));
  slab.written();
  t.is(pool.freeBlocks, 0);
  t.is(slab.pending, 0);
});

test('writeSlab_abandonNeverReusesBlocksStillReferenced', (t) => {
  const pool = new BlockPool(16, 8);
  const slab = new WriteSlab(pool);
  const a = slab.copy(Buffer.from('keep'));
  slab.abandon();
  slab.written(); // a late callback after the stream was destroyed
  t.is(pool.freeBlocks, 0);
  t.is(a.toString(), 'keep');
});

test('blockPool_keepsAtMostMaxFree', (t) => {
  const pool = new BlockPool(16, 2);
  const blocks = [pool.take(), pool.take(), pool.take()];
  for (const b of blocks) pool.give(b);
  t.is(pool.freeBlocks, 2);
  t.is(pool.take().length, 16);
});
