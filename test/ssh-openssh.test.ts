/**
 * SshTunnel against Debian's OpenSSH sshd (the `--via` bastion case): the same client, a server
 * that is not ours. sshd runs in a namespace of its own with its own config; the client reaches
 * it through a unix-socket bridge.
 */
import test from 'ava';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import packet from 'dns-packet';
import { DialError, DnsQueryError } from '../src/errors.js';
import { SshTunnel, type SshTunnelOptions } from '../src/ssh/tunnel.js';
import { bridgeToHost, createNetns, runOk, waitForTcp, type Netns, type Teardown } from './helpers/netns.js';
import { PORTS, TeardownList, ZONE, ed25519, readAll, startTargets, type KeyPair, type Targets } from './helpers/ssh-fixtures.js';

const hooks = new TeardownList();
let ns: Netns;
let targets: Targets;
let dir: string;
let userKey: KeyPair;
let hostPub: string;
let rsaHostPub: string;
let bridge: string;
let bridgeNoForward: string;

async function startSshd(port: number, extra: string): Promise<void> {
  const conf = join(dir, `sshd_config_${port}`);
  writeFileSync(
    conf,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_ed25519')}`,
      `HostKey ${join(dir, 'host_rsa')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, `sshd_${port}.pid`)}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'LogLevel VERBOSE',
      extra,
      '',
    ].join('\n'),
  );
  const sshd = ns.spawn('/usr/sbin/sshd', ['-D', '-e', '-f', conf]);
  let stderr = '';
  sshd.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  await Promise.race([
    waitForTcp(ns, '127.0.0.1', port),
    new Promise((_, reject) => sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${stderr}`)))),
  ]);
}

test.before(async () => {
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
  dir = mkdtempSync(join(tmpdir(), 'ktt-sshd-'));
  hooks.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')]);
  await runOk('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', join(dir, 'host_rsa')]);
  hostPub = readFileSync(join(dir, 'host_ed25519.pub'), 'utf8');
  rsaHostPub = readFileSync(join(dir, 'host_rsa.pub'), 'utf8');
  userKey = ed25519('ktctl-openssh-test');
  writeFileSync(join(dir, 'authorized_keys'), `${userKey.public}\n`);

  ns = await createNetns(hooks, 'ktos');
  const addr = await ns.addTargetAddress();
  ns.setResolvConf(`nameserver ${addr}\nsearch ${ZONE}\noptions ndots:1 timeout:1 attempts:2\n`);
  targets = await startTargets(ns, addr);
  await startSshd(2222, 'AllowTcpForwarding yes');
  await startSshd(2223, 'AllowTcpForwarding no');
  bridge = await bridgeToHost(hooks, ns, 2222);
  bridgeNoForward = await bridgeToHost(hooks, ns, 2223);
});

test.after.always(() => hooks.run());

async function openTunnel(t: Teardown, extra: Partial<SshTunnelOptions> = {}, path = bridge): Promise<SshTunnel> {
  const tunnel = new SshTunnel({
    sock: connect(path),
    username: 'root',
    privateKey: userKey.private,
    hostKey: { pinned: hostPub },
    serverLabel: 'the test sshd',
    ...extra,
  });
  t.teardown(() => tunnel.close());
  await tunnel.connect();
  return tunnel;
}

test('dial by IP and by a name sshd resolves, with half-close', async (t) => {
  const tunnel = await openTunnel(t);
  for (const host of [targets.addr, 'web']) {
    const ch = await tunnel.dial(host, PORTS.echo);
    ch.end(`via openssh to ${host}`);
    t.is((await readAll(ch)).toString(), `via openssh to ${host}`);
  }
  // The target closes first; the client can still send.
  const early = await tunnel.dial(targets.addr, PORTS.early);
  t.is((await readAll(early)).toString(), 'ready\n');
  early.end(Buffer.alloc(4321));
  t.truthy(await targets.waitFor((l) => l.early === 4321));
});

test('refused port -> "refused", unknown name -> "unresolvable" (OpenSSH wording)', async (t) => {
  const tunnel = await openTunnel(t);
  const refused = await t.throwsAsync(tunnel.dial(targets.addr, 9), { instanceOf: DialError });
  t.is(refused?.reason, 'refused');
  const unknown = await t.throwsAsync(tunnel.dial('nosuch', 80), { instanceOf: DialError });
  t.is(unknown?.reason, 'unresolvable', String((unknown?.cause as Error).message));
  t.regex((refused?.cause as Error).message, /Connection refused/); // the same text the shadow sends
});

test('a server that forbids forwarding -> "prohibited"', async (t) => {
  const tunnel = await openTunnel(t, {}, bridgeNoForward);
  const err = await t.throwsAsync(tunnel.dial(targets.addr, PORTS.echo), { instanceOf: DialError });
  t.is(err?.reason, 'prohibited');
});

test('remote forward: OpenSSH listens, connections come back to the handler', async (t) => {
  const tunnel = await openTunnel(t);
  const forward = await tunnel.forwardIn('127.0.0.1', 0, (stream) => {
    void readAll(stream).then((data) => stream.end(`openssh:${data.toString()}`));
  });
  const out = await ns.execOk('node', [
    '-e',
    `const s = require('net').connect(${forward.port}, '127.0.0.1'); let b = ''; s.on('data', (d) => b += d); s.on('end', () => process.stdout.write(b)); s.end('hi');`,
  ]);
  t.is(out, 'openssh:hi');
  await forward.cancel();
});

test('DNS: no subsystem on OpenSSH, so DNS over TCP through direct-tcpip to the given server', async (t) => {
  const tunnel = await openTunnel(t, { dnsServer: targets.addr });
  const query = (name: string, id: number): Buffer =>
    packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] });
  const [a, b] = await Promise.all([tunnel.dnsQuery(query(`web.${ZONE}`, 99)), tunnel.dnsQuery(query(`big.${ZONE}`, 99))]);
  const da = packet.decode(a);
  t.is(da.id, 99);
  t.deepEqual(
    da.answers?.map((r) => (r.type === 'A' ? r.data : '')),
    [targets.addr],
  );
  t.is(packet.decode(b).answers?.length, 40);

  const without = await openTunnel(t);
  const err = await t.throwsAsync(without.dnsQuery(query(`web.${ZONE}`, 1)), { instanceOf: DnsQueryError });
  t.is(err?.reason, 'unsupported');
  t.regex(err?.message ?? '', /no DNS subsystem/);
});

test('known_hosts with only the RSA key: the client asks sshd for its RSA key first', async (t) => {
  const file = join(dir, 'known_hosts_rsa');
  writeFileSync(file, `[127.0.0.1]:2222 ${rsaHostPub}`);
  const tunnel = await openTunnel(t, { hostKey: { knownHostsFile: file, hostLabel: '[127.0.0.1]:2222' } });
  const ch = await tunnel.dial(targets.addr, PORTS.echo);
  ch.end('rsa');
  t.is((await readAll(ch)).toString(), 'rsa');
});
