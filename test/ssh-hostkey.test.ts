/**
 * Who is who: host key checks (pinned, known_hosts plain/hashed/[host]:port, ed25519/ecdsa/rsa),
 * client key refusal, and unreachable servers. The shadow runs in-process on the loopback.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { AuthError, ConnectError, HostKeyError, InputFileError } from '../src/errors.js';
import { ShadowServer } from '../src/shadow/server.js';
import { fingerprint, hostFieldMatches, parsePublicKeyLine } from '../src/ssh/hostkey.js';
import { SshTunnel, type HostKeyCheck } from '../src/ssh/tunnel.js';
import { runOk } from './helpers/netns.js';
import { ed25519, type KeyPair } from './helpers/ssh-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'ktt-hostkey-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const userKey = ed25519('hostkey-test-user');

interface Running {
  port: number;
  label: string;
  hostPub: string;
}

/** A host key made by ssh-keygen (OpenSSH private key format), as the shadow and known_hosts see it. */
async function sshKeygen(type: 'ed25519' | 'ecdsa' | 'rsa'): Promise<KeyPair> {
  const file = join(dir, `host_${type}_${Math.random().toString(16).slice(2)}`);
  await runOk('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', `test-${type}`, '-f', file]);
  return { private: readFileSync(file, 'utf8'), public: readFileSync(`${file}.pub`, 'utf8') };
}

async function startShadow(t: { teardown(fn: () => unknown): void }, hostKey: KeyPair): Promise<Running> {
  const server = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1' });
  t.teardown(() => server.close());
  const address = await server.listen();
  return { port: address.port, label: `[127.0.0.1]:${address.port}`, hostPub: hostKey.public };
}

function tunnel(t: { teardown(fn: () => unknown): void }, port: number, hostKey: HostKeyCheck, privateKey = userKey.private): SshTunnel {
  const tun = new SshTunnel({ host: '127.0.0.1', port, username: 'ktctl', privateKey, privateKeyFile: '/home/dev/.ktctl/id_ed25519', hostKey, readyTimeout: 5000 });
  t.teardown(() => tun.close());
  return tun;
}

