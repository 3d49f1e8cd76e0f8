/**
 * Throughput probe of the TUN addon (not a test): how many reads/s and MB/s it delivers to JS.
 * Runs everything in a network namespace of its own (needs root):
 *
 *   npx tsx bench/tun-read.ts [seconds]
 *
 * Modes: `tcp-tso` (a bulk TCP sender in another process, offloads on, a minimal responder in
 * the reading process ACKs everything: reads are super-segments), `tcp` (same without offloads:
 * MTU-sized reads), `udp` (another process sends 1400-byte datagrams as fast as Node can).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { allocateBlock } from '../test/helpers/netns.js';
import { TunDevice } from '../src/tun/device.js';

type Mode = 'tcp-tso' | 'tcp' | 'udp';

interface Result {
  mode: Mode;
  seconds: number;
  reads: number;
  batches: number;
  bytes: number;
  maxRead: number;
}

function sum16(buf: Buffer, acc = 0): number {
  for (let i = 0; i + 1 < buf.length; i += 2) acc += buf.readUInt16BE(i);
  if (buf.length & 1) acc += buf[buf.length - 1]! << 8;
  return acc;
}
const fold = (a: number): number => {
  while (a > 0xffff) a = (a & 0xffff) + (a >>> 16);
  return a;
};

/** An IPv4/TCP segment with correct checksums, behind an all-zero virtio_net_hdr. */
function tcpSegment(src: Buffer, dst: Buffer, sport: number, dport: number, seq: number, ack: number, flags: number, opts: Buffer): Buffer {
  const p = Buffer.alloc(10 + 20 + 20 + opts.length);
  const ip = p.subarray(10, 30);
  ip[0] = 0x45;
  ip.writeUInt16BE(40 + opts.length, 2);
  ip[8] = 64;
  ip[9] = 6;
  src.copy(ip, 12);
  dst.copy(ip, 16);
  ip.writeUInt16BE(~fold(sum16(ip)) & 0xffff, 10);
  const t = p.subarray(30);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(seq >>> 0, 4);
  t.writeUInt32BE(ack >>> 0, 8);
  t[12] = ((20 + opts.length) / 4) << 4;
  t[13] = flags;
  t.writeUInt16BE(65535, 14);
  opts.copy(t, 20);
  const pseudo = fold(sum16(Buffer.concat([src, dst, Buffer.from([0, 6, 0, t.length])])));
  t.writeUInt16BE(~fold(sum16(t, pseudo)) & 0xffff, 16);
  return p;
}

async function inside(mode: Mode, seconds: number, tunIp: string, route: string, target: string): Promise<Result> {
  const offload = mode === 'tcp-tso';
  const d = TunDevice.open({ name: 'ktbench0', vnetHdr: true, offload, mtu: 1500 });
  execFileSync('ip', ['addr', 'add', `${tunIp}/32`, 'dev', d.name]);
  execFileSync('ip', ['link', 'set', 'dev', d.name, 'up']);
  execFileSync('ip', ['route', 'add', route, 'dev', d.name]);
  const src = Buffer.from(target.split('.').map(Number));
  const dst = Buffer.from(tunIp.split('.').map(Number));
  // Window scale: with offloads a large window; without, at most ~350 segments in flight so
  // the device queue (500 packets) never overflows (this toy responder has no SACK).
  const wsOpts = Buffer.from([2, 4, 0x05, 0xb4, 1, 3, 3, offload ? 9 : 3]);
  let rcvNxt = 0;
  let sport = 0;
  let measuring = false;
  const r: Result = { mode, seconds, reads: 0, batches: 0, bytes: 0, maxRead: 0 };
  d.onPackets((arena, meta, count) => {
    if (measuring) r.batches++;
    let ack = false;
    for (let i = 0; i < count; i++) {
      const off = meta[2 * i]!;
      const len = meta[2 * i + 1]!;
      if (measuring) {
        r.reads++;
        r.bytes += len;
        if (len > r.maxRead) r.maxRead = len;
      }
      if (mode === 'udp') continue;
      const ip = off + 10;
      if (arena[ip]! >> 4 !== 4 || arena[ip + 9] !== 6) continue;
      const ihl = (arena[ip]! & 15) * 4;
      const tot = arena.readUInt16BE(ip + 2);
      const t = ip + ihl;
      const doff = (arena[t + 12]! >> 4) * 4;
      const seq = arena.readUInt32BE(t + 4);
      const payload = tot - ihl - doff;
      if (arena[t + 13]! & 2) {
        sport = arena.readUInt16BE(t);
        rcvNxt = (seq + 1) >>> 0;
        d.write(tcpSegment(src, dst, 80, sport, 1000, rcvNxt, 0x12, wsOpts));
      } else if (payload > 0) {
        if (seq === rcvNxt) rcvNxt = (rcvNxt + payload) >>> 0;
        ack = true;
      }
    }
    if (ack) d.write(tcpSegment(src, dst, 80, sport, 1001, rcvNxt, 0x10, Buffer.alloc(0)));
  });
  const sender =
    mode === 'udp'
      ? `const s=require('dgram').createSocket('udp4');const b=Buffer.alloc(1400);let n=0;const go=()=>{for(let i=0;i<64;i++)s.send(b,9,'${target}');setImmediate(go)};go();`
      : `const c=require('net').connect(80,'${target}');const b=Buffer.alloc(1<<20);const go=()=>{while(c.write(b));};c.on('connect',go);c.on('drain',go);c.on('error',()=>{});`;
  const child = spawn(process.execPath, ['-e', sender], { stdio: 'ignore' });
  await new Promise((res) => setTimeout(res, 500));
  measuring = true;
  const t0 = process.hrtime.bigint();
  await new Promise((res) => setTimeout(res, seconds * 1000));
  measuring = false;
  r.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  child.kill('SIGKILL');
  d.close();
  return r;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--inside') {
    const [, mode, secs, tunIp, route, target] = args;
    const r = await inside(mode as Mode, Number(secs), tunIp!, route!, target!);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  }
  const seconds = Number(args[0] ?? 3);
  const ns = `kttr-${randomBytes(4).toString('hex')}`;
  const a = allocateBlock();
  const b = allocateBlock();
  execFileSync('ip', ['netns', 'add', ns]);
  const rows: Result[] = [];
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    for (const mode of ['tcp-tso', 'tcp', 'udp'] as const) {
      const out = execFileSync(
        'ip',
        ['netns', 'exec', ns, process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--inside', mode, String(seconds), a.first, `${b.base}/30`, b.first],
        { encoding: 'utf8', timeout: (seconds + 30) * 1000 },
      );
      rows.push(JSON.parse(out.trim().split('\n').pop()!) as Result);
    }
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
    a.release();
    b.release();
  }
  console.log('| mode | reads/s | MB/s to JS | packets per callback | largest read |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.mode} | ${Math.round(r.reads / r.seconds)} | ${(r.bytes / r.seconds / 1e6).toFixed(1)} | ${(r.reads / Math.max(1, r.batches)).toFixed(2)} | ${r.maxRead} |`,
    );
  }
}

await main();
