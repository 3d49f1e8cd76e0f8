/**
 * `ktctl connect` in TUN mode with `--via`, as a user runs it: the built CLI as a root process in
 * a laptop namespace of the test's own (its /etc/resolv.conf is /etc/netns/NAME/resolv.conf, and a
 * tiny "original" resolver answers www.example.test there), an OpenSSH sshd and ktctl's shadow in
 * a server namespace, targets on an address only the server namespace has, a DNS zone only its
 * resolver knows. Programs in the laptop namespace (curl, getent, node) go straight to the target
 * address: the route sends it into ktctl's TUN device. The host's routes and resolv.conf are never
 * touched (checked byte for byte).
 */
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createNetns, linkNetns, waitForTcp, type Netns } from './helpers/netns.js';
import { REPO, startViaServer, TeardownList, VIA_PORTS, viaKnownHosts, ZONE, type ViaServer } from './helpers/ssh-fixtures.js';
import { until } from './helpers/poll.js';

const CLI = join(REPO, 'dist/cli/main.js');
const { sshd: SSHD_PORT, shadow: SHADOW_PORT, http: HTTP_PORT } = VIA_PORTS;
const BOTHWAYS_PORT = 9100;
const SLOW_PORT = 9101;
const isRoot = process.getuid?.() === 0;
const HOST_RESOLV = readFileSync('/etc/resolv.conf');

const hooks = new TeardownList();
let lab: ViaServer;

/**
 * Two services on the target address:
 * - BOTHWAYS: the first 32 bytes a client sends are a key; the server sends SIZE bytes of
 *   AES-256-CTR(key) keystream while it receives, then, after the client's EOF, sha256(received).
 * - SLOW: reads nothing for PAUSE ms, then reads everything and answers sha256(received) at EOF.
 */
const SERVICES_SCRIPT = String.raw`
const net = require('node:net');
const crypto = require('node:crypto');
const [addr, size, pause] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
function pump(s, key, total, done) {
  const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(65536);
  let left = total;
  const go = () => {
    while (left > 0) {
      const n = Math.min(left, zero.length);
      left -= n;
      if (!s.write(c.update(n === zero.length ? zero : zero.subarray(0, n)))) { s.once('drain', go); return; }
    }
    done();
  };
  go();
}
net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  const h = crypto.createHash('sha256');
  let head = Buffer.alloc(0), started = false, sent = false, digest = null;
  const finish = () => { if (sent && digest) s.end(digest); };
  s.on('data', (c) => {
    h.update(c);
    if (started) return;
    head = Buffer.concat([head, c]);
    if (head.length >= 32) { started = true; pump(s, head.subarray(0, 32), size, () => { sent = true; finish(); }); }
  });
  s.on('end', () => { digest = h.digest(); finish(); });
}).listen(${BOTHWAYS_PORT}, addr);
net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  s.pause();
  const h = crypto.createHash('sha256');
  setTimeout(() => { s.on('data', (c) => h.update(c)); s.on('end', () => s.end(h.digest())); s.resume(); }, pause);
}).listen(${SLOW_PORT}, addr);
`;

/** The laptop's "original" resolver: www.example.test A 198.18.100.7, NXDOMAIN otherwise. */
const ORIGINAL_DNS_SCRIPT = String.raw`
const dgram = require('node:dgram');
const packet = require('dns-packet');
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => {
  let q; try { q = packet.decode(m); } catch { return; }
  const qq = q.questions[0];
  const base = { type: 'response', id: q.id, flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE, questions: q.questions };
  const a = qq && qq.name.toLowerCase() === 'www.example.test'
    ? { ...base, answers: qq.type === 'A' ? [{ type: 'A', name: qq.name, ttl: 30, data: '198.18.100.7' }] : [] }
    : { ...base, flags: base.flags | 3 };
  u.send(packet.encode(a), r.port, r.address);
});
u.bind(53, '127.0.0.1', () => process.stdout.write('ready\n'));
`;

test.before(async () => {
  if (!isRoot) return;
  lab = await startViaServer(hooks, { prefix: 'ktt-tun-', sshdOptions: ['MaxSessions 1000'] });
  lab.server.spawn('node', ['-e', SERVICES_SCRIPT, lab.target, String(4 << 20), '4000'], { cwd: REPO });
  await waitForTcp(lab.server, lab.target, BOTHWAYS_PORT);
  await waitForTcp(lab.server, lab.target, SLOW_PORT);
});

test.after.always(() => hooks.run());

