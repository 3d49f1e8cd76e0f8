/**
 * UDP in TUN mode with `--via`, without the lab: the built CLI in a laptop namespace of the test's
 * own, OpenSSH sshd and ktctl's shadow (the bundled dist/shadow.mjs) in a server namespace, a UDP
 * echo server on an address only the server namespace has.
 * - via the shadow: UDP is carried (1, 1400 and 8000 bytes, the last as IPv4 fragments both ways;
 *   1000 in flight in order), and a closed port answers with ICMP port unreachable from the far side;
 * - via sshd (no UDP subsystem): ktctl says so in one line at start, and a datagram gets ICMP port
 *   unreachable at once, as before.
 */
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createNetns, linkNetns, type Netns } from './helpers/netns.js';
import { REPO, startViaServer, TeardownList, VIA_PORTS, viaKnownHosts, type ViaServer } from './helpers/ssh-fixtures.js';
import { until } from './helpers/poll.js';
import { CLIENT_SCRIPT } from './helpers/udp-client.js';

const CLI = join(REPO, 'dist/cli/main.js');
const ECHO_PORT = 7007;
const CLOSED_PORT = 7008;
const NOT_CARRIED = /UDP beyond DNS is not carried/g;
const isRoot = process.getuid?.() === 0;
const maybe = isRoot ? test : test.skip;
const hooks = new TeardownList();
let via: ViaServer;

const ECHO_SCRIPT = String.raw`
const u = require('node:dgram').createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
u.on('message', (m, r) => u.send(m, r.port, r.address));
u.bind(${ECHO_PORT}, process.argv[1], () => process.stdout.write('ready\n'));
`;

test.before(async () => {
  if (!isRoot) return;
  via = await startViaServer(hooks, { prefix: 'ktt-udp-' });
  const echo = via.server.spawn('node', ['-e', ECHO_SCRIPT, via.target], { cwd: REPO });
  await new Promise<void>((resolve, reject) => {
    echo.stdout!.once('data', () => resolve());
    echo.once('exit', (code) => reject(new Error(`the echo server exited with ${code}`)));
  });
});
test.after.always(() => hooks.run());

interface Run {
  ns: Netns;
  child: ChildProcess;
  log: () => string;
}

async function connect(t: ExecutionContext, server: 'sshd' | 'shadow'): Promise<Run> {
  const ns = await createNetns(t, 'ktudp');
  const { bIp: serverIp } = await linkNetns(t, ns, via.server);
  const knownHosts = viaKnownHosts(t, via, ns.name, serverIp);
  const stateDir = join(via.dir, `state_${ns.name}`);
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const port = server === 'sshd' ? VIA_PORTS.sshd : VIA_PORTS.shadow;
  const child = ns.spawn('node', [CLI, 'connect', '--via', `root@${serverIp}:${port}`, '--identity', join(via.dir, 'id_ed25519'), '--knownHosts', knownHosts, '--includeIps', `${via.target}/32`], {
    env: { ...process.env, HOME: via.dir, KTCTL_STATE_DIR: stateDir },
  });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(async () => {
    child.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
    if (code !== 0) child.kill('SIGKILL');
  });
  await until(() => /connected through/.test(log) || /^ktctl: /m.test(log), { what: () => log, timeoutMs: 30_000 });
  if (!/connected through/.test(log)) throw new Error(`ktctl did not start: ${log}`);
  return { ns, child, log: () => log };
}

async function client(r: Run, port: number, mode: string, n: number, size: string): Promise<Record<string, unknown>> {
  const out = await r.ns.execOk('node', ['-e', CLIENT_SCRIPT, via.target, String(port), mode, String(n), size], { timeoutMs: 60_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

maybe('via the shadow: UDP is carried, fragments both ways, 1000 in flight in order, ICMP port unreachable from the far side', async (t) => {
  t.timeout(90_000);
  const r = await connect(t, 'shadow');
  t.is(r.log().match(NOT_CARRIED), null, r.log());
  t.deepEqual(await client(r, ECHO_PORT, 'echo', 0, '1,1400,8000'), { ok: [true, true, true] });
  t.deepEqual(await client(r, ECHO_PORT, 'burst', 1000, '200'), { got: 1000, inOrder: true, missing: 0 });
  t.deepEqual(await client(r, CLOSED_PORT, 'refused', 0, '0'), { error: 'ECONNREFUSED' });
});

maybe('via sshd (no UDP subsystem): one line at start says UDP is not carried; datagrams get port unreachable', async (t) => {
  t.timeout(90_000);
  const r = await connect(t, 'sshd');
  t.is(r.log().match(NOT_CARRIED)?.length, 1, r.log());
  t.deepEqual(await client(r, ECHO_PORT, 'refused', 0, '0'), { error: 'ECONNREFUSED' });
  t.is(r.log().match(NOT_CARRIED)?.length, 1, 'said once, not per datagram');
});
