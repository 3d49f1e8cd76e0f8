/**
 * `ktctl connect --mode socks --via` as a user runs it: the built CLI as a process in a client
 * namespace, an OpenSSH sshd and ktctl's shadow in a server namespace, targets on an address only
 * the server namespace has, and a DNS name only its resolver knows. curl is the client.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNetns, linkNetns, run, runOk, waitForTcp, type Netns } from './helpers/netns.js';
import { ed25519, REPO, startViaServer, TeardownList, VIA_PORTS, viaKnownHosts, ZONE, type ViaServer } from './helpers/ssh-fixtures.js';
import { until } from './helpers/poll.js';

const CLI = join(REPO, 'dist/cli/main.js');
const { sshd: SSHD_PORT, shadow: SHADOW_PORT, http: HTTP_PORT } = VIA_PORTS;

const hooks = new TeardownList();
let lab: ViaServer;

test.before(async () => {
  lab = await startViaServer(hooks, { prefix: 'ktt-connect-' });
});

test.after.always(() => hooks.run());

interface Client {
  ns: Netns;
  serverIp: string;
  knownHosts: string;
}

/** A client namespace of the test's own, linked to the server; known_hosts holds both servers. */
async function clientNs(t: Parameters<typeof createNetns>[0]): Promise<Client> {
  const ns = await createNetns(t);
  const { bIp: serverIp } = await linkNetns(t, ns, lab.server);
  return { ns, serverIp, knownHosts: viaKnownHosts(t, lab, ns.name, serverIp) };
}

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function ktctl(ns: Netns, args: string[]): Running {
  const child = ns.spawn('node', [CLI, ...args], { env: { ...process.env, HOME: lab.dir } });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

for (const server of ['sshd', 'shadow'] as const) {
  test(`via ${server}: curl through socks5h and the HTTP proxy, refused target, then SIGINT removes everything`, async (t) => {
    const c = await clientNs(t);
    const port = server === 'sshd' ? SSHD_PORT : SHADOW_PORT;
    const proxyPort = 3000 + (port % 1000);
    const k = ktctl(c.ns, [
      'connect', '--mode', 'socks', '--via', `root@${c.serverIp}:${port}`,
      '--identity', join(lab.dir, 'id_ed25519'), '--knownHosts', c.knownHosts, '--proxyPort', String(proxyPort), '--debug',
    ]);
    t.teardown(() => k.child.kill('SIGKILL'));
    await until(() => k.stdout().includes('ALL_PROXY='), { what: () => k.stderr(), timeoutMs: 20_000 });
    t.is(
      k.stdout().trim(),
      `export ALL_PROXY=socks5h://127.0.0.1:${proxyPort} HTTP_PROXY=http://127.0.0.1:${proxyPort} HTTPS_PROXY=http://127.0.0.1:${proxyPort}`,
    );

    // A name only the far side resolves, through SOCKS5 with remote resolution.
    const byName = await c.ns.execOk('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://web.${ZONE}:${HTTP_PORT}/a`]);
    t.is(byName, `hello GET /a host=web.${ZONE}:${HTTP_PORT}`);
    // The short name, by the far side's search domain.
    const short = await c.ns.execOk('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://web:${HTTP_PORT}/b`]);
    t.is(short, `hello GET /b host=web:${HTTP_PORT}`);
    // The HTTP proxy: an absolute-URI request, and CONNECT (-p).
    const viaHttp = await c.ns.execOk('curl', ['-sS', '--max-time', '10', '-x', `http://127.0.0.1:${proxyPort}`, `http://${lab.target}:${HTTP_PORT}/c`]);
    t.is(viaHttp, `hello GET /c host=${lab.target}:${HTTP_PORT}`);
    const viaConnect = await c.ns.execOk('curl', ['-sS', '--max-time', '10', '-p', '-x', `http://127.0.0.1:${proxyPort}`, `http://web.${ZONE}:${HTTP_PORT}/d`]);
    t.is(viaConnect, `hello GET /d host=web.${ZONE}:${HTTP_PORT}`);
    // Nothing listens on port 1 of the target: SOCKS reply 5, HTTP 502 naming the refusal.
    const refused = await c.ns.exec('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://${lab.target}:1/`]);
    t.is(refused.code, 97);
    t.regex(refused.stderr, /\(5\)/);
    const refusedHttp = await c.ns.exec('curl', ['-sS', '--max-time', '10', '-w', '%{http_code}', '-x', `http://127.0.0.1:${proxyPort}`, `http://${lab.target}:1/`]);
    t.regex(refusedHttp.stdout, /refused/);
    t.regex(refusedHttp.stdout, /502$/);
    const unknown = await c.ns.exec('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://nope.${ZONE}/`]);
    t.is(unknown.code, 97);
    t.regex(unknown.stderr, /\(4\)/);
    // The proxy keeps serving after those errors.
    t.is(await c.ns.execOk('curl', ['-sS', '--max-time', '10', '-x', `socks5h://127.0.0.1:${proxyPort}`, `http://web:${HTTP_PORT}/e`]), `hello GET /e host=web:${HTTP_PORT}`);
    // OpenSSH has no resume layer: said once at start; the shadow has it: nothing said.
    const noResume = k.stderr().match(/open connections will not survive a dropped tunnel: the ssh server is not a ktctl shadow \(OpenSSH_[^)]*\)/g) ?? [];
    t.is(noResume.length, server === 'sshd' ? 1 : 0, k.stderr());

    k.child.kill('SIGINT');
    const code = await Promise.race([k.exited, new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGINT'), 20_000))]);
    t.is(code, 0, k.stderr());
    t.regex(k.stderr(), /removed the proxy/);
    t.regex(k.stderr(), /removed the ssh connection/);
    const after = await c.ns.exec('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${proxyPort}`]);
    t.not(after.code, 0, 'the proxy port must be closed after exit');
  });
}

test('an unknown host key is refused with its SHA256 fingerprint, exit 1, nothing left listening', async (t) => {
  const c = await clientNs(t);
  const empty = join(lab.dir, `known_hosts_empty_${c.ns.name}`);
  writeFileSync(empty, '');
  t.teardown(() => rmSync(empty, { force: true }));
  const k = ktctl(c.ns, ['connect', '--mode', 'socks', '--via', `root@${c.serverIp}:${SSHD_PORT}`, '--identity', join(lab.dir, 'id_ed25519'), '--knownHosts', empty, '--proxyPort', '3101']);
  t.is(await k.exited, 1);
  const pub = join(lab.dir, `sshd_host_${c.ns.name}.pub`);
  writeFileSync(pub, lab.sshdHost.public + '\n');
  t.teardown(() => rmSync(pub, { force: true }));
  const fp = (await runOk('ssh-keygen', ['-lf', pub])).split(' ')[1]!;
  t.true(k.stderr().includes(fp), k.stderr());
  t.is(k.stderr().trim().split('\n').filter((l) => l.startsWith('ktctl:')).length, 1, 'one sentence');
  t.is((await c.ns.exec('bash', ['-c', 'exec 3<>/dev/tcp/127.0.0.1/3101'])).code === 0, false);
});

test('a key the server refuses, an unreachable server, a taken proxy port, a malformed --via: one sentence and exit 1 each', async (t) => {
  const c = await clientNs(t);
  const other = ed25519('not-authorized');
  const otherKey = join(lab.dir, `other_${c.ns.name}`);
  writeFileSync(otherKey, other.private, { mode: 0o600 });
  t.teardown(() => rmSync(otherKey, { force: true }));

  const base = ['connect', '--mode', 'socks', '--knownHosts', c.knownHosts];
  const refusedKey = ktctl(c.ns, [...base, '--via', `root@${c.serverIp}:${SHADOW_PORT}`, '--identity', otherKey, '--proxyPort', '3102']);
  t.is(await refusedKey.exited, 1);
  t.regex(refusedKey.stderr(), /refused the key/);

  // Nothing listens on port 9 of the server.
  const unreachable = ktctl(c.ns, [...base, '--via', `root@${c.serverIp}:9`, '--identity', join(lab.dir, 'id_ed25519'), '--proxyPort', '3103']);
  t.is(await unreachable.exited, 1);
  t.regex(unreachable.stderr(), /^ktctl: .*(refused|cannot connect|unreachable)/im);

  const holder = c.ns.spawn('node', ['-e', "require('node:net').createServer().listen(3104, '127.0.0.1', () => console.log('up'))"]);
  await waitForTcp(c.ns, '127.0.0.1', 3104);
  const taken = ktctl(c.ns, [...base, '--via', `root@${c.serverIp}:${SHADOW_PORT}`, '--identity', join(lab.dir, 'id_ed25519'), '--proxyPort', '3104']);
  t.is(await taken.exited, 1);
  t.regex(taken.stderr(), /127\.0\.0\.1:3104 is already in use; pick another with --proxyPort/);
  holder.kill();

  const malformed = spawn('node', [CLI, 'connect', '--mode', 'socks', '--via', 'no-user-here'], { stdio: 'pipe' });
  let err = '';
  malformed.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => malformed.once('close', r));
  t.is(code, 1);
  t.is(err.trim(), 'ktctl: --via must look like user@host or user@host:port (got "no-user-here")');
});

test('ktctl --version and --help work without root or network', async (t) => {
  const v = await run('node', [CLI, '--version']);
  t.is(v.code, 0);
  t.regex(v.stdout, /^\d+\.\d+\.\d+/);
  const h = await run('node', [CLI, 'connect', '--help']);
  t.is(h.code, 0);
  t.regex(h.stdout, /--via/);
});