const LAPTOP_RESOLV = '# the laptop\'s own resolver\nnameserver 127.0.0.1\nsearch example.test\noptions ndots:1 timeout:2\n';

interface Laptop {
  ns: Netns;
  serverIp: string;
  knownHosts: string;
  stateDir: string;
  resolvPath: string;
}

/** A laptop namespace linked to the server, with its own resolv.conf and "original" resolver. */
async function laptop(t: ExecutionContext): Promise<Laptop> {
  const ns = await createNetns(t, 'kttun');
  const { bIp: serverIp } = await linkNetns(t, ns, lab.server);
  ns.setResolvConf(LAPTOP_RESOLV);
  const dns = ns.spawn('node', ['-e', ORIGINAL_DNS_SCRIPT], { cwd: REPO });
  await new Promise<void>((resolve, reject) => {
    dns.stdout!.once('data', () => resolve());
    dns.once('exit', (code) => reject(new Error(`the laptop's resolver exited with ${code}`)));
  });
  const knownHosts = viaKnownHosts(t, lab, ns.name, serverIp);
  const stateDir = join(lab.dir, `state_${ns.name}`);
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  return { ns, serverIp, knownHosts, stateDir, resolvPath: join('/etc/netns', ns.name, 'resolv.conf') };
}

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

function ktctl(l: Laptop, args: string[], wrap: string[] = []): Running {
  const [cmd, ...pre] = wrap.length > 0 ? wrap : ['node'];
  const child = l.ns.spawn(cmd!, [...pre, ...(wrap.length > 0 ? ['node'] : []), CLI, ...args], {
    env: { ...process.env, HOME: lab.dir, KTCTL_STATE_DIR: l.stateDir },
  });
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (err += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, stderr: () => err, exited };
}

function connectArgs(l: Laptop, server: 'sshd' | 'shadow', extra: string[] = []): string[] {
  const port = server === 'sshd' ? SSHD_PORT : SHADOW_PORT;
  return [
    'connect', '--via', `root@${l.serverIp}:${port}`, '--identity', join(lab.dir, 'id_ed25519'), '--knownHosts', l.knownHosts,
    '--includeIps', `${lab.target}/32`, '--dnsServer', lab.target, '--clusterDomain', ZONE, '--debug', ...extra,
  ];
}

async function started(l: Laptop, server: 'sshd' | 'shadow', extra: string[] = []): Promise<Running> {
  const k = ktctl(l, connectArgs(l, server, extra));
  await until(() => /connected through/.test(k.stderr()) || /^ktctl: /m.test(k.stderr()), { what: () => k.stderr(), timeoutMs: 30_000 });
  if (!/connected through/.test(k.stderr())) throw new Error(`ktctl did not start: ${k.stderr()}`);
  return k;
}

