/**
 * The engine's own answers (DNS over UDP, ICMP echo) against the link MTU and hostile input:
 * findings N4 (DNS answers ignored the MTU; malformed answers went out mangled or threw inside the
 * engine) and N5 (echo replies above the MTU; ICMP checksums trusted because of a virtio header).
 * Every packet the engine emits here is parsed with the checked wire constructors, its checksums
 * verified and its length compared with the MTU. Nothing leaves the process.
 */
import test, { type ExecutionContext } from 'ava';
import dnsPacket from 'dns-packet';
import { PacketBuilder } from '../src/netstack/emit.js';
import { NetStack, type NetStackOptions } from '../src/netstack/stack.js';
import { CHECKSUM_FULL, pseudoHeaderV4, pseudoHeaderV6 } from '../src/netstack/wire/checksum.js';
import { IcmpPacket, IcmpRepr } from '../src/netstack/wire/icmp.js';
import { Ipv4Packet } from '../src/netstack/wire/ipv4.js';
import { Ipv6Packet } from '../src/netstack/wire/ipv6.js';
import { UdpPacket, UdpRepr } from '../src/netstack/wire/udp.js';
import { VIRTIO_NET_HDR_LEN, VirtioFlags, VirtioNetHdr, VirtioRepr } from '../src/netstack/wire/virtio.js';
import { until } from './helpers/poll.js';

const LOCAL4 = Buffer.from([198, 18, 189, 2]);
const DNS4 = Buffer.from([198, 19, 0, 10]);
const PEER4 = Buffer.from([198, 18, 189, 20]);
const LOCAL6 = Buffer.from('fd00fd00000000000000000000000002', 'hex');
const DNS6 = Buffer.from('fd00fd00000000000000000000000053', 'hex');
const PEER6 = Buffer.from('fd00fd00000000000000000000000020', 'hex');

interface Out {
  v6: boolean;
  /** length of the IP packet (virtio header not counted) */
  ipLen: number;
  udp: UdpRepr | null;
  icmp: IcmpRepr | null;
}

/**
 * Parses one emitted packet with the checked constructors; throws when anything does not parse,
 * a checksum does not verify (a partial one is never expected here), or the IP length fields
 * disagree with the buffer.
 */
function parseOut(packet: Buffer, vnet: boolean): Out {
  let ip = packet;
  if (vnet) {
    const v = VirtioRepr.parse(VirtioNetHdr.newChecked(packet));
    if (typeof v === 'string' || v.csum !== null || v.gso !== null) throw new Error(`unexpected virtio header ${JSON.stringify(v)}`);
    ip = packet.subarray(VIRTIO_NET_HDR_LEN);
  }
  const v6 = ip[0]! >> 4 === 6;
  let l4: Buffer;
  let proto: number;
  let pseudo: (proto: number, len: number) => number;
  if (v6) {
    const p = Ipv6Packet.newChecked(ip);
    if (ip.length !== 40 + p.payloadLen) throw new Error('ipv6 length disagrees with the buffer');
    l4 = p.payload;
    proto = p.nextHeader;
    pseudo = (pr, len) => pseudoHeaderV6(ip, 8, ip, 24, pr, len);
  } else {
    const p = Ipv4Packet.newChecked(ip);
    if (!p.verifyChecksum()) throw new Error('bad ipv4 header checksum');
    if (ip.length !== p.totalLen) throw new Error('ipv4 length disagrees with the buffer');
    l4 = p.payload;
    proto = p.protocol;
    pseudo = (pr, len) => pseudoHeaderV4(ip, 12, ip, 16, pr, len);
  }
  const out: Out = { v6, ipLen: ip.length, udp: null, icmp: null };
  if (proto === 17) {
    const r = UdpRepr.parse(UdpPacket.newChecked(l4), pseudo(17, l4.length), CHECKSUM_FULL, v6);
    if (typeof r === 'string') throw new Error(`udp: ${r}`);
    out.udp = r;
  } else if (proto === 1 || proto === 58) {
    const r = IcmpRepr.parse(IcmpPacket.newChecked(l4), v6, v6 ? pseudo(58, l4.length) : 0);
    if (typeof r === 'string') throw new Error(`icmp: ${r}`);
    out.icmp = r;
  } else {
    throw new Error(`unexpected protocol ${proto}`);
  }
  return out;
}

interface Harness {
  stack: NetStack;
  builder: PacketBuilder;
  out: Out[];
  /** packets that did not parse or verify, with why */
  bad: string[];
  mtu: number;
}

