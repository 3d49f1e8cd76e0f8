/**
 * Shared pieces of the ssh tests (test/shadow-tunnel.test.ts, test/ssh-*.test.ts, the --via
 * connect tests): targets that live only inside a test namespace (TCP services and a DNS server),
 * keys, sshd and the shadow, and a teardown list usable from `test.before` hooks.
 */
import type { ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateEd25519 } from '../../src/ssh/keys.js';
import { createNetns, waitForTcp, type Netns, type Teardown } from './netns.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** Ports of the services `startTargets` runs on the target address. */
export const PORTS = {
  /** echoes everything, half-close kept (answers EOF with FIN once everything is echoed) */
  echo: 7,
  /** reads until EOF, then sends sha256(received) and 1 MiB derived from it (see expectedReply) */
  exchange: 9000,
  /** sends "ready\n" and FIN at once, then counts what it still receives, reported on stdout */
  early: 9001,
  dns: 53,
} as const;

/** The DNS zone the namespace's server answers for. */
export const ZONE = 'ktt.internal';

const TARGETS_SCRIPT = String.raw`
const net = require('node:net');
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const packet = require('dns-packet');
const [addr, zone] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
let pending = 5;
const up = () => { if (--pending === 0) out({ ready: true }); };

net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); }).listen(7, addr, up);

net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  const h = crypto.createHash('sha256');
  s.on('data', (c) => h.update(c));
  s.on('end', () => {
    const d = h.digest();
    const body = crypto.createCipheriv('aes-256-ctr', d, Buffer.alloc(16)).update(Buffer.alloc(1 << 20));
    s.write(d);
    s.end(body);
  });
}).listen(9000, addr, up);

net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  let n = 0;
  s.end('ready\n');
  s.on('data', (c) => { n += c.length; });
  s.on('end', () => out({ early: n }));
}).listen(9001, addr, up);

// DNS: <name>.zone A -> addr; big.zone: truncated over UDP, 40 A records over TCP;
// silent.zone: never answered; any other name in or out of the zone: NXDOMAIN.
function answer(q) {
  const question = q.questions[0] || { name: '', type: 'A', class: 'IN' };
  const name = question.name.toLowerCase();
  const base = { type: 'response', id: q.id, flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE, questions: q.questions };
  if (name === 'silent.' + zone) return null;
  const known = ['web', 'big', 'echo'].map((h) => h + '.' + zone);
  if (!known.includes(name)) return { ...base, flags: base.flags | 3 };
  if (question.type !== 'A') return base;
  if (name === 'big.' + zone) {
    const answers = [];
    for (let i = 1; i <= 40; i++) answers.push({ type: 'A', name: question.name, ttl: 30, data: '198.18.191.' + i });
    return { ...base, answers };
  }
  return { ...base, answers: [{ type: 'A', name: question.name, ttl: 30, data: addr }] };
}
const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) => {
  let q; try { q = packet.decode(msg); } catch { return; }
  const a = answer(q);
  if (!a) return;
  if (a.answers && a.answers.length > 10) { a.answers = []; a.flags |= packet.TRUNCATED_RESPONSE; }
  udp.send(packet.encode(a), rinfo.port, rinfo.address);
});
udp.bind(53, addr, up);
net.createServer((s) => {
  s.on('error', () => {});
  let buf = Buffer.alloc(0);
  s.on('data', (c) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
      buf = buf.subarray(2 + msg.length);
      let q; try { q = packet.decode(msg); } catch { continue; }
      const a = answer(q);
      if (a) s.write(packet.streamEncode(a));
    }
  });
}).listen(53, addr, up);
`;

