/**
 * Hostile input: over a million random and mutated packets (bit flips, truncation, length-field
 * lies, option garbage, random bytes; mutations of valid v4/v6 TCP/UDP/ICMP packets, with and
 * without a virtio header) through every wire parser and through `NetStack.input`, with live
 * flows whose far sides are in-memory streams. Asserts: no parser throws after its length check,
 * `input` never throws and catches nothing internally, flow count and buffered bytes stay within
 * the limits, the heap stays bounded. Seeded: a failure names its seed and reproduces.
 */
import test from 'ava';
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type { Dialer } from '../src/dialer.js';
import { DialError } from '../src/errors.js';
import { PacketBuilder } from '../src/netstack/emit.js';
import { NetStack } from '../src/netstack/stack.js';
import { seq, seqAdd, type Seq } from '../src/netstack/seq.js';
import { CHECKSUM_FULL, CHECKSUM_OFFLOADED, finish, pseudoHeaderV4, pseudoHeaderV6, sum } from '../src/netstack/wire/checksum.js';
import { IcmpPacket, IcmpRepr } from '../src/netstack/wire/icmp.js';
import { Ipv4Packet, Ipv4Repr } from '../src/netstack/wire/ipv4.js';
import { Ipv6Packet, Ipv6Repr, ipv6UpperLayer } from '../src/netstack/wire/ipv6.js';
import { TcpPacket, TcpRepr } from '../src/netstack/wire/tcp.js';
import { UdpPacket, UdpRepr } from '../src/netstack/wire/udp.js';
import { VIRTIO_NET_HDR_LEN, VirtioNetHdr, VirtioRepr } from '../src/netstack/wire/virtio.js';
import { prng } from './helpers/prng.js';
import { Peer, SimNet, settle } from './helpers/netstack-sim.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed1234);
const PACKETS = Number(process.env.FUZZ_PACKETS ?? 1_050_000);


const LOCAL4 = Buffer.from([198, 18, 190, 2]);
const OUR4 = [Buffer.from([198, 18, 190, 10]), Buffer.from([198, 19, 0, 10])];
const LOCAL6 = Buffer.from('fd00fe00000000000000000000000002', 'hex');
const OUR6 = [Buffer.from('fd00fe00000000000000000000000010', 'hex'), Buffer.from('fd00fe00000000000000000000000053', 'hex')];

/** A far side in memory: swallows what it is sent, sometimes answers, sometimes ends or fails. */
class FuzzDialer implements Dialer {
  dials = 0;
  open = new Set<Duplex>();
  private readonly rnd: () => number;
  constructor(rnd: () => number) {
    this.rnd = rnd;
  }
  async dial(host: string, port: number): Promise<Duplex> {
    this.dials++;
    if (port === 8080) throw new DialError('refused', host, port, 'Connection refused');
    if (port === 9090) throw new DialError('unreachable', host, port, 'No route to host');
    if (port === 7070) throw new Error('something else');
    const r = this.rnd();
    const d = new Duplex({
      read() {},
      write(_c, _e, cb) {
        // a far side that is sometimes slow to take data
        if (r < 0.2) setTimeout(cb, 5);
        else cb();
      },
      final(cb) {
        cb();
      },
    });
    this.open.add(d);
    d.on('close', () => this.open.delete(d));
    if (r < 0.5) d.push(Buffer.alloc(Math.floor(r * 20000), 0x41));
    if (r < 0.1) d.push(null);
    else if (r < 0.15) setImmediate(() => d.destroy(new Error('far failure')));
    return d;
  }
}

interface Known {
  v6: boolean;
  src: Buffer;
  dst: Buffer;
  sport: number;
  dport: number;
  /** The client's next sequence number and what it acknowledges. */
  snd: Seq;
  rcv: Seq;
}

