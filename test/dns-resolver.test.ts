/**
 * ClusterResolver and DnsServer over real sockets. The "cluster side" is an in-test zone behind a
 * `dnsQuery` function (the far side, not the unit under test); the machine's original resolver is
 * a real UDP/TCP DNS server on 127.0.0.1 (port 0).
 */
import test, { type ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { ClusterResolver, DnsServer, netstackDnsHandler } from '../src/dns/index.js';
import { DnsQueryError } from '../src/errors.js';
import { DnsFrameDecoder, frameDnsMessage } from '../src/protocol/index.js';

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;

function rcodeOf(msg: Buffer): number {
  return msg.readUInt16BE(2) & 0xf;
}

function query(name: string, type: dnsPacket.RecordType = 'A', id = 0x1234): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
}

function soa(zone: string, minimum: number, ttl = 300): dnsPacket.Answer {
  return { type: 'SOA', name: zone, ttl, class: 'IN', data: { mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 60, retry: 60, expire: 600, minimum } };
}

interface Zone {
  /** lowercased name -> A records (empty: the name exists without A data) */
  a: Map<string, string[]>;
  cname: Map<string, string>;
  ttl: number;
  soaMinimum: number;
  apex: string;
}

/** Answers `msg` from `zone` like an authoritative server: A, CNAME chains, NXDOMAIN with SOA. */
function answerFromZone(zone: Zone, msg: Buffer, extra: Partial<{ tc: boolean }> = {}): Buffer {
  const q = dnsPacket.decode(msg);
  const question = q.questions![0]!;
  const answers: dnsPacket.Answer[] = [];
  let name = question.name.toLowerCase();
  for (let i = 0; i < 5; i++) {
    const target = zone.cname.get(name);
    if (target === undefined) break;
    answers.push({ type: 'CNAME', name, ttl: zone.ttl, class: 'IN', data: target });
    name = target;
  }
  const a = zone.a.get(name);
  let rcode = 0;
  const authorities: dnsPacket.Answer[] = [];
  if (a !== undefined && question.type === 'A') for (const ip of a) answers.push({ type: 'A', name, ttl: zone.ttl, class: 'IN', data: ip });
  else if (a === undefined && answers.length === 0) rcode = 3;
  if (answers.length === 0 || (a === undefined && answers.length > 0)) authorities.push(soa(zone.apex, zone.soaMinimum));
  let flags = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | rcode;
  if (extra.tc) flags |= dnsPacket.TRUNCATED_RESPONSE;
  return dnsPacket.encode({ type: 'response', id: q.id, flags, questions: [question], answers: extra.tc ? [] : answers, authorities: extra.tc ? [] : authorities });
}

function clusterZone(): Zone {
  return {
    apex: 'cluster.local',
    ttl: 30,
    soaMinimum: 10,
    a: new Map([
      ['web.default.svc.cluster.local', ['198.19.1.1']],
      ['db.other.svc.cluster.local', ['198.19.2.2']],
      ['cache.default.svc.cluster.local', ['198.19.3.3', '198.19.3.4']],
      ['noaddr.default.svc.cluster.local', []],
    ]),
    cname: new Map([['ext.default.svc.cluster.local', 'web.default.svc.cluster.local']]),
  };
}

/** The far side: a dnsQuery that answers from a zone, counting and remembering what it was asked. */
function fakeCluster(zone = clusterZone()) {
  const asked: string[] = [];
  let failing = false;
  return {
    asked,
    setFailing(v: boolean) {
      failing = v;
    },
    dialer: {
      async dnsQuery(msg: Buffer): Promise<Buffer> {
        asked.push(dnsPacket.decode(msg).questions![0]!.name);
        if (failing) throw new DnsQueryError('tunnel', 'the tunnel is down');
        const d = dnsPacket.decode(msg);
        // The cluster's DNS itself failing for one name.
        if (d.questions![0]!.name.toLowerCase() === 'broken.default.svc.cluster.local') {
          return dnsPacket.encode({ type: 'response', id: d.id, flags: dnsPacket.RECURSION_DESIRED | 2, questions: d.questions });
        }
        return answerFromZone(zone, msg);
      },
    },
  };
}