async function stopped(t: ExecutionContext, k: Running): Promise<void> {
  k.child.kill('SIGINT');
  const code = await Promise.race([k.exited, new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGINT'), 20_000))]);
  t.is(code, 0, k.stderr());
}

/** Nothing of ktctl's is left in the laptop namespace: no device, no route through one, resolv.conf as before. */
async function assertClean(t: ExecutionContext, l: Laptop): Promise<void> {
  const links = await l.ns.execOk('ip', ['-o', 'link']);
  t.notRegex(links, /\bkt\d+:/, links);
  const routes = await l.ns.execOk('ip', ['route', 'show', 'table', 'all']);
  t.notRegex(routes, /dev kt\d/, routes);
  t.is(readFileSync(l.resolvPath, 'utf8'), LAPTOP_RESOLV);
  t.deepEqual(readFileSync('/etc/resolv.conf'), HOST_RESOLV, 'the host\'s resolv.conf is untouched');
  t.deepEqual(existsSync(l.stateDir) ? readdirSync(l.stateDir) : [], [], 'no crash record left');
}

const maybe = isRoot ? test : test.skip;
const maybeSerial = isRoot ? test.serial : test.skip;

for (const server of ['sshd', 'shadow'] as const) {
  maybe(`via ${server}: curl by IP and by name, the original resolver for other names, refused port, ping; SIGINT removes everything`, async (t) => {
    t.timeout(90_000);
    const l = await laptop(t);
    const k = await started(l, server);
    t.teardown(() => k.child.kill('SIGKILL'));
    t.regex(k.stderr(), new RegExp(`routing through kt0: .*${lab.target.replace(/\./g, '\\.')}/32`));
    t.regex(k.stderr(), /DNS: localDNS \(nameserver 169\.254\.77\.2 in \/etc\/resolv\.conf\)/);
    const routes = await l.ns.execOk('ip', ['route']);
    t.regex(routes, new RegExp(`${lab.target.replace(/\./g, '\\.')} dev kt0`));
    const resolv = readFileSync(l.resolvPath, 'utf8');
    t.regex(resolv, /^nameserver 169\.254\.77\.2$/m);
    t.regex(resolv, /^search .*example\.test/m, 'the machine\'s search domains are kept');
    t.regex(resolv, /^options ndots:1 timeout:2$/m);

    const byIp = await l.ns.execOk('curl', ['-sS', '--max-time', '10', `http://${lab.target}:${HTTP_PORT}/a`]);
    t.is(byIp, `hello GET /a host=${lab.target}:${HTTP_PORT}`);
    const byName = await l.ns.execOk('curl', ['-sS', '--max-time', '10', `http://web.${ZONE}:${HTTP_PORT}/b`]);
    t.is(byName, `hello GET /b host=web.${ZONE}:${HTTP_PORT}`);
    const www = await l.ns.execOk('getent', ['ahostsv4', 'www.example.test']);
    t.regex(www, /^198\.18\.100\.7\s/, 'a name outside the zone goes to the original resolver');
    const nx = await l.ns.exec('getent', ['hosts', `nope.${ZONE}`]);
    t.is(nx.code, 2, 'an unknown name in the zone is NXDOMAIN');

    const refused = await l.ns.exec('curl', ['-sSv', '--max-time', '10', `http://${lab.target}:1/`]);
    t.is(refused.code, 7, refused.stderr);
    t.regex(refused.stderr, /Connection refused/i);
    const ping = await l.ns.exec('ping', ['-c', '1', '-W', '5', lab.target]);
    t.is(ping.code, 0, ping.stdout + ping.stderr);

    await stopped(t, k);
    if (process.env.KTT_SHOW_LOG) t.log(k.stderr());
    t.regex(k.stderr(), /removed the DNS settings/);
    t.regex(k.stderr(), /removed the TUN device kt0/);
    await assertClean(t, l);
  });
}

interface FlowsResult {
  ok: number;
  failed: string[];
  ms: number;
}

/** N concurrent flows to BOTHWAYS: each uploads SIZE bytes and downloads SIZE bytes, SHA-256 checked both ways. */
const FLOWS_SCRIPT = String.raw`
const net = require('node:net');
const crypto = require('node:crypto');
const [addr, port, n, size] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const zero = Buffer.alloc(65536);
function keystream(key) { return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)); }
function expectedDigest(key) {
  const c = keystream(key), h = crypto.createHash('sha256');
  for (let left = size; left > 0; left -= zero.length) h.update(c.update(left >= zero.length ? zero : zero.subarray(0, left)));
  return h.digest('hex');
}
function flow(i) {
  return new Promise((resolve) => {
    const key = crypto.randomBytes(32);
    const upKey = crypto.randomBytes(32);
    const up = crypto.createHash('sha256');
    const down = crypto.createHash('sha256');
    let got = 0;
    const tail = [];
    const s = net.connect({ host: addr, port, allowHalfOpen: true });
    s.on('error', (e) => resolve('flow ' + i + ': ' + e.message));
    s.on('data', (c) => {
      const body = Math.max(0, Math.min(c.length, size - got));
      if (body > 0) down.update(c.subarray(0, body));
      if (body < c.length) tail.push(c.subarray(body));
      got += c.length;
    });
    s.on('end', () => {
      const digest = Buffer.concat(tail).toString('hex');
      const wantUp = up.digest('hex');
      if (got !== size + 32) return resolve('flow ' + i + ': got ' + got + ' bytes');
      if (digest !== wantUp) return resolve('flow ' + i + ': upload digest differs');
      if (down.digest('hex') !== expectedDigest(key)) return resolve('flow ' + i + ': download differs');
      resolve(null);
    });
    s.on('connect', () => {
      s.write(key); up.update(key);
      const c = keystream(upKey);
      let left = size - 32;
      const go = () => {
        while (left > 0) {
          const m = Math.min(left, zero.length);
          left -= m;
          const chunk = c.update(m === zero.length ? zero : zero.subarray(0, m));
          up.update(chunk);
          if (!s.write(chunk)) { s.once('drain', go); return; }
        }
        s.end();
      };
      go();
    });
  });
}
const t0 = Date.now();
Promise.all(Array.from({ length: n }, (_, i) => flow(i))).then((r) => {
  const failed = r.filter((x) => x !== null);
  process.stdout.write(JSON.stringify({ ok: r.length - failed.length, failed: failed.slice(0, 10), ms: Date.now() - t0 }) + '\n');
});
`;

maybeSerial('200 parallel flows of 4 MiB each way, SHA-256 checked both ways', async (t) => {
  // 1.6 GB through the engine: ~45-60 s alone on 2 cores, over 120 s when the whole suite runs
  // beside it; the limits only catch a hang.
  t.timeout(330_000);
  const l = await laptop(t);
  const k = await started(l, 'sshd');
  t.teardown(() => k.child.kill('SIGKILL'));
  const r = await l.ns.exec('node', ['-e', FLOWS_SCRIPT, lab.target, String(BOTHWAYS_PORT), '200', String(4 << 20)], { timeoutMs: 300_000 });
  let result: FlowsResult | undefined;
  try {
    result = JSON.parse(r.stdout) as FlowsResult;
  } catch {
    t.fail(`the client printed no result: ${r.stdout} ${r.stderr}\n${k.stderr()}`);
    return;
  }
  t.log(`200 x 4 MiB each way in ${result.ms} ms (${((200 * 8 * 4) / (result.ms / 1000)).toFixed(0)} MiB/s both ways)`);
  t.deepEqual(result.failed, []);
  t.is(result.ok, 200);
  await stopped(t, k);
  const last = k.stderr().split('\n').filter((x) => x.includes('debug: tun:')).pop();
  t.log(last ?? 'no stats line');
  await assertClean(t, l);
});

/** Uploads SIZE bytes of a keystream to SLOW and prints the server's digest and ours. */
const SLOW_CLIENT_SCRIPT = String.raw`
const net = require('node:net');
const crypto = require('node:crypto');
const [addr, port, size] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const c = crypto.createCipheriv('aes-256-ctr', crypto.randomBytes(32), Buffer.alloc(16));
const h = crypto.createHash('sha256');
const zero = Buffer.alloc(65536);
const s = net.connect({ host: addr, port, allowHalfOpen: true });
const got = [];
s.on('data', (d) => got.push(d));
s.on('end', () => process.stdout.write(JSON.stringify({ server: Buffer.concat(got).toString('hex'), client: h.digest('hex') }) + '\n'));
s.on('connect', () => {
  let left = size;
  const go = () => {
    while (left > 0) {
      const chunk = c.update(zero); left -= chunk.length; h.update(chunk);
      if (!s.write(chunk)) { s.once('drain', go); return; }
    }
    s.end();
  };
  go();
});
`;

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

maybeSerial('a far side that stops reading: the TCP window closes, buffers and memory stay bounded, data intact', async (t) => {
  t.timeout(90_000);
  const l = await laptop(t);
  const k = await started(l, 'shadow');
  t.teardown(() => k.child.kill('SIGKILL'));
  const pid = k.child.pid!;
  const rssBefore = rssOf(pid);
  let rssMax = rssBefore;
  const sampler = setInterval(() => {
    try {
      rssMax = Math.max(rssMax, rssOf(pid));
    } catch {
      /* exited */
    }
  }, 100);
  t.teardown(() => clearInterval(sampler));
  // The server reads nothing for 4 s: 256 MiB cannot all be taken; then it reads everything.
  const r = await l.ns.exec('node', ['-e', SLOW_CLIENT_SCRIPT, lab.target, String(SLOW_PORT), String(256 << 20)], { timeoutMs: 60_000 });
  clearInterval(sampler);
  const res = JSON.parse(r.stdout) as { server: string; client: string };
  t.is(res.server, res.client, 'the data arrived intact');
  const buffered = [...k.stderr().matchAll(/debug: tun: .* buffered=(\d+) /g)].map((m) => Number(m[1]));
  const maxBuffered = Math.max(0, ...buffered);
  t.log(`RSS ${(rssBefore / 2 ** 20).toFixed(1)} -> max ${(rssMax / 2 ** 20).toFixed(1)} MiB; engine buffered at most ${(maxBuffered / 2 ** 20).toFixed(2)} MiB in ${buffered.length} samples`);
  // The data goes up (laptop -> slow far reader): the flow holds at most its receive window (1 MiB)
  // plus one window's worth waiting for the far stream; its send queue (4 MiB, the download side)
  // stays empty here.
  t.true(maxBuffered <= 2 << 20, `buffered ${maxBuffered}`);
  t.true(rssMax - rssBefore < 96 << 20, `RSS grew by ${rssMax - rssBefore} bytes while 256 MiB went through a paused reader`);
  await stopped(t, k);
  await assertClean(t, l);
});

maybeSerial('kill -9 leaves resolv.conf rewritten; the next start cleans it, and its own exit restores the original', async (t) => {
  t.timeout(90_000);
  const l = await laptop(t);
  const first = await started(l, 'sshd');
  t.teardown(() => first.child.kill('SIGKILL'));
  t.not(readFileSync(l.resolvPath, 'utf8'), LAPTOP_RESOLV);
  first.child.kill('SIGKILL');
  await first.exited;
  t.not(readFileSync(l.resolvPath, 'utf8'), LAPTOP_RESOLV, 'nothing restores resolv.conf after kill -9');
  t.true(readdirSync(l.stateDir).length > 0, 'the crash records are there');

  const second = await started(l, 'sshd');
  t.teardown(() => second.child.kill('SIGKILL'));
  t.regex(second.stderr(), /cleaned up after ktctl process \d+ \(gone\): restored \/etc\/resolv\.conf/);
  t.regex(second.stderr(), /cleaned up after ktctl process \d+ \(gone\)/);
  t.is(await l.ns.execOk('curl', ['-sS', '--max-time', '10', `http://web.${ZONE}:${HTTP_PORT}/again`]), `hello GET /again host=web.${ZONE}:${HTTP_PORT}`);
  await stopped(t, second);
  await assertClean(t, l);
});

maybe('without CAP_NET_ADMIN: one sentence pointing at --mode socks, exit 1, nothing made', async (t) => {
  const l = await laptop(t);
  const k = ktctl(l, connectArgs(l, 'sshd'), ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin']);
  t.is(await k.exited, 1, k.stderr());
  t.regex(k.stderr(), /^ktctl: --mode tun needs root \(or CAP_NET_ADMIN\).*--mode socks/m);
  t.notRegex(k.stderr(), /connected to/, 'the transport was not built');
  await assertClean(t, l);
});

maybe('podDNS: resolv.conf points at the far side\'s resolver through the TUN; hosts mode with --via is refused', async (t) => {
  t.timeout(60_000);
  const l = await laptop(t);
  const hosts = ktctl(l, connectArgs(l, 'sshd', ['--dnsMode', 'hosts']));
  t.is(await hosts.exited, 1, hosts.stderr());
  t.regex(hosts.stderr(), /^ktctl: --dnsMode hosts .* needs a cluster/m);

  const k = await started(l, 'shadow', ['--dnsMode', 'podDNS']);
  t.teardown(() => k.child.kill('SIGKILL'));
  t.regex(readFileSync(l.resolvPath, 'utf8'), new RegExp(`^nameserver ${lab.target.replace(/\./g, '\\.')}$`, 'm'));
  // UDP to the far side's resolver cannot ride a TCP tunnel: the engine answers it through the tunnel.
  const web = await l.ns.execOk('getent', ['ahostsv4', `web.${ZONE}`]);
  t.regex(web, new RegExp(`^${lab.target.replace(/\./g, '\\.')}\\s`));
  t.is(await l.ns.execOk('curl', ['-sS', '--max-time', '10', `http://web.${ZONE}:${HTTP_PORT}/pod`]), `hello GET /pod host=web.${ZONE}:${HTTP_PORT}`);
  await stopped(t, k);
  await assertClean(t, l);
});

maybe('without --dnsServer, --via leaves DNS untouched and says so', async (t) => {
  t.timeout(60_000);
  const l = await laptop(t);
  const args = connectArgs(l, 'sshd').filter((a, i, all) => a !== '--dnsServer' && all[i - 1] !== '--dnsServer');
  const k = ktctl(l, args);
  t.teardown(() => k.child.kill('SIGKILL'));
  await until(() => /connected through/.test(k.stderr()) || /^ktctl: /m.test(k.stderr()), { what: () => k.stderr(), timeoutMs: 30_000 });
  t.regex(k.stderr(), /DNS: untouched \(with --via ktctl handles DNS only when --dnsServer IP/);
  t.is(readFileSync(l.resolvPath, 'utf8'), LAPTOP_RESOLV);
  t.is(await l.ns.execOk('curl', ['-sS', '--max-time', '10', `http://${lab.target}:${HTTP_PORT}/x`]), `hello GET /x host=${lab.target}:${HTTP_PORT}`);
  await stopped(t, k);
  await assertClean(t, l);
});
