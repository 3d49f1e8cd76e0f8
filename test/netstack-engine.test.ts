/**
 * The engine (NetStack) without a TUN device: packets crafted by a small client-side TCP (what the
 * local kernel would send) go in, the engine's packets come out parsed and checksum-checked, and
 * the far side is real loopback servers reached through a Dialer that maps routed addresses to
 * loopback. Nothing leaves the process except loopback connections.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
/**
 * Test-only tools for driving a NetStack without a TUN device: a harness that parses (and checks)
 * every packet the engine emits, and a minimal client-side TCP (what the local kernel would be)
 * that opens a flow, sends within the engine's advertised window, acknowledges what it receives
 * and half-closes. No retransmission: in-process nothing is lost.
 */
import { isIP } from 'node:net';
import type { DialOptions, Dialer } from '../src/dialer.js';
import { PacketBuilder } from '../src/netstack/emit.js';
import { NetStack, type NetStackOptions } from '../src/netstack/stack.js';
import { seq, seqAdd, seqDiff, seqGt, type Seq } from '../src/netstack/seq.js';
import { CHECKSUM_FULL, finish, pseudoHeaderV4, pseudoHeaderV6, sum } from '../src/netstack/wire/checksum.js';
import { IcmpPacket, IcmpRepr } from '../src/netstack/wire/icmp.js';
import { Ipv4Packet, parseIpv4 } from '../src/netstack/wire/ipv4.js';
import { Ipv6Packet, parseIpv6, formatIpv6 } from '../src/netstack/wire/ipv6.js';
import { TcpPacket, TcpRepr } from '../src/netstack/wire/tcp.js';
import { UdpPacket, UdpRepr } from '../src/netstack/wire/udp.js';
import { VIRTIO_NET_HDR_LEN, VirtioNetHdr, VirtioRepr } from '../src/netstack/wire/virtio.js';
import { formatIpv4 } from '../src/netstack/wire/ipv4.js';
import { DirectDialer, type DirectDialerOptions } from './helpers/direct-dialer.js';
import { closedPort } from './helpers/netns.js';
import { until } from './helpers/poll.js';

/** Maps every routed address to loopback (v4 -> 127.0.0.1, v6 -> ::1), same port, and records what was asked. */
class LoopbackDialer implements Dialer {
  readonly inner: DirectDialer;
  readonly asked: Array<{ host: string; port: number; originHost?: string; originPort?: number }> = [];
  constructor(options: DirectDialerOptions = {}) {
    this.inner = new DirectDialer(options);
  }
  dial(host: string, port: number, options?: DialOptions): Promise<Duplex> {
    this.asked.push({ host, port, originHost: options?.originHost, originPort: options?.originPort });
    return this.inner.dial(isIP(host) === 6 ? '::1' : '127.0.0.1', port, options);
  }
}

interface OutPacket {
  raw: Buffer;
  v6: boolean;
  src: string;
  dst: string;
  vnet: VirtioRepr | null;
  tcp: TcpRepr | null;
  udp: UdpRepr | null;
  icmp: IcmpRepr | null;
  /** false when any checksum (after completing a partial one like a device) did not verify. */
  checksumOk: boolean;
}

function addrBytes(text: string): Buffer {
  const v4 = parseIpv4(text);
  if (v4 !== null) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v4, 0);
    return b;
  }
  const v6 = parseIpv6(text);
  if (!v6) throw new Error(`bad address ${text}`);
  return v6;
}

/** Parses one emitted packet, completing a NEEDS_CSUM checksum the way the kernel would. */
function parseOut(packet: Buffer, vnet: boolean): OutPacket {
  let ip = packet;
  let v: VirtioRepr | null = null;
  if (vnet) {
    const r = VirtioRepr.parse(VirtioNetHdr.newChecked(packet));
    if (typeof r === 'string') throw new Error(`bad virtio header: ${r}`);
    v = r;
    ip = Buffer.from(packet.subarray(VIRTIO_NET_HDR_LEN));
    if (r.csum) {
      const at = r.csum.start + r.csum.offset;
      ip.writeUInt16BE(finish(sum(ip, r.csum.start)), at);
    }
  }
  const v6 = ip[0]! >> 4 === 6;
  let ok = true;
  let l4: Buffer;
  let proto: number;
  let src: string;
  let dst: string;
  let pseudo: (p: number, len: number) => number;
  if (v6) {
    const p = Ipv6Packet.newChecked(ip);
    l4 = p.payload;
    proto = p.nextHeader;
    src = formatIpv6(p.srcAddr);
    dst = formatIpv6(p.dstAddr);
    pseudo = (pr, len) => pseudoHeaderV6(ip, 8, ip, 24, pr, len);
  } else {
    const p = Ipv4Packet.newChecked(ip);
    if (!p.verifyChecksum()) ok = false;
    l4 = p.payload;
    proto = p.protocol;
    src = formatIpv4(p.srcAddr);
    dst = formatIpv4(p.dstAddr);
    pseudo = (pr, len) => pseudoHeaderV4(ip, 12, ip, 16, pr, len);
  }
  const out: OutPacket = { raw: packet, v6, src, dst, vnet: v, tcp: null, udp: null, icmp: null, checksumOk: ok };
  if (proto === 6) {
    const r = TcpRepr.parse(TcpPacket.newChecked(l4), pseudo(6, l4.length), CHECKSUM_FULL);
    if (typeof r === 'string') {
      out.checksumOk = false;
      const again = TcpRepr.parse(TcpPacket.newChecked(l4), pseudo(6, l4.length), { rx: 'trust', tx: 'full' });
      if (typeof again !== 'string') out.tcp = again;
    } else {
      out.tcp = r;
    }
  } else if (proto === 17) {
    const r = UdpRepr.parse(UdpPacket.newChecked(l4), pseudo(17, l4.length), CHECKSUM_FULL, v6);
    if (typeof r === 'string') out.checksumOk = false;
    else out.udp = r;
  } else if (proto === 1 || proto === 58) {
    const r = IcmpRepr.parse(IcmpPacket.newChecked(l4), v6, v6 ? pseudo(58, l4.length) : 0);
    if (typeof r === 'string') out.checksumOk = false;
    else out.icmp = r;
  }
  return out;
}

