/**
 * The engine against the real Linux TCP stack, without the project's native addon: in a network
 * namespace of the test's own, a small Python relay opens a TUN device (TUNSETIFF, optionally
 * IFF_VNET_HDR with TUNSETOFFLOAD csum+TSO4+TSO6) and passes packets to and from this process over
 * its stdio; a route sends a test block of addresses into the device; curl inside the namespace
 * talks to those addresses; the NetStack here dials loopback servers in the host namespace.
 * Nothing is routed outside the namespace. Needs root (CI runs as root); skipped otherwise.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { DialOptions, Dialer } from '../src/dialer.js';
import { NetStack } from '../src/netstack/stack.js';
import { DirectDialer } from './helpers/direct-dialer.js';
import { allocateBlock, closedPort, createNetns, type Netns } from './helpers/netns.js';

const isRoot = process.getuid?.() === 0;

const RELAY = String.raw`
import os, sys, fcntl, struct, select
TUNSETIFF, TUNSETOFFLOAD = 0x400454ca, 0x400454d0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
name, vnet = sys.argv[1], sys.argv[2] == '1'
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH22x', name.encode(), IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)))
if vnet:
    fcntl.ioctl(fd, TUNSETOFFLOAD, 1 | 2 | 4)  # TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
out = sys.stdout.buffer
out.write(b'READY\n'); out.flush()
buf = b''
while True:
    r, _, _ = select.select([fd, 0], [], [])
    if fd in r:
        frames = []
        for _ in range(64):
            try:
                p = os.read(fd, 70000)
            except BlockingIOError:
                break
            frames.append(struct.pack('>I', len(p)) + p)
            if not select.select([fd], [], [], 0)[0]:
                break
        out.write(b''.join(frames)); out.flush()
    if 0 in r:
        d = os.read(0, 1 << 20)
        if not d:
            sys.exit(0)
        buf += d
        while len(buf) >= 4:
            n = struct.unpack('>I', buf[:4])[0]
            if len(buf) < 4 + n:
                break
            try:
                os.write(fd, buf[4:4 + n])
            except OSError as e:
                sys.stderr.write('write: %s\n' % e)
            buf = buf[4 + n:]
`;

/** Routed addresses go to loopback in this (the host) namespace. */
class LoopbackDialer implements Dialer {
  private readonly inner = new DirectDialer();
  dial(host: string, port: number, options?: DialOptions): Promise<Duplex> {
    return this.inner.dial(isIP(host) === 6 ? '::1' : '127.0.0.1', port, options);
  }
}

interface Lab {
  ns: Netns;
  target: string;
  stack: NetStack;
}

async function lab(t: ExecutionContext, vnet: boolean, probe?: (ip: string) => Promise<boolean>): Promise<Lab> {
  const ns = await createNetns(t, 'ktns');
  const local = allocateBlock();
  const routed = allocateBlock();
  t.teardown(() => {
    local.release();
    routed.release();
  });
  const dev = 'kttun0';
  const relay = ns.spawn('python3', ['-c', RELAY, dev, vnet ? '1' : '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      if (d.includes('READY\n')) {
        relay.stdout!.off('data', onData);
        const rest = d.subarray(d.indexOf('READY\n') + 6);
        if (rest.length > 0) relay.stdout!.unshift(rest);
        resolve();
      }
    };
    relay.stdout!.on('data', onData);
    relay.once('exit', (code) => reject(new Error(`relay exited with ${code}`)));
  });
  await ns.execOk('ip', ['link', 'set', dev, 'up']);
  await ns.execOk('ip', ['addr', 'add', `${local.first}/32`, 'dev', dev]);
  await ns.execOk('ip', ['route', 'add', `${routed.base}/30`, 'dev', dev]);

  const stack = new NetStack({
    dialer: new LoopbackDialer(),
    mtu: 1500,
    offload: vnet,
    probe,
    emit: (p) => {
      const hdr = Buffer.allocUnsafe(4);
      hdr.writeUInt32BE(p.length, 0);
      relay.stdin!.write(Buffer.concat([hdr, p]));
    },
  });
  t.teardown(() => stack.close());
  let pending = Buffer.alloc(0);
  relay.stdout!.on('data', (d: Buffer) => {
    pending = pending.length > 0 ? Buffer.concat([pending, d]) : Buffer.from(d);
    const batch: Buffer[] = [];
    while (pending.length >= 4) {
      const n = pending.readUInt32BE(0);
      if (pending.length < 4 + n) break;
      batch.push(Buffer.from(pending.subarray(4, 4 + n)));
      pending = pending.subarray(4 + n);
    }
    if (batch.length > 0) stack.inputBatch(batch);
  });
  return { ns, target: routed.first, stack };
}

