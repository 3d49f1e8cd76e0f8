/**
 * The TUN addon and TunDevice, each case inside a network namespace of its own: the device is
 * opened by a small script run in the namespace (`node --import tsx`), which reports what it saw
 * as JSON lines on stdout.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { allocateBlock, createNetns, type Netns } from './helpers/netns.js';
import { loadTunAddon, TunDevice } from '../src/tun/device.js';
import { TunAddonError } from '../src/errors.js';

const DEVICE_URL = pathToFileURL(fileURLToPath(new URL('../src/tun/device.ts', import.meta.url))).href;

/** Helpers every script gets: emit(), sh(), checksums and a packet builder. */
const PRELUDE = `
import { TunDevice } from ${JSON.stringify(DEVICE_URL)};
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import dgram from 'node:dgram';
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const sh = (...args) => execFileSync('ip', args, { encoding: 'utf8' });
const A = JSON.parse(process.argv[2]);
const ip4 = (s) => Buffer.from(s.split('.').map(Number));
function sum16(buf, acc = 0) {
  for (let i = 0; i + 1 < buf.length; i += 2) acc += buf.readUInt16BE(i);
  if (buf.length & 1) acc += buf[buf.length - 1] << 8;
  return acc;
}
const fold = (acc) => { while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16); return acc; };
/** IPv4 header + L4 (tcp/udp bytes with checksum field zero); fills checksums unless partial. */
function ipv4(src, dst, proto, l4, csumOff, partial) {
  const h = Buffer.alloc(20);
  h[0] = 0x45; h.writeUInt16BE(20 + l4.length, 2); h[8] = 64; h[9] = proto;
  ip4(src).copy(h, 12); ip4(dst).copy(h, 16);
  h.writeUInt16BE(~fold(sum16(h)) & 0xffff, 10);
  const pseudo = Buffer.concat([h.subarray(12, 20), Buffer.from([0, proto]), Buffer.from([l4.length >> 8, l4.length & 255])]);
  const ps = fold(sum16(pseudo));
  if (partial) l4.writeUInt16BE(ps, csumOff);
  else { let c = ~fold(sum16(l4, ps)) & 0xffff; if (c === 0 && proto === 17) c = 0xffff; l4.writeUInt16BE(c, csumOff); }
  return Buffer.concat([h, l4]);
}
function udp(src, sport, dst, dport, payload, partial) {
  const u = Buffer.alloc(8 + payload.length);
  u.writeUInt16BE(sport, 0); u.writeUInt16BE(dport, 2); u.writeUInt16BE(u.length, 4); payload.copy(u, 8);
  return ipv4(src, dst, 17, u, 6, partial);
}
function tcp(src, sport, dst, dport, seq, ack, flags, win, opts = Buffer.alloc(0)) {
  const t = Buffer.alloc(20 + opts.length);
  t.writeUInt16BE(sport, 0); t.writeUInt16BE(dport, 2); t.writeUInt32BE(seq >>> 0, 4); t.writeUInt32BE(ack >>> 0, 8);
  t[12] = ((20 + opts.length) / 4) << 4; t[13] = flags; t.writeUInt16BE(win, 14); opts.copy(t, 20);
  return ipv4(src, dst, 6, t, 16, false);
}
/** virtio_net_hdr: NEEDS_CSUM with csum_start/csum_offset, or all zero. */
function vnet(partialAt) {
  const v = Buffer.alloc(10);
  if (partialAt) { v[0] = 1; v.writeUInt16LE(partialAt[0], 6); v.writeUInt16LE(partialAt[1], 8); }
  return v;
}
function setup(d) {
  sh('addr', 'add', A.tunIp + '/32', 'dev', d.name);
  sh('link', 'set', 'dev', d.name, 'up');
  sh('route', 'add', A.route, 'dev', d.name);
}
`;

interface Script {
  /** next JSON line the script printed */
  next(): Promise<Record<string, unknown>>;
  exit: Promise<number | null>;
  pid: number;
  stderr(): string;
}

