/**
 * The engine micro-benchmarks' measurements, parametrized by the engine class so that one process
 * can measure two trees side by side (bench/compare-engine.ts) as well as this one alone
 * (bench/netstack-engine.ts). Only the engine comes from the tree under test; the in-process peer
 * that builds and reads packets is this tree's, the same for both.
 */
import { Duplex } from 'node:stream';
import type { Dialer } from '../src/dialer.js';
import { PacketBuilder } from '../src/netstack/emit.js';
import type { NetStack, NetStackOptions } from '../src/netstack/stack.js';
import { seq, seqAdd, seqDiff, type Seq } from '../src/netstack/seq.js';
import { TcpPacket, type TcpRepr } from '../src/netstack/wire/tcp.js';
import { VIRTIO_NET_HDR_LEN } from '../src/netstack/wire/virtio.js';

/** What the measurements use of an engine: NetStack's public face, in this tree or another. */
export type Engine = Pick<NetStack, 'input' | 'inputBatch' | 'close' | 'stats'>;
/** A NetStack class: this tree's, or one with the same constructor from another checkout. */
export type EngineClass = new (opts: NetStackOptions) => Engine;

const LOCAL = Buffer.from([198, 18, 191, 2]);
const ROUTED = Buffer.from([198, 18, 191, 10]);
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

/** Far sides in memory: a source of `size` bytes (download), or a sink (upload). */
class MemDialer implements Dialer {
  constructor(private readonly mode: 'source' | 'sink' | 'idle', private readonly size = 0) {}
  async dial(): Promise<Duplex> {
    let left = this.size;
    const chunk = CHUNK;
    const mode = this.mode;
    return new Duplex({
      highWaterMark: 256 * 1024,
      read() {
        if (mode !== 'source') return;
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!this.push(n === chunk.length ? chunk : chunk.subarray(0, n))) return;
        }
        this.push(null);
      },
      write(_c, _e, cb) {
        cb();
      },
      final(cb) {
        cb();
      },
    });
  }
}

class Peer {
  /** Set right after construction (the engine's emit callback needs the peer first). */
  stack!: Engine;
  readonly builder: PacketBuilder;
  readonly vnet: boolean;
  received = 0;
  fin = false;
  synAck: { seq: Seq; ack: Seq } | null = null;
  rcvNxt: Seq = seq(0);
  sndNxt: Seq = seq(0xfffff000);
  sndUna: Seq = seq(0xfffff000);
  peerWnd = 0;
  shift = 0;
  constructor(vnet: boolean) {
    this.vnet = vnet;
    this.builder = new PacketBuilder({ vnetHdr: vnet });
  }
}

function seg(port: number, over: Partial<TcpRepr>): TcpRepr {
  return {
    srcPort: port, dstPort: 80, control: 'none', seqNumber: seq(0), ackNumber: null, windowLen: 0xffff,
    windowScale: null, maxSegSize: null, sackPermitted: false, payload: Buffer.alloc(0), ...over,
  };
}

/** One flow from a minimal peer: handshake, then `pump` moves data until done. */
function makePeer(Engine: EngineClass, dialer: Dialer, vnet: boolean): { peer: Peer; pending: Buffer[] } {
  const pending: Buffer[] = [];
  const peer = new Peer(vnet);
  peer.stack = new Engine({
    dialer, mtu: 1500, offload: vnet,
    emit: (p) => {
      const ip = vnet ? p.subarray(VIRTIO_NET_HDR_LEN) : p;
      const tp = TcpPacket.newUnchecked(ip.subarray(20));
      if (tp.syn) {
        peer.synAck = { seq: tp.seqNumber, ack: tp.ackNumber };
        peer.rcvNxt = seqAdd(tp.seqNumber, 1);
        // the engine answers our window scale offer with its own shift: its windows are scaled by it
        peer.shift = tp.options.length > 0 ? shiftOf(tp.options) : 0;
      }
      if (tp.ack) {
        if (seqDiff(tp.ackNumber, peer.sndUna) > 0) peer.sndUna = tp.ackNumber;
        peer.peerWnd = tp.windowLen * 2 ** peer.shift;
      }
      const len = tp.payload.length;
      if (len > 0 && tp.seqNumber === peer.rcvNxt) {
        peer.received += len;
        peer.rcvNxt = seqAdd(peer.rcvNxt, len);
      }
      if (tp.fin) {
        peer.rcvNxt = seqAdd(peer.rcvNxt, 1);
        peer.fin = true;
      }
      pending.push(p);
      return true;
    },
  });
  return { peer, pending };
}

function shiftOf(opts: Buffer): number {
  for (let i = 0; i < opts.length; ) {
    const k = opts[i]!;
    if (k === 0) break;
    if (k === 1) {
      i++;
      continue;
    }
    if (k === 3) return opts[i + 2]!;
    i += Math.max(2, opts[i + 1]!);
  }
  return 0;
}

function send(peer: Peer, s: TcpRepr): Buffer {
  return peer.builder.tcp(LOCAL, ROUTED, s, 0xffff);
}

