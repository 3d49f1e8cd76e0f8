/**
 * V8 heap tuning for a process that moves a stream of bytes through ssh2.
 *
 * V8 starts a full mark-compact when the old generation, counted together with the ArrayBuffer
 * memory allocated since the last one, reaches a limit it sets from the live heap times a growth
 * factor (about 1.7). ktctl's live heap is a few MB, so the limit is near 24 MB; ssh2 allocates a
 * fresh ArrayBuffer for every packet it decrypts or encrypts, and at a few Gbit/s the bytes the TUN
 * engine keeps in flight for a few milliseconds are enough to cross that line every ~40 ms. We
 * measured 40-50 mark-compacts per GiB downloaded through the TUN (6 in SOCKS mode, whose bytes
 * leave at once), their concurrent marking on the helper threads about as much CPU as the engine
 * itself. A growth factor of 6 leaves that much room above the live heap: 1-2 mark-compacts per GiB,
 * download through the TUN 3.2 -> 4.1 Gbit/s and 2360 -> 1770 CPU ms per GiB in the same run,
 * process RSS unchanged (young ArrayBuffers are still freed by every scavenge).
 *
 * V8 reads this flag each time it sets the limit, so setting it at startup is enough. Call once,
 * first thing, in long-running entry points: the CLI and the shadow. src/runtime holds what both
 * programs set in their Node runtime; with src/protocol it is all the shadow may import.
 */
import { setFlagsFromString } from 'node:v8';

/** 1 + 500/100: the old generation may grow to 6x its live size before a mark-compact. */
export const HEAP_GROWING_PERCENT = 500;

export function tuneHeapForStreaming(): void {
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