/** A NetStack whose output is parsed, checked and offered to listeners. */
class Harness {
  readonly stack: NetStack;
  readonly out: OutPacket[] = [];
  readonly vnet: boolean;
  readonly builder: PacketBuilder;
  badChecksums = 0;
  /** Packets that went out through `emitGather` (headers and payload apart). */
  gathered = 0;
  private readonly listeners = new Set<(p: OutPacket) => void>();
  keepPackets = true;

  /** `gather`: data segments come through `emitGather` (the pieces are joined, then checked alike). */
  constructor(opts: Omit<NetStackOptions, 'emit' | 'emitGather' | 'mtu'> & { mtu?: number; gather?: boolean }) {
    this.vnet = opts.offload !== undefined && opts.offload !== false;
    this.builder = new PacketBuilder({ vnetHdr: this.vnet });
    const { gather, ...rest } = opts;
    const emit = (p: Buffer): void => {
      const o = parseOut(p, this.vnet);
      if (!o.checksumOk) this.badChecksums++;
      if (this.keepPackets) this.out.push(o);
      for (const l of this.listeners) l(o);
    };
    this.stack = new NetStack({
      mtu: 1500,
      ...rest,
      emit,
      ...(gather === true
        ? {
            emitGather: (head: Buffer, payload: Buffer) => {
              this.gathered++;
              emit(Buffer.concat([head, payload]));
            },
          }
        : {}),
    });
  }

  on(l: (p: OutPacket) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** The first packet from now on that satisfies `pred`. */
  next(pred: (p: OutPacket) => boolean, ms = 5000): Promise<OutPacket> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error('timed out waiting for a packet'));
      }, ms);
      const off = this.on((p) => {
        if (!pred(p)) return;
        clearTimeout(timer);
        off();
        resolve(p);
      });
    });
  }

  /** Builds a TCP packet as the local kernel would send it (with a vnet header when offloading). */
  tcpPacket(src: string, dst: string, seg: TcpRepr): Buffer {
    return this.builder.tcp(addrBytes(src), addrBytes(dst), seg, 0xffff);
  }
}

const MSS = 1460;

/** The local side of one flow: a small TCP client. */
class Client {
  readonly h: Harness;
  readonly src: string;
  readonly srcPort: number;
  readonly dst: string;
  readonly dstPort: number;
  readonly isn: Seq;
  sndUna: Seq;
  sndNxt: Seq;
  rcvNxt: Seq = seq(0);
  peerWnd = 0;
  peerShift = 0;
  peerMss = 536;
  synAck: TcpRepr | null = null;
  rst: TcpRepr | null = null;
  finReceived = false;
  readonly chunks: Buffer[] = [];
  receivedBytes = 0;
  /** Keep received bytes (false: count only). */
  keep = true;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private pendingOff = 0;
  private finQueued = false;
  private finSent = false;
  private ackDue = false;
  private tickScheduled = false;
  /** Our receive window (scaled by 7). */
  window = 65535 << 7;
  private readonly off: () => void;
  private readonly waiters = new Set<() => void>();

  constructor(h: Harness, src: string, srcPort: number, dst: string, dstPort: number, isn = 0xffffff00) {
    this.h = h;
    this.src = src;
    this.srcPort = srcPort;
    this.dst = dst;
    this.dstPort = dstPort;
    this.isn = seq(isn);
    this.sndUna = this.isn;
    this.sndNxt = this.isn;
    this.off = h.on((p) => {
      if (p.tcp && p.dst === this.src && p.src === this.dst && p.tcp.dstPort === srcPort && p.tcp.srcPort === dstPort) {
        this.onSegment(p.tcp);
      }
    });
  }

  dispose(): void {
    this.off();
  }

  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  private seg(over: Partial<TcpRepr>): TcpRepr {
    return {
      srcPort: this.srcPort, dstPort: this.dstPort, control: 'none', seqNumber: this.sndNxt, ackNumber: this.rcvNxt,
      windowLen: Math.min(0xffff, Math.floor(this.window / 128)), windowScale: null, maxSegSize: null, sackPermitted: false,
      payload: Buffer.alloc(0), ...over,
    };
  }

  send(seg: TcpRepr): void {
    this.h.stack.input(this.h.tcpPacket(this.src, this.dst, seg));
  }

  sendSyn(): void {
    this.send(this.seg({ control: 'syn', seqNumber: this.isn, ackNumber: null, windowLen: 65535, windowScale: 7, maxSegSize: MSS, sackPermitted: true }));
    this.sndNxt = seqAdd(this.isn, 1);
  }

  /** SYN, then SYN-ACK (-> ACK) or RST. Resolves with what came back. */
  async connect(ms = 5000): Promise<'established' | 'reset'> {
    this.sendSyn();
    await this.until(() => this.synAck !== null || this.rst !== null, ms);
    return this.synAck ? 'established' : 'reset';
  }