/** A real DNS server on 127.0.0.1 (UDP and TCP, one port): the machine's original resolver. */
async function upstreamServer(t: ExecutionContext, options: { truncateUdp?: (name: string) => boolean } = {}) {
  const zone: Zone = {
    apex: 'example.test',
    ttl: 120,
    soaMinimum: 20,
    a: new Map([
      ['www.example.test', ['198.18.200.1']],
      ['intranet', ['198.18.200.2']],
      ['broken', ['198.18.200.4']],
      ['web.corp.test', ['198.18.200.3']],
      ['big.example.test', Array.from({ length: 60 }, (_, i) => `198.18.201.${i + 1}`)],
    ]),
    cname: new Map(),
  };
  const log = { udp: [] as string[], tcp: [] as string[], lastAnswer: undefined as Buffer | undefined };
  // UDP and TCP on one port: the UDP port the kernel picks may be taken for TCP (an outgoing
  // connection's ephemeral port on a busy machine); then pick again, a few times at most.
  let udp = dgram.createSocket('udp4');
  let port = 0;
  const tcp = net.createServer();
  for (let attempt = 1; ; attempt++) {
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    port = udp.address().port;
    const listened = await new Promise<Error | undefined>((r) => {
      tcp.once('error', r);
      tcp.listen(port, '127.0.0.1', () => {
        tcp.off('error', r);
        r(undefined);
      });
    });
    if (!listened) break;
    udp.close();
    if (attempt >= 10) throw listened;
    udp = dgram.createSocket('udp4');
  }
  udp.on('message', (msg, rinfo) => {
    const name = dnsPacket.decode(msg).questions![0]!.name;
    log.udp.push(name);
    const answer = answerFromZone(zone, msg, { tc: options.truncateUdp?.(name) ?? false });
    log.lastAnswer = answer;
    udp.send(answer, rinfo.port, rinfo.address);
  });
  tcp.on('connection', (sock) => {
    const dec = new DnsFrameDecoder();
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: Buffer) => {
      for (const msg of dec.push(chunk)) {
        log.tcp.push(dnsPacket.decode(msg).questions![0]!.name);
        const answer = answerFromZone(zone, msg);
        log.lastAnswer = answer;
        sock.write(frameDnsMessage(answer));
      }
    });
  });
  t.teardown(() => {
    udp.close();
    tcp.close();
  });
  return { server: `127.0.0.1:${port}`, log };
}

/** Upstream timeout 3 s: an answering upstream must beat it also on a loaded machine. */
function resolverWith(cluster: ReturnType<typeof fakeCluster>, upstream: string[], extra: Partial<ConstructorParameters<typeof ClusterResolver>[0]> = {}) {
  return new ClusterResolver({ dialer: cluster.dialer, namespace: 'default', upstream: { servers: upstream, timeoutMs: 3000, attempts: 1 }, ...extra });
}

function decodeAnswer(buf: Buffer | undefined): dnsPacket.DecodedPacket {
  if (buf === undefined) throw new Error('no answer');
  return dnsPacket.decode(buf);
}

function aRecords(p: dnsPacket.DecodedPacket): Array<{ name: string; data: string; ttl: number }> {
  return (p.answers ?? []).flatMap((r) => (r.type === 'A' ? [{ name: r.name, data: r.data, ttl: r.ttl ?? -1 }] : []));
}

test('a cluster FQDN goes through the tunnel as asked', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const p = decodeAnswer(await r.answer(query('web.default.svc.cluster.local', 'A', 0xbeef)));
  t.is(p.id, 0xbeef);
  t.deepEqual(aRecords(p).map((a) => a.data), ['198.19.1.1']);
  t.deepEqual(cluster.asked, ['web.default.svc.cluster.local']);
  t.deepEqual(up.log.udp, []);
});