function writeFile(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The fingerprint as `ssh-keygen -lf` prints it. */
async function keygenFingerprint(publicKeyLine: string): Promise<string> {
  const file = writeFile(`fp_${Math.random().toString(16).slice(2)}.pub`, publicKeyLine);
  const out = await runOk('ssh-keygen', ['-l', '-E', 'sha256', '-f', file]);
  const m = /(SHA256:\S+)/.exec(out);
  if (!m) throw new Error(`no fingerprint in ${out}`);
  return m[1]!;
}

test('pinned key: the right one connects, another is refused naming the SHA256 fingerprint', async (t) => {
  const hostKey = ed25519('pinned-host');
  const s = await startShadow(t, hostKey);
  await t.notThrowsAsync(tunnel(t, s.port, { pinned: hostKey.public }).connect());

  const other = ed25519('someone-else');
  const err = await t.throwsAsync(tunnel(t, s.port, { pinned: other.public }).connect(), { instanceOf: HostKeyError });
  const expected = await keygenFingerprint(hostKey.public);
  t.is(err?.fingerprint, expected);
  t.true(err?.message.includes(expected), err?.message);
  t.true(err?.message.includes(await keygenFingerprint(other.public)), 'names the pinned key too');
  t.is(err?.code, 'KTCTL_HOST_KEY');
});

for (const type of ['ed25519', 'ecdsa', 'rsa'] as const) {
  test(`known_hosts with an ${type} host key: plain, hashed, comma list accepted; mismatch and unknown refused`, async (t) => {
    const hostKey = await sshKeygen(type);
    const s = await startShadow(t, hostKey);
    const [keyType, keyB64] = hostKey.public.trim().split(/\s+/);
    const line = `${keyType} ${keyB64}`;

    const plain = writeFile(`kh_plain_${type}`, `# comment\n\n${s.label} ${line}\n`);
    await t.notThrowsAsync(tunnel(t, s.port, { knownHostsFile: plain, hostLabel: s.label }).connect());

    const hashed = writeFile(`kh_hashed_${type}`, `${s.label} ${line}\n`);
    await runOk('ssh-keygen', ['-H', '-f', hashed]);
    t.regex(readFileSync(hashed, 'utf8'), /^\|1\|/);
    await t.notThrowsAsync(tunnel(t, s.port, { knownHostsFile: hashed, hostLabel: s.label }).connect());

    const list = writeFile(`kh_list_${type}`, `bastion.example,${s.label},10.0.0.1 ${line}\n`);
    await t.notThrowsAsync(tunnel(t, s.port, { knownHostsFile: list, hostLabel: s.label }).connect());

    const fp = await keygenFingerprint(hostKey.public);
    const otherKey = ed25519('not-the-host').public.trim().split(/\s+/).slice(0, 2).join(' ');
    const mismatch = writeFile(`kh_mismatch_${type}`, `otherhost ${line}\n${s.label} ${otherKey}\n`);
    const e1 = await t.throwsAsync(tunnel(t, s.port, { knownHostsFile: mismatch, hostLabel: s.label }).connect(), { instanceOf: HostKeyError });
    t.is(e1?.fingerprint, fp);
    t.true(e1?.message.includes(fp));
    t.regex(e1?.message ?? '', /does not match.*line 2.*ssh-keygen -R/);

    const unknown = writeFile(`kh_unknown_${type}`, `otherhost ${line}\n[127.0.0.1]:1 ${line}\n`);
    const e2 = await t.throwsAsync(tunnel(t, s.port, { knownHostsFile: unknown, hostLabel: s.label }).connect(), { instanceOf: HostKeyError });
    t.is(e2?.fingerprint, fp);
    t.regex(e2?.message ?? '', new RegExp(`not in ${unknown}.*ssh-keyscan -p ${s.port} 127\\.0\\.0\\.1 >> ${unknown}`));
  });
}

test('known_hosts: negated pattern, @revoked, @cert-authority and a missing file are refused', async (t) => {
  const hostKey = ed25519('edge-host');
  const s = await startShadow(t, hostKey);
  const line = hostKey.public.trim().split(/\s+/).slice(0, 2).join(' ');
  const check = (name: string, text: string | undefined): Promise<HostKeyError | undefined> => {
    const file = text === undefined ? join(dir, `absent_${name}`) : writeFile(name, text);
    return t.throwsAsync(tunnel(t, s.port, { knownHostsFile: file, hostLabel: s.label }).connect(), { instanceOf: HostKeyError });
  };
  t.regex((await check('kh_neg', `[127.0.0.*]:*,!${s.label} ${line}\n`))?.message ?? '', /is not in/);
  t.regex((await check('kh_revoked', `${s.label} ${line}\n@revoked * ${line}\n`))?.message ?? '', /@revoked/);
  t.regex((await check('kh_ca', `@cert-authority ${s.label} ${line}\n`))?.message ?? '', /is not in/);
  t.regex((await check('kh_missing', undefined))?.message ?? '', /does not exist/);
  // Wildcards that do match are accepted.
  const wild = writeFile('kh_wild', `[127.0.0.?]:* ${line}\n`);
  await t.notThrowsAsync(tunnel(t, s.port, { knownHostsFile: wild, hostLabel: s.label }).connect());
});

test('host key helpers: fingerprint, key lines, hashed and port-22 host fields', async (t) => {
  const key = ed25519('helper');
  const parsed = parsePublicKeyLine(key.public);
  t.truthy(parsed);
  t.is(fingerprint(parsed!.blob), await keygenFingerprint(key.public));
  t.is(parsePublicKeyLine('ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA=='), undefined, 'type and blob disagree');
  t.is(parsePublicKeyLine('garbage'), undefined);
  const hashedFile = writeFile('kh_22', `gitlab.internal ${key.public}`);
  await runOk('ssh-keygen', ['-H', '-f', hashedFile]);
  const field = readFileSync(hashedFile, 'utf8').split(/\s+/)[0]!;
  t.true(hostFieldMatches(field, 'gitlab.internal'));
  t.false(hostFieldMatches(field, 'gitlab.internal2'));
  t.true(hostFieldMatches('GitLab.Internal', 'gitlab.internal'), 'host names compare case-insensitively');
});

test('a key the server does not accept: AuthError naming the key file', async (t) => {
  const hostKey = ed25519('auth-host');
  const s = await startShadow(t, hostKey);
  const stranger = ed25519('stranger');
  const err = await t.throwsAsync(tunnel(t, s.port, { pinned: hostKey.public }, stranger.private).connect(), { instanceOf: AuthError });
  t.regex(err?.message ?? '', /refused the key in \/home\/dev\/\.ktctl\/id_ed25519/);
  t.is(err?.code, 'KTCTL_AUTH');
});

test('the shadow lets nothing but the authorized key in (no none, no password)', async (t) => {
  const hostKey = ed25519('strict-host');
  const s = await startShadow(t, hostKey);
  const client = new ssh2.Client();
  t.teardown(() => client.end());
  const err = await new Promise<Error>((resolve) => {
    client.once('ready', () => resolve(new Error('logged in')));
    client.once('error', resolve);
    client.connect({ host: '127.0.0.1', port: s.port, username: 'root', password: 'root', tryKeyboard: true, hostVerifier: () => true });
  });
  t.regex(err.message, /All configured authentication methods failed/);
});

test('a private key that is not one: InputFileError', async (t) => {
  await t.throwsAsync(tunnel(t, 1, { pinned: userKey.public }, 'not a key').connect(), { instanceOf: InputFileError });
});

async function listenOnce(t: { teardown(fn: () => unknown): void }, onConnection: (s: import('node:net').Socket) => void): Promise<number> {
  const server: Server = createServer(onConnection);
  t.teardown(() => server.close());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return (server.address() as AddressInfo).port;
}

test('unreachable server: refused, silent and non-ssh peers are ConnectErrors', async (t) => {
  // A port nobody listens on.
  const port = await listenOnce(t, () => {});
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const freePort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const refused = await t.throwsAsync(tunnel(t, freePort, { pinned: userKey.public }).connect(), { instanceOf: ConnectError });
  t.regex(refused?.message ?? '', /connection refused/);

  // Accepts, never speaks.
  const silent = new SshTunnel({ host: '127.0.0.1', port, username: 'x', privateKey: userKey.private, hostKey: { pinned: userKey.public }, readyTimeout: 300 });
  t.teardown(() => silent.close());
  const timeout = await t.throwsAsync(silent.connect(), { instanceOf: ConnectError });
  t.regex(timeout?.message ?? '', /no ssh handshake/);

  // Speaks something else and hangs up.
  const http = await listenOnce(t, (s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  await t.throwsAsync(tunnel(t, http, { pinned: userKey.public }).connect(), { instanceOf: ConnectError });
});