export interface Targets {
  addr: string;
  child: ChildProcess;
  /** JSON lines the services printed so far */
  lines: Record<string, unknown>[];
  /** Resolves with the first line (seen or to come) that satisfies `pred`. */
  waitFor(pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

/** Runs the target services inside `ns` on `addr` (an address only the namespace has). */
export async function startTargets(ns: Netns, addr: string): Promise<Targets> {
  const child = ns.spawn('node', ['-e', TARGETS_SCRIPT, addr, ZONE], { cwd: REPO });
  const lines = collectJsonLines(child);
  const targets: Targets = {
    addr,
    child,
    lines: lines.lines,
    waitFor: lines.waitFor,
  };
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  await Promise.race([
    targets.waitFor((l) => l.ready === true),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`targets exited with ${code}: ${stderr}`)))),
  ]);
  return targets;
}

/** Collects a child's stdout as JSON lines. */
export function collectJsonLines(child: ChildProcess): Pick<Targets, 'lines' | 'waitFor'> {
  const lines: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let partial = '';
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  return {
    lines,
    waitFor(pred) {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
  };
}

/** What the `exchange` service answers to a stream whose SHA-256 is `digest`. */
export function expectedReply(digest: Buffer): Buffer {
  const body = createCipheriv('aes-256-ctr', digest, Buffer.alloc(16)).update(Buffer.alloc(1 << 20));
  return Buffer.concat([digest, body]);
}

export function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

export interface KeyPair {
  private: string;
  public: string;
}

export function ed25519(comment = 'ktctl-test'): KeyPair {
  const k = generateEd25519(comment);
  return { private: k.private, public: k.public };
}

/** A teardown list for `test.before` hooks (ava runs a hook's own teardowns when the hook ends). */
export class TeardownList implements Teardown {
  readonly #fns: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.#fns.push(fn);
  }
  async run(): Promise<void> {
    for (const fn of this.#fns.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        /* keep tearing down */
      }
    }
  }
}

/**
 * How to start the shadow as a process: the bundle ktctl ships (dist/shadow.mjs) when it is at
 * least as new as the sources (as after `npm run build`), else the TypeScript entry through tsx.
 */
export function shadowCommand(): string[] {
  const dist = join(REPO, 'dist/shadow.mjs');
  if (existsSync(dist)) {
    const built = statSync(dist).mtimeMs;
    const newest = Math.max(...['src/shadow', 'src/protocol'].flatMap((d) => readdirSync(join(REPO, d)).map((f) => statSync(join(REPO, d, f)).mtimeMs)));
    if (built >= newest) return [dist];
  }
  return ['--import', 'tsx', join(REPO, 'src/shadow/main.ts')];
}

/**
 * Reads a stream up to its end into one buffer. Not with `for await`: a stream's async iterator
 * destroys it when it ends, and an ssh2 channel's destroy() sends CLOSE, which would take away
 * the direction that is still open after a half-close.
 */