test('svc is asked as svc.<ns>.svc.<domain> and answered with the asked name as owner', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const raw = await r.answer(query('WeB', 'A', 7));
  const p = decodeAnswer(raw);
  t.is(p.id, 7);
  t.is(rcodeOf(raw!), RCODE.NOERROR);
  t.is(p.questions![0]!.name, 'WeB', 'question as the client wrote it');
  t.deepEqual(aRecords(p).map((a) => [a.name, a.data]), [['WeB', '198.19.1.1']]);
  t.deepEqual(cluster.asked, ['web.default.svc.cluster.local']);
  t.deepEqual(up.log.udp, []);
});

test('svc.ns is asked as svc.ns.svc.<domain>; several records all get the asked owner', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const p = decodeAnswer(await r.answer(query('db.other')));
  t.deepEqual(aRecords(p).map((a) => [a.name, a.data]), [['db.other', '198.19.2.2']]);
  const p2 = decodeAnswer(await r.answer(query('cache')));
  t.deepEqual(aRecords(p2).map((a) => [a.name, a.data]).sort(), [['cache', '198.19.3.3'], ['cache', '198.19.3.4']]);
  t.deepEqual(cluster.asked, ['db.other.svc.cluster.local', 'cache.default.svc.cluster.local']);
});

test('a CNAME inside the cluster is flattened: A records owned by the asked name, no CNAME', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const p = decodeAnswer(await r.answer(query('ext')));
  t.deepEqual((p.answers ?? []).map((a) => [a.type, a.name]), [['A', 'ext']]);
  t.deepEqual(aRecords(p).map((a) => a.data), ['198.19.1.1']);
});

test('a short name the cluster does not know goes upstream with the original name', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const p = decodeAnswer(await r.answer(query('intranet')));
  t.deepEqual(aRecords(p).map((a) => [a.name, a.data]), [['intranet', '198.18.200.2']]);
  t.deepEqual(cluster.asked, ['intranet.default.svc.cluster.local']);
  t.deepEqual(up.log.udp, ['intranet']);
  t.is(r.counters.shortNameFallbacks, 1);
});

test('a short name the cluster answers with SERVFAIL goes upstream too', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const p = decodeAnswer(await r.answer(query('broken')));
  t.deepEqual(aRecords(p).map((a) => [a.name, a.data]), [['broken', '198.18.200.4']]);
  t.deepEqual(up.log.udp, ['broken']);
});

test('a short name that exists without data of the asked type is NODATA, not asked upstream', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const raw = await r.answer(query('noaddr'));
  t.is(rcodeOf(raw!), RCODE.NOERROR);
  t.is(decodeAnswer(raw).answers?.length, 0);
  t.deepEqual(up.log.udp, []);
});

test('a short name under one of the machine\'s search domains is tried in the cluster first', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server], { searchDomains: ['corp.test'] });
  const p = decodeAnswer(await r.answer(query('web.corp.test')));
  t.deepEqual(aRecords(p).map((a) => [a.name, a.data]), [['web.corp.test', '198.19.1.1']]);
  t.deepEqual(up.log.udp, []);
});

test('other names go upstream and come back byte for byte but for the id', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const raw = await r.answer(query('www.example.test', 'A', 0x4242));
  t.truthy(raw);
  t.is(raw!.readUInt16BE(0), 0x4242);
  const sent = up.log.lastAnswer!;
  t.deepEqual(raw!.subarray(2), sent.subarray(2));
  t.deepEqual(cluster.asked, []);
  t.deepEqual(up.log.udp, ['www.example.test']);
});