async function handshake(peer: Peer, port: number): Promise<void> {
  peer.stack.input(send(peer, seg(port, { control: 'syn', seqNumber: peer.sndNxt, windowScale: 7, maxSegSize: 1460 })));
  peer.sndNxt = seqAdd(peer.sndNxt, 1);
  peer.sndUna = peer.sndNxt;
  while (!peer.synAck) await new Promise((r) => setImmediate(r));
  peer.stack.input(send(peer, seg(port, { seqNumber: peer.sndNxt, ackNumber: peer.rcvNxt, windowLen: 0xffff })));
}

export async function download(Engine: EngineClass, vnet: boolean, size: number): Promise<number> {
  const { peer, pending } = makePeer(Engine, new MemDialer('source', size), vnet);
  await handshake(peer, 40000);
  const t0 = performance.now();
  while (!peer.fin) {
    if (pending.length > 0) {
      pending.length = 0;
      // One ACK per batch, like a receiver with GRO and delayed ACKs; window 8 MiB.
      peer.stack.input(send(peer, seg(40000, { seqNumber: peer.sndNxt, ackNumber: peer.rcvNxt, windowLen: 0xffff })));
    }
    await new Promise((r) => setImmediate(r));
  }
  const ms = performance.now() - t0;
  peer.stack.close();
  return (size * 8) / (ms / 1000) / 1e9;
}

export async function upload(Engine: EngineClass, vnet: boolean, size: number): Promise<number> {
  const { peer, pending } = makePeer(Engine, new MemDialer('sink'), vnet);
  await handshake(peer, 40001);
  const segSize = vnet ? 64 * 1024 - 1024 : 1460; // super-segments like a TSO sender
  const payload = Buffer.alloc(segSize, 0x62);
  let sent = 0;
  // Acknowledged bytes, summed step by step (a size of 2 GiB or more wraps a sequence difference).
  let acked = 0;
  let una = peer.sndUna;
  const t0 = performance.now();
  while (acked < size) {
    const batch: Buffer[] = [];
    while (sent < size && seqDiff(peer.sndNxt, peer.sndUna) + segSize <= peer.peerWnd && batch.length < 64) {
      const n = Math.min(segSize, size - sent);
      batch.push(send(peer, seg(40001, { seqNumber: peer.sndNxt, ackNumber: peer.rcvNxt, payload: payload.subarray(0, n) })));
      peer.sndNxt = seqAdd(peer.sndNxt, n);
      sent += n;
    }
    pending.length = 0;
    if (batch.length > 0) peer.stack.inputBatch(batch);
    await new Promise((r) => setImmediate(r));
    acked += seqDiff(peer.sndUna, una);
    una = peer.sndUna;
  }
  const ms = performance.now() - t0;
  peer.stack.close();
  return (size * 8) / (ms / 1000) / 1e9;
}

export async function connectionsPerSecond(Engine: EngineClass, n: number): Promise<number> {
  const { peer } = makePeer(Engine, new MemDialer('idle'), false);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    peer.synAck = null;
    await handshake(peer, 10000 + (i % 50000));
    peer.stack.input(send(peer, seg(10000 + (i % 50000), { control: 'rst', seqNumber: peer.sndNxt })));
    peer.sndNxt = seqAdd(peer.sndNxt, 100000);
  }
  const ms = performance.now() - t0;
  peer.stack.close();
  return n / (ms / 1000);
}

export async function idleFlows(Engine: EngineClass, n: number): Promise<{ heapMB: number; rssMB: number; rssBeforeMB: number }> {
  globalThis.gc?.();
  const before = process.memoryUsage();
  const { peer } = makePeer(Engine, new MemDialer('idle'), false);
  for (let i = 0; i < n; i++) {
    peer.synAck = null;
    await handshake(peer, 20000 + i);
    peer.sndNxt = seqAdd(peer.sndNxt, 100000);
  }
  globalThis.gc?.();
  const after = process.memoryUsage();
  if (peer.stack.stats().flows !== n) throw new Error(`expected ${n} flows, have ${peer.stack.stats().flows}`);
  peer.stack.close();
  return { heapMB: (after.heapUsed - before.heapUsed) / 1e6, rssMB: after.rss / 1e6, rssBeforeMB: before.rss / 1e6 };
}


const MiB = 1 << 20;

/** One run of every measurement, in the order bench/netstack-engine.ts always used. */
export interface EngineResults {
  idle1000: { heapMB: number; rssMB: number; rssBeforeMB: number };
  downloadGbps: { plain: number; offload: number };
  uploadGbps: { plain: number; offload: number };
  connectionsPerSecond: number;
}

/**
 * Idle flows first, while the heap is clean; then bulk both ways, then handshakes. `scale`
 * multiplies the bytes moved and the handshakes made (longer runs, less noise).
 */
export async function measureEngine(Engine: EngineClass, scale = 1): Promise<EngineResults> {
  const idle1000 = await idleFlows(Engine, 1000);
  const bytes = (n: number): number => Math.round(n * scale);
  return {
    idle1000,
    downloadGbps: { plain: await download(Engine, false, bytes(256 * MiB)), offload: await download(Engine, true, bytes(512 * MiB)) },
    uploadGbps: { plain: await upload(Engine, false, bytes(256 * MiB)), offload: await upload(Engine, true, bytes(512 * MiB)) },
    connectionsPerSecond: await connectionsPerSecond(Engine, Math.round(5000 * scale)),
  };
}