function harness(t: ExecutionContext, opts: Partial<Omit<NetStackOptions, 'emit'>> = {}): Harness {
  const mtu = opts.mtu ?? 1500;
  const vnet = opts.offload !== undefined && opts.offload !== false;
  const h: Harness = { stack: undefined as unknown as NetStack, builder: new PacketBuilder({ vnetHdr: vnet }), out: [], bad: [], mtu };
  h.stack = new NetStack({
    dialer: { dial: () => Promise.reject(new Error('no dials in this test')) },
    dnsAddresses: ['198.19.0.10', 'fd00:fd00::53'],
    ...opts,
    mtu,
    emit: (p) => {
      try {
        const o = parseOut(p, vnet);
        if (o.ipLen > mtu) h.bad.push(`${o.ipLen}-byte packet on a ${mtu}-byte link`);
        h.out.push(o);
      } catch (e) {
        h.bad.push((e as Error).message);
      }
    },
  });
  t.teardown(() => h.stack.close());
  return h;
}

// ---------------------------------------------------------------------------------------------
// DNS (N4)

const NAME = 'big.example.test';

function query(id: number, edns?: number): Buffer {
  return dnsPacket.encode({
    type: 'query', id, flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: 'A', name: NAME, class: 'IN' }],
    additionals: edns === undefined ? [] : [{
      type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [],
    }],
  });
}

/** A well-formed answer to `q` of at least `size` bytes: A records of 32 bytes each. */
function bigAnswer(q: Buffer, size: number): Buffer {
  const d = dnsPacket.decode(q);
  const n = Math.ceil(Math.max(0, size - 12 - 22) / 32);
  const answers = Array.from({ length: n }, (_, i) => ({
    type: 'A' as const, name: NAME, class: 'IN' as const, ttl: 60, data: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  }));
  return dnsPacket.encode({ type: 'response', id: d.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: d.questions, answers });
}

/**
 * A structurally valid answer of at least `size` bytes made of questions (22 bytes each): the old
 * truncation kept every question, so it was not shortened at all.
 */
function manyQuestions(q: Buffer, size: number): Buffer {
  const d = dnsPacket.decode(q);
  const questions = Array.from({ length: Math.ceil((size - 12) / 22) }, () => d.questions![0]!);
  return dnsPacket.encode({ type: 'response', id: d.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions });
}

/** RCODE, the low 4 bits of the flags word (RFC 1035 §4.1.1). */
function rcodeOf(msg: Buffer): number {
  return msg.readUInt16BE(2) & 0xf;
}

/** Sends `q` from the local program to the DNS address; resolves with the one answer's payload. */
async function ask(h: Harness, q: Buffer, v6 = false): Promise<Buffer> {
  const before = h.out.length;
  const pkt = h.builder.udp(v6 ? LOCAL6 : LOCAL4, v6 ? DNS6 : DNS4, { srcPort: 40053, dstPort: 53, payload: q });
  h.stack.input(pkt);
  await until(() => h.out.length > before || h.bad.length > 0, { timeoutMs: 5000, intervalMs: 2 });
  if (h.bad.length > 0) throw new Error(h.bad.join('; '));
  const o = h.out[before]!;
  if (o.udp === null) throw new Error('not a UDP answer');
  return Buffer.from(o.udp.payload);
}

/** Header + question with TC set and no records, answering `q` (RFC 1035 §4.1.1, RFC 2181 §9). */
function assertTruncated(t: ExecutionContext, payload: Buffer, q: Buffer, limit: number): void {
  t.true(payload.length <= limit, `${payload.length} > ${limit}`);
  const d = dnsPacket.decode(payload);
  t.is(d.id, dnsPacket.decode(q).id);
  t.true(d.flag_tc, 'TC set');
  t.is(rcodeOf(payload), 0, 'NOERROR');
  t.deepEqual(d.questions, [{ type: 'A', name: NAME, class: 'IN' }]);
  t.is(d.answers!.length + d.authorities!.length + d.additionals!.length, 0);
}

test('dnsAnswer_largerThanMtu_truncatedWithTcWithinLink', async (t) => {
  // Client allows 4096 (EDNS0), link allows 1500 - 20 - 8 = 1472: the link wins. Answers of 3000
  // bytes, made of records or of questions (the fuzzer's 3028-byte packet).
  for (const make of [bigAnswer, manyQuestions]) {
    const h = harness(t, { resolveDns: async (q) => make(q, 3000) });
    const q = query(0x1234, 4096);
    assertTruncated(t, await ask(h, q), q, 1472);
    // IPv6: 1500 - 40 - 8.
    const q6 = query(0x1235, 4096);
    assertTruncated(t, await ask(h, q6, true), q6, 1452);
    t.is(h.stack.stats().dropped.internal, 0);
    h.stack.close();
  }
});

