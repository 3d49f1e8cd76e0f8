/**
 * The machine's DNS configuration and its undo, on temporary files (never the host's
 * /etc/resolv.conf or /etc/hosts): resolv.conf rewrite and byte-for-byte restore, "someone changed
 * it", symlinks, kill -9 then cleanStaleDns, the hosts block, and the resolvectl command lines
 * (systemd-resolved is not installed here: an injected runner records them).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  applySystemDns,
  cleanStaleDns,
  composeResolvConf,
  HostsBlock,
  listDnsRecords,
  parseResolvConf,
  ResolvConfChange,
  ResolvedChange,
  resolvedRunning,
  serviceHostNames,
  upstreamServersOf,
  type CommandRunner,
} from '../src/dns/index.js';
import { DnsConfigError } from '../src/errors.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SYSTEM_TS = fileURLToPath(new URL('../src/dns/system/index.ts', import.meta.url));

function tempDir(t: ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'ktt-dns-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

// Comments, odd spacing, a `domain` line overridden by `search`, no newline at the end.
const ORIGINAL = Buffer.from('# from DHCP\r\ndomain old.test\nnameserver 198.18.130.1\nnameserver  fe80::1%eth0 \n; nameserver 198.18.130.9\nsearch corp.test lab.test\noptions ndots:2 timeout:1\noptions edns0\nnameserver not-an-ip', 'latin1');

test('parseResolvConf reads nameservers, the last search line and every option', (t) => {
  const c = parseResolvConf(ORIGINAL.toString('latin1'));
  t.deepEqual(c.nameservers, ['198.18.130.1', 'fe80::1%eth0']);
  t.deepEqual(c.search, ['corp.test', 'lab.test']);
  t.deepEqual(c.options, ['ndots:2', 'timeout:1', 'edns0']);
  const text = composeResolvConf(c, { nameserver: '198.19.0.10', namespace: 'dev', clusterDomain: 'cluster.local' });
  t.deepEqual(parseResolvConf(text), {
    nameservers: ['198.19.0.10'],
    search: ['dev.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'corp.test', 'lab.test'],
    options: ['ndots:2', 'timeout:1', 'edns0'],
  });
});

test('upstreamServersOf: the first three nameservers, or the local machine when there is none', (t) => {
  t.deepEqual(upstreamServersOf(parseResolvConf('nameserver 198.18.130.1\nnameserver 198.18.130.2\nnameserver ::1\nnameserver 198.18.130.4\n')), ['198.18.130.1', '198.18.130.2', '::1']);
  t.deepEqual(upstreamServersOf(parseResolvConf('search corp.test\n')), ['127.0.0.1']);
});

test('resolv.conf: rewritten with our nameserver, search domains kept; restored byte for byte', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  const state = join(dir, 'state');
  writeFileSync(path, ORIGINAL);
  chmodSync(path, 0o640);
  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: state });
  t.deepEqual(change.original.nameservers, ['198.18.130.1', 'fe80::1%eth0']);
  const now = parseResolvConf(readFileSync(path, 'utf8'));
  t.deepEqual(now.nameservers, ['127.0.0.53']);
  t.deepEqual(now.search, ['dev.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'corp.test', 'lab.test']);
  t.deepEqual(now.options, ['ndots:2', 'timeout:1', 'edns0']);
  // The record with the original bytes exists before and while the change is in place.
  const recs = listDnsRecords(state);
  t.is(recs.length, 1);
  t.is(recs[0]!.record.mode, 'resolv.conf');

  const report = change.restore();
  t.true(report.restored);
  t.deepEqual(readFileSync(path), ORIGINAL);
  t.is(statSync(path).mode & 0o777, 0o640);
  t.deepEqual(listDnsRecords(state), []);
  t.deepEqual(change.restore(), report, 'idempotent');
});

test('resolv.conf: a file changed by someone else meanwhile is kept, and the report says so', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  writeFileSync(path, ORIGINAL);
  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: join(dir, 'state') });
  writeFileSync(path, 'nameserver 198.18.130.77\n');
  const report = change.restore();
  t.false(report.restored);
  t.regex(report.note ?? '', /changed by someone else/);
  t.is(readFileSync(path, 'utf8'), 'nameserver 198.18.130.77\n');
  t.deepEqual(listDnsRecords(join(dir, 'state')), []);
});

test('resolv.conf: a symlink is replaced by a file and comes back as the same symlink', (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'real-resolv.conf');
  writeFileSync(target, 'nameserver 198.18.130.2\nsearch home.test\n');
  const path = join(dir, 'resolv.conf');
  symlinkSync('real-resolv.conf', path);
  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: join(dir, 'state') });
  t.deepEqual(change.original.nameservers, ['198.18.130.2']);
  t.false(lstatSync(path).isSymbolicLink());
  t.deepEqual(parseResolvConf(readFileSync(path, 'utf8')).search.slice(-1), ['home.test']);
  t.is(readFileSync(target, 'utf8'), 'nameserver 198.18.130.2\nsearch home.test\n', 'the target is untouched');
  t.true(change.restore().restored);
  t.true(lstatSync(path).isSymbolicLink());
  t.is(readlinkSync(path), 'real-resolv.conf');
});

test('resolv.conf: a file still holding an earlier run\'s content is refused (it is not the original)', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  const state = join(dir, 'state');
  writeFileSync(path, ORIGINAL);
  ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: join(dir, 'crashed') });
  t.throws(() => ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: state }), { instanceOf: DnsConfigError, message: /ktctl clean/ });
  t.deepEqual(listDnsRecords(state), []);
});

test('resolv.conf: a missing file is created and removed again', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: join(dir, 'state') });
  t.true(existsSync(path));
  t.true(change.restore().restored);
  t.false(existsSync(path));
});

test('resolv.conf: a file that cannot be written leaves no record behind', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'no-such-dir', 'resolv.conf');
  const state = join(dir, 'state');
  t.throws(() => ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: state }), { instanceOf: DnsConfigError });
  t.deepEqual(listDnsRecords(state), []);
});

/** Runs `code` in a child process (tsx), waits for "ready" on stdout, then kills it with SIGKILL. */
async function runAndKill(t: ExecutionContext, code: string): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (c) => reject(new Error(`child exited with ${c} before it was ready: ${err}`)));
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await exited;
}