function runScript(t: ExecutionContext, ns: Netns, body: string, args: Record<string, unknown>, nodeArgs: string[] = []): Script {
  const dir = mkdtempSync(join(tmpdir(), 'ktt-tun-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'script.mts');
  writeFileSync(file, PRELUDE + body);
  const child = ns.spawn('node', [...nodeArgs, '--import', 'tsx', file, JSON.stringify(args)]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<(v: Record<string, unknown>) => void> = [];
  let buf = '';
  let err = '';
  let exited = false;
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line) as Record<string, unknown>;
      } catch {
        obj = { ev: 'stdout', line };
      }
      const w = waiters.shift();
      if (w) w(obj);
      else lines.push(obj);
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exit = new Promise<number | null>((resolve) => {
    // 'close', not 'exit': it comes after the last of stdout, so a line printed just before
    // process.exit() is never overtaken by the exit (CI caught that once).
    child.once('close', (code) => {
      exited = true;
      resolve(code);
      for (const w of waiters.splice(0)) w({ ev: 'exited', code, stderr: err });
    });
  });
  return {
    pid: child.pid!,
    exit,
    stderr: () => err,
    next() {
      const l = lines.shift();
      if (l) return Promise.resolve(l);
      if (exited) return Promise.resolve({ ev: 'exited', stderr: err });
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/** Addresses for one test: the TUN's own /32 and a /30 routed to it (both only inside the namespace). */
function addresses(t: ExecutionContext): { tunIp: string; route: string; target: string } {
  const a = allocateBlock();
  const b = allocateBlock();
  t.teardown(() => {
    a.release();
    b.release();
  });
  return { tunIp: a.first, route: `${b.base}/30`, target: b.first };
}

async function expectEvent(s: Script, ev: string): Promise<Record<string, unknown>> {
  for (;;) {
    const o = await s.next();
    if (o.ev === ev) return o;
    if (o.ev === 'exited' || o.ev === 'error') throw new Error(`expected ${ev}, got ${JSON.stringify(o)}`);
  }
}

const READ_WRITE = `
const d = TunDevice.open({ name: A.name, vnetHdr: A.vnetHdr, offload: A.offload, mtu: 1500 });
emit({ ev: 'open', name: d.name, vnetHdr: d.vnetHdr, offload: d.offload, flags: d.offloadFlags });
setup(d);
const h = d.vnetHdr ? 10 : 0;
d.onPackets((arena, meta, count) => {
  for (let i = 0; i < count; i++) {
    const p = TunDevice.packet(arena, meta, i);
    if (p[h] >> 4 !== 4 || p[h + 9] !== 6) continue;
    const ihl = (p[h] & 15) * 4;
    const t = p.subarray(h + ihl);
    if (!(t[13] & 2)) continue;
    emit({ ev: 'syn', len: p.length, vnet: p.subarray(0, h).toString('hex'), version: p[h] >> 4, proto: p[h + 9],
      dst: [...p.subarray(h + 16, h + 20)].join('.'), dport: t.readUInt16BE(2), flags: t[13] });
    d.pause();
    writeBack();
    return;
  }
});
const client = net.connect(A.port, A.target).on('error', () => {});
function writeBack() {
  const sock = dgram.createSocket('udp4');
  const got = [];
  sock.on('message', (m, r) => {
    got.push({ payload: m.toString(), from: r.address + ':' + r.port });
    if (got.length === (A.offload ? 3 : 2)) {
      emit({ ev: 'udp', got, stats: d.stats });
      sock.close();
      client.destroy();
      d.close();
    }
  });
  sock.bind(A.udpPort, A.tunIp, () => {
    const pkt = udp(A.target, 5555, A.tunIp, A.udpPort, Buffer.from('hello-tun'), false);
    const n = d.write(d.vnetHdr ? Buffer.concat([vnet(), pkt]) : pkt);
    if (A.offload) {
      // A partial checksum with NEEDS_CSUM (csum_start 20, csum_offset 6): accepted as offloaded.
      const p2 = udp(A.target, 5556, A.tunIp, A.udpPort, Buffer.from('partial-csum'), true);
      d.write(Buffer.concat([vnet([20, 6]), p2]));
    }
    // One packet from two pieces (writev): the headers, and the payload where it lies.
    const p3 = d.vnetHdr ? Buffer.concat([vnet(), udp(A.target, 5557, A.tunIp, A.udpPort, Buffer.from('gathered'), false)]) : udp(A.target, 5557, A.tunIp, A.udpPort, Buffer.from('gathered'), false);
    const nv = d.writev(p3.subarray(0, h + 28), p3.subarray(h + 28));
    emit({ ev: 'written', n, nv });
  });
}
`;

for (const mode of [
  { title: 'with virtio_net_hdr and offloads', vnetHdr: true, offload: true },
  { title: 'without virtio_net_hdr', vnetHdr: false, offload: false },
]) {
  test(`open ${mode.title}: a routed SYN is read, written UDP packets (one from two pieces) are delivered`, async (t) => {
    const ns = await createNetns(t);
    const a = addresses(t);
    const s = runScript(t, ns, READ_WRITE, { ...a, name: 'ktrw0', port: 8080, udpPort: 9999, ...mode });
    const open = await expectEvent(s, 'open');
    t.is(open.name, 'ktrw0');
    t.is(open.vnetHdr, mode.vnetHdr);
    t.is(open.offload, mode.offload);
    if (mode.offload) t.deepEqual(open.flags, { csum: true, tso4: true, tso6: true });
    const syn = await expectEvent(s, 'syn');
    t.is(syn.version, 4);
    t.is(syn.proto, 6);
    t.is(syn.dst, a.target);
    t.is(syn.dport, 8080);
    t.is((syn.flags as number) & 0x12, 0x02, 'SYN without ACK');
    // A SYN carries no payload: 20 IP + 20..60 TCP bytes (+10 virtio_net_hdr).
    const h = mode.vnetHdr ? 10 : 0;
    t.true((syn.len as number) >= 40 + h && (syn.len as number) <= 80 + h);
    if (mode.vnetHdr) t.is((syn.vnet as string).slice(2, 4), '00', 'gso_type NONE for a SYN');
    const written = await expectEvent(s, 'written');
    t.is(written.n, 28 + 9 + h);
    t.is(written.nv, 28 + 8 + h);
    const udp = await expectEvent(s, 'udp');
    const got = udp.got as Array<{ payload: string; from: string }>;
    t.deepEqual(
      got.map((g) => g.payload).sort(),
      (mode.offload ? ['hello-tun', 'partial-csum', 'gathered'] : ['hello-tun', 'gathered']).sort(),
    );
    t.is(got[0]!.from.split(':')[0], a.target);
    t.is(await s.exit, 0, s.stderr());
  });
}

const TSO = `
const d = TunDevice.open({ name: A.name, vnetHdr: true, offload: A.offload, mtu: 1500 });
setup(d);
const total = A.bytes;
let rcvNxt = 0, bytes = 0, maxLen = 0, over = 0, packets = 0, maxGso = 0, done = false;
const sizes = new Map();
const t0 = process.hrtime.bigint();
const wsOpts = Buffer.from([2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
d.onPackets((arena, meta, count) => {
  let ack = false;
  for (let i = 0; i < count; i++) {
    const p = TunDevice.packet(arena, meta, i);
    const ipH = p.subarray(10);
    if (ipH[0] >> 4 !== 4 || ipH[9] !== 6) continue;
    const ihl = (ipH[0] & 15) * 4, tot = ipH.readUInt16BE(2);
    const tc = ipH.subarray(ihl, tot);
    const doff = (tc[12] >> 4) * 4, flags = tc[13], seq = tc.readUInt32BE(4);
    const len = tot - ihl - doff;
    packets++;
    if (p.length > maxLen) maxLen = p.length;
    if (tot > 1500) over++;
    const gso = p.readUInt16LE(4);
    if (gso > maxGso) maxGso = gso;
    if (flags & 2) {
      rcvNxt = (seq + 1) >>> 0;
      d.write(Buffer.concat([vnet(), tcp(A.target, A.port, A.tunIp, tc.readUInt16BE(0), 1000, rcvNxt, 0x12, 65535, wsOpts)]));
      continue;
    }
    if (len > 0 && seq === rcvNxt) { rcvNxt = (rcvNxt + len) >>> 0; bytes += len; ack = true; }
    else if (len > 0) ack = true;
    A.sport = tc.readUInt16BE(0);
  }
  if (ack) d.write(Buffer.concat([vnet(), tcp(A.target, A.port, A.tunIp, A.sport, 1001, rcvNxt, 0x10, 65535)]));
  if (!done && bytes >= total) {
    done = true;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    emit({ ev: 'tso', bytes, packets, maxLen, over, maxGso, ms, stats: d.stats });
    // No process.exit(): closing both ends lets the process end once stdout is flushed.
    d.close();
    c.destroy();
  }
});
const c = net.connect(A.port, A.target, () => { c.write(Buffer.alloc(total, 7)); });
c.on('error', () => {});
`;

test('offloads: a bulk TCP send arrives as super-segments larger than the MTU', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, TSO, { ...a, name: 'kttso0', port: 80, offload: true, bytes: 16 << 20 });
  const r = await expectEvent(s, 'tso');
  t.log(`offload on: ${r.packets} TCP packets for ${r.bytes} bytes, largest read ${r.maxLen} bytes, ${r.over} reads over the MTU, largest gso_size ${r.maxGso}, ${r.ms} ms`);
  t.is(r.bytes, 16 << 20);
  t.true((r.maxLen as number) > 1500 + 10, 'a read larger than the MTU');
  t.true((r.over as number) > 0);
  t.true((r.maxGso as number) > 0 && (r.maxGso as number) <= 1460, 'gso_size is the MSS');
  t.is(await s.exit, 0, s.stderr());
});

test('without offloads every read fits the MTU', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, TSO, { ...a, name: 'ktnotso0', port: 80, offload: false, bytes: 4 << 20 });
  const r = await expectEvent(s, 'tso');
  t.log(`offload off: ${r.packets} TCP packets for ${r.bytes} bytes, largest read ${r.maxLen} bytes, ${r.ms} ms`);
  t.is(r.bytes, 4 << 20);
  t.true((r.maxLen as number) <= 1500 + 10);
  t.is(r.over, 0);
  t.is(await s.exit, 0, s.stderr());
});