test('fuzz_millionPacketsThroughParsersAndEngine', async (t) => {
  t.timeout(180_000);
  const rnd = prng(SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  const dialer = new FuzzDialer(rnd);
  const limits = { maxFlows: 512, maxPendingDials: 64, maxBufferedBytes: 32 << 20, rxBufferPerFlow: 256 << 10, txBufferPerFlow: 256 << 10 };
  const known = new Map<string, Known>();
  let emitted = 0;
  const makeStack = (offload: boolean): NetStack => new NetStack({
    dialer, mtu: 1500, offload, limits,
    dnsAddresses: ['198.19.0.10', 'fd00:fe::53'],
    resolveDns: async (q) => (q.length > 3 && q[0]! & 1 ? Buffer.concat([q, q, q]) : Promise.reject(new Error('no'))),
    probe: async (ip) => ip.endsWith('10'),
    tcp: { timeWait: 50 },
    emit: (p) => {
      emitted++;
      learn(p, offload);
      return rnd() > 0.01; // the device sometimes refuses a packet
    },
  });
  const plain = makeStack(false);
  const offloaded = makeStack(true);

  /** Remembers SYN-ACKs so the generator can speak in-window to live flows. */
  function learn(p: Buffer, vnet: boolean): void {
    const ip = vnet ? p.subarray(VIRTIO_NET_HDR_LEN) : p;
    const v6 = ip[0]! >> 4 === 6;
    const l4 = ip.subarray(v6 ? 40 : 20);
    if ((v6 ? ip[6] : ip[9]) !== 6 || l4.length < 20) return;
    const tp = TcpPacket.newUnchecked(l4);
    if (!tp.syn || !tp.ack) return;
    const src = Buffer.from(ip.subarray(v6 ? 24 : 16, v6 ? 40 : 20));
    const dst = Buffer.from(ip.subarray(v6 ? 8 : 12, v6 ? 24 : 16));
    const k: Known = { v6, src, dst, sport: tp.dstPort, dport: tp.srcPort, snd: tp.ackNumber, rcv: seqAdd(tp.seqNumber, 1) };
    known.set(`${vnet}:${tp.dstPort}:${tp.srcPort}:${v6}`, k);
    if (known.size > 256) known.delete(known.keys().next().value!);
  }

  const builders = { plain: new PacketBuilder({ vnetHdr: false }), offloaded: new PacketBuilder({ vnetHdr: true }) };

  /** Mostly exact (so flows get established and data flows), sometimes wild. */
  function ackJitter(): number {
    const r = rnd();
    return r < 0.5 ? 0 : r < 0.6 ? int(3000) : r < 0.8 ? int(100000) : -int(100000);
  }

  function tcpRepr(over: Partial<TcpRepr>): TcpRepr {
    return {
      srcPort: 40000 + int(200), dstPort: [80, 443, 22, 8080, 9090, 7070][int(6)]!, control: 'none',
      seqNumber: seq(0xffffffff - int(5000)), ackNumber: null, windowLen: int(65536), windowScale: null,
      maxSegSize: null, sackPermitted: false, payload: Buffer.alloc(0), ...over,
    };
  }

  /** A valid packet of some kind (before mutation). */
  function valid(b: PacketBuilder): Buffer {
    const v6 = rnd() < 0.3;
    const src = v6 ? LOCAL6 : LOCAL4;
    const dst = (v6 ? OUR6 : OUR4)[int(2)]!;
    const kind = rnd();
    if (kind < 0.3) {
      // a SYN, often with options
      return b.tcp(src, dst, tcpRepr({
        control: 'syn', windowScale: rnd() < 0.7 ? int(16) : null, maxSegSize: rnd() < 0.8 ? int(65536) : null,
        sackPermitted: rnd() < 0.5, payload: rnd() < 0.05 ? Buffer.alloc(int(100)) : Buffer.alloc(0),
      }), 1460);
    }
    if (kind < 0.65 && known.size > 0) {
      // in-window traffic for a live flow: ACK, data, FIN, RST, duplicate/old data, zero windows
      const keys = [...known.values()].filter((k) => k.v6 === v6);
      const k = keys[int(keys.length)] ?? [...known.values()][0]!;
      const r = rnd();
      const payload = r < 0.5 ? Buffer.alloc(int(3000), 0x62) : Buffer.alloc(0);
      const control: TcpRepr['control'] = r < 0.05 ? 'rst' : r < 0.15 ? 'fin' : r < 0.3 ? 'psh' : 'none';
      const jitter = rnd() < 0.8 ? 0 : int(200000) - 100000;
      const seg = tcpRepr({
        srcPort: k.sport, dstPort: k.dport, control, seqNumber: seqAdd(k.snd, jitter),
        ackNumber: rnd() < 0.9 ? seqAdd(k.rcv, ackJitter()) : null,
        windowLen: rnd() < 0.2 ? 0 : int(65536), payload,
      });
      if (jitter === 0) k.snd = seqAdd(k.snd, payload.length + (control === 'fin' ? 1 : 0));
      return b.tcp(k.src, k.dst, seg, 1460);
    }
    if (kind < 0.75) {
      return b.tcp(src, dst, tcpRepr({ control: (['none', 'fin', 'rst', 'psh'] as const)[int(4)], ackNumber: rnd() < 0.8 ? seq(int(2 ** 32)) : null, payload: Buffer.alloc(int(200)) }), 1460);
    }
    if (kind < 0.88) {
      return b.udp(src, dst, { srcPort: 1 + int(65535), dstPort: rnd() < 0.6 ? 53 : int(65536), payload: Buffer.alloc(int(600), int(256)) });
    }
    const icmp: IcmpRepr = rnd() < 0.7
      ? { kind: 'echoRequest', ident: int(65536), seqNo: int(65536), data: Buffer.alloc(int(100)) }
      : { kind: rnd() < 0.5 ? 'echoReply' : 'dstUnreachable', code: int(16), ident: 1, seqNo: 1, data: Buffer.alloc(int(100)) } as IcmpRepr;
    return b.icmp(src, dst, icmp);
  }

  /** Recomputes the IP and transport checksums so that a mutation reaches the deeper layers. */
  function fixChecksums(p: Buffer, vnet: boolean): void {
    const ip = vnet ? p.subarray(VIRTIO_NET_HDR_LEN) : p;
    if (ip.length < 20) return;
    const v6 = ip[0]! >> 4 === 6;
    if (!v6) {
      const hl = (ip[0]! & 15) * 4;
      if (hl < 20 || hl > ip.length) return;
      ip.writeUInt16BE(0, 10);
      ip.writeUInt16BE(finish(sum(ip, 0, hl)), 10);
      const proto = ip[9]!;
      const l4 = ip.subarray(hl, Math.min(ip.length, ip.readUInt16BE(2)));
      fixL4(l4, proto, pseudoHeaderV4(ip, 12, ip, 16, proto, l4.length));
    } else if (ip.length >= 40) {
      const l4 = ip.subarray(40, Math.min(ip.length, 40 + ip.readUInt16BE(4)));
      fixL4(l4, ip[6]!, pseudoHeaderV6(ip, 8, ip, 24, ip[6]!, l4.length));
    }
  }
  function fixL4(l4: Buffer, proto: number, pseudo: number): void {
    const at = proto === 6 ? 16 : proto === 17 ? 6 : proto === 1 || proto === 58 ? 2 : -1;
    if (at < 0 || l4.length < at + 2) return;
    l4.writeUInt16BE(0, at);
    l4.writeUInt16BE(finish(sum(l4, 0, l4.length, proto === 1 ? 0 : pseudo)), at);
  }

  function mutate(p: Buffer, vnet: boolean): Buffer {
    const head = vnet ? VIRTIO_NET_HDR_LEN : 0;
    let b = Buffer.from(p);
    const m = int(10);
    switch (m) {
      case 0: // bit flips
        for (let i = int(8) + 1; i > 0; i--) {
          const at = int(b.length);
          b[at] = b[at]! ^ (1 << int(8));
        }
        break;
      case 1: // truncation
        b = b.subarray(0, int(b.length + 1));
        break;
      case 2: // trailing garbage
        b = Buffer.concat([b, Buffer.alloc(int(64), int(256))]);
        break;
      case 3: // IP length field lies
        if (b.length > head + 6) {
          if (b[head]! >> 4 === 4) b.writeUInt16BE(int(65536), head + 2);
          else b.writeUInt16BE(int(65536), head + 4);
        }
        break;
      case 4: // IHL / data offset lies
        if (b.length > head + 33) {
          if (rnd() < 0.5) b[head] = (b[head]! & 0xf0) | int(16);
          const l4 = head + (b[head]! >> 4 === 6 ? 40 : 20);
          if (b.length > l4 + 13) b[l4 + 12] = (int(16) << 4) | (b[l4 + 12]! & 0x0f);
        }
        break;
      case 5: { // option garbage: random options in a long TCP header
        const l4 = head + (b[head]! >> 4 === 6 ? 40 : 20);
        if (b.length >= l4 + 20) {
          const extra = 4 * (1 + int(10));
          const opts = Buffer.alloc(extra);
          for (let i = 0; i < extra; i++) opts[i] = rnd() < 0.3 ? int(9) : int(256);
          b = Buffer.concat([b.subarray(0, l4 + 20), opts, b.subarray(l4 + 20)]);
          b[l4 + 12] = (Math.min(15, 5 + extra / 4) << 4) | (b[l4 + 12]! & 0x0f);
          if (b[head]! >> 4 === 4) b.writeUInt16BE(b.length - head, head + 2);
          else b.writeUInt16BE(b.length - head - 40, head + 4);
        }
        break;
      }
      case 6: // random bytes overwriting a range
        for (let i = int(16); i > 0; i--) b[int(b.length)] = int(256);
        break;
      case 7: // UDP length lies / IPv6 next header games
        if (b.length > head + 48) {
          if (b[head]! >> 4 === 6) b[head + 6] = [0, 43, 44, 60, 59, 6, 17, 58, int(256)][int(9)]!;
          else b.writeUInt16BE(int(65536), head + 24);
        }
        break;
      case 8: // the virtio header itself
        if (vnet) for (let i = 0; i < 10; i++) if (rnd() < 0.3) b[i] = int(256);
        break;
      default: // unchanged (valid traffic keeps flows moving)
        break;
    }
    if (rnd() < 0.6) fixChecksums(b, vnet);
    return b;
  }

  function randomPacket(): Buffer {
    const b = Buffer.allocUnsafe(int(120));
    for (let i = 0; i < b.length; i++) b[i] = int(256);
    if (b.length > 0 && rnd() < 0.5) b[0] = rnd() < 0.5 ? 0x45 : 0x60;
    return b;
  }

  let parserThrows = 0;
  const parserFailures: string[] = [];
  /** Every parser: after checkLen passes, nothing may throw. */
  function parseAll(p: Buffer, vnet: boolean): void {
    try {
      let ip = p;
      if (vnet) {
        const h = VirtioNetHdr.newUnchecked(p);
        if (h.checkLen() !== null) return;
        VirtioRepr.parse(h);
        ip = h.payload;
      }
      if (ip.length === 0) return;
      if (ip[0]! >> 4 === 4) {
        const v4 = Ipv4Packet.newUnchecked(ip);
        if (v4.checkLen() !== null) return;
        Ipv4Repr.parse(v4);
        const l4 = v4.payload;
        parseL4(l4, v4.protocol, pseudoHeaderV4(ip, 12, ip, 16, v4.protocol, l4.length), false);
      } else {
        const v6 = Ipv6Packet.newUnchecked(ip);
        if (v6.checkLen() !== null) return;
        Ipv6Repr.parse(v6);
        const u = ipv6UpperLayer(v6);
        if (typeof u === 'string') return;
        const l4 = ip.subarray(u.offset, 40 + v6.payloadLen);
        parseL4(l4, u.protocol, pseudoHeaderV6(ip, 8, ip, 24, u.protocol, l4.length), true);
      }
    } catch (e) {
      parserThrows++;
      if (parserFailures.length < 5) parserFailures.push(`${(e as Error).stack} on ${p.toString('hex')}`);
    }
  }
  function parseL4(l4: Buffer, proto: number, pseudo: number, v6: boolean): void {
    if (proto === 6) {
      const tp = TcpPacket.newUnchecked(l4);
      if (tp.checkLen() !== null) return;
      TcpRepr.parse(tp, pseudo, CHECKSUM_FULL);
      TcpRepr.parse(tp, pseudo, CHECKSUM_OFFLOADED);
    } else if (proto === 17) {
      const up = UdpPacket.newUnchecked(l4);
      if (up.checkLen() !== null) return;
      UdpRepr.parse(up, pseudo, CHECKSUM_FULL, v6);
    } else if (proto === 1 || proto === 58) {
      const ic = IcmpPacket.newUnchecked(l4);
      if (ic.checkLen() !== null) return;
      IcmpRepr.parse(ic, v6, v6 ? pseudo : 0);
    }
  }

  const heapStart = process.memoryUsage().heapUsed;
  let maxFlows = 0;
  let maxBuffered = 0;
  let maxHeap = 0;
  let inputThrows = 0;
  const started = Date.now();
  const BATCH = 2000;
  for (let n = 0; n < PACKETS; n += BATCH) {
    const batch: Buffer[] = [];
    const vnet = (n / BATCH) % 2 === 1;
    const stack = vnet ? offloaded : plain;
    const b = vnet ? builders.offloaded : builders.plain;
    for (let i = 0; i < BATCH; i++) {
      const r = rnd();
      const p = r < 0.1 ? randomPacket() : r < 0.3 ? valid(b) : mutate(valid(b), vnet);
      parseAll(p, vnet);
      batch.push(p);
    }
    try {
      // Half one at a time, half as a batch (both entry points).
      if (rnd() < 0.5) for (const p of batch) stack.input(p);
      else stack.inputBatch(batch);
    } catch {
      inputThrows++;
    }
    if ((n / BATCH) % 16 === 0) {
      for (const s of [plain, offloaded]) {
        const st = s.stats();
        maxFlows = Math.max(maxFlows, st.flows);
        maxBuffered = Math.max(maxBuffered, st.bytesBuffered);
      }
      maxHeap = Math.max(maxHeap, process.memoryUsage().heapUsed);
    }
    await tick(); // let dials resolve and far streams talk
  }
  const elapsed = Date.now() - started;
  const stPlain = plain.stats();
  const stOff = offloaded.stats();
  t.log(`seed ${SEED}: ${PACKETS} packets in ${elapsed} ms; emitted ${emitted}; dials ${dialer.dials}`);
  t.log(`plain: flows opened ${stPlain.flowsOpened}, dropped ${JSON.stringify(stPlain.dropped)}`);
  t.log(`offload: flows opened ${stOff.flowsOpened}, tcp ${JSON.stringify(stOff.tcp)}`);
  t.log(`max flows ${maxFlows}, max buffered ${maxBuffered}, heap ${(heapStart / 1e6).toFixed(0)} -> max ${(maxHeap / 1e6).toFixed(0)} MB`);

  t.is(parserThrows, 0, parserFailures.join('\n'));
  t.is(inputThrows, 0);
  t.is(stPlain.dropped.internal, 0, `seed ${SEED}`);
  t.is(stOff.dropped.internal, 0, `seed ${SEED}`);
  t.true(maxFlows <= limits.maxFlows);
  t.true(maxBuffered <= limits.maxBufferedBytes + 2 * limits.rxBufferPerFlow);
  t.true(maxHeap - heapStart < 300e6, `heap grew by ${maxHeap - heapStart}`);
  // The fuzzer did reach the deep paths.
  t.true(stPlain.flowsOpened > 100 && stOff.flowsOpened > 100);
  t.true(stPlain.flowsClosed > 50);
  t.true(stPlain.dnsAnswers + stOff.dnsAnswers > 0);
  t.true(stPlain.echoReplies + stOff.echoReplies > 0);

  plain.close();
  offloaded.close();
  t.is(plain.stats().flows, 0);
  t.is(offloaded.stats().flows, 0);
  await tick();
  t.is(dialer.open.size, 0, 'every far stream was destroyed or ended');
});

/**
 * The standing packet campaign: live connections (echo, download, upload into a far side that
 * stopped reading, far sides that end at once, refused and hanging dials), v4 and v6, with and
 * without a virtio header, on a simulated clock; the packets of each connection are dropped,
 * duplicated, reordered, corrupted, truncated, or joined by forged segments (RSTs and SYNs out
 * of place, wild ACKs, window changes). Checks, all along: every emitted packet parses with the
 * checked constructors and carries a correct checksum; nothing is sent beyond the window the
 * client advertised; the flow counts and buffered bytes agree with the limits; no timer stalls.
 * At the end the input stops and the far sides end: every flow must be gone within its timeouts,
 * with no timer left armed. `KTCTL_FUZZ_PACKETS` sets the number of packets (default 150,000;
 * `npm run fuzz:netstack` runs 1,000,000).
 */
const CAMPAIGN_PACKETS = Number(process.env.KTCTL_FUZZ_PACKETS ?? 150_000);
const CAMPAIGN_SEED = Number(process.env.KTCTL_FUZZ_SEED ?? 0xc0ffee);

test('fuzz_packetCampaignAroundLiveConnections', async (t) => {
  t.timeout(Math.max(120_000, CAMPAIGN_PACKETS / 5));
  const rnd = prng(CAMPAIGN_SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  const limits = {
    maxFlows: 1024, maxPendingDials: 32, maxHalfOpen: 64, maxBufferedBytes: 4 << 20, flowShare: 16 << 10,
    rxBufferPerFlow: 256 << 10, txBufferPerFlow: 256 << 10, dialTimeout: 5000,
  };
  const nets = [new SimNet({ limits }), new SimNet({ limits, offload: true })];
  for (const n of nets) {
    n.rnd = rnd;
    n.refuse = 0.005;
    n.dialer.sourceBytes = 60_000;
  }
  let packets = 0;
  let verified = 0;
  let started = 0;
  let maxRss = 0;
  let nextPort = 1;
  const failures: string[] = [];
  const check = (net: SimNet, where: string): void => {
    const st = net.stack.stats();
    const b = net.stack.bounds;
    const ooo = st.bytesBuffered; // includes out-of-order bytes, bounded by the windows
    if (st.flows !== st.flowsOpened - st.flowsClosed) failures.push(`${where}: flows ${st.flows} != opened - closed`);
    if (st.flows > b.maxFlows || st.pendingDials > b.maxPendingDials || st.halfOpen > b.maxHalfOpen) failures.push(`${where}: a count beyond its limit ${JSON.stringify(st)}`);
    if (st.bytesOverShare > b.maxBufferedBytes + st.flows * (64 << 10)) failures.push(`${where}: ${st.bytesOverShare} bytes over the shares`);
    if (ooo > b.maxBufferedBytes + st.flows * (b.flowShare + b.rxBufferPerFlow)) failures.push(`${where}: ${ooo} bytes buffered`);
    if (st.bytesOverShare < 0 || st.bytesBuffered < 0) failures.push(`${where}: negative accounting`);
    if (st.timerStalls > 0) failures.push(`${where}: ${st.timerStalls} timer stalls: ${net.logs.join('; ')}`);
    if (st.dropped.internal > 0) failures.push(`${where}: ${st.dropped.internal} internal errors`);
    failures.push(...net.failures.splice(0).map((f) => `${net.vnet ? 'offload' : 'plain'}: ${f}`));
  };

  const active: Array<{ net: SimNet; p: Peer; held: Buffer[] }> = [];
  const startPeer = (net: SimNet): void => {
    const r = rnd();
    const dport = r < 0.45 ? 7 : r < 0.7 ? 19 : r < 0.8 ? 9 : r < 0.88 ? 13 : r < 0.94 ? 1 : 2;
    const sport = 1024 + (nextPort++ % 60000);
    const p = new Peer(net, sport, dport, rnd() < 0.3, 0xffffffff - int(100000));
    if (dport === 7 || dport === 9) p.toSend = int(120_000);
    p.finQueued = dport !== 9 || rnd() < 0.5;
    started++;
    active.push({ net, p, held: [] });
    net.input([p.syn()]);
    packets++;
  };

  /** What the network does to one packet of a live connection. */
  const deliver = (net: SimNet, p: Peer, pkt: Buffer, held: Buffer[], out: Buffer[]): void => {
    const r = rnd();
    if (r < 0.72) out.push(pkt);
    else if (r < 0.76) return; // lost: the client retransmits
    else if (r < 0.80) out.push(pkt, pkt); // duplicated
    else if (r < 0.85) held.push(pkt); // reordered: delivered with the next round
    else if (r < 0.89) {
      // corrupted: a flipped bit the checksum catches (payload or header). Not with a virtio
      // header: NEEDS_CSUM says the kernel wrote the bytes and will sum them, and is trusted.
      if (net.vnet) {
        out.push(pkt);
        return;
      }
      const b = Buffer.from(pkt);
      const at = (net.vnet ? 10 : 0) + int(b.length - (net.vnet ? 10 : 0));
      b[at] = b[at]! ^ (1 << int(8));
      out.push(b, pkt);
    } else if (r < 0.91) {
      out.push(pkt.subarray(0, int(pkt.length)), pkt); // truncated
    } else {
      // a forged segment beside the real one: header games only, never data that could be
      // taken for the stream (RFC 5961 makes the engine answer these with challenge ACKs)
      const k = rnd();
      const base = { payload: Buffer.alloc(0) } as const;
      const forged = k < 0.25 ? p.packet({ ...base, control: 'rst', seqNumber: seqAdd(p.sndNxt, 1 + int(60000)) })
        : k < 0.45 ? p.packet({ ...base, control: 'syn', seqNumber: seq(int(2 ** 32)), ackNumber: null, windowScale: int(15), maxSegSize: int(65536) })
        : k < 0.65 ? p.packet({ ...base, ackNumber: seqAdd(p.rcvNxt, 1_000_000 + int(1_000_000)) })
        : k < 0.8 ? p.packet({ ...base, ackNumber: seqAdd(p.rcvNxt, -(1 << 30)) })
        : k < 0.9 ? p.packet({ ...base, seqNumber: seqAdd(p.sndNxt, 1 << 30), payload: Buffer.alloc(int(500), 0xee) })
        : p.packet({ ...base, control: 'fin', seqNumber: seqAdd(p.sndNxt, -(1 << 29)) });
      out.push(forged, pkt);
    }
  };

  const began = Date.now();
  let round = 0;
  while (packets < CAMPAIGN_PACKETS) {
    round++;
    const net = nets[round % 2]!;
    while (active.filter((a) => a.net === net).length < 48 && rnd() < 0.5) startPeer(net);
    const batch: Buffer[] = [];
    for (const a of active) {
      if (a.net !== net) continue;
      batch.push(...a.held.splice(0));
      if (a.p.state === 'established' && rnd() < 0.01) {
        // the program stops reading for a while, or starts again
        a.p.window = a.p.window === 0 ? 65535 << 4 : 0;
        a.p.ackDue = true;
      }
      for (const pkt of a.p.output(net.clock.now)) deliver(net, a.p, pkt, a.held, batch);
    }
    packets += batch.length;
    if (rnd() < 0.5) net.input(batch);
    else for (const b of batch) net.input([b]);
    await settle(2);
    net.clock.advance([0, 1, 1, 5, 20, 100, 300][int(7)]!);
    // Connections that are over leave the stage (a verified one counts).
    for (let i = active.length - 1; i >= 0; i--) {
      const { p, net: n } = active[i]!;
      const over = p.state === 'done' || p.state === 'reset' || (p.state === 'syn-sent' && n.clock.now - p.synAt > 8000) ||
        (p.state === 'established' && n.clock.now - p.lastProgress > 60_000 && !p.ackDue);
      if (!over) continue;
      if (p.verified) verified++;
      // A program that gives up: its kernel sends a RST (at what the engine acknowledged last),
      // or, half the time, just goes silent and leaves the flow to the engine's timeouts.
      if (p.state === 'established' && rnd() < 0.5) {
        n.input([p.packet({ control: 'rst', seqNumber: p.sndUna, payload: Buffer.alloc(0) })]);
        packets++;
      }
      n.peers.delete(p.sport);
      active.splice(i, 1);
    }
    if (round % 64 === 0) {
      for (const n of nets) check(n, `round ${round}`);
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
      if (failures.length > 0) break;
    }
  }
  const busy = Date.now() - began;

  // The input stops, every far side ends: each flow must end within its timeouts.
  for (const n of nets) {
    n.peers.clear();
    n.dialer.endAll();
    await settle(4);
    const runs0 = n.clock.runs;
    for (let s = 0; s < 3600 && n.stack.stats().flows > 0; s++) {
      n.clock.advance(1000);
      await settle(2);
    }
    const st = n.stack.stats();
    const runs = n.clock.runs - runs0;
    t.log(`${n.vnet ? 'offload' : 'plain'}: all flows gone after ${(n.clock.now / 1000).toFixed(0)} s simulated, ${runs} timer runs meanwhile; opened ${st.flowsOpened}, evicted ${st.halfOpenEvicted}, tcp ${JSON.stringify(st.tcp)}`);
    check(n, 'end');
    t.is(st.flows, 0, 'every flow ended within its timeouts');
    t.is(st.pendingDials, 0);
    t.is(st.halfOpen, 0);
    t.is(st.bytesBuffered, 0);
    t.is(st.bytesOverShare, 0);
    t.is(n.clock.armed, 0, 'no timer left armed');
    t.true(runs < 20_000, `${runs} timer runs while winding down`);
    t.is(n.badPackets, 0);
  }
  t.log(`seed ${CAMPAIGN_SEED}: ${packets} packets in ${busy} ms, ${started} connections, ${verified} verified end to end, max RSS ${(maxRss / 1e6).toFixed(0)} MB`);
  t.deepEqual(failures.slice(0, 10), []);
  t.true(verified > started / 10, `only ${verified} of ${started} connections verified`);
});
