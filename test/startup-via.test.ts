/**
 * The start-up window of `connect --mode socks`, `forward` and `connect --mode tun` with `--via`:
 * the built CLI in a client namespace, OpenSSH's sshd in a server namespace, and between them a
 * TCP relay in the client namespace that holds each connection before passing it on (a far side
 * that is slow to answer), so the local port is open well before the tunnel is up.
 * - a request made the moment the port opens waits for the tunnel and succeeds;
 * - forward: one that waits longer than the budget (10 s, as during a reconnect) is reset, naming why;
 * - SIGINT/SIGTERM while the tunnel is being made: exit 0 at once, waiting requests end at once,
 *   nothing left (process, listener, TUN device, state records).
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliRun } from './helpers/cli-process.js';
import { createNetns, linkNetns, type Netns } from './helpers/netns.js';
import { collectJsonLines, startViaServer, TeardownList, VIA_PORTS, ZONE, type ViaServer } from './helpers/ssh-fixtures.js';

const { sshd: SSHD_PORT, http: HTTP_PORT } = VIA_PORTS;
/** where the relay listens in the client namespace */
const RELAY_PORT = 2200;
const LOCAL_PORT = 3300;

const hooks = new TeardownList();
let far: ViaServer;

test.before(async () => {
  far = await startViaServer(hooks, { prefix: 'ktt-startup-' });
});

test.after.always(() => hooks.run());

/** Accepts on 127.0.0.1:port, says {accepted}, waits `delayMs`, then relays to host:target. */
const RELAY_SCRIPT = String.raw`
const net = require('node:net');
const [port, host, target, delay] = process.argv.slice(1).map((v, i) => (i === 1 ? v : Number(v)));
net.createServer((s) => {
  s.on('error', () => {});
  s.pause();
  process.stdout.write(JSON.stringify({ accepted: true }) + '\n');
  setTimeout(() => {
    const up = net.connect({ host, port: target }, () => { s.pipe(up); up.pipe(s); s.resume(); });
    up.on('error', () => s.destroy());
    s.on('close', () => up.destroy());
  }, delay);
}).listen(port, '127.0.0.1', () => process.stdout.write(JSON.stringify({ ready: true }) + '\n'));
`;

interface Client {
  ns: Netns;
  knownHosts: string;
  stateDir: string;
  /** Resolves when the relay has accepted ktctl's ssh connection (ktctl is making the tunnel). */
  accepted: Promise<unknown>;
}

/** A client namespace linked to the server, with the relay (`delayMs`) and a state directory of its own. */
async function clientNs(t: ExecutionContext, delayMs: number): Promise<Client> {
  const ns = await createNetns(t);
  const { bIp: serverIp } = await linkNetns(t, ns, far.server);
  const knownHosts = join(far.dir, `known_hosts_${ns.name}`);
  writeFileSync(knownHosts, `[127.0.0.1]:${RELAY_PORT} ${far.sshdHost.public}\n`);
  t.teardown(() => rmSync(knownHosts, { force: true }));
  const stateDir = mkdtempSync(join(tmpdir(), 'ktt-startup-state-'));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const relay = ns.spawn('node', ['-e', RELAY_SCRIPT, String(RELAY_PORT), serverIp, String(SSHD_PORT), String(delayMs)]);
  const lines = collectJsonLines(relay);
  await lines.waitFor((l) => l.ready === true);
  return { ns, knownHosts, stateDir, accepted: lines.waitFor((l) => l.accepted === true) };
}

function ktctl(t: ExecutionContext, c: Client, args: string[]): CliRun {
  const via = ['--via', `root@127.0.0.1:${RELAY_PORT}`, '--identity', join(far.dir, 'id_ed25519'), '--knownHosts', c.knownHosts, '--debug'];
  return startCli(t, [...args, ...via], { netns: c.ns.name, env: { HOME: far.dir, KTCTL_STATE_DIR: c.stateDir } });
}

const portOpen = async (c: Client, port: number): Promise<boolean> => (await c.ns.exec('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`])).code === 0;

/** Polls until the local port takes connections (the listener is bound); fails if ktctl exits first. */
async function untilOpen(c: Client, port: number, run: CliRun): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await portOpen(c, port))) {
    if (run.child.exitCode !== null) throw new Error(`ktctl exited before port ${port} opened: ${run.log()}`);
    if (Date.now() > deadline) throw new Error(`port ${port} did not open: ${run.log()}`);
  }
}

const MODES = {
  socks: {
    args: ['connect', '--mode', 'socks', '--proxyPort', String(LOCAL_PORT)],
    up: /ALL_PROXY=/,
    curl: (path: string) => ['-x', `socks5h://127.0.0.1:${LOCAL_PORT}`, `http://web.${ZONE}:${HTTP_PORT}${path}`],
    expect: (path: string) => `hello GET ${path} host=web.${ZONE}:${HTTP_PORT}`,
  },
  forward: {
    args: () => ['forward', `${far.target}:${HTTP_PORT}`, String(LOCAL_PORT)],
    up: /^forwarding /m,
    curl: (path: string) => [`http://127.0.0.1:${LOCAL_PORT}${path}`],
    expect: (path: string) => `hello GET ${path} host=127.0.0.1:${LOCAL_PORT}`,
  },
} as const;