export function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer | string) => chunks.push(typeof c === 'string' ? Buffer.from(c) : c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until a check holds (test/helpers/poll.ts); returns whether it did. */
export { eventuallyTrue as eventually } from './poll.js';

/**
 * An sshd_config for Debian's sshd run by a test or the bench: port `port`, host key, authorized
 * keys and pid file in `dir` (`sshd_host`, `authorized_keys`, `sshd.pid`), key login only (root
 * too), TCP forwarding on; `extra` lines go before the log level.
 */
export function sshdConfig(dir: string, port: number, extra: readonly string[] = []): string {
  return [
    `Port ${port}`,
    `HostKey ${join(dir, 'sshd_host')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'AllowTcpForwarding yes',
    ...extra,
    'LogLevel ERROR',
  ].join('\n') + '\n';
}

/** What `startSshServers` made: the folder with keys and configs, and the three key pairs. */
export interface SshServers {
  /** holds id_ed25519 (the client's private key), client.pub, sshd_config, the host keys */
  dir: string;
  client: KeyPair;
  sshdHost: KeyPair;
  shadowHost: KeyPair;
}

/**
 * Debian's OpenSSH sshd and ktctl's shadow, both in `ns` on every address of it, both accepting
 * one fresh client key (root for sshd); removed with `hooks`. `sshdOptions` are extra sshd_config lines.
 */
export async function startSshServers(
  hooks: Teardown,
  ns: Netns,
  o: { sshdPort: number; shadowPort: number; sshdOptions?: string[]; prefix?: string },
): Promise<SshServers> {
  const dir = mkdtempSync(join(tmpdir(), o.prefix ?? 'ktt-ssh-'));
  hooks.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const client = ed25519('ktctl-test-client');
  const sshdHost = ed25519('sshd-host');
  const shadowHost = ed25519('shadow-host');
  writeFileSync(join(dir, 'id_ed25519'), client.private, { mode: 0o600 });
  writeFileSync(join(dir, 'authorized_keys'), client.public + '\n', { mode: 0o600 });
  writeFileSync(join(dir, 'sshd_host'), sshdHost.private, { mode: 0o600 });
  writeFileSync(join(dir, 'shadow_host'), shadowHost.private, { mode: 0o600 });
  writeFileSync(join(dir, 'client.pub'), client.public + '\n');
  writeFileSync(join(dir, 'sshd_config'), sshdConfig(dir, o.sshdPort, o.sshdOptions));
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
  ns.spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')]);
  ns.spawn('node', shadowCommand(), {
    env: { ...process.env, KTCTL_HOST_KEY_FILE: join(dir, 'shadow_host'), KTCTL_AUTHORIZED_KEY_FILE: join(dir, 'client.pub'), KTCTL_PORT: String(o.shadowPort) },
  });
  await waitForTcp(ns, '127.0.0.1', o.sshdPort);
  await waitForTcp(ns, '127.0.0.1', o.shadowPort);
  return { dir, client, sshdHost, shadowHost };
}

/** Ports of the far side `startViaServer` makes: OpenSSH, the shadow, and an HTTP server. */
export const VIA_PORTS = { sshd: 2022, shadow: 2222, http: 8080 } as const;

/** Answers `hello <method> <url> host=<Host header>`. */
const VIA_HTTP_SCRIPT = `
const http = require('node:http');
http.createServer((req, res) => res.end('hello ' + req.method + ' ' + req.url + ' host=' + req.headers.host)).listen(${VIA_PORTS.http}, process.argv[1], () => process.stdout.write('ready\\n'));
`;

/** What `startViaServer` made: the server namespace, its target address, the ssh servers' keys. */
export interface ViaServer extends SshServers {
  server: Netns;
  /** an address only the server namespace has, where the targets and the HTTP server listen */
  target: string;
}

/**
 * The far side of the `ktctl connect --via` tests: a server namespace with a target address,
 * `startTargets` and an HTTP server on it, a resolver that knows ZONE (`web` alone works by
 * search), and sshd and the shadow on VIA_PORTS; removed with `hooks`.
 */
export async function startViaServer(hooks: Teardown, o: { prefix: string; sshdOptions?: string[] }): Promise<ViaServer> {
  const server = await createNetns(hooks);
  const target = await server.addTargetAddress();
  server.setResolvConf(`nameserver ${target}\nsearch ${ZONE}\n`);
  await startTargets(server, target);
  server.spawn('node', ['-e', VIA_HTTP_SCRIPT, target]);
  await waitForTcp(server, target, VIA_PORTS.http);
  const ssh = await startSshServers(hooks, server, { sshdPort: VIA_PORTS.sshd, shadowPort: VIA_PORTS.shadow, prefix: o.prefix, sshdOptions: o.sshdOptions });
  return { ...ssh, server, target };
}

/** A known_hosts for a client that reaches `via` at `serverIp`: both servers' host keys; removed with `t`. */
export function viaKnownHosts(t: Teardown, via: ViaServer, clientName: string, serverIp: string): string {
  const path = join(via.dir, `known_hosts_${clientName}`);
  writeFileSync(path, `[${serverIp}]:${VIA_PORTS.sshd} ${via.sshdHost.public}\n[${serverIp}]:${VIA_PORTS.shadow} ${via.shadowHost.public}\n`);
  t.teardown(() => rmSync(path, { force: true }));
  return path;
}