const BATCH = `
const d = TunDevice.open({ name: A.name, vnetHdr: true, offload: true });
setup(d);
let packets = 0, batches = 0, maxBatch = 0;
d.onPackets((arena, meta, count) => {
  batches++;
  if (count > maxBatch) maxBatch = count;
  for (let i = 0; i < count; i++) {
    const p = TunDevice.packet(arena, meta, i);
    if (p[10] >> 4 === 4 && p[19] === 17) packets++;
  }
  if (packets === A.count) {
    emit({ ev: 'batch', packets, batches, maxBatch, stats: d.stats });
    d.close();
  }
});
// Queue the datagrams in the device while nobody reads, then read them all.
d.pause();
const sock = dgram.createSocket('udp4');
let sent = 0;
sock.bind(0, A.tunIp, () => {
  for (let i = 0; i < A.count; i++) {
    sock.send(Buffer.alloc(200, i & 255), 7000, A.target, () => {
      if (++sent === A.count) { sock.close(); d.resume(); }
    });
  }
});
`;

test('a burst of queued packets is delivered in batches, each one callback', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, BATCH, { ...a, name: 'ktbat0', count: 300 });
  const r = await expectEvent(s, 'batch');
  t.log(`300 queued datagrams: ${r.batches} callbacks, largest batch ${r.maxBatch}`);
  t.is(r.packets, 300);
  t.is(r.maxBatch, 64, 'a batch is capped at 64 packets');
  t.true((r.batches as number) < 300 / 2);
  t.is(await s.exit, 0, s.stderr());
});