const argsOf = (mode: keyof typeof MODES): string[] => {
  const a = MODES[mode].args;
  return typeof a === 'function' ? a() : [...a];
};

for (const mode of ['socks', 'forward'] as const) {
  test(`${mode}: a request made the moment the local port opens waits for the tunnel and succeeds`, async (t) => {
    const c = await clientNs(t, 3000);
    const run = ktctl(t, c, argsOf(mode));
    await untilOpen(c, LOCAL_PORT, run);
    t.false(MODES[mode].up.test(run.log()), `the tunnel must not be up yet: ${run.log()}`);
    const r = await c.ns.exec('curl', ['-sS', '--max-time', '20', ...MODES[mode].curl('/early')]);
    t.is(r.code, 0, `${r.stderr}\n${run.log()}`);
    t.is(r.stdout, MODES[mode].expect('/early'));
    t.regex(run.log(), MODES[mode].up);
    await run.stop(t);
  });
}

test('forward: a connection that waits longer than 10 s for the tunnel is reset, naming why; later ones work', async (t) => {
  const c = await clientNs(t, 13_000);
  const run = ktctl(t, c, argsOf('forward'));
  await untilOpen(c, LOCAL_PORT, run);
  const started = Date.now();
  const r = await c.ns.exec('curl', ['-sS', '--max-time', '30', ...MODES.forward.curl('/late')]);
  const waited = Date.now() - started;
  t.not(r.code, 0, r.stdout);
  t.true(waited >= 9500 && waited < 12_500, `reset after ${waited} ms`);
  t.regex(run.log(), /the tunnel is not up yet \(waited 10 s\); connection reset/);
  await run.waitFor(MODES.forward.up, 20_000);
  const again = await c.ns.exec('curl', ['-sS', '--max-time', '10', ...MODES.forward.curl('/after')]);
  t.is(again.stdout, MODES.forward.expect('/after'), again.stderr);
  await run.stop(t);
});

/** What a run left behind in its namespace and state directory. */
async function leftovers(c: Client): Promise<string[]> {
  const out: string[] = [];
  if (await portOpen(c, LOCAL_PORT)) out.push(`a listener on ${LOCAL_PORT}`);
  const tun = (await c.ns.execOk('ip', ['-o', 'link', 'show', 'type', 'tun'])).trim();
  if (tun !== '') out.push(`TUN device: ${tun}`);
  for (const f of readdirSync(c.stateDir)) out.push(`state record ${f}`);
  return out;
}

const SIGNAL_CASES = [
  { mode: 'socks', signal: 'SIGINT' },
  { mode: 'forward', signal: 'SIGTERM' },
  { mode: 'tun', signal: 'SIGINT' },
] as const;

for (const { mode, signal } of SIGNAL_CASES) {
  test(`${mode}: ${signal} while the tunnel is being made exits 0 at once and leaves nothing`, async (t) => {
    // The relay never passes the connection on: the tunnel stays "being made".
    const c = await clientNs(t, 600_000);
    const run = ktctl(t, c, mode === 'tun' ? ['connect', '--mode', 'tun', '--includeIps', `${far.target}/32`] : argsOf(mode));
    await c.accepted;
    let waiting: Promise<{ code: number; at: number }> | undefined;
    if (mode !== 'tun') {
      await untilOpen(c, LOCAL_PORT, run);
      // A request that waits for the tunnel when the signal comes: it must end at once, not hang.
      waiting = c.ns.exec('curl', ['-sS', '--max-time', '30', ...MODES[mode].curl('/waiting')]).then((r) => ({ code: r.code, at: Date.now() }));
      await new Promise((r) => setTimeout(r, 300));
    }
    const sent = Date.now();
    run.child.kill(signal);
    const code = await Promise.race([run.exited, new Promise<string>((r) => setTimeout(() => r('still running 10 s after the signal'), 10_000))]);
    t.is(code, 0, run.log());
    t.true(Date.now() - sent < 5000, `exit took ${Date.now() - sent} ms`);
    t.regex(run.log(), new RegExp(`got ${signal}; stopping`));
    t.notRegex(run.log(), /^\s+at /m, 'no stack trace');
    t.notRegex(run.log(), /^ktctl: /m, 'no error sentence');
    if (waiting) {
      const w = await waiting;
      t.not(w.code, 0);
      t.true(w.at - sent < 3000, `the waiting request ended ${w.at - sent} ms after the signal`);
    }
    t.deepEqual(await leftovers(c), []);
  });
}
