/**
 * Running the system tools the data plane is built from (ip, nft, sysctl): one promise per
 * command, a typed error that carries the command line and stderr when it fails.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';

/** Only the system's directories: under npm, node_modules/.bin comes first in PATH and holds
 * unrelated programs with the same names (@vercel/nft installs an `nft`). */
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const binCache = new Map<string, string>();

/** absolute path of a system program (the bare name if it is nowhere, so spawn reports ENOENT) */
export function sysBin(name: string): string {
  if (name.includes('/')) return name;
  let found = binCache.get(name);
  if (found === undefined) {
    found = name;
    for (const d of SYSTEM_DIRS) {
      try {
        fs.accessSync(`${d}/${name}`, fs.constants.X_OK);
        found = `${d}/${name}`;
        break;
      } catch {
        // not here
      }
    }
    binCache.set(name, found);
  }
  return found;
}

export class LabCommandError extends Error {
  override readonly name = 'LabCommandError';
  readonly code = 'KTLAB_COMMAND_FAILED';
  constructor(
    readonly command: string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || '(no output)'}`);
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion; never rejects (inspect `code`), except when it cannot be spawned. */
export function run(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(sysBin(cmd), args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** Run a command and reject with LabCommandError unless it exits 0; resolves to stdout. */
export async function runOk(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await run(cmd, args, input);
  if (r.code !== 0) throw new LabCommandError([cmd, ...args], r.code, r.stderr);
  return r.stdout;
}

/** `ip -batch -` with one command a line, optionally inside a namespace (`ip -n NS`). */
export async function ipBatch(lines: string[], netns?: string): Promise<void> {
  if (lines.length === 0) return;
  const args = netns ? ['-n', netns, '-batch', '-'] : ['-batch', '-'];
  await runOk('ip', args, lines.join('\n') + '\n');
}

/** Apply an nft script inside a namespace (atomically: `nft -f` is one transaction). */
export async function nftApply(netns: string, script: string): Promise<void> {
  await runOk('ip', ['netns', 'exec', netns, sysBin('nft'), '-f', '-'], script);
}

/** Check an nft script without applying it (`nft -c`), in a namespace if given. */
export async function nftCheck(script: string, netns?: string): Promise<RunResult> {
  return netns ? run('ip', ['netns', 'exec', netns, sysBin('nft'), '-c', '-f', '-'], script) : run('nft', ['-c', '-f', '-'], script);
}

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