test('dnsAnswer_withoutEdns_limitedTo512', async (t) => {
  // RFC 1035 §4.2.1: a client that sent no OPT record takes 512 bytes, whatever the link.
  const h = harness(t, { resolveDns: async (q) => bigAnswer(q, 600) });
  const q = query(7);
  assertTruncated(t, await ask(h, q), q, 512);
});

test('dnsAnswer_fitsEdnsSize_sentWhole', async (t) => {
  // RFC 6891 §6.2.3: the requestor's payload size (1232) is honoured; 1000 bytes go out whole.
  const h = harness(t, { resolveDns: async (q) => bigAnswer(q, 1000) });
  const q = query(8, 1232);
  const a = await ask(h, q);
  t.deepEqual(a, bigAnswer(q, 1000));
  t.false(dnsPacket.decode(a).flag_tc);
});

test('dnsAnswer_ednsAboveSmallMtu_limitedByLink', async (t) => {
  // A 576-byte link: room for 548 bytes of DNS over IPv4; the client's 1232 does not matter.
  const h = harness(t, { mtu: 576, resolveDns: async (q) => bigAnswer(q, 540) });
  const q = query(9, 1232);
  t.is((await ask(h, q)).length, bigAnswer(q, 540).length, 'a 540-byte answer fits');
  h.stack.close();
  const h2 = harness(t, { mtu: 576, resolveDns: async (q2) => bigAnswer(q2, 560) });
  assertTruncated(t, await ask(h2, q), q, 548);
});

test('dnsAnswer_of70kB_truncatedNotInternal', async (t) => {
  // More than a UDP datagram can carry: it used to throw inside the engine (counted 'internal').
  for (const make of [bigAnswer, manyQuestions]) {
    const h = harness(t, { resolveDns: async (q) => make(q, 70_000) });
    const q = query(10, 4096);
    assertTruncated(t, await ask(h, q), q, 1472);
    t.is(h.stack.stats().dropped.internal, 0);
    h.stack.close();
  }
});

/** SERVFAIL answering `q` (its id, RD and question), no records. */
function assertServfail(t: ExecutionContext, payload: Buffer, q: Buffer): void {
  const d = dnsPacket.decode(payload);
  t.is(d.id, dnsPacket.decode(q).id);
  t.is(rcodeOf(payload), 2, 'SERVFAIL');
  t.true(d.flag_rd);
  t.deepEqual(d.questions, [{ type: 'A', name: NAME, class: 'IN' }]);
  t.is(d.answers!.length + d.authorities!.length + d.additionals!.length, 0);
}

test('dnsAnswer_claimingMoreQuestionsThanItHolds_servfailCounted', async (t) => {
  // A small answer whose header claims 0xffff questions: it went out as it was.
  const h = harness(t, {
    resolveDns: async (q) => {
      const a = bigAnswer(q, 100);
      a.writeUInt16BE(0xffff, 4);
      return a;
    },
  });
  const q = query(11, 4096);
  assertServfail(t, await ask(h, q), q);
  const st = h.stack.stats();
  t.is(st.dropped.dnsMalformed, 1);
  t.is(st.dropped.internal, 0);
});

test('dnsAnswer_recordRunningPastTheEnd_servfailCounted', async (t) => {
  // A large answer whose last record is cut: neither sent mangled nor thrown on (70 kB and 3 kB).
  for (const size of [70_000, 3000, 300]) {
    const h = harness(t, { resolveDns: async (q) => bigAnswer(q, size).subarray(0, -2) });
    const q = query(12, 4096);
    assertServfail(t, await ask(h, q), q);
    const st = h.stack.stats();
    t.is(st.dropped.dnsMalformed, 1, `${size}`);
    t.is(st.dropped.internal, 0, `${size}`);
    h.stack.close();
  }
});

// ---------------------------------------------------------------------------------------------
// ICMP echo (N5)

function echoRequest(b: PacketBuilder, v6: boolean, data: Buffer, seqNo = 1): Buffer {
  return b.icmp(v6 ? LOCAL6 : LOCAL4, v6 ? PEER6 : PEER4, { kind: 'echoRequest', ident: 0x4242, seqNo, data });
}