const CLOSE = `
const d = TunDevice.open({ name: A.name });
setup(d);
d.onPackets(() => {});
const before = sh('-j', 'link', 'show', 'dev', d.name).includes(A.name);
d.close();
d.close();
let after;
try { sh('link', 'show', 'dev', A.name); after = true; } catch { after = false; }
let writeErr = '';
try { d.write(Buffer.alloc(30)); } catch (e) { writeErr = e.code; }
emit({ ev: 'closed', before, after, writeErr });
// Nothing else: the process must exit by itself.
`;

test('close() removes the interface, is idempotent, and lets the process exit', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, CLOSE, { ...a, name: 'ktclose0' });
  const r = await expectEvent(s, 'closed');
  t.true(r.before);
  t.false(r.after, 'the interface is gone after close()');
  t.is(r.writeErr, 'KTCTL_TUN');
  t.is(await s.exit, 0, s.stderr());
});

const UNREF_GC = `
// unref(): a polled device does not keep the process alive.
const d = TunDevice.open({ name: A.name });
setup(d);
d.onPackets(() => {}).unref();
// Devices dropped without close(): the finalizer closes them when they are collected.
for (let i = 0; i < 20; i++) TunDevice.open({ name: 'ktgc' + i });
let left = 20;
for (let round = 0; round < 50 && left > 0; round++) {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
  left = sh('-o', 'link').split('\\n').filter((l) => / ktgc\\d+:/.test(l)).length;
}
emit({ ev: 'gc', left, polled: sh('link', 'show', 'dev', A.name).includes(A.name) });
`;