async function httpServer(t: ExecutionContext, body: Buffer): Promise<number> {
  const sockets = new Set<Socket>();
  const { createServer: createHttp } = await import('node:http');
  const srv = createHttp((req, res) => {
    if (req.method === 'POST') {
      const h = createHash('sha256');
      req.on('data', (d: Buffer) => h.update(d));
      req.on('end', () => res.end(h.digest('hex')));
      return;
    }
    res.setHeader('content-length', body.length);
    res.end(body);
  });
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  const a = srv.address();
  if (!a || typeof a === 'string') throw new Error('no address');
  return a.port;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

for (const vnet of [false, true]) {
  const mode = vnet ? 'vnetHdrWithOffloads' : 'plainTun';
  (isRoot ? test : test.skip)(`kernel_${mode}_curlDownloadUploadAndRefused`, async (t) => {
    t.timeout(60_000);
    const body = randomBytes(16 << 20);
    const port = await httpServer(t, body);
    const { ns, target, stack } = await lab(t, vnet);
    const url = `http://${target}:${port}`;

    const down = await ns.exec('sh', ['-c', `curl -sS --max-time 30 ${url}/ | sha256sum`], { timeoutMs: 40_000 });
    t.is(down.stdout.split(' ')[0], sha(body), down.stderr);

    const file = join(tmpdir(), `ktctl-netstack-up-${process.pid}-${vnet ? 'v' : 'p'}`);
    const up = randomBytes(8 << 20);
    writeFileSync(file, up);
    t.teardown(() => rmSync(file, { force: true }));
    const res = await ns.exec('curl', ['-sS', '--max-time', '30', '--data-binary', `@${file}`, `${url}/up`], { timeoutMs: 40_000 });
    t.is(res.stdout, sha(up), res.stderr);

    // Nobody listens: curl must say "Connection refused" (exit 7), as on a real network.
    const refused = await ns.exec('curl', ['-sSv', '--max-time', '10', `http://${target}:${await closedPort()}/`]);
    t.is(refused.code, 7, refused.stderr);
    t.regex(refused.stderr, /Connection refused/i);

    const st = stack.stats();
    t.log(`${mode}: in ${st.packetsIn} pkts / ${(st.bytesIn / 1e6).toFixed(1)} MB, out ${st.packetsOut} pkts / ${(st.bytesOut / 1e6).toFixed(1)} MB, retransmits ${st.tcp.retransmits}, dropped ${JSON.stringify(Object.fromEntries(Object.entries(st.dropped).filter(([, v]) => v > 0)))}`);
    t.is(st.dropped.checksum, 0);
    t.is(st.dropped.internal, 0);
  });
}

(isRoot ? test : test.skip)('kernel_pingAnsweredOnlyWhenReachable', async (t) => {
  let reachable = '';
  const { ns, target } = await lab(t, true, async (ip) => ip === reachable);
  reachable = target;
  const other = target.replace(/\d+$/, (n) => String(Number(n) + 1)); // the block's second address
  const yes = await ns.exec('ping', ['-c', '1', '-W', '3', target]);
  t.is(yes.code, 0, yes.stdout + yes.stderr);
  const no = await ns.exec('ping', ['-c', '1', '-W', '1', other]);
  t.not(no.code, 0);
});

(isRoot ? test : test.skip)('kernel_parallelFlows', async (t) => {
  t.timeout(60_000);
  const body = randomBytes(1 << 20);
  const port = await httpServer(t, body);
  const { ns, target, stack } = await lab(t, true);
  // 50 concurrent transfers from one curl process (each URL is its own connection).
  const n = 50;
  const urls = Array.from({ length: n }, (_, i) => `-o /dev/stdout http://${target}:${port}/${i}`).join(' ');
  const res = await ns.exec('sh', ['-c', `curl -sS --parallel --parallel-max ${n} --max-time 40 ${urls} | wc -c`], { timeoutMs: 50_000 });
  t.is(Number(res.stdout.trim()), n * body.length, res.stderr);
  const st = stack.stats();
  t.log(`${st.flowsOpened} connections for ${n} transfers (curl reuses finished ones)`);
  t.true(st.flowsOpened >= 10);
  t.is(st.dropped.internal, 0);
});
