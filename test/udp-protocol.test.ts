/**
 * UDP_SUBSYSTEM framing (src/protocol/udp.ts): every frame type round-trips, however the stream is
 * cut; a length out of bounds or an unknown type breaks the stream for good; sizes at the limits.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  MAX_FRAME_LENGTH,
  UDP_FRAME_HEADER,
  UDP_MAX_PAYLOAD,
  UdpErrorKind,
  UdpFrame,
  UdpFrameDecoder,
  decodeUdpError,
  decodeUdpOpen,
  encodeUdpClose,
  encodeUdpData,
  encodeUdpError,
  encodeUdpOpen,
  type UdpFrameType,
} from '../src/protocol/udp.js';
import { UDP_SUBSYSTEM, DNS_SUBSYSTEM } from '../src/protocol/index.js';

interface Frame {
  type: UdpFrameType;
  flow: number;
  body: Buffer;
}

function decodeAll(stream: Buffer, cut: number[]): { frames: Frame[]; broken: string | undefined; pending: number } {
  const d = new UdpFrameDecoder();
  const frames: Frame[] = [];
  let at = 0;
  let broken: string | undefined;
  for (const c of [...cut, stream.length]) {
    broken = d.push(stream.subarray(at, c), (type, flow, body) => frames.push({ type, flow, body: Buffer.from(body) }));
    at = c;
    if (broken !== undefined) break;
  }
  return { frames, broken, pending: d.pendingBytes };
}

test('the subsystem names differ and follow the DNS one\'s form', (t) => {
  t.is(UDP_SUBSYSTEM, 'ktctl-udp@ktctl.dev');
  t.not(UDP_SUBSYSTEM, DNS_SUBSYSTEM);
});

test('OPEN round-trips IPv4, IPv6 (canonical text) and names; bad destinations are refused', (t) => {
  for (const [host, want] of [
    ['198.18.0.5', '198.18.0.5'],
    ['2001:db8:0:0:0:0:0:100', '2001:db8::100'],
    ['::ffff:198.18.0.5', '::ffff:c612:5'],
    ['echo.default.svc.cluster.local', 'echo.default.svc.cluster.local'],
  ] as const) {
    const frame = encodeUdpOpen(7, { host, port: 5353 });
    t.is(frame.readUInt32BE(0), frame.length - 4);
    t.is(frame[4], UdpFrame.OPEN);
    t.is(frame.readUInt32BE(5), 7);
    t.deepEqual(decodeUdpOpen(frame.subarray(UDP_FRAME_HEADER)), { host: want, port: 5353 });
  }
  t.throws(() => encodeUdpOpen(1, { host: 'x', port: 0 }), { instanceOf: RangeError });
  t.throws(() => encodeUdpOpen(1, { host: 'a'.repeat(256), port: 53 }), { instanceOf: RangeError });
  t.throws(() => encodeUdpOpen(1, { host: '', port: 53 }), { instanceOf: RangeError });
  // Malformed bodies: unknown type, wrong lengths, port 0, empty name.
  t.is(decodeUdpOpen(Buffer.from([9, 1, 2, 3, 4, 0, 53])), undefined);
  t.is(decodeUdpOpen(Buffer.from([1, 1, 2, 3, 4, 0])), undefined);
  t.is(decodeUdpOpen(Buffer.from([1, 1, 2, 3, 4, 0, 0])), undefined);
  t.is(decodeUdpOpen(Buffer.from([3, 0, 0, 53])), undefined);
  t.is(decodeUdpOpen(Buffer.from([3, 5, 0x61, 0, 53])), undefined);
  t.is(decodeUdpOpen(Buffer.alloc(0)), undefined);
});

test('DATA keeps every byte and the datagram boundary, from 0 to 65,507 bytes; more is refused', (t) => {
  const sizes = [0, 1, 1400, 8000, UDP_MAX_PAYLOAD];
  const payloads = sizes.map((n) => randomBytes(n));
  const stream = Buffer.concat(payloads.map((p, i) => encodeUdpData(0xfffffff0 + i, p)));
  // Cut everywhere at once: one byte at a time for the first 2000 bytes, then in random places.
  const cuts: number[] = [];
  for (let i = 1; i < 2000; i++) cuts.push(i);
  for (let at = 2000; at < stream.length; at += 1 + Math.floor(Math.random() * 9000)) cuts.push(at);
  const { frames, broken, pending } = decodeAll(stream, cuts);
  t.is(broken, undefined);
  t.is(pending, 0);
  t.is(frames.length, sizes.length);
  frames.forEach((f, i) => {
    t.is(f.type, UdpFrame.DATA);
    t.is(f.flow, 0xfffffff0 + i);
    t.true(f.body.equals(payloads[i]!), `${sizes[i]} bytes`);
  });
  t.throws(() => encodeUdpData(1, Buffer.alloc(UDP_MAX_PAYLOAD + 1)), { instanceOf: RangeError });
});

test('ERROR and CLOSE round-trip; a malformed ERROR body is not read', (t) => {
  const stream = Buffer.concat([encodeUdpError(3, UdpErrorKind.FRAG_NEEDED, 1400), encodeUdpClose(3), encodeUdpError(4, UdpErrorKind.PORT_UNREACHABLE)]);
  const { frames } = decodeAll(stream, [5, 13]);
  t.deepEqual(frames.map((f) => [f.type, f.flow]), [[UdpFrame.ERROR, 3], [UdpFrame.CLOSE, 3], [UdpFrame.ERROR, 4]]);
  t.deepEqual(decodeUdpError(frames[0]!.body), { kind: UdpErrorKind.FRAG_NEEDED, mtu: 1400 });
  t.deepEqual(decodeUdpError(frames[2]!.body), { kind: UdpErrorKind.PORT_UNREACHABLE, mtu: 0 });
  t.is(frames[1]!.body.length, 0);
  t.is(decodeUdpError(Buffer.from([0, 0, 0])), undefined);
  t.is(decodeUdpError(Buffer.from([9, 0, 0])), undefined);
  t.is(decodeUdpError(Buffer.from([1, 0])), undefined);
});

test('a length out of bounds or an unknown type breaks the stream, and it stays broken', (t) => {
  const good = encodeUdpData(1, Buffer.from('ok'));
  for (const bad of [
    Buffer.from([0, 0, 0, 4, 2, 0, 0, 0]), // shorter than type + flow id
    (() => {
      const b = Buffer.alloc(9);
      b.writeUInt32BE(MAX_FRAME_LENGTH + 1, 0);
      return b;
    })(),
    Buffer.from([0, 0, 0, 5, 9, 0, 0, 0, 1]), // type 9
  ]) {
    const d = new UdpFrameDecoder();
    const seen: number[] = [];
    const on = (_: UdpFrameType, flow: number): void => void seen.push(flow);
    t.is(d.push(good, on), undefined);
    const broken = d.push(bad, on);
    t.truthy(broken);
    t.is(d.push(good, on), broken, 'nothing after a break is read');
    t.deepEqual(seen, [1]);
  }
  // The frame length bound is enforced before any byte of the body is held.
  const d = new UdpFrameDecoder();
  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(0xffffffff, 0);
  t.truthy(d.push(huge, () => undefined));
  t.is(d.pendingBytes, 0);
});