const reachable = async (): Promise<boolean> => true;

test('icmpEcho_requestLargerThanMtu_v4ReplyTruncatedToMtu', async (t) => {
  // A 3028-byte request arrives unfragmented on a 1500-byte link (hostile input; a kernel would
  // have fragmented it, and fragments are dropped). RFC 1122 §3.2.2.6: the reply is truncated to
  // what the link carries and sent.
  const h = harness(t, { probe: reachable });
  const data = Buffer.alloc(3000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  h.stack.input(echoRequest(h.builder, false, data));
  await until(() => h.out.length > 0 || h.bad.length > 0, { timeoutMs: 5000, intervalMs: 2 });
  t.deepEqual(h.bad, []);
  const r = h.out[0]!;
  t.is(r.ipLen, 1500);
  t.like(r.icmp, { kind: 'echoReply', ident: 0x4242, seqNo: 1 });
  const got = (r.icmp as { data: Buffer }).data;
  t.deepEqual(got, data.subarray(0, 1500 - 20 - 8));
  // A request that fits is echoed whole.
  h.stack.input(echoRequest(h.builder, false, data.subarray(0, 1472), 2));
  await until(() => h.out.length > 1, { timeoutMs: 5000, intervalMs: 2 });
  t.deepEqual((h.out[1]!.icmp as { data: Buffer }).data, data.subarray(0, 1472));
  t.deepEqual(h.bad, []);
});

test('icmpEcho_requestLargerThanMtu_v6Dropped', async (t) => {
  // RFC 4443 §4.2: the data is returned "entirely and unmodified"; we do not fragment, so no reply.
  const h = harness(t, { probe: reachable });
  h.stack.input(echoRequest(h.builder, true, Buffer.alloc(1500 - 40 - 8 + 1, 0x5a)));
  await until(() => h.stack.stats().dropped.tooBig === 1, { timeoutMs: 5000, intervalMs: 2 });
  h.stack.input(echoRequest(h.builder, true, Buffer.alloc(1500 - 40 - 8, 0x5a), 2));
  await until(() => h.out.length > 0, { timeoutMs: 5000, intervalMs: 2 });
  t.is(h.out.length, 1);
  t.is(h.out[0]!.ipLen, 1500);
  t.deepEqual(h.bad, []);
});

/** An echo request with a virtio header whose flags claim the checksum is handled, and a wrong ICMP checksum. */
function offloadedBadEcho(b: PacketBuilder, v6: boolean, flags: number): Buffer {
  const p = echoRequest(b, v6, Buffer.from('ping with a wrong checksum'));
  const hdr = VirtioNetHdr.newUnchecked(p);
  hdr.flags = flags;
  if ((flags & VirtioFlags.NeedsCsum) !== 0) {
    hdr.csumStart = v6 ? 40 : 20;
    hdr.csumOffset = 2;
  }
  const ck = VIRTIO_NET_HDR_LEN + (v6 ? 40 : 20) + 2;
  p.writeUInt16BE(p.readUInt16BE(ck) ^ 0x0f0f, ck);
  return p;
}

test('icmpEcho_offloadFlagsDoNotMakeIcmpChecksumTrusted', async (t) => {
  // virtio's DATA_VALID / NEEDS_CSUM are about TCP/UDP checksum offload: an ICMP checksum is
  // verified anyway, and a reply never inherits a wrong one.
  const h = harness(t, { offload: true, probe: reachable });
  let n = 0;
  for (const v6 of [false, true]) {
    for (const flags of [VirtioFlags.DataValid, VirtioFlags.NeedsCsum]) {
      h.stack.input(offloadedBadEcho(h.builder, v6, flags));
      n++;
      await until(() => h.stack.stats().dropped.checksum === n, { timeoutMs: 5000, intervalMs: 2 });
    }
  }
  // A correct one with the same flags is answered, with a correct checksum.
  const good = echoRequest(h.builder, true, Buffer.from('ping'));
  VirtioNetHdr.newUnchecked(good).flags = VirtioFlags.DataValid;
  h.stack.input(good);
  await until(() => h.out.length > 0 || h.bad.length > 0, { timeoutMs: 5000, intervalMs: 2 });
  t.deepEqual(h.bad, []);
  t.is(h.out.length, 1);
  t.like(h.out[0]!.icmp, { kind: 'echoReply', ident: 0x4242 });
  t.is(h.stack.stats().echoReplies, 1);
});
