/**
 * `ktctl connect --via user@NAME:port` in TUN mode, the ssh server named by host name (from the
 * laptop's /etc/hosts, which `ip netns exec` shows from /etc/netns/NAME/hosts) and its address
 * inside `--includeIps`: the address stays out of the device's routes (one sentence naming host,
 * address and range), so ktctl's own ssh connection keeps its path while the target behind it is
 * reached through the tunnel. Own namespaces only (test/helpers/ssh-fixtures.ts's far side); no lab.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatCidr, parseCidr } from '../src/tun/cidr.js';
import { createNetns, linkNetns } from './helpers/netns.js';
import { until } from './helpers/poll.js';
import { REPO, startViaServer, TeardownList, VIA_PORTS, type ViaServer } from './helpers/ssh-fixtures.js';

const CLI = join(REPO, 'dist/cli/main.js');
const isRoot = process.getuid?.() === 0;
const hooks = new TeardownList();
let far: ViaServer;

test.before(async () => {
  if (!isRoot) return;
  far = await startViaServer(hooks, { prefix: 'ktt-vbn-' });
});
test.after.always(() => hooks.run());

const maybe = isRoot ? test : test.skip;

maybe('--via by host name: the ssh server\'s address inside --includeIps keeps its route, said once; the target works; nothing left', async (t) => {
  t.timeout(90_000);
  const ns = await createNetns(t, 'ktvbn');
  const { bIp: serverIp, aDev } = await linkNetns(t, ns, far.server);
  const name = 'bastion.ktt.test';
  ns.setResolvConf('nameserver 127.0.0.1\n');
  writeFileSync(join('/etc/netns', ns.name, 'hosts'), `127.0.0.1 localhost\n${serverIp} ${name}\n`);
  const knownHosts = join(far.dir, `known_hosts_${ns.name}`);
  writeFileSync(knownHosts, `[${name}]:${VIA_PORTS.sshd} ${far.sshdHost.public}\n`);
  t.teardown(() => rmSync(knownHosts, { force: true }));
  const stateDir = join(far.dir, `state_${ns.name}`);
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  // The /31 that holds the ssh server (and the broadcast address of the link's /30).
  const range = formatCidr(parseCidr(`${serverIp}/31`));

  const child: ChildProcess = ns.spawn('node', [
    CLI, 'connect', '--via', `root@${name}:${VIA_PORTS.sshd}`, '--identity', join(far.dir, 'id_ed25519'), '--knownHosts', knownHosts,
    '--includeIps', `${far.target}/32,${range}`,
  ], { env: { ...process.env, HOME: far.dir, KTCTL_STATE_DIR: stateDir } });
  t.teardown(() => child.kill('SIGKILL'));
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  await until(() => /connected through/.test(log) || /^ktctl: /m.test(log), { what: () => log, timeoutMs: 30_000 });
  t.regex(log, /connected through/);

  const sentence = `the ssh server ${name} (${serverIp}) lies inside ${range} (--includeIps): ktctl keeps it out of the tunnel, so it keeps the route it had before`;
  t.is(log.split(sentence).length - 1, 1, log);
  const get = JSON.parse(await ns.execOk('ip', ['-j', 'route', 'get', serverIp])) as Array<{ dev: string }>;
  t.is(get[0]!.dev, aDev, 'the ssh server keeps the link route');
  const target = JSON.parse(await ns.execOk('ip', ['-j', 'route', 'get', far.target])) as Array<{ dev: string }>;
  t.regex(target[0]!.dev, /^kt\d+$/);
  // Through the tunnel, whose ssh connection goes to the server by its own route.
  const body = await ns.execOk('curl', ['-sS', '--max-time', '10', `http://${far.target}:${VIA_PORTS.http}/vbn`]);
  t.is(body, `hello GET /vbn host=${far.target}:${VIA_PORTS.http}`);
  t.is(log.split(sentence).length - 1, 1, 'said once');

  child.kill('SIGINT');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGINT'), 20_000))]);
  t.is(code, 0, log);
  const routes = await ns.execOk('ip', ['route', 'show', 'table', 'all']);
  t.notRegex(routes, /dev kt\d/, routes);
  const links = await ns.execOk('ip', ['-o', 'link']);
  t.notRegex(links, /\bkt\d+:/, links);
  t.deepEqual(existsSync(stateDir) ? readdirSync(stateDir) : [], [], 'no crash record left');
});
