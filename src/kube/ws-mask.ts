/**
 * WebSocket masking a 32-bit word at a time, for the port-forward upload path. Every byte a
 * WebSocket client sends is XOR-masked (RFC 6455 §5.3); without its optional native `bufferutil`
 * (an install script, which npm 11 blocks unless allowed) `ws` masks byte by byte, which caps
 * uploads through the API server at a few hundred Mbit/s. `ws` (8.19+) uses `http.websocketMask`/
 * `http.websocketUnmask` when they exist, read once when `ws` loads: so this module must be
 * imported before anything that imports `ws` (first in src/cli/main.ts). Little-endian hosts
 * only (every Node target ktctl supports); elsewhere `ws` keeps its own loop.
 */
import http from 'node:http';

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function xorMask(buf: Uint8Array, mask: Uint8Array): void {
  const n = buf.length;
  let i = 0;
  // bytes before the first 4-byte aligned address
  const lead = Math.min(n, (4 - (buf.byteOffset & 3)) & 3);
  for (; i < lead; i++) buf[i]! ^= mask[i & 3]!;
  const words = (n - i) >>> 2;
  if (words > 0) {
    // the mask as a little-endian word, rotated to start at byte i of the mask
    const m = (mask[i & 3]! | (mask[(i + 1) & 3]! << 8) | (mask[(i + 2) & 3]! << 16) | (mask[(i + 3) & 3]! << 24)) >>> 0;
    const u32 = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    for (let w = 0; w < words; w++) u32[w] = (u32[w]! ^ m) >>> 0;
    i += words * 4;
  }
  for (; i < n; i++) buf[i]! ^= mask[i & 3]!;
}

const hooks = http as unknown as {
  websocketMask?: (source: Buffer, mask: Buffer, output: Buffer, offset: number, length: number) => void;
  websocketUnmask?: (buffer: Buffer, mask: Buffer) => void;
};

if (LITTLE_ENDIAN && hooks.websocketMask === undefined && hooks.websocketUnmask === undefined) {
  hooks.websocketMask = (source, mask, output, offset, length) => {
    source.copy(output, offset, 0, length);
    xorMask(output.subarray(offset, offset + length), mask);
  };
  hooks.websocketUnmask = (buffer, mask) => xorMask(buffer, mask);
}
