/**
 * Network namespaces for tests: hosts that exist only for the test that made them.
 *
 * Rules this helper enforces (DESIGN.md, "Network rules"): a namespace's addresses come from
 * 198.18.128.0/18, handed out in /30 blocks through lock directories so that test files running in
 * parallel never collide; the host's own routes are never touched (a test in the host namespace
 * reaches a server in a namespace through a unix socket, see `bridgeToHost`); everything a test
 * makes is removed by `t.teardown`, and the leftovers of a test process that died are swept by the
 * next call to `createNetns`.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

/** What a test context must offer: ava's `t` in a test or hook. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

const STATE_DIR = '/run/ktctl-test';
const IPAM_DIR = join(STATE_DIR, 'ipam');
const NETNS_DIR = join(STATE_DIR, 'netns');
/** 198.18.128.0/18 in /30 blocks: 4096 of them. */
const POOL_BASE = ipToInt('198.18.128.0');
const POOL_BLOCKS = 4096;

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function run(cmd: string, args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) {
          code = typeof error.code === 'number' ? error.code : 1;
          // Killed by the timeout, or output over maxBuffer: say so, there may be no output at all.
          if (typeof error.code !== 'number') stderr += `${stderr ? '\n' : ''}${error.message}`;
        }
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export async function runOk(cmd: string, args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A /30 block from the test pool, held until `release()`. */
export interface Block {
  /** network address of the /30 */
  base: string;
  /** the two usable addresses */
  first: string;
  second: string;
  release(): void;
}

export function allocateBlock(): Block {
  mkdirSync(IPAM_DIR, { recursive: true });
  const start = randomBytes(2).readUInt16BE(0) % POOL_BLOCKS;
  for (let i = 0; i < POOL_BLOCKS; i++) {
    const idx = (start + i) % POOL_BLOCKS;
    const dir = join(IPAM_DIR, String(idx));
    try {
      mkdirSync(dir);
    } catch {
      // Taken: reclaim it if its owner is gone.
      try {
        const owner = Number(readFileSync(join(dir, 'pid'), 'utf8'));
        if (owner && !pidAlive(owner)) rmSync(dir, { recursive: true, force: true });
      } catch {
        /* being written right now, or already gone */
      }
      continue;
    }
    writeFileSync(join(dir, 'pid'), String(process.pid));
    const base = POOL_BASE + idx * 4;
    let released = false;
    return {
      base: intToIp(base),
      first: intToIp(base + 1),
      second: intToIp(base + 2),
      release() {
        if (released) return;
        released = true;
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error('the test address pool 198.18.128.0/18 is exhausted');
}

export interface Netns {
  readonly name: string;
  /** Runs a program inside; never rejects, look at `code`. */
  exec(cmd: string, args: string[], options?: { input?: string; timeoutMs?: number }): Promise<ExecResult>;
  /** Like exec, but rejects with stderr when the program fails. */
  execOk(cmd: string, args: string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** Starts a long-running program inside; killed at teardown. */
  spawn(cmd: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** Adds an address (CIDR) to the namespace's loopback. */
  addAddress(cidr: string): Promise<void>;
  /** Allocates an address from the pool and puts it on the loopback: a target only this namespace has. */
  addTargetAddress(): Promise<string>;
  /** Writes /etc/netns/NAME/resolv.conf, which `ip netns exec` shows the programs inside as /etc/resolv.conf. */
  setResolvConf(content: string): void;
  destroy(): Promise<void>;
}

/** Removes namespaces (and their /etc/netns files and address blocks) whose test process died. */
export async function sweepStale(): Promise<void> {
  if (!existsSync(NETNS_DIR)) return;
  for (const name of readdirSync(NETNS_DIR)) {
    let owner = 0;
    try {
      owner = Number(readFileSync(join(NETNS_DIR, name), 'utf8'));
    } catch {
      continue;
    }
    if (owner && !pidAlive(owner)) await removeNetns(name);
  }
}

async function removeNetns(name: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', name]);
  for (const line of pids.stdout.split('\n')) {
    const pid = Number(line.trim());
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  // A killed process may take a moment to release the namespace; `ip netns del` works regardless.
  await run('ip', ['netns', 'del', name]);
  rmSync(join('/etc/netns', name), { recursive: true, force: true });
  rmSync(join(NETNS_DIR, name), { force: true });
}

export async function createNetns(t: Teardown, prefix = 'ktt'): Promise<Netns> {
  await sweepStale();
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  mkdirSync(NETNS_DIR, { recursive: true });
  writeFileSync(join(NETNS_DIR, name), String(process.pid));
  await runOk('ip', ['netns', 'add', name]);
  await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);

  const children = new Set<ChildProcess>();
  const blocks: Block[] = [];
  let destroyed = false;

  const ns: Netns = {
    name,
    exec: (cmd, args, options) => run('ip', ['netns', 'exec', name, cmd, ...args], options),
    execOk: (cmd, args, options) => runOk('ip', ['netns', 'exec', name, cmd, ...args], options),
    spawn(cmd, args, options = {}) {
      const child = spawn('ip', ['netns', 'exec', name, cmd, ...args], { stdio: 'pipe', ...options });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    async addAddress(cidr) {
      await runOk('ip', ['-n', name, 'addr', 'add', cidr, 'dev', 'lo']);
    },
    async addTargetAddress() {
      const block = allocateBlock();
      blocks.push(block);
      await runOk('ip', ['-n', name, 'addr', 'add', `${block.first}/32`, 'dev', 'lo']);
      return block.first;
    },
    setResolvConf(content) {
      mkdirSync(join('/etc/netns', name), { recursive: true });
      writeFileSync(join('/etc/netns', name, 'resolv.conf'), content);
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const child of children) child.kill('SIGKILL');
      await removeNetns(name);
      for (const b of blocks) b.release();
    },
  };
  t.teardown(() => ns.destroy());
  return ns;
}

/**
 * Connects two namespaces with a veth pair on a /30 from the pool. Returns the addresses each side
 * got. Removed with either namespace.
 */
export async function linkNetns(t: Teardown, a: Netns, b: Netns, options: { mtu?: number } = {}): Promise<{ aIp: string; bIp: string; aDev: string; bDev: string }> {
  const block = allocateBlock();
  t.teardown(() => block.release());
  const tag = randomBytes(3).toString('hex');
  const aDev = `kv${tag}a`;
  const bDev = `kv${tag}b`;
  await runOk('ip', ['-n', a.name, 'link', 'add', aDev, 'type', 'veth', 'peer', 'name', bDev, 'netns', b.name]);
  await runOk('ip', ['-n', a.name, 'addr', 'add', `${block.first}/30`, 'dev', aDev]);
  await runOk('ip', ['-n', b.name, 'addr', 'add', `${block.second}/30`, 'dev', bDev]);
  if (options.mtu) {
    await runOk('ip', ['-n', a.name, 'link', 'set', aDev, 'mtu', String(options.mtu)]);
    await runOk('ip', ['-n', b.name, 'link', 'set', bDev, 'mtu', String(options.mtu)]);
  }
  await runOk('ip', ['-n', a.name, 'link', 'set', aDev, 'up']);
  await runOk('ip', ['-n', b.name, 'link', 'set', bDev, 'up']);
  return { aIp: block.first, bIp: block.second, aDev, bDev };
}

const BRIDGE_SCRIPT = `
const net = require('node:net');
const fs = require('node:fs');
const [path, host, port] = process.argv.slice(1);
try { fs.unlinkSync(path); } catch {}
// Half-open both ways: each side's FIN is passed on by pipe() only after the data before it.
const server = net.createServer({ allowHalfOpen: true }, (c) => {
  const up = net.connect({ port: Number(port), host, allowHalfOpen: true });
  c.pipe(up); up.pipe(c);
  const kill = () => { c.destroy(); up.destroy(); };
  c.on('error', kill); up.on('error', kill);
});
server.listen(path, () => process.stdout.write('ready\\n'));
`;

/**
 * A unix-socket path in the host's filesystem whose connections are piped to host:port as seen
 * from *inside* the namespace. This is how an in-process client reaches a server in a namespace
 * without any route on the host.
 */
export async function bridgeToHost(t: Teardown, ns: Netns, port: number, host = '127.0.0.1'): Promise<string> {
  const path = join(tmpdir(), `ktt-bridge-${randomBytes(4).toString('hex')}.sock`);
  const child = ns.spawn('node', ['-e', BRIDGE_SCRIPT, path, host, String(port)]);
  t.teardown(() => {
    child.kill('SIGKILL');
    rmSync(path, { force: true });
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`bridge into ${ns.name} exited with ${code}`)));
  });
  return path;
}

/** Polls until host:port accepts a TCP connection inside the namespace. */
export async function waitForTcp(ns: Netns, host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await ns.exec('bash', ['-c', `exec 3<>/dev/tcp/${host}/${port}`], { timeoutMs: 2000 });
    if (r.code === 0) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} in ${ns.name} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A loopback port nothing listens on: one the kernel just gave out and that was closed again. */
export async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
