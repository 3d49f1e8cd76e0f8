/**
 * The packet engine's UDP beyond DNS, over a real tunnel: a NetStack whose UDP session is an
 * SshTunnel's to a real ShadowServer on 127.0.0.1, and a UDP echo server on 127.0.0.1. Packets go in
 * as the local kernel would write them to the TUN (an 8000-byte datagram as six IPv4 fragments),
 * and every packet the engine emits is parsed with the checked wire constructors. Also the
 * reassembler's bounds and fragmentIpv4 on their own.
 */
import test from 'ava';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { PacketBuilder } from '../src/netstack/emit.js';
import { fragmentIpv4, Ipv4Reassembler } from '../src/netstack/fragment.js';
import { NetStack } from '../src/netstack/stack.js';
import { CHECKSUM_FULL, pseudoHeaderV4 } from '../src/netstack/wire/checksum.js';
import { IcmpPacket, IcmpRepr } from '../src/netstack/wire/icmp.js';
import { Ipv4Packet } from '../src/netstack/wire/ipv4.js';
import { UdpPacket, UdpRepr } from '../src/netstack/wire/udp.js';
import { ShadowServer } from '../src/shadow/server.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { ed25519 } from './helpers/ssh-fixtures.js';
import { until } from './helpers/poll.js';

const MTU = 1500;
const PEER = Buffer.from([198, 18, 189, 20]);
const FAR = Buffer.from([127, 0, 0, 1]);
const hostKey = ed25519('udp-ns-host');
const userKey = ed25519('udp-ns-user');

interface Harness {
  stack: NetStack;
  out: Buffer[];
  echoPort: number;
}

async function harness(t: { teardown(fn: () => unknown): void }): Promise<Harness> {
  const server = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1' });
  t.teardown(() => server.close());
  const { port } = await server.listen();
  const tunnel = await SshTunnel.open({ host: '127.0.0.1', port, username: 'ktctl', privateKey: userKey.private, hostKey: { pinned: hostKey.public } });
  t.teardown(() => tunnel.close());
  const echo = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((resolve) => echo.bind(0, '127.0.0.1', resolve));
  t.teardown(() => echo.close());
  const out: Buffer[] = [];
  const udp = await tunnel.udp();
  if (udp === undefined) throw new Error('no UDP session');
  const stack = new NetStack({ dialer: tunnel, mtu: MTU, emit: (p) => void out.push(Buffer.from(p)), udp });
  t.teardown(() => stack.close());
  return { stack, out, echoPort: (echo.address() as AddressInfo).port };
}

const builder = new PacketBuilder({ vnetHdr: false });

/** The packets the local kernel writes for one datagram: one, or IPv4 fragments above the MTU. */
function datagram(srcPort: number, dstPort: number, payload: Buffer): Buffer[] {
  const whole = builder.udp(PEER, FAR, { srcPort, dstPort, payload });
  return fragmentIpv4(whole, MTU, 0);
}

/** Every emitted packet checked; UDP ones reassembled when fragmented. */
function received(out: Buffer[]): { udp: UdpRepr[]; icmp: Array<{ repr: IcmpRepr; mtu: number }>; maxLen: number } {
  const r = new Ipv4Reassembler();
  const udp: UdpRepr[] = [];
  const icmp: Array<{ repr: IcmpRepr; mtu: number }> = [];
  let maxLen = 0;
  for (const pkt of out) {
    maxLen = Math.max(maxLen, pkt.length);
    let p = Ipv4Packet.newChecked(pkt);
    if (!p.verifyChecksum()) throw new Error('bad header checksum');
    let ip = pkt;
    if (p.moreFrags || p.fragOffset !== 0) {
      const whole = r.push(p, 0);
      if (typeof whole === 'string') throw new Error(`reassembly: ${whole}`);
      if (whole === undefined) continue;
      ip = whole;
      p = Ipv4Packet.newChecked(ip);
    }
    const l4 = p.payload;
    if (p.protocol === 17) {
      const repr = UdpRepr.parse(UdpPacket.newChecked(l4), pseudoHeaderV4(ip, 12, ip, 16, 17, l4.length), CHECKSUM_FULL, false);
      if (typeof repr === 'string') throw new Error(`udp: ${repr}`);
      udp.push(repr);
    } else if (p.protocol === 1) {
      const repr = IcmpRepr.parse(IcmpPacket.newChecked(l4), false, 0);
      if (typeof repr === 'string') throw new Error(`icmp: ${repr}`);
      icmp.push({ repr, mtu: l4.readUInt16BE(6) });
    }
  }
  return { udp, icmp, maxLen };
}

test('echo of 1, 1400 and 8000 bytes: fragments in are reassembled, the answer goes out in fragments of the MTU', async (t) => {
  const h = await harness(t);
  let expected = 0;
  for (const size of [1, 1400, 8000]) {
    const payload = randomBytes(size);
    h.stack.inputBatch(datagram(40000, h.echoPort, payload));
    expected++;
    await until(() => received(h.out).udp.length >= expected, { timeoutMs: 10_000 });
    const got = received(h.out);
    const last = got.udp[got.udp.length - 1]!;
    t.true(last.payload.equals(payload), `${size} bytes`);
    t.is(last.srcPort, h.echoPort);
    t.is(last.dstPort, 40000);
    t.true(got.maxLen <= MTU);
  }
  const s = h.stack.stats();
  t.is(s.reassembled, 1);
  t.is(s.udpFlows, 1);
  t.is(s.udpDatagramsOut, 3);
  t.is(s.udpDatagramsIn, 3);
  t.true(h.out.length >= 2 + 6, 'the 8000-byte answer left as six fragments');
});