test('kill -9: cleanStaleDns restores resolv.conf and removes the hosts block', async (t) => {
  const dir = tempDir(t);
  const resolv = join(dir, 'resolv.conf');
  const hosts = join(dir, 'hosts');
  const state = join(dir, 'state');
  const hostsOriginal = Buffer.from('127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n');
  writeFileSync(resolv, ORIGINAL);
  writeFileSync(hosts, hostsOriginal);
  await runAndKill(
    t,
    `import { ResolvConfChange, HostsBlock } from ${JSON.stringify(SYSTEM_TS)};
     ResolvConfChange.apply({ path: ${JSON.stringify(resolv)}, nameserver: '127.0.0.53', namespace: 'dev', stateDir: ${JSON.stringify(state)} });
     const h = HostsBlock.open({ path: ${JSON.stringify(hosts)}, stateDir: ${JSON.stringify(state)} });
     h.setHosts([{ ip: '198.19.1.1', names: ['web', 'web.dev', 'web.dev.svc.cluster.local'] }]);
     process.stdout.write('ready\\n');
     setInterval(() => {}, 1000);`,
  );
  t.notDeepEqual(readFileSync(resolv), ORIGINAL, 'the dead process left its resolv.conf');
  t.regex(readFileSync(hosts, 'utf8'), /198\.19\.1\.1\tweb web\.dev/);
  t.is(listDnsRecords(state).length, 2);

  const reports = await cleanStaleDns({ dir: state });
  t.is(reports.length, 2);
  t.true(reports.every((r) => r.restored));
  t.deepEqual(readFileSync(resolv), ORIGINAL);
  t.deepEqual(readFileSync(hosts), hostsOriginal);
  t.deepEqual(readdirSync(state).filter((n) => n.startsWith('dns-')), []);
});