test('unref() lets the process exit while polling; dropped devices are closed by GC', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, UNREF_GC, { ...a, name: 'ktunref0' }, ['--expose-gc']);
  const r = await expectEvent(s, 'gc');
  t.is(r.left, 0, 'every collected device was closed');
  t.true(r.polled);
  t.is(await s.exit, 0, s.stderr());
  const links = await ns.execOk('ip', ['-o', 'link']);
  t.false(links.includes('ktunref0'), 'the interface went away with the process');
});

const ERRORS = `
const out = {};
const d = TunDevice.open({ name: A.name });
for (const [key, name] of [['busy', A.name], ['notTun', 'lo'], ['tooLong', 'kt-name-too-long-for-linux']]) {
  try { TunDevice.open({ name }); out[key] = 'opened'; } catch (e) { out[key] = { name: e.name, code: e.code, message: e.message }; }
}
try { TunDevice.open({ name: 'ktx0', vnetHdr: false, offload: true }); } catch (e) { out.offloadNoHdr = { name: e.name, code: e.code }; }
d.close();
// Once closed the name is free again.
TunDevice.open({ name: A.name }).close();
out.reopened = true;
emit({ ev: 'errors', ...out });
`;

test('a name in use, a non-TUN name and a bad name give clear errors', async (t) => {
  const ns = await createNetns(t);
  const a = addresses(t);
  const s = runScript(t, ns, ERRORS, { ...a, name: 'ktbusy0' });
  const r = await expectEvent(s, 'errors');
  const busy = r.busy as Record<string, string>;
  t.is(busy.name, 'TunError');
  t.is(busy.code, 'KTCTL_TUN_EBUSY');
  t.regex(busy.message, /ktbusy0.*already in use/);
  const notTun = r.notTun as Record<string, string>;
  t.is(notTun.code, 'KTCTL_TUN_EINVAL');
  t.regex(notTun.message, /not a TUN device/);
  const tooLong = r.tooLong as Record<string, string>;
  t.is(tooLong.name, 'TunError');
  t.regex(tooLong.message, /too long/);
  t.is((r.offloadNoHdr as Record<string, string>).name, 'TunError');
  t.true(r.reopened);
  t.is(await s.exit, 0, s.stderr());
});

test('without CAP_NET_ADMIN open() says it needs root', async (t) => {
  const ns = await createNetns(t);
  const dir = mkdtempSync(join(tmpdir(), 'ktt-tun-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'perm.mts');
  writeFileSync(file, `${PRELUDE}
try { TunDevice.open({ name: 'ktperm0' }).close(); emit({ ev: 'perm', opened: true }); }
catch (e) { emit({ ev: 'perm', name: e.name, code: e.code, message: e.message }); }
`);
  // With the capability the script opens the device ...
  const ok = JSON.parse((await ns.execOk('node', ['--import', 'tsx', file, '{}'])).trim()) as Record<string, unknown>;
  t.true(ok.opened);
  // ... and as root without CAP_NET_ADMIN (setpriv drops it, as a restricted container would) it cannot.
  const out = await ns.execOk('setpriv', ['--bounding-set', '-net_admin', '--inh-caps', '-net_admin', 'node', '--import', 'tsx', file, '{}']);
  const r = JSON.parse(out.trim()) as Record<string, string>;
  t.is(r.name, 'PermissionError');
  t.is(r.code, 'KTCTL_PERMISSION');
  t.regex(r.message, /root or CAP_NET_ADMIN/);
});

test('a missing addon gives a clear error, not a crash', (t) => {
  const missing = join(tmpdir(), 'ktt-no-such-addon', 'ktctl_tun.node');
  const e = t.throws(() => loadTunAddon(missing), { instanceOf: TunAddonError });
  t.is(e?.code, 'KTCTL_TUN_ADDON');
  t.regex(e?.message ?? '', /the TUN addon is not built: run npm ci \(needs python3, make and g\+\+\)/);
  const e2 = t.throws(() => TunDevice.open({ addonPath: missing }), { instanceOf: TunAddonError });
  t.regex(e2?.message ?? '', /not built/);
  // A file that is not a loadable addon.
  const dir = mkdtempSync(join(tmpdir(), 'ktt-tun-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bogus = join(dir, 'ktctl_tun.node');
  writeFileSync(bogus, 'not an ELF file');
  const e3 = t.throws(() => loadTunAddon(bogus), { instanceOf: TunAddonError });
  t.regex(e3?.message ?? '', /cannot load/);
});