test('1000 datagrams in flight come back in order; separate source ports are separate flows', async (t) => {
  const h = await harness(t);
  const batch: Buffer[] = [];
  for (let i = 0; i < 1000; i++) {
    const p = Buffer.alloc(100);
    p.writeUInt32BE(i, 0);
    batch.push(...datagram(40001 + (i % 2), h.echoPort, p));
  }
  h.stack.inputBatch(batch);
  await until(() => received(h.out).udp.length >= 1000, { timeoutMs: 10_000 });
  const got = received(h.out).udp;
  for (const port of [40001, 40002]) {
    const seq = got.filter((u) => u.dstPort === port).map((u) => u.payload.readUInt32BE(0));
    t.deepEqual(seq, Array.from({ length: 500 }, (_, i) => i * 2 + (port - 40001)));
  }
  t.is(h.stack.stats().udpFlows, 2);
});

test('a closed port on the far side comes back as ICMP port unreachable quoting the datagram', async (t) => {
  const h = await harness(t);
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const closed = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  h.stack.input(datagram(40003, closed, Buffer.from('hello?'))[0]!);
  await until(() => received(h.out).icmp.length >= 1, { timeoutMs: 10_000 });
  const { repr } = received(h.out).icmp[0]!;
  t.is(repr.kind, 'dstUnreachable');
  if (repr.kind !== 'dstUnreachable') return;
  t.is(repr.code, 3);
  // The quote starts with the sender's own IP header and UDP ports: its kernel finds the socket by them.
  const quoted = Ipv4Packet.newUnchecked(repr.data);
  t.is(quoted.srcAddr, PEER.readUInt32BE(0));
  t.is(repr.data.readUInt16BE(quoted.headerLen), 40003);
  t.is(repr.data.readUInt16BE(quoted.headerLen + 2), closed);
  t.is(h.stack.stats().udpIcmpErrors, 1);
});

test('the reassembler: overlapping fragments discard the datagram; duplicates are harmless; bounds hold', (t) => {
  const payload = randomBytes(4000);
  const original = builder.udp(PEER, FAR, { srcPort: 1, dstPort: 2, payload });
  const frags = fragmentIpv4(original, 1500, 0);
  t.is(frags.length, 3);
  // in reverse order, one twice
  const r = new Ipv4Reassembler();
  t.is(r.push(Ipv4Packet.newChecked(frags[2]!), 0), undefined);
  t.is(r.push(Ipv4Packet.newChecked(frags[1]!), 0), undefined);
  t.is(r.push(Ipv4Packet.newChecked(frags[1]!), 0), undefined);
  const whole = r.push(Ipv4Packet.newChecked(frags[0]!), 0);
  t.true(Buffer.isBuffer(whole));
  const wp = Ipv4Packet.newChecked(whole as Buffer);
  t.true(wp.verifyChecksum());
  t.is(wp.totalLen, 20 + 8 + 4000);
  t.false(wp.moreFrags);
  t.true((whole as Buffer).subarray(20).equals(original.subarray(20)), 'UDP header and payload as sent');
  t.deepEqual(r.held, { datagrams: 0, bytes: 0 });

  // An overlap: the second fragment moved back by 8 bytes.
  const o = new Ipv4Reassembler();
  const moved = Buffer.from(frags[1]!);
  const mp = Ipv4Packet.newUnchecked(moved);
  moved.writeUInt16BE(0x2000 | (mp.fragOffset / 8 - 1), 6);
  mp.fillChecksum();
  t.is(o.push(Ipv4Packet.newChecked(frags[0]!), 0), undefined);
  t.is(o.push(Ipv4Packet.newChecked(moved), 0), 'malformed');
  t.deepEqual(o.held, { datagrams: 0, bytes: 0 });

  // Bounds: 100 datagrams' first fragments held at most 8 at once; all gone after the timeout.
  const b = new Ipv4Reassembler({ maxDatagrams: 8, maxBytes: 1 << 20, timeoutMs: 1000 });
  for (let i = 0; i < 100; i++) {
    const f = Buffer.from(frags[0]!);
    const fp = Ipv4Packet.newUnchecked(f);
    fp.ident = i;
    fp.fillChecksum();
    b.push(Ipv4Packet.newChecked(f), 0);
    t.true(b.held.datagrams <= 8);
  }
  t.is(b.discarded, 92);
  b.push(Ipv4Packet.newChecked(frags[2]!), 2000);
  t.is(b.held.datagrams, 1, 'the expired ones went; only the new one is held');
  // Bytes: a bound of 3000 bytes holds two 1480-byte fragments, not three.
  const c = new Ipv4Reassembler({ maxDatagrams: 64, maxBytes: 3000, timeoutMs: 30_000 });
  for (let i = 0; i < 3; i++) {
    const f = Buffer.from(frags[0]!);
    const fp = Ipv4Packet.newUnchecked(f);
    fp.ident = 1000 + i;
    fp.fillChecksum();
    c.push(Ipv4Packet.newChecked(f), 0);
  }
  t.true(c.held.bytes <= 3000);
  t.is(c.held.datagrams, 2);
});

test('fragmentIpv4: offsets in 8-byte units, MF on all but the last, every fragment within the MTU', (t) => {
  const payload = randomBytes(8000);
  const frags = fragmentIpv4(builder.udp(FAR, PEER, { srcPort: 7, dstPort: 9, payload }), 1500, 0);
  t.is(frags.length, 6);
  let next = 0;
  frags.forEach((f, i) => {
    const p = Ipv4Packet.newChecked(f);
    t.true(p.verifyChecksum());
    t.true(f.length <= 1500);
    t.is(p.fragOffset, next);
    t.is(p.moreFrags, i < frags.length - 1);
    t.false(p.dontFrag);
    next += p.totalLen - p.headerLen;
  });
  t.is(next, 8 + 8000);
});