test('a truncated UDP answer is asked again over TCP', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t, { truncateUdp: (n) => n === 'big.example.test' });
  const r = resolverWith(cluster, [up.server]);
  const raw = await r.answer(query('big.example.test'));
  const p = decodeAnswer(raw);
  t.is(aRecords(p).length, 60);
  t.false(Boolean(p.flag_tc));
  t.deepEqual(up.log.udp, ['big.example.test']);
  t.deepEqual(up.log.tcp, ['big.example.test']);
});

test('a server that does not answer is skipped for the next one', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
  let silentGot = 0;
  silent.on('message', () => silentGot++);
  t.teardown(() => silent.close());
  const r = resolverWith(cluster, [`127.0.0.1:${silent.address().port}`, up.server]);
  const p = decodeAnswer(await r.answer(query('www.example.test')));
  t.deepEqual(aRecords(p).map((a) => a.data), ['198.18.200.1']);
  t.is(silentGot, 1);
});

test('no upstream answering at all gives SERVFAIL', async (t) => {
  const cluster = fakeCluster();
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
  t.teardown(() => silent.close());
  const r = resolverWith(cluster, [`127.0.0.1:${silent.address().port}`]);
  const raw = await r.answer(query('www.example.test', 'A', 99));
  t.is(raw!.readUInt16BE(0), 99);
  t.is(rcodeOf(raw!), RCODE.SERVFAIL);
});

test('cache: hits do not ask again, TTLs count down, entries expire (record TTL below the cap)', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  let now = 1_000_000;
  const r = resolverWith(cluster, [up.server], { now: () => now, cacheTtlSeconds: 60 });
  const first = decodeAnswer(await r.answer(query('web', 'A', 1)));
  t.is(aRecords(first)[0]!.ttl, 30);
  now += 10_000;
  const second = decodeAnswer(await r.answer(query('WEB', 'A', 2)));
  t.is(second.id, 2);
  t.is(second.questions![0]!.name, 'WEB', 'question case as asked, also from the cache');
  t.deepEqual(aRecords(second).map((a) => [a.name, a.ttl]), [['WEB', 20]]);
  t.is(cluster.asked.length, 1);
  t.is(r.counters.cacheHits, 1);
  now += 20_000; // 30 s after the answer: expired
  await r.answer(query('web', 'A', 3));
  t.is(cluster.asked.length, 2);
});

test('cache: --dnsCacheTtl caps record TTLs; 0 turns the cache off', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  let now = 5_000_000;
  const r = resolverWith(cluster, [up.server], { now: () => now, cacheTtlSeconds: 5 });
  await r.answer(query('web.default.svc.cluster.local'));
  now += 4_000;
  await r.answer(query('web.default.svc.cluster.local'));
  t.is(cluster.asked.length, 1);
  now += 1_000;
  await r.answer(query('web.default.svc.cluster.local'));
  t.is(cluster.asked.length, 2);

  const off = resolverWith(cluster, [up.server], { now: () => now, cacheTtlSeconds: 0 });
  await off.answer(query('web.default.svc.cluster.local'));
  await off.answer(query('web.default.svc.cluster.local'));
  t.is(cluster.asked.length, 4);
});

test('cache: negative answers live for the SOA minimum; upstream answers are cached too', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  let now = 9_000_000;
  const r = resolverWith(cluster, [up.server], { now: () => now, cacheTtlSeconds: 60 });
  const nx = await r.answer(query('nope.default.svc.cluster.local'));
  t.is(rcodeOf(nx!), RCODE.NXDOMAIN);
  now += 9_000;
  t.is(rcodeOf((await r.answer(query('nope.default.svc.cluster.local')))!), RCODE.NXDOMAIN);
  t.is(cluster.asked.length, 1, 'within the SOA minimum (10 s)');
  now += 1_000;
  await r.answer(query('nope.default.svc.cluster.local'));
  t.is(cluster.asked.length, 2, 'expired after 10 s');

  await r.answer(query('www.example.test'));
  await r.answer(query('www.example.test'));
  t.is(up.log.udp.length, 1);
});