  write(data: Buffer): void {
    this.pending.push(data);
    this.pendingLen += data.length;
    this.schedule();
  }

  end(): void {
    this.finQueued = true;
    this.schedule();
  }

  /** Sets our receive window and tells the engine (a window update). */
  openWindow(bytes: number): void {
    this.window = bytes;
    this.ackDue = true;
    this.schedule();
  }

  sendRst(): void {
    this.send(this.seg({ control: 'rst' }));
  }

  get unsent(): number {
    return this.pendingLen - this.pendingOff;
  }

  /** An ACK is due and not yet sent (it goes into the engine, synchronously, on the next tick). */
  get ackOwed(): boolean {
    return this.ackDue;
  }

  get inFlight(): number {
    return seqDiff(this.sndNxt, this.sndUna);
  }

  until(pred: () => boolean, ms = 10_000): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pred()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`client ${this.srcPort}: condition not met in ${ms} ms`));
      }, ms);
      this.waiters.add(check);
    });
  }

  private onSegment(s: TcpRepr): void {
    if (s.control === 'rst') {
      this.rst = s;
    } else if (s.control === 'syn') {
      if (s.ackNumber === seqAdd(this.isn, 1)) {
        this.synAck = s;
        this.rcvNxt = seqAdd(s.seqNumber, 1);
        this.peerShift = s.windowScale ?? 0;
        this.peerMss = s.maxSegSize ?? 536;
        this.peerWnd = s.windowLen;
        this.sndUna = s.ackNumber;
        this.ackDue = true;
      }
    } else {
      if (s.ackNumber !== null && seqGt(s.ackNumber, this.sndUna)) this.sndUna = s.ackNumber;
      if (s.ackNumber !== null) this.peerWnd = s.windowLen * 2 ** this.peerShift;
      if (s.payload.length > 0) {
        if (s.seqNumber === this.rcvNxt) {
          if (this.keep) this.chunks.push(Buffer.from(s.payload));
          this.receivedBytes += s.payload.length;
          this.rcvNxt = seqAdd(this.rcvNxt, s.payload.length);
        }
        this.ackDue = true;
      }
      if (s.control === 'fin' && seqAdd(s.seqNumber, s.payload.length) === this.rcvNxt) {
        this.rcvNxt = seqAdd(this.rcvNxt, 1);
        this.finReceived = true;
        this.ackDue = true;
      }
    }
    this.schedule();
    for (const w of [...this.waiters]) w();
  }

  private schedule(): void {
    if (this.tickScheduled) return;
    this.tickScheduled = true;
    setImmediate(() => {
      this.tickScheduled = false;
      this.tick();
    });
  }

  private tick(): void {
    if (!this.synAck || this.rst) return;
    const mss = Math.min(MSS, this.peerMss);
    let sent = false;
    const packets: Buffer[] = [];
    while (this.unsent > 0) {
      const room = this.peerWnd - this.inFlight;
      if (room <= 0) break;
      const len = Math.min(mss, room, this.unsent);
      const payload = this.take(len);
      packets.push(this.h.tcpPacket(this.src, this.dst, this.seg({ payload, control: this.unsent === 0 ? 'psh' : 'none' })));
      this.sndNxt = seqAdd(this.sndNxt, len);
      sent = true;
      if (packets.length >= 64) break;
    }
    if (this.finQueued && !this.finSent && this.unsent === 0) {
      packets.push(this.h.tcpPacket(this.src, this.dst, this.seg({ control: 'fin' })));
      this.sndNxt = seqAdd(this.sndNxt, 1);
      this.finSent = true;
      sent = true;
    }
    if (!sent && this.ackDue) packets.push(this.h.tcpPacket(this.src, this.dst, this.seg({})));
    this.ackDue = false;
    if (packets.length > 0) this.h.stack.inputBatch(packets);
    if (this.unsent > 0 && this.peerWnd - this.inFlight > 0) this.schedule();
    for (const w of [...this.waiters]) w();
  }

  private take(len: number): Buffer {
    const out = Buffer.allocUnsafe(len);
    let w = 0;
    while (w < len) {
      const c = this.pending[0]!;
      const n = Math.min(c.length - this.pendingOff, len - w);
      c.copy(out, w, this.pendingOff, this.pendingOff + n);
      w += n;
      this.pendingOff += n;
      if (this.pendingOff === c.length) {
        this.pending.shift();
        this.pendingLen -= c.length;
        this.pendingOff = 0;
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Tests

/** A routed address (never on any wire: the dialer maps it to loopback) and the local program's. */
const OUR4 = '198.18.191.10';
const LOCAL4 = '198.18.191.2';
const OUR6 = 'fd00:ff::10';
const LOCAL6 = 'fd00:ff::2';

let nextPort = 40000 + (process.pid % 1000) * 20;
const port = (): number => nextPort++;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function server(t: ExecutionContext, onConn: (s: Socket) => void, host = '127.0.0.1'): Promise<number> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((resolve) => srv.listen(0, host, resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  const a = srv.address();
  if (!a || typeof a === 'string') throw new Error('no address');
  return a.port;
}

function harness(
  t: ExecutionContext, opts: Partial<Omit<NetStackOptions, 'emit' | 'emitGather'>> & { gather?: boolean } = {}, dialerOpts: DirectDialerOptions = {},
): { h: Harness; dialer: LoopbackDialer } {
  const dialer = new LoopbackDialer(dialerOpts);
  const h = new Harness({ dialer, ...opts });
  t.teardown(() => h.stack.close());
  return { h, dialer };
}

function client(t: ExecutionContext, h: Harness, dstPort: number, v6 = false, isn?: number): Client {
  const c = new Client(h, v6 ? LOCAL6 : LOCAL4, port(), v6 ? OUR6 : OUR4, dstPort, isn);
  t.teardown(() => c.dispose());
  return c;
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

test('engine_synDialsFirstAndAbsorbsRepeatedSyn', async (t) => {
  let accepted = 0;
  const p = await server(t, () => accepted++);
  const { h, dialer } = harness(t, {}, { dialDelayMs: 150 });
  const c = client(t, h, p);
  c.sendSyn();
  c.sendSyn(); // the kernel's SYN retransmission while we dial
  t.is(h.out.filter((o) => o.tcp).length, 0, 'no SYN-ACK before the far side connected');
  t.is(h.stack.stats().synsAbsorbed, 1);
  t.is(h.stack.stats().pendingDials, 1);
  await c.until(() => c.synAck !== null);
  t.is(dialer.asked.length, 1);
  t.like(dialer.asked[0], { host: OUR4, port: p, originHost: LOCAL4, originPort: c.srcPort });
  t.like(c.synAck, { ackNumber: seqAdd(c.isn, 1), maxSegSize: 1460 });
  t.not(c.synAck!.windowScale, null);
  t.is(h.out.filter((o) => o.tcp?.control === 'syn').length, 1);
  await until(() => accepted === 1, { intervalMs: 5 });
  t.is(h.badChecksums, 0);
});

test('engine_refusedPortGivesRstAck', async (t) => {
  const { h } = harness(t);
  const c = client(t, h, await closedPort());
  t.is(await c.connect(), 'reset');
  // RFC 9293 §3.10.7.1 for a SYN: <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK> - curl: "Connection refused".
  t.like(c.rst, { control: 'rst', seqNumber: seq(0), ackNumber: seqAdd(c.isn, 1) });
  const st = h.stack.stats();
  t.is(st.dialsFailed, 1);
  t.is(st.flows, 0);
  t.is(st.pendingDials, 0);
});

test('engine_dataBothWaysChecksumsVerified', async (t) => {
  const up = randomBytes(1 << 20);
  const down = randomBytes(1 << 20);
  let serverGot: Buffer = Buffer.alloc(0);
  const p = await server(t, (s) => {
    void readAll(s).then((b) => {
      serverGot = b;
      s.write(down);
      s.end(sha(b));
    });
  });
  const { h } = harness(t);
  const c = client(t, h, p, false, 0xfff00000);
  t.is(await c.connect(), 'established');
  c.write(up);
  c.end();
  await c.until(() => c.finReceived, 20_000);
  t.is(sha(serverGot), sha(up));
  t.is(sha(c.received), sha(Buffer.concat([down, Buffer.from(sha(up))])));
  t.is(h.badChecksums, 0);
  // Our FIN acknowledged by the client: LAST-ACK -> CLOSED, the flow is gone.
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
  const st = h.stack.stats();
  t.is(st.dropped.internal, 0);
  t.is(st.bytesBuffered, 0);
});

for (const [name, offload] of [['offload', true], ['full checksums', false]] as const) {
  test(`engine_gatherWritesSendDataSegmentsAsHeadersAndPayload (${name})`, async (t) => {
    // emitGather gets the headers (lengths and checksum covering the payload) and the payload
    // apart; joined, they are the very packet emit would have had: same bytes, valid checksums.
    const down = randomBytes(3 << 20);
    const up = randomBytes(200_000);
    let serverGot: Promise<Buffer> | null = null;
    const p = await server(t, (s) => {
      serverGot = readAll(s);
      s.end(down);
    });
    const { h } = harness(t, { offload, gather: true, emitConsumes: true });
    const c = client(t, h, p);
    await c.connect();
    c.write(up);
    c.end();
    await c.until(() => c.finReceived, 20_000);
    t.is(sha(c.received), sha(down));
    await until(() => serverGot !== null, { intervalMs: 5 });
    t.is(sha(await serverGot!), sha(up));
    const data = h.out.filter((o) => (o.tcp?.payload.length ?? 0) > 0);
    t.true(data.length > 0);
    t.is(h.gathered, data.length, 'every data segment went out gathered');
    t.true(h.out.length > h.gathered, 'segments without data (SYN-ACK, ACKs) still go through emit');
    t.is(h.badChecksums, 0);
    if (offload) t.true(data.some((o) => o.vnet?.gso), 'super-segments too');
  });
}

test('engine_pooledCopiesForFarStreamsThatCopyOnWrite', async (t) => {
  // Sockets are done with a chunk once its write called back: received bytes go out in reused
  // blocks, and none is reused while the far side may still read it.
  const up = randomBytes(6 << 20);
  let serverGot: Buffer = Buffer.alloc(0);
  const p = await server(t, (s) => {
    void readAll(s).then((b) => {
      serverGot = b;
      s.end(sha(b));
    });
  });
  const { h } = harness(t, { farCopiesOnWrite: true });
  const c = client(t, h, p);
  t.is(await c.connect(), 'established');
  c.write(up);
  c.end();
  await c.until(() => c.finReceived, 20_000);
  t.is(sha(serverGot), sha(up));
  t.is(c.received.toString(), sha(up));
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
  t.is(h.stack.stats().bytesBuffered, 0);
});

test('engine_replyWithNothingInFlightGoesOutWithinTheFarEvent', async (t) => {
  // With nothing unacknowledged, bytes from the far side are sent during its 'data' event (not
  // at the end of the event loop's turn); with bytes in flight they wait for that flush.
  let far: Duplex | null = null;
  const dialer: Dialer = {
    async dial() {
      far = new Duplex({ read() {}, write(_c: Buffer, _e, cb) { cb(); } });
      return far;
    },
  };
  const h = new Harness({ dialer });
  t.teardown(() => h.stack.close());
  const c = client(t, h, 80);
  t.is(await c.connect(), 'established');
  await until(() => far !== null, { intervalMs: 5 });
  await c.until(() => !c.ackOwed); // the client's ACK of our SYN-ACK has gone in: nothing in flight
  const sent = (from: number): string[] => h.out.slice(from).filter((p) => p.tcp && p.tcp.payload.length > 0).map((p) => p.tcp!.payload.toString());
  const before = h.out.length;
  far!.push(Buffer.from('reply'));
  t.deepEqual(sent(before), ['reply']);
  far!.push(Buffer.from('more')); // 'reply' is still unacknowledged: this waits for the flush
  t.deepEqual(sent(before), ['reply']);
  await c.until(() => c.received.toString() === 'replymore');
  t.deepEqual(sent(before), ['reply', 'more']);
});

test('engine_farEndsFirstHalfCloseThenTimeWaitFreesFlow', async (t) => {
  let serverGot: Promise<Buffer> | null = null;
  const p = await server(t, (s) => {
    serverGot = readAll(s);
    s.end('hello'); // the far side closes first; it can still read
  });
  const { h } = harness(t, { tcp: { timeWait: 100 } });
  const c = client(t, h, p);
  await c.connect();
  await c.until(() => c.finReceived);
  t.is(c.received.toString(), 'hello');
  // Half-closed: the local side still sends, and the far side gets it.
  c.write(Buffer.from('late data'));
  c.end();
  await until(() => serverGot !== null, { intervalMs: 5 });
  t.is((await serverGot!).toString(), 'late data');
  // FIN-WAIT-2 -> TIME-WAIT -> (100 ms) CLOSED: the flow is freed.
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
  t.is(h.stack.stats().flowsClosed, 1);
});

test('engine_slowFarSideKeepsMemoryBounded', async (t) => {
  const total = 24 << 20;
  const up = randomBytes(total);
  let far: Socket | null = null;
  let got: Promise<Buffer> | null = null;
  const p = await server(t, (s) => {
    far = s;
    got = readAll(s);
    s.pause(); // a far side that does not read
  });
  const rx = 256 << 10;
  const { h } = harness(t, { limits: { rxBufferPerFlow: rx } }, { highWaterMark: 16 << 10 });
  h.keepPackets = false;
  const c = client(t, h, p);
  await c.connect();
  c.write(up);
  // The local sender runs into a closed window and stalls with data left to send.
  let maxBuffered = 0;
  const watch = setInterval(() => {
    maxBuffered = Math.max(maxBuffered, h.stack.stats().bytesBuffered);
  }, 2);
  t.teardown(() => clearInterval(watch));
  await c.until(() => c.peerWnd === 0 && c.inFlight === 0 && c.unsent > 0, 20_000);
  maxBuffered = Math.max(maxBuffered, h.stack.stats().bytesBuffered);
  t.true(c.unsent > 0);
  t.log(`stalled with ${c.unsent} bytes unsent; engine buffered at most ${maxBuffered}`);
  // The far side reads again: everything arrives, intact.
  c.end();
  far!.resume();
  await until(() => got !== null, { intervalMs: 5 });
  t.is(sha(await got!), sha(up));
  t.true(maxBuffered <= rx + (64 << 10), `buffered ${maxBuffered}`);
  t.is(h.badChecksums, 0);
});

test('engine_localRstDestroysFarStream', async (t) => {
  let closed = false;
  // destroy() of the loopback far stream shows as its end (FIN) or close on the server.
  const p = await server(t, (s) => {
    s.on('end', () => (closed = true));
    s.on('close', () => (closed = true));
  });
  const { h } = harness(t);
  const c = client(t, h, p);
  await c.connect();
  await new Promise((r) => setTimeout(r, 20));
  c.sendRst();
  await until(() => closed, { intervalMs: 5 });
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
  t.pass();
});

test('engine_farResetGivesRst', async (t) => {
  const p = await server(t, (s) => {
    setTimeout(() => s.resetAndDestroy(), 20);
  });
  const { h } = harness(t);
  const c = client(t, h, p);
  await c.connect();
  await c.until(() => c.rst !== null);
  t.is(c.rst!.control, 'rst');
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
});

test('engine_ipv6Flow', async (t) => {
  const p = await server(t, (s) => {
    void readAll(s).then((b) => s.end(`pong:${b.toString()}`));
  }, '::1');
  const { h, dialer } = harness(t);
  const c = client(t, h, p, true);
  t.is(await c.connect(), 'established');
  t.is(c.synAck!.maxSegSize, 1500 - 40 - 20);
  c.write(Buffer.from('ping'));
  c.end();
  await c.until(() => c.finReceived);
  t.is(c.received.toString(), 'pong:ping');
  t.is(dialer.asked[0]!.host, OUR6);
  t.is(dialer.asked[0]!.originHost, LOCAL6);
  t.true(h.out.every((o) => o.v6));
  t.is(h.badChecksums, 0);
});

test('engine_offloadPartialChecksumsAndSuperSegments', async (t) => {
  const down = randomBytes(2 << 20);
  const up = randomBytes(300_000);
  let serverGot: Promise<Buffer> | null = null;
  const p = await server(t, (s) => {
    serverGot = readAll(s);
    s.end(down);
  });
  const { h } = harness(t, { offload: true });
  const c = client(t, h, p);
  await c.connect();
  c.write(up); // built with vnet headers and partial (NEEDS_CSUM) checksums: trusted, not verified
  c.end();
  await c.until(() => c.finReceived, 20_000);
  t.is(sha(c.received), sha(down));
  await until(() => serverGot !== null, { intervalMs: 5 });
  t.is(sha(await serverGot!), sha(up));
  const gso = h.out.filter((o) => o.vnet?.gso);
  t.true(gso.length > 0, 'super-segments were sent');
  for (const o of gso) {
    t.is(o.vnet!.gso!.size, 1460);
    t.true(o.tcp!.payload.length > 1460);
    t.is(o.vnet!.gso!.type, 1);
    t.like(o.vnet!.csum, { start: 20, offset: 16 });
  }
  t.true(h.out.every((o) => o.vnet !== null));
  t.is(h.badChecksums, 0); // every partial checksum completes to a valid one
});

test('engine_synFloodOpensBoundedDials', async (t) => {
  const p = await server(t, () => {});
  const { h, dialer } = harness(t, { limits: { maxPendingDials: 8 } }, { dialDelayMs: 300 });
  const syns: Buffer[] = [];
  for (let i = 0; i < 100; i++) {
    syns.push(h.tcpPacket(LOCAL4, OUR4, {
      srcPort: 20000 + i, dstPort: p, control: 'syn', seqNumber: seq(i * 7919), ackNumber: null, windowLen: 65535,
      windowScale: null, maxSegSize: 1460, sackPermitted: false, payload: Buffer.alloc(0),
    }));
  }
  h.stack.inputBatch(syns);
  const st = h.stack.stats();
  t.is(dialer.asked.length, 8);
  t.is(st.pendingDials, 8);
  t.is(st.dropped.synFlood, 92);
  t.is(st.flows, 8);
  h.stack.close();
  t.is(h.stack.stats().flows, 0);
  t.is(h.stack.stats().pendingDials, 0);
});

test('engine_closeResetsEveryFlow', async (t) => {
  const farClosed: boolean[] = [];
  const p = await server(t, (s) => {
    const i = farClosed.push(false) - 1;
    s.on('end', () => (farClosed[i] = true));
    s.on('close', () => (farClosed[i] = true));
  });
  const { h } = harness(t);
  const cs = [client(t, h, p), client(t, h, p), client(t, h, p)];
  for (const c of cs) t.is(await c.connect(), 'established');
  await until(() => farClosed.length === 3, { intervalMs: 5 });
  h.stack.close();
  h.stack.close(); // idempotent
  for (const c of cs) t.is(c.rst?.control, 'rst');
  await until(() => farClosed.every(Boolean), { intervalMs: 5 });
  t.is(h.stack.stats().flows, 0);
});

test('engine_segmentForNoFlowGetsRst', async (t) => {
  const { h } = harness(t);
  const seg: TcpRepr = {
    srcPort: 33333, dstPort: 80, control: 'none', seqNumber: seq(5), ackNumber: seq(0xfffffff0), windowLen: 100,
    windowScale: null, maxSegSize: null, sackPermitted: false, payload: Buffer.from('x'),
  };
  h.stack.input(h.tcpPacket(LOCAL4, OUR4, seg));
  const rst = h.out.at(-1)!;
  t.like(rst.tcp, { control: 'rst', seqNumber: seq(0xfffffff0), ackNumber: null, srcPort: 80, dstPort: 33333 });
  t.is(rst.src, OUR4);
  h.stack.input(h.tcpPacket(LOCAL4, OUR4, { ...seg, control: 'rst' }));
  t.is(h.out.length, 1, 'a RST is never answered');
  t.is(h.stack.stats().dropped.noFlow, 2);
});

test('engine_dnsAnsweredOtherUdpPortUnreachable', async (t) => {
  const queries: Buffer[] = [];
  // The answer is the query with QR set: a well-formed DNS message (a malformed one is replaced
  // by SERVFAIL, see netstack-datagram.test.ts).
  const answerOf = (q: Buffer): Buffer => {
    const a = Buffer.from(q);
    a[2] = a[2]! | 0x80;
    return a;
  };
  const { h } = harness(t, {
    dnsAddresses: ['198.19.0.10', 'fd00:ff::53'],
    resolveDns: async (q) => {
      queries.push(q);
      return answerOf(q);
    },
  });
  const udp = (src: string, dst: string, sp: number, dp: number, payload: string | Buffer): Buffer =>
    h.builder.udp(addrBytes(src), addrBytes(dst), { srcPort: sp, dstPort: dp, payload: Buffer.from(payload) });
  // id 0x0001, RD, one question: "q1." A IN
  const query1 = Buffer.from('000101000001000000000000027131000001 0001'.replace(/ /g, ''), 'hex');
  const query6 = Buffer.from('000601000001000000000000027136000001 0001'.replace(/ /g, ''), 'hex');

  const ans = h.next((o) => o.udp !== null);
  h.stack.input(udp(LOCAL4, '198.19.0.10', 5353, 53, query1));
  const a = await ans;
  t.is(a.src, '198.19.0.10');
  t.is(a.dst, LOCAL4);
  t.like(a.udp, { srcPort: 53, dstPort: 5353 });
  t.deepEqual(a.udp!.payload, answerOf(query1));

  const ans6 = h.next((o) => o.udp !== null);
  h.stack.input(udp(LOCAL6, 'fd00:ff::53', 5300, 53, query6));
  t.deepEqual((await ans6).udp!.payload, answerOf(query6));

  // Another port on the DNS address, another address: ICMP port unreachable quoting the datagram.
  const orig = udp(LOCAL4, '198.19.0.10', 5353, 54, 'not dns');
  h.stack.input(orig);
  const icmp = h.out.at(-1)!;
  t.like(icmp.icmp, { kind: 'dstUnreachable', code: 3 });
  t.is(icmp.src, '198.19.0.10');
  t.deepEqual(icmp.icmp!.data, orig);
  h.stack.input(udp(LOCAL6, OUR6, 4000, 9999, 'x'));
  t.like(h.out.at(-1)!.icmp, { kind: 'dstUnreachable', code: 4 });
  t.is(h.badChecksums, 0);
  t.is(h.stack.stats().portUnreachables, 2);
});

test('engine_icmpEchoOnlyWhenProbeSaysReachable', async (t) => {
  const probed: string[] = [];
  const { h } = harness(t, {
    probe: async (ip) => {
      probed.push(ip);
      return ip === '198.18.191.20' || ip === 'fd00:ff::20';
    },
  });
  const echo = (src: string, dst: string, seqNo: number): Buffer =>
    h.builder.icmp(addrBytes(src), addrBytes(dst), { kind: 'echoRequest', ident: 77, seqNo, data: Buffer.from('ping!') });
  const reply = h.next((o) => o.icmp?.kind === 'echoReply');
  h.stack.input(echo(LOCAL4, '198.18.191.20', 1));
  const r = await reply;
  t.is(r.src, '198.18.191.20');
  t.like(r.icmp, { kind: 'echoReply', ident: 77, seqNo: 1 });
  t.is((r.icmp as { data: Buffer }).data.toString(), 'ping!');
  // Cached: the second echo is answered without another probe.
  h.stack.input(echo(LOCAL4, '198.18.191.20', 2));
  t.like(h.out.at(-1)!.icmp, { kind: 'echoReply', seqNo: 2 });
  // Unreachable address: no answer at all.
  h.stack.input(echo(LOCAL4, '198.18.191.21', 1));
  await until(() => h.stack.stats().dropped.unreachable === 1, { intervalMs: 5 });
  t.is(h.out.filter((o) => o.icmp).length, 2);
  // IPv6
  const r6 = h.next((o) => o.icmp?.kind === 'echoReply' && o.v6);
  h.stack.input(echo(LOCAL6, 'fd00:ff::20', 9));
  t.like((await r6).icmp, { ident: 77, seqNo: 9 });
  t.deepEqual(probed, ['198.18.191.20', '198.18.191.21', 'fd00:ff::20']);
  t.is(h.badChecksums, 0);
});

test('engine_hostilePacketsCountedAndDropped', (t) => {
  const { h } = harness(t);
  const good = h.tcpPacket(LOCAL4, OUR4, {
    srcPort: 1234, dstPort: 80, control: 'syn', seqNumber: seq(1), ackNumber: null, windowLen: 1000, windowScale: null,
    maxSegSize: null, sackPermitted: false, payload: Buffer.alloc(0),
  });
  h.stack.input(good.subarray(0, 30)); // truncated below the IP length
  const badSum = Buffer.from(good);
  badSum[good.length - 1]! ^= 0xff;
  h.stack.input(badSum);
  const frag = Buffer.from(good);
  frag.writeUInt16BE(0x2000, 6);
  Ipv4Packet.newUnchecked(frag).fillChecksum();
  h.stack.input(frag);
  const proto = Buffer.from(good);
  proto[9] = 132; // SCTP
  Ipv4Packet.newUnchecked(proto).fillChecksum();
  h.stack.input(proto);
  h.stack.input(Buffer.alloc(0));
  h.stack.input(Buffer.from([0x70, 1, 2, 3]));
  const d = h.stack.stats().dropped;
  // The fragment (MF set, 20 bytes of TCP header: not a multiple of 8, RFC 791) cannot be part of any
  // datagram: the reassembler (src/netstack/fragment.ts) drops it as malformed.
  t.like(d, { truncated: 2, checksum: 1, fragment: 0, unsupported: 1, malformed: 2, internal: 0 });
  t.is(h.stack.stats().flows, 0);
  t.is(h.out.length, 0);
});

test('engine_manyParallelFlows', async (t) => {
  const n = 40;
  const size = 256 << 10;
  const p = await server(t, (s) => {
    void readAll(s).then((b) => s.end(createHash('sha256').update(b).digest()));
  });
  const { h } = harness(t);
  h.keepPackets = false;
  const payloads = Array.from({ length: n }, () => randomBytes(size));
  const cs = payloads.map(() => client(t, h, p, false, 0xffff0000 + Math.floor(Math.random() * 0xffff)));
  await Promise.all(cs.map(async (c, i) => {
    t.is(await c.connect(), 'established');
    c.write(payloads[i]!);
    c.end();
    await c.until(() => c.finReceived, 30_000);
    t.is(c.received.toString('hex'), sha(payloads[i]!));
  }));
  await until(() => h.stack.stats().flows === 0, { intervalMs: 5 });
  t.is(h.badChecksums, 0);
  t.is(h.stack.stats().flowsOpened, n);
});

test('engine_dialProbeAnswersEchoForRefusingOrAcceptingHosts', async (t) => {
  const open = await server(t, () => {});
  const closed = await closedPort();
  const dialer = new LoopbackDialer();
  const { dialProbe } = await import('../src/netstack/probe.js');
  t.true(await dialProbe(dialer, { port: open })('198.18.191.30'));
  t.true(await dialProbe(dialer, { port: closed })('198.18.191.31')); // refused: the host answered
  // 'prohibited' (and unreachable, timeouts): not reachable
  t.false(await dialProbe(new DirectDialer(), { port: closed })('203.0.113.9'));
});

test('engine_globalBudgetPausesFarReadsAndResumes', async (t) => {
  const budget = 512 << 10;
  const size = 2 << 20;
  const payloads: Buffer[] = [];
  const fars: Socket[] = [];
  const p = await server(t, (s) => fars.push(s));
  const { h } = harness(t, { limits: { maxBufferedBytes: budget, txBufferPerFlow: 1 << 20 } });
  h.keepPackets = false;
  const cs = [0, 1, 2, 3].map(() => client(t, h, p));
  for (const c of cs) {
    c.window = 0; // the local programs do not read yet
    t.is(await c.connect(), 'established');
  }
  await until(() => fars.length === 4, { intervalMs: 5 });
  for (const s of fars) {
    const b = randomBytes(size);
    payloads.push(b);
    s.end(b);
  }
  // While the budget is used up, a new flow still starts: its share (flowShare) is its own.
  await until(() => h.stack.stats().bytesBuffered >= budget, { intervalMs: 5 });
  const late = client(t, h, p);
  t.is(await late.connect(), 'established');
  t.is(h.stack.stats().dropped.memoryLimit, 0);
  let max = 0;
  const start = Date.now();
  while (Date.now() - start < 300) {
    max = Math.max(max, h.stack.stats().bytesBuffered);
    await new Promise((r) => setTimeout(r, 5));
  }
  t.log(`buffered at most ${max} with a budget of ${budget}`);
  t.true(max >= budget / 2, 'the far sides did fill the buffers');
  // The bound: the budget, every flow's share, and one far read per flow before its pause.
  t.true(max <= budget + 5 * h.stack.bounds.flowShare + 4 * (64 << 10), `buffered ${max}`);
  for (const c of cs) c.openWindow(65535 << 7);
  await Promise.all(cs.map((c) => c.until(() => c.finReceived, 20_000)));
  const got = cs.map((c) => sha(c.received)).sort();
  t.deepEqual(got, payloads.map(sha).sort());
  t.is(h.badChecksums, 0);
});

test('engine_farStreamWithHugeHighWaterMarkStillReopensWindow', async (t) => {
  // Like an ssh2 channel: highWaterMark 2 MiB (above our window), so write() never returns false
  // and 'drain' never comes; the far side takes data slowly.
  const taken: Buffer[] = [];
  let paused = true;
  const queue: Array<() => void> = [];
  const release = (): void => {
    while (!paused && queue.length > 0) queue.shift()!();
  };
  const dialer: Dialer = {
    async dial() {
      return new Duplex({
        writableHighWaterMark: 2 << 20,
        read() {},
        write(chunk: Buffer, _e, cb) {
          queue.push(() => {
            taken.push(chunk);
            cb();
          });
          release();
        },
        final(cb) {
          this.push(null);
          cb();
        },
      });
    },
  };
  const rx = 256 << 10;
  const h = new Harness({ dialer, limits: { rxBufferPerFlow: rx } });
  t.teardown(() => h.stack.close());
  h.keepPackets = false;
  const c = client(t, h, 80);
  await c.connect();
  const up = randomBytes(2 << 20);
  c.write(up);
  c.end();
  await c.until(() => c.peerWnd === 0 && c.unsent > 0);
  t.true(h.stack.stats().bytesBuffered <= rx + 1460);
  paused = false;
  release();
  await c.until(() => c.unsent === 0 && c.inFlight === 0, 20_000);
  t.is(sha(Buffer.concat(taken)), sha(up));
});

test('engine_offloadHeaderWithoutTsoOrPartialChecksums', async (t) => {
  const down = randomBytes(300_000);
  const p = await server(t, (s) => s.end(down));
  const { h } = harness(t, { offload: { tso: false, partialChecksum: false } });
  const c = client(t, h, p);
  await c.connect();
  c.end();
  await c.until(() => c.finReceived);
  t.is(sha(c.received), sha(down));
  // Every packet still has the header, none is a super-segment, none asks the device for a checksum.
  t.true(h.out.every((o) => o.vnet !== null && o.vnet.gso === null && o.vnet.csum === null));
  t.true(h.out.every((o) => (o.tcp?.payload.length ?? 0) <= 1460));
  t.is(h.badChecksums, 0);
});

test('engine_dialTimeoutGivesIcmpUnreachable', async (t) => {
  // A far side that never answers: the dial hangs until the engine's deadline aborts it.
  let aborted = 0;
  const dialer: Dialer = {
    dial: (_h, _p, o) => new Promise((_resolve, reject) => {
      o?.signal?.addEventListener('abort', () => {
        aborted++;
        reject(new Error('aborted'));
      });
    }),
  };
  const h = new Harness({ dialer, limits: { dialTimeout: 100 } });
  t.teardown(() => h.stack.close());
  const c = client(t, h, 80);
  const unreachable = h.next((o) => o.icmp?.kind === 'dstUnreachable');
  c.sendSyn();
  const icmp = await unreachable;
  t.like(icmp.icmp, { kind: 'dstUnreachable', code: 1 }); // host unreachable: "No route to host"
  t.is(icmp.dst, LOCAL4);
  t.is(aborted, 1);
  t.is(h.stack.stats().flows, 0);
  t.is(h.stack.stats().pendingDials, 0);
});
