/**
 * The live figures of a session (issue 14, src/control): the built CLI runs `ktctl forward --via`
 * to ktctl's shadow in a namespace of the test's own (no cluster needed), with a state directory of
 * its own that every user may enter, so only the socket's own mode keeps others out:
 * - the control socket is `ctl-<pid>.sock`, mode 0600, and a client run as `nobody` is refused;
 * - `ktctl status --json` and `ktctl status` show the session: command, target, transport, bytes in
 *   and out that rise with a download through the forward, flows, the tunnel's round trip;
 * - a socket left by a session killed with -9 is removed by the next listing, and a stopped
 *   session removes its own.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SessionFigures } from '../src/control/meter.js';
import { startCli, CLI } from './helpers/cli-process.js';
import { createNetns, linkNetns, type Netns } from './helpers/netns.js';
import { eventually, until } from './helpers/poll.js';
import { PORTS, startSshServers, startTargets, TeardownList } from './helpers/ssh-fixtures.js';

const isRoot = process.getuid?.() === 0;
const maybe = isRoot ? test : test.skip;
const SHADOW_PORT = 2222;
const hooks = new TeardownList();
let via: { server: Netns; target: string; dir: string; shadowHostPub: string } | undefined;

test.before(async () => {
  if (!isRoot) return;
  const server = await createNetns(hooks, 'ktctl');
  const target = await server.addTargetAddress();
  await startTargets(server, target);
  const s = await startSshServers(hooks, server, { sshdPort: 2022, shadowPort: SHADOW_PORT, prefix: 'ktt-ctl-' });
  via = { server, target, dir: s.dir, shadowHostPub: s.shadowHost.public };
});
test.after.always(() => hooks.run());

/** A state directory every user may enter (0755): the socket's own mode must keep others out. */
function stateDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ktt-ctl-state-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** `ktctl status --json` with this state directory and no cluster (its kubeconfig does not exist). */
async function status(dir: string): Promise<{ sessions: Array<SessionFigures | { pid: number; error: string }>; text: string }> {
  const env = { KTCTL_STATE_DIR: dir, KUBECONFIG: join(dir, 'no-kubeconfig') };
  const json = await run(process.execPath, [CLI, 'status', '--json'], env);
  const text = await run(process.execPath, [CLI, 'status'], env);
  return { sessions: (JSON.parse(json.stdout) as { sessions: Array<SessionFigures | { pid: number; error: string }> }).sessions, text: text.stdout };
}

/** Reads `bytes` through the forward: the target's 9000 answers 32 bytes of digest and 1 MiB after our EOF. */
const DOWNLOAD = String.raw`
const s = require('node:net').connect({ host: '127.0.0.1', port: Number(process.argv[1]), allowHalfOpen: true });
let n = 0;
s.on('data', (c) => (n += c.length));
s.on('end', () => { process.stdout.write(String(n)); s.end(); });
s.on('error', (e) => { process.stdout.write('error ' + (e.code || e.message)); process.exitCode = 3; });
s.end('x'.repeat(1000));
`;

maybe('a session answers on a 0600 control socket with its figures; another uid is refused; status shows them', async (t) => {
  const v = via!;
  const dir = stateDir(t);
  const laptop = await createNetns(t, 'ktctll');
  const { bIp } = await linkNetns(t, laptop, v.server);
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[${bIp}]:${SHADOW_PORT} ${v.shadowHostPub}\n`);
  const args = ['forward', `${v.target}:${PORTS.exchange}`, '0', '--via', `root@${bIp}:${SHADOW_PORT}`, '--identity', join(v.dir, 'id_ed25519'), '--knownHosts', knownHosts];
  const session = startCli(t, args, { netns: laptop.name, env: { KTCTL_STATE_DIR: dir } });
  const local = Number((await session.waitFor(/^forwarding 127\.0\.0\.1:(\d+) -> /m))[1]);
  const pid = session.child.pid!;
  // `ip netns exec` runs node as its child (exec): the pid is ktctl's
  const socket = join(dir, `ctl-${pid}.sock`);
  await until(() => existsSync(socket), { what: `the control socket ${socket}` });
  const st = statSync(socket);
  t.true(st.isSocket());
  t.is(st.mode & 0o777, 0o600, 'owner only');

  // another uid: connect(2) needs write permission on the socket
  const CONNECT = `require('node:net').connect(process.argv[1]).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(2); });`;
  const nobody = await run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', CONNECT, socket]);
  t.is(nobody.stdout.trim(), 'EACCES', `${nobody.stdout}${nobody.stderr}`);
  const owner = await run(process.execPath, ['-e', CONNECT, socket]);
  t.is(owner.stdout.trim(), 'connected');

  const before = await status(dir);
  t.is(before.sessions.length, 1, JSON.stringify(before.sessions));
  const f0 = before.sessions[0] as SessionFigures;
  t.like(f0, { version: 1, pid, command: 'forward', target: `${v.target}:${PORTS.exchange}`, via: true, transport: `root@${bIp}:${SHADOW_PORT}` });
  t.true(Date.parse(f0.startedAt) <= Date.now());

  // two downloads of 1 MiB + 32 through the forward: bytes in rise by at least that, out by our 1000 bytes each
  for (let i = 0; i < 2; i++) {
    const got = await laptop.exec('node', ['-e', DOWNLOAD, String(local)]);
    t.is(got.stdout, String((1 << 20) + 32), got.stderr);
  }
  const after = await eventually(async () => {
    const s = (await status(dir)).sessions[0] as SessionFigures;
    // the sampler folds the counters into the history once a second: the last bytes land up to a second later
    return s.rttMs !== null && s.history.reduce((a, h) => a + h.in, 0) >= 2 * (1 << 20) ? s : undefined;
  }, 'a round trip, and both downloads in the per-second history');
  t.true(after.bytes.in - f0.bytes.in >= 2 * ((1 << 20) + 32), `in ${f0.bytes.in} -> ${after.bytes.in}`);
  t.true(after.bytes.out - f0.bytes.out >= 2000, `out ${f0.bytes.out} -> ${after.bytes.out}`);
  t.is(after.flows.opened - f0.flows.opened, 2);
  t.is(after.reconnects, 0);
  t.true(after.rttMs! >= 0);
  t.true(after.history.reduce((a, h) => a + h.in, 0) >= 2 * (1 << 20), 'the per-second history adds up to the download');

  const text = (await status(dir)).text;
  t.regex(text, new RegExp(`live figures \\(1 session\\):\\n  pid ${pid}  forward ${v.target.replace(/\./g, '\\.')}:${PORTS.exchange}  through root@`));
  t.regex(text, /flows 0 open \(2 in all\) {2}in 2\.0 MiB/);

  await session.stop(t);
  t.false(existsSync(socket), 'a stopped session removes its socket');
  t.deepEqual((await status(dir)).sessions, []);
});

maybe('a socket left by a session killed with -9 is removed by the next listing', async (t) => {
  const dir = stateDir(t);
  // a process that listens on a control socket the way a session does, then dies without unlinking it
  const LISTEN = `const p = require('node:path').join(process.argv[1], 'ctl-' + process.pid + '.sock'); require('node:net').createServer().listen(p, () => console.log(p));`;
  const child = spawn(process.execPath, ['-e', LISTEN, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const path = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  t.true(existsSync(path), 'kill -9 leaves the socket');
  const { sessions, text } = await status(dir);
  t.deepEqual(sessions, []);
  t.regex(text, /live figures \(0 sessions\)/);
  t.false(existsSync(path), 'status removed it');
});