test('cache: bounded size, least recently used goes first', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server], { cacheSize: 2 });
  await r.answer(query('web.default.svc.cluster.local'));
  await r.answer(query('db.other.svc.cluster.local'));
  await r.answer(query('web.default.svc.cluster.local')); // hit: web is now the most recent
  await r.answer(query('cache.default.svc.cluster.local')); // evicts db
  t.is(r.cacheSize, 2);
  t.is(cluster.asked.length, 3);
  await r.answer(query('web.default.svc.cluster.local'));
  t.is(cluster.asked.length, 3);
  await r.answer(query('db.other.svc.cluster.local'));
  t.is(cluster.asked.length, 4);
});

test('SERVFAIL when the tunnel fails; short names then still reach the upstream', async (t) => {
  const cluster = fakeCluster();
  cluster.setFailing(true);
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const raw = await r.answer(query('web.default.svc.cluster.local', 'A', 0x0a0b));
  t.is(raw!.readUInt16BE(0), 0x0a0b);
  t.is(rcodeOf(raw!), RCODE.SERVFAIL);
  t.is(decodeAnswer(raw).questions![0]!.name, 'web.default.svc.cluster.local');
  const p = decodeAnswer(await r.answer(query('intranet')));
  t.deepEqual(aRecords(p).map((a) => a.data), ['198.18.200.2']);
  // SERVFAIL is not cached: the tunnel back up answers at once.
  cluster.setFailing(false);
  t.is(rcodeOf((await r.answer(query('web.default.svc.cluster.local')))!), RCODE.NOERROR);
});

test('SERVFAIL for cluster names when the far side has no resolver', async (t) => {
  const up = await upstreamServer(t);
  const r = new ClusterResolver({ dialer: {}, namespace: 'default', upstream: { servers: [up.server] } });
  t.is(rcodeOf((await r.answer(query('web.default.svc.cluster.local')))!), RCODE.SERVFAIL);
  t.is(rcodeOf((await r.answer(query('www.example.test')))!), RCODE.NOERROR);
});

test('garbage: FORMERR when an id is readable, nothing otherwise; responses and other opcodes', async (t) => {
  const cluster = fakeCluster();
  const r = resolverWith(cluster, []);
  t.is(await r.answer(Buffer.from([0x12])), undefined);
  t.is(await r.answer(Buffer.alloc(0)), undefined);
  const short = await r.answer(Buffer.from([0xab, 0xcd, 1, 2, 3]));
  t.is(short!.readUInt16BE(0), 0xabcd);
  t.is(rcodeOf(short!), RCODE.FORMERR);
  // A label running past the end of the message.
  const bad = query('web.default.svc.cluster.local', 'A', 0x5555).subarray(0, 20);
  const formerr = await r.answer(bad);
  t.is(formerr!.readUInt16BE(0), 0x5555);
  t.is(rcodeOf(formerr!), RCODE.FORMERR);
  // A compression pointer in the question.
  const ptr = Buffer.from(query('a', 'A', 0x6666));
  ptr[12] = 0xc0;
  ptr[13] = 0x0c;
  t.is(rcodeOf((await r.answer(ptr))!), RCODE.FORMERR);
  // Random bytes: never throws, always FORMERR or a drop.
  for (let i = 0; i < 2000; i++) {
    const junk = Buffer.from(Array.from({ length: 12 + (i % 60) }, () => Math.floor(Math.random() * 256)));
    junk[2] = junk[2]! & 0x07; // a query with opcode 0, so it is parsed
    const a = await r.answer(junk);
    if (a !== undefined) t.true([RCODE.FORMERR, RCODE.SERVFAIL, RCODE.NXDOMAIN, RCODE.NOERROR].includes(rcodeOf(a) as 0));
  }
  const response = Buffer.from(query('web'));
  response.writeUInt16BE(response.readUInt16BE(2) | 0x8000, 2);
  t.is(await r.answer(response), undefined);
  const notify = Buffer.from(query('web'));
  notify.writeUInt16BE((notify.readUInt16BE(2) & ~0x7800) | (4 << 11), 2);
  t.is(rcodeOf((await r.answer(notify))!), RCODE.NOTIMP);
});

