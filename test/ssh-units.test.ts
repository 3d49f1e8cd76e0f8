/**
 * The small pieces of src/ssh and src/shadow on their own: the DNS multiplexer against a real
 * DNS-over-TCP peer on the loopback, the open-failure wording, keepalive arithmetic, SERVFAIL and
 * resolv.conf parsing.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import packet from 'dns-packet';
import { DnsQueryError } from '../src/errors.js';
import { DnsFrameDecoder, OPEN_FAILURE_TEXT, frameDnsMessage } from '../src/protocol/index.js';
import { readNameserver, servfail } from '../src/shadow/resolver.js';
import { DnsMultiplexer } from '../src/ssh/dns.js';
import { classifyOpenFailure, keepaliveConfig } from '../src/ssh/tunnel.js';

function query(name: string, id: number): Buffer {
  return packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] });
}

/**
 * A DNS-over-TCP peer on the loopback: answers every query (QR set, one A record) in reverse order
 * of arrival per batch, never answers names starting with "drop.", and hangs up on "hangup.".
 */
async function dnsPeer(t: { teardown(fn: () => unknown): void }): Promise<() => Socket> {
  const server = createServer((s) => {
    const decoder = new DnsFrameDecoder();
    s.on('data', (chunk: Buffer) => {
      const batch = decoder.push(chunk).reverse();
      for (const msg of batch) {
        const q = packet.decode(msg);
        const name = q.questions?.[0]?.name ?? '';
        if (name.startsWith('drop.')) continue;
        if (name.startsWith('hangup.')) {
          s.destroy();
          return;
        }
        s.write(
          frameDnsMessage(
            packet.encode({ type: 'response', id: q.id, questions: q.questions, answers: [{ type: 'A', name, ttl: 1, data: '127.0.0.9' }] }),
          ),
        );
      }
    });
  });
  t.teardown(() => server.close());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return () => {
    const s = connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    return s;
  };
}

test('DnsMultiplexer: same caller id many times, answers out of order, ids restored', async (t) => {
  const mux = new DnsMultiplexer((await dnsPeer(t))(), 5000);
  const names = ['a.test', 'b.test', 'c.test', 'd.test'];
  const answers = await Promise.all(names.map((n) => mux.query(query(n, 0xabcd))));
  answers.forEach((raw, i) => {
    const d = packet.decode(raw);
    t.is(d.id, 0xabcd);
    t.is(d.questions?.[0]?.name, names[i]);
  });
  t.is(mux.inFlight, 0);
});

test('DnsMultiplexer: a query without answer times out alone; abort rejects with the reason', async (t) => {
  // 3 s: the answered query must beat the timeout also on a loaded machine (1 s did not, once).
  const mux = new DnsMultiplexer((await dnsPeer(t))(), 3000);
  const dropped = mux.query(query('drop.test', 1));
  const fine = mux.query(query('ok.test', 1));
  const err = await t.throwsAsync(dropped, { instanceOf: DnsQueryError });
  t.is(err?.reason, 'timeout');
  t.is(packet.decode(await fine).questions?.[0]?.name, 'ok.test');

  const controller = new AbortController();
  const aborted = mux.query(query('drop.test', 2), controller.signal);
  controller.abort(new Error('caller gave up'));
  await t.throwsAsync(aborted, { message: 'caller gave up' });
  t.is(mux.inFlight, 0);
});

test('DnsMultiplexer: the stream ending fails what is outstanding, and the multiplexer is closed', async (t) => {
  const mux = new DnsMultiplexer((await dnsPeer(t))(), 5000);
  const waiting = mux.query(query('drop.test', 1));
  const hang = mux.query(query('hangup.test', 2));
  for (const p of [waiting, hang]) {
    const err = await t.throwsAsync(p, { instanceOf: DnsQueryError });
    t.is(err?.reason, 'tunnel');
  }
  t.false(mux.open);
  await t.throwsAsync(mux.query(query('x.test', 3)), { instanceOf: DnsQueryError });
});

test('open failure descriptions: the shadow\'s and OpenSSH\'s wording map to DialFailure', (t) => {
  t.is(classifyOpenFailure(OPEN_FAILURE_TEXT.refused)[0], 'refused');
  t.is(classifyOpenFailure('connect failed: Connection refused')[0], 'refused');
  t.is(classifyOpenFailure(OPEN_FAILURE_TEXT.unresolvable)[0], 'unresolvable');
  t.is(classifyOpenFailure('No address associated with hostname')[0], 'unresolvable');
  t.is(classifyOpenFailure('Temporary failure in name resolution')[0], 'unresolvable');
  t.is(classifyOpenFailure(OPEN_FAILURE_TEXT.timeout)[0], 'unreachable');
  t.is(classifyOpenFailure(OPEN_FAILURE_TEXT.unreachable)[0], 'unreachable');
  t.is(classifyOpenFailure('NO ROUTE TO HOST')[0], 'unreachable', 'case-insensitive');
  t.is(classifyOpenFailure('')[0], 'unreachable');
});

test('keepalive: OpenSSH-style count (dead after interval * count) onto ssh2\'s', (t) => {
  t.deepEqual(keepaliveConfig(10_000, 3), { keepaliveInterval: 10_000, keepaliveCountMax: 2 });
  t.deepEqual(keepaliveConfig(10_000, 1), { keepaliveInterval: 5000, keepaliveCountMax: 1 });
  t.deepEqual(keepaliveConfig(0, 3), { keepaliveInterval: 0, keepaliveCountMax: 0 });
});

test('servfail keeps id, opcode, RD and the question; drops everything else', (t) => {
  const q = query('svc.ns.svc.cluster.local', 0x5151);
  const a = servfail(q);
  const d = packet.decode(a);
  t.is(d.id, 0x5151);
  t.is(d.type, 'response');
  t.is(Reflect.get(d, 'rcode'), 'SERVFAIL');
  t.true(Boolean(d.flags !== undefined && d.flags & packet.RECURSION_DESIRED));
  t.deepEqual(d.questions, [{ name: 'svc.ns.svc.cluster.local', type: 'A', class: 'IN' }]);
  t.is(d.answers?.length, 0);
  // A garbled query still gets its id back.
  const g = servfail(Buffer.from([0x12, 0x34, 0x01]));
  t.is(g.readUInt16BE(0), 0x1234);
  t.is(g[3]! & 0x0f, 2);
});

test('readNameserver: the first valid nameserver line, comments ignored', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ktt-resolv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'resolv.conf');
  writeFileSync(file, '# nameserver 1.1.1.1\nsearch default.svc.cluster.local svc.cluster.local\nnameserver bogus\nnameserver 198.19.0.10 ; kube-dns\nnameserver 198.19.0.11\n');
  t.deepEqual(await readNameserver(file), { host: '198.19.0.10', port: 53 });
  writeFileSync(file, 'search x\n');
  t.deepEqual(await readNameserver(file), { host: '127.0.0.1', port: 53 });
});

test('generateEd25519: every pair parses and has a 32-byte public key (ssh2 alone fails ~1 in 200)', async (t) => {
  const { generateEd25519 } = await import('../src/ssh/keys.js');
  const ssh2 = (await import('ssh2')).default;
  for (let i = 0; i < 1000; i++) {
    const k = generateEd25519('ktctl-test');
    const priv = ssh2.utils.parseKey(k.private);
    const pub = ssh2.utils.parseKey(k.public);
    if (priv instanceof Error || pub instanceof Error) return t.fail(`unusable pair: ${k.public}`);
    if (pub.getPublicSSH().length !== 51) return t.fail(`short public key: ${k.public}`);
  }
  t.pass();
});
