/**
 * WebSocket (un)masking four bytes at a time. `ws` looks for `http.websocketMask` and
 * `http.websocketUnmask` before it falls back to a byte-at-a-time loop (its optional native
 * `bufferutil` is not installed); every byte a client sends is masked (RFC 6455 §5.3), so
 * this sets the upload ceiling of port-forward. Import this module before `ws` is loaded.
 */
import http from 'node:http';

function maskWord(mask: Buffer, shift: number): number {
  // the 32-bit little-endian word of the mask as seen from a position `shift` bytes in
  return (mask[shift & 3] | (mask[(shift + 1) & 3] << 8) | (mask[(shift + 2) & 3] << 16) | (mask[(shift + 3) & 3] << 24)) >>> 0;
}

function xorInPlace(buf: Uint8Array, mask: Buffer): void {
  const len = buf.length;
  let i = 0;
  // bytes up to a 4-byte aligned address
  const head = Math.min(len, (4 - (buf.byteOffset & 3)) & 3);
  for (; i < head; i++) buf[i] ^= mask[i & 3];
  const words = (len - i) >>> 2;
  if (words > 0) {
    const u32 = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    const m = maskWord(mask, i);
    for (let w = 0; w < words; w++) u32[w] ^= m;
    i += words * 4;
  }
  for (; i < len; i++) buf[i] ^= mask[i & 3];
}

function unmask(buffer: Buffer, mask: Buffer): void {
  xorInPlace(buffer, mask);
}

function mask(source: Buffer, m: Buffer, output: Buffer, offset: number, length: number): void {
  source.copy(output, offset, 0, length);
  xorInPlace(output.subarray(offset, offset + length), m);
}

const target = http as unknown as { websocketMask?: unknown; websocketUnmask?: unknown };
if (os64LittleEndian() && target.websocketMask === undefined && target.websocketUnmask === undefined) {
  target.websocketMask = mask;
  target.websocketUnmask = unmask;
}

function os64LittleEndian(): boolean {
  return new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
}
