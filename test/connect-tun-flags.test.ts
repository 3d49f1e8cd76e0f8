/**
 * TUN-mode flags of `ktctl connect`, with `--via` to an OpenSSH sshd in a server namespace of the
 * test's own and ktctl (the built CLI, as root) in a laptop namespace linked to it:
 * - `--excludeIps`: an excluded address inside an included range gets no route (and no answer),
 *   its neighbours do;
 * - `--tunName`: a name held by another interface, or by another running ktctl, is an error in one
 *   sentence with nothing left; without `--tunName` a second ktctl takes the next free ktN;
 * IPv6 through the kernel is not tested here: the project's network rules allow test traffic only to
 * loopback and 198.18.0.0/15; the engine's IPv6 path is covered by the wire and engine tests.
 * DNS is left alone here (no --dnsServer): nothing outside the namespaces is touched.
 */
import test, { type ExecutionContext } from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocateBlock, createNetns, linkNetns, waitForTcp, type Netns } from './helpers/netns.js';
import { startCli, type CliRun } from './helpers/cli-process.js';
import { startSshServers, TeardownList } from './helpers/ssh-fixtures.js';

const SSHD_PORT = 2022;
const HTTP_PORT = 8080;
const isRoot = process.getuid?.() === 0;

const hooks = new TeardownList();
let server: { ns: Netns; dir: string; hostKey: string; base: string; first: string; second: string };

const HTTP_SCRIPT = `
const http = require('node:http');
for (const addr of process.argv.slice(1)) http.createServer((req, res) => res.end('hello ' + addr)).listen(${HTTP_PORT}, addr);
`;

test.before(async () => {
  if (!isRoot) return;
  const ns = await createNetns(hooks, 'kttf');
  const block = allocateBlock();
  hooks.teardown(() => block.release());
  await ns.addAddress(`${block.first}/32`);
  await ns.addAddress(`${block.second}/32`);
  ns.spawn('node', ['-e', HTTP_SCRIPT, block.first, block.second]);
  await waitForTcp(ns, block.first, HTTP_PORT);
  await waitForTcp(ns, block.second, HTTP_PORT);
  const s = await startSshServers(hooks, ns, { sshdPort: SSHD_PORT, shadowPort: 2222, prefix: 'ktt-tunf-' });
  server = { ns, dir: s.dir, hostKey: s.sshdHost.public, base: block.base, first: block.first, second: block.second };
});
test.after.always(() => hooks.run());

interface Laptop {
  ns: Netns;
  via: string[];
  stateDir: string;
}

async function laptop(t: ExecutionContext): Promise<Laptop> {
  const ns = await createNetns(t, 'kttfl');
  const { bIp } = await linkNetns(t, ns, server.ns);
  const knownHosts = join(server.dir, `known_hosts_${ns.name}`);
  writeFileSync(knownHosts, `[${bIp}]:${SSHD_PORT} ${server.hostKey}\n`);
  const stateDir = join(server.dir, `state_${ns.name}`);
  t.teardown(() => {
    rmSync(knownHosts, { force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });
  return { ns, stateDir, via: ['--via', `root@${bIp}:${SSHD_PORT}`, '--identity', join(server.dir, 'id_ed25519'), '--knownHosts', knownHosts] };
}

function ktctl(t: ExecutionContext, l: Laptop, args: string[]): CliRun {
  return startCli(t, ['connect', ...l.via, ...args], { netns: l.ns.name, env: { KTCTL_STATE_DIR: l.stateDir } });
}

const connected = (k: CliRun): Promise<unknown> => k.waitFor(/connected through/, 30_000);

async function noKtctlLeft(t: ExecutionContext, l: Laptop, except: string[] = []): Promise<void> {
  const links = (await l.ns.execOk('ip', ['-o', 'link'])).split('\n').filter((line) => /\bkt\d+:/.test(line) && !except.some((e) => line.includes(` ${e}:`)));
  t.deepEqual(links, []);
  const routes = (await l.ns.execOk('ip', ['route', 'show', 'table', 'all'])).split('\n').filter((r) => /dev kt\d/.test(r) && !except.some((e) => r.includes(`dev ${e}`)));
  t.deepEqual(routes, []);
}

const maybe = isRoot ? test : test.skip;

maybe('--excludeIps: an excluded address inside an included range is not routed, its neighbours are', async (t) => {
  const l = await laptop(t);
  const k = ktctl(t, l, ['--includeIps', `${server.base}/30`, '--excludeIps', `${server.first}`]);
  await connected(k);
  // base/30 minus first/32: base/32 and second/31
  const routes = await l.ns.execOk('ip', ['-4', 'route', 'show', 'dev', 'kt0']);
  t.deepEqual(routes.split('\n').map((r) => r.trim().split(' ')[0]).filter((r) => r && !r.startsWith('169.254.')).sort(), [server.base, `${server.second}/31`].sort(), routes);
  const viaTun = await l.ns.execOk('ip', ['route', 'get', server.second]);
  t.regex(viaTun, /dev kt0/);
  const excluded = await l.ns.exec('ip', ['route', 'get', server.first]);
  t.notRegex(excluded.stdout + excluded.stderr, /dev kt0/, 'the excluded address is not routed into the device');
  const ok = await l.ns.exec('curl', ['-sS', '--max-time', '10', `http://${server.second}:${HTTP_PORT}/`]);
  t.is(ok.stdout, `hello ${server.second}`, ok.stderr);
  const no = await l.ns.exec('curl', ['-sS', '--max-time', '5', `http://${server.first}:${HTTP_PORT}/`]);
  t.is(no.code, 7, `the laptop has no other route there: ${no.stderr}`);
  await k.stop(t);
  await noKtctlLeft(t, l);
});

maybe('--tunName: a name another interface or another ktctl holds is refused in one sentence; without it the next free ktN is taken', async (t) => {
  const l = await laptop(t);
  await l.ns.execOk('ip', ['link', 'add', 'ktbusy', 'type', 'veth', 'peer', 'name', 'ktbusyp']);
  const veth = ktctl(t, l, ['--tunName', 'ktbusy', '--includeIps', `${server.second}/32`]);
  t.is(await veth.exited, 1, veth.log());
  t.regex(veth.log(), /^ktctl: the interface ktbusy already exists \(a veth interface\): pick another --tunName, or leave it out to take the next free ktN\n$/m);
  await noKtctlLeft(t, l);

  const first = ktctl(t, l, ['--includeIps', `${server.second}/32`]);
  await connected(first);
  t.regex(first.log(), /TUN device kt0 /);
  const taken = ktctl(t, l, ['--tunName', 'kt0', '--includeIps', `${server.first}/32`]);
  t.is(await taken.exited, 1, taken.log());
  t.regex(taken.log(), /^ktctl: the interface kt0 already exists \(a TUN device, used by ktctl process \d+\): pick another --tunName, or leave it out to take the next free ktN\n$/m);
  const second = ktctl(t, l, ['--includeIps', `${server.first}/32`]);
  await connected(second);
  t.regex(second.log(), /TUN device kt1 /);
  const r = await l.ns.exec('curl', ['-sS', '--max-time', '10', `http://${server.first}:${HTTP_PORT}/`]);
  t.is(r.stdout, `hello ${server.first}`, r.stderr);
  await second.stop(t);
  await noKtctlLeft(t, l, ['kt0']);
  await first.stop(t);
  await noKtctlLeft(t, l);
});