test('cleanStaleDns leaves the records of live processes alone', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  const state = join(dir, 'state');
  writeFileSync(path, ORIGINAL);
  const change = ResolvConfChange.apply({ path, nameserver: '127.0.0.53', namespace: 'dev', stateDir: state });
  t.deepEqual(await cleanStaleDns({ dir: state }), []);
  t.is(listDnsRecords(state).length, 1);
  change.restore();
  t.deepEqual(readFileSync(path), ORIGINAL);
});

test('hosts: block added, replaced, removed; bytes outside it kept, also edits made meanwhile', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'hosts');
  const original = Buffer.from('127.0.0.1 localhost\n# a comment \u00e9\n198.18.130.3 nas', 'latin1'); // no final newline
  writeFileSync(path, original);
  const block = HostsBlock.open({ path, stateDir: join(dir, 'state') });
  t.deepEqual(readFileSync(path), original, 'open changes nothing yet');

  block.setHosts([{ ip: '198.19.1.1', names: serviceHostNames('web', 'dev', 'dev') }, { ip: '198.19.2.2', names: serviceHostNames('db', 'other', 'dev') }]);
  let text = readFileSync(path, 'latin1');
  t.true(text.startsWith(original.toString('latin1')));
  t.regex(text, /\n198\.19\.1\.1\tweb web\.dev web\.dev\.svc\.cluster\.local\n/);
  t.regex(text, /\n198\.19\.2\.2\tdb\.other db\.other\.svc\.cluster\.local\n/);
  t.is(text.match(/# BEGIN ktctl/g)?.length, 1);

  block.setHosts([{ ip: '198.19.3.3', names: ['cache', 'cache.dev'] }]);
  text = readFileSync(path, 'latin1');
  t.notRegex(text, /198\.19\.1\.1/);
  t.regex(text, /198\.19\.3\.3\tcache cache\.dev\n/);
  t.is(text.match(/# BEGIN ktctl/g)?.length, 1, 'replaced, not appended');

  t.true(block.remove().restored);
  t.deepEqual(readFileSync(path), original);

  // Someone edits the file while the block is in place: their line stays after removal.
  const again = HostsBlock.open({ path, stateDir: join(dir, 'state') });
  again.setHosts([{ ip: '198.19.1.1', names: ['web'] }]);
  writeFileSync(path, `# added by hand\n${readFileSync(path, 'latin1')}`, 'latin1');
  t.true(again.remove().restored);
  t.is(readFileSync(path, 'latin1'), `# added by hand\n${original.toString('latin1')}`);
  t.throws(() => again.setHosts([]), { instanceOf: DnsConfigError });
});

function recordingRunner(fail: (args: string[]) => boolean = () => false): { runner: CommandRunner; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    runner: async (cmd, args) => {
      calls.push([cmd, ...args].join(' '));
      return fail(args) ? { code: 1, stdout: '', stderr: 'Failed to set DNS configuration: Link kt0 not known' } : { code: 0, stdout: '', stderr: '' };
    },
  };
}

test('systemd-resolved: per-link DNS and routing domains, reverted with resolvectl revert (runner injected)', async (t) => {
  const dir = tempDir(t);
  const state = join(dir, 'state');
  const { runner, calls } = recordingRunner();
  const change = await ResolvedChange.apply({ link: 'kt0', server: '198.19.0.10', namespace: 'dev', clusterDomain: 'cluster.local', runner, stateDir: state });
  t.deepEqual(calls, [
    'resolvectl dns kt0 198.19.0.10',
    'resolvectl domain kt0 dev.svc.cluster.local svc.cluster.local ~cluster.local',
    'resolvectl default-route kt0 false',
  ]);
  t.is(listDnsRecords(state)[0]?.record.mode, 'resolved');
  t.true((await change.revert()).restored);
  t.is(calls.at(-1), 'resolvectl revert kt0');
  t.deepEqual(listDnsRecords(state), []);
});

test('systemd-resolved: a failing resolvectl reverts what was set and throws', async (t) => {
  const dir = tempDir(t);
  const { runner, calls } = recordingRunner((args) => args[0] === 'domain');
  await t.throwsAsync(ResolvedChange.apply({ link: 'kt0', server: '198.19.0.10', namespace: 'dev', runner, stateDir: join(dir, 'state') }), { instanceOf: DnsConfigError, message: /resolvectl domain kt0/ });
  t.deepEqual(calls, ['resolvectl dns kt0 198.19.0.10', 'resolvectl domain kt0 dev.svc.cluster.local svc.cluster.local ~cluster.local', 'resolvectl revert kt0']);
  t.deepEqual(listDnsRecords(join(dir, 'state')), []);
});

test('cleanStaleDns reverts a dead run\'s resolved link; a resolv.conf gone meanwhile is reported, not recreated', async (t) => {
  const dir = tempDir(t);
  const state = join(dir, 'state');
  mkdirSync(state);
  const dead = spawn('true');
  await new Promise((r) => dead.once('exit', r));
  const base = { version: 1, kind: 'dns', pid: dead.pid, pidStart: '1', createdAt: '' };
  writeFileSync(join(state, 'dns-1-a.json'), JSON.stringify({ ...base, mode: 'resolved', link: 'kt9' }));
  // A resolv.conf record whose file is gone (its directory too): nothing is written back.
  const missing = join(dir, 'gone', 'resolv.conf');
  writeFileSync(join(state, 'dns-1-b.json'), JSON.stringify({ ...base, mode: 'resolv.conf', path: missing, original: { type: 'file', data: 'eA==', mode: 420 }, written: Buffer.from('').toString('base64') }));
  const { runner, calls } = recordingRunner();
  const reports = await cleanStaleDns({ dir: state, runner });
  t.deepEqual(calls, ['resolvectl revert kt9']);
  t.is(reports.length, 2);
  t.deepEqual(listDnsRecords(state), []);
  t.true(reports.find((r) => r.mode === 'resolved')!.restored);
  const gone = reports.find((r) => r.mode === 'resolv.conf')!;
  t.false(gone.restored);
  t.regex(gone.note ?? '', /changed by someone else/);
  t.false(existsSync(missing));
});

test('applySystemDns picks resolved when it runs and a link is given, resolv.conf otherwise', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'resolv.conf');
  const state = join(dir, 'state');
  const runDir = join(dir, 'resolve');
  writeFileSync(path, ORIGINAL);

  t.false(await resolvedRunning({ runDir, runner: recordingRunner().runner }), 'no runtime directory: not running');
  mkdirSync(runDir);
  const down = recordingRunner(() => true);
  t.false(await resolvedRunning({ runDir, runner: down.runner }), 'resolvectl status fails: not running');

  const rec = recordingRunner();
  const viaResolved = await applySystemDns({ mode: 'localDNS', localAddress: '198.18.140.1', link: 'kt0', namespace: 'dev', resolvConfPath: path, stateDir: state, runner: rec.runner, resolvedRunDir: runDir });
  t.regex(viaResolved.description, /systemd-resolved/);
  t.deepEqual(readFileSync(path), ORIGINAL, 'resolv.conf untouched with resolved');
  t.deepEqual(viaResolved.original.nameservers, ['198.18.130.1', 'fe80::1%eth0']);
  await viaResolved.restore();
  t.deepEqual(rec.calls, ['resolvectl status', 'resolvectl dns kt0 198.18.140.1', 'resolvectl domain kt0 dev.svc.cluster.local svc.cluster.local ~cluster.local', 'resolvectl default-route kt0 false', 'resolvectl revert kt0']);

  const pod = await applySystemDns({ mode: 'podDNS', clusterDnsIp: '198.19.0.10', namespace: 'dev', resolvConfPath: path, stateDir: state, resolvedRunDir: join(dir, 'absent') });
  t.deepEqual(parseResolvConf(readFileSync(path, 'utf8')).nameservers, ['198.19.0.10']);
  t.true((await pod.restore()).restored);
  t.deepEqual(readFileSync(path), ORIGINAL);
});