test('our own address is never an upstream (no loops)', (t) => {
  const r = new ClusterResolver({ dialer: {}, namespace: 'default', upstream: { servers: ['127.0.0.1', '198.18.130.5', 'bogus'] }, localAddresses: ['127.0.0.1'] });
  t.deepEqual(r.upstreamServers.map((s) => s.host), ['198.18.130.5']);
  t.deepEqual(r.droppedServers, ['127.0.0.1', 'bogus']);
});

test('DnsServer answers over UDP and TCP; a UDP answer too big is truncated with TC', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server]);
  const server = new DnsServer(r);
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close());

  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  const udpAsk = (msg: Buffer) =>
    new Promise<Buffer>((resolve) => {
      client.once('message', (m) => resolve(m));
      client.send(msg, port, '127.0.0.1');
    });
  const small = decodeAnswer(await udpAsk(query('web', 'A', 11)));
  t.deepEqual(aRecords(small).map((a) => [a.name, a.data]), [['web', '198.19.1.1']]);
  const big = decodeAnswer(await udpAsk(query('big.example.test', 'A', 12)));
  t.true(Boolean(big.flag_tc));
  t.is(big.answers?.length ?? 0, 0);

  const sock = net.connect(port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  const dec = new DnsFrameDecoder();
  const got: Buffer[] = [];
  const two = new Promise<void>((resolve) => {
    sock.on('data', (c: Buffer) => {
      got.push(...dec.push(c));
      if (got.length === 2) resolve();
    });
  });
  sock.write(Buffer.concat([frameDnsMessage(query('big.example.test', 'A', 21)), frameDnsMessage(query('db.other', 'A', 22))]));
  await two;
  const byId = new Map(got.map((m) => [m.readUInt16BE(0), decodeAnswer(m)]));
  t.is(aRecords(byId.get(21)!).length, 60);
  t.deepEqual(aRecords(byId.get(22)!).map((a) => a.name), ['db.other']);
});

test('netstackDnsHandler: answers pass through, dropped messages reject', async (t) => {
  const cluster = fakeCluster();
  const handler = netstackDnsHandler(resolverWith(cluster, []));
  t.deepEqual(addressesOf(await handler(query('web'))), ['198.19.1.1']);
  await t.throwsAsync(handler(Buffer.from([1])), { instanceOf: RangeError });
});

function addressesOf(m: Buffer): string[] {
  return aRecords(dnsPacket.decode(m)).map((a) => a.data);
}

test('identical questions in flight share one lookup; each asker gets its own id and name case', async (t) => {
  const cluster = fakeCluster();
  const up = await upstreamServer(t);
  const r = resolverWith(cluster, [up.server], { cacheTtlSeconds: 0 });
  const [a, b, c] = await Promise.all([r.answer(query('web', 'A', 1)), r.answer(query('WEB', 'A', 2)), r.answer(query('www.example.test', 'A', 3))]);
  t.is(cluster.asked.length, 1);
  t.is(up.log.udp.length, 1);
  const pa = decodeAnswer(a);
  const pb = decodeAnswer(b);
  t.deepEqual([pa.id, pa.questions![0]!.name, aRecords(pa)[0]!.name], [1, 'web', 'web']);
  t.deepEqual([pb.id, pb.questions![0]!.name, aRecords(pb)[0]!.name], [2, 'WEB', 'WEB']);
  t.is(decodeAnswer(c).id, 3);
  await r.answer(query('web', 'A', 4));
  t.is(cluster.asked.length, 2, 'nothing cached with the cache off');
});
