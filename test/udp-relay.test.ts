/**
 * The shadow's UDP relay (src/shadow/udp.ts) on its own, with short timeouts: its channel is a pair
 * of in-memory streams the test writes frames into and reads frames from; the destinations are real
 * UDP sockets on 127.0.0.1. Idle flows end with CLOSE, the flow limit evicts the least recently used,
 * a channel that nobody reads makes answers drop (counted) instead of queueing, and closing frees
 * every socket.
 */
import test from 'ava';
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { UdpFrame, UdpFrameDecoder, encodeUdpData, encodeUdpOpen, type UdpFrameType } from '../src/protocol/udp.js';
import { UdpRelay } from '../src/shadow/udp.js';
import { until } from './helpers/poll.js';

interface Harness {
  relay: UdpRelay;
  /** frames the relay wrote, decoded */
  frames: Array<{ type: UdpFrameType; flow: number; body: Buffer }>;
  send(frame: Buffer): void;
  toRelay: PassThrough;
  fromRelay: PassThrough;
  logs: Array<{ event: string; fields?: Record<string, unknown> }>;
}

function harness(t: { teardown(fn: () => unknown): void }, o: { idleMs?: number; dnsIdleMs?: number; maxFlows?: number; maxQueuedBytes?: number; read?: boolean } = {}): Harness {
  const toRelay = new PassThrough();
  const fromRelay = new PassThrough({ highWaterMark: 1 });
  const channel = Duplex.from({ readable: toRelay, writable: fromRelay });
  const logs: Harness['logs'] = [];
  const relay = new UdpRelay(channel, { log: (event, fields) => logs.push({ event, fields }), client: 1, ...o });
  t.teardown(() => relay.close());
  const frames: Harness['frames'] = [];
  const decoder = new UdpFrameDecoder();
  if (o.read !== false) fromRelay.on('data', (c: Buffer) => decoder.push(c, (type, flow, body) => frames.push({ type, flow, body: Buffer.from(body) })));
  return { relay, frames, send: (f) => toRelay.write(f), toRelay, fromRelay, logs };
}

async function echo(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const s = createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  t.teardown(() => s.close());
  return (s.address() as AddressInfo).port;
}

test('an idle flow ends with CLOSE after its timeout; port 53 has the shorter one', async (t) => {
  const port = await echo(t);
  const h = harness(t, { idleMs: 600, dnsIdleMs: 100 });
  h.send(encodeUdpOpen(1, { host: '127.0.0.1', port }));
  h.send(encodeUdpData(1, Buffer.from('a')));
  await until(() => h.frames.some((f) => f.type === UdpFrame.DATA && f.flow === 1));
  // A port-53 flow (nothing listens there: the error does not matter), idle from the start.
  h.send(encodeUdpOpen(2, { host: '127.0.0.1', port: 53 }));
  await until(() => h.frames.some((f) => f.type === UdpFrame.CLOSE && f.flow === 2));
  t.false(h.frames.some((f) => f.type === UdpFrame.CLOSE && f.flow === 1), 'the other flow is still within its timeout');
  await until(() => h.frames.some((f) => f.type === UdpFrame.CLOSE && f.flow === 1));
  t.is(h.relay.flows, 0);
  t.is(h.relay.counters.flowsExpired, 2);
});

test('the flow limit evicts the least recently used flow, which hears CLOSE', async (t) => {
  const port = await echo(t);
  const h = harness(t, { maxFlows: 2 });
  for (const id of [1, 2]) {
    h.send(encodeUdpOpen(id, { host: '127.0.0.1', port }));
    h.send(encodeUdpData(id, Buffer.from(`x${id}`)));
    await until(() => h.frames.some((f) => f.type === UdpFrame.DATA && f.flow === id));
  }
  await new Promise((r) => setTimeout(r, 5));
  h.send(encodeUdpData(1, Buffer.from('1 again'))); // flow 1 used last: flow 2 is the oldest now
  await until(() => h.frames.filter((f) => f.type === UdpFrame.DATA && f.flow === 1).length === 2);
  h.send(encodeUdpOpen(3, { host: '127.0.0.1', port }));
  await until(() => h.frames.some((f) => f.type === UdpFrame.CLOSE));
  t.deepEqual(h.frames.filter((f) => f.type === UdpFrame.CLOSE).map((f) => f.flow), [2]);
  t.is(h.relay.flows, 2);
  t.is(h.relay.counters.flowsEvicted, 1);
  // DATA for the evicted flow is dropped and counted.
  h.send(encodeUdpData(2, Buffer.from('late')));
  await until(() => h.relay.counters.droppedUp === 1);
  t.pass();
});

test('a channel nobody reads: answers beyond the queue bound are dropped and counted, memory stays put', async (t) => {
  const port = await echo(t);
  const h = harness(t, { maxQueuedBytes: 64 << 10, read: false });
  h.send(encodeUdpOpen(1, { host: '127.0.0.1', port }));
  const payload = Buffer.alloc(1000);
  // In rounds the echo server's socket buffer takes: 100 datagrams, then a pause.
  for (let round = 0; round < 20 && h.relay.counters.droppedDown === 0; round++) {
    for (let i = 0; i < 100; i++) h.send(encodeUdpData(1, payload));
    await new Promise((r) => setTimeout(r, 20));
  }
  await until(() => h.relay.counters.droppedDown > 0, { timeoutMs: 10_000 });
  // What waits in the channel is the bound plus one frame, whatever was offered.
  t.true(h.fromRelay.writableLength <= (64 << 10) + 1009, `${h.fromRelay.writableLength} bytes queued`);
  t.true(h.logs.some((l) => l.event === 'udp-drops'));
});

test('close frees every socket and logs the counters; a broken frame closes the channel', async (t) => {
  const port = await echo(t);
  const h = harness(t);
  h.send(encodeUdpOpen(1, { host: '127.0.0.1', port }));
  h.send(encodeUdpData(1, Buffer.from('x')));
  await until(() => h.frames.length > 0);
  h.send(Buffer.from([0, 0, 0, 5, 99, 0, 0, 0, 1])); // type 99
  await until(() => h.relay.closed);
  t.is(h.relay.flows, 0);
  const close = h.logs.find((l) => l.event === 'udp-close');
  t.like(close?.fields, { client: 1, flowsOpened: 1, datagramsUp: 1, datagramsDown: 1 });
  t.true(h.logs.some((l) => l.event === 'udp-error' && /unknown type 99/.test(String(l.fields?.message))));
});
