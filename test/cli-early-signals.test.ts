/**
 * A signal while Node is still loading ktctl (its imports take a few hundred milliseconds, before
 * any command runs): a command that serves until a signal ends cleanly (exit 0, nothing left), any
 * other command ends by the signal as it always did. The moment is found, not guessed: as soon as
 * /proc/PID/status shows SIGINT caught (the first module main.ts evaluates installs the handler),
 * the signal goes, long before the command itself runs.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers/cli-process.js';
import { generateEd25519 } from '../src/ssh/keys.js';
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';

/**
 * true once the process catches SIGHUP (bit 0 of SigCgt): Node catches SIGINT and SIGTERM from its
 * own start (and re-raises them), but SIGHUP only when JavaScript asks, as early-signals.ts does.
 */
function caughtByKtctl(pid: number): boolean {
  try {
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) !== 0n;
  } catch {
    return false;
  }
}

async function signalWhileLoading(args: string[], state: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; ranCommand: boolean }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, KTCTL_STATE_DIR: state }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('close', (code, signal) => r({ code, signal })));
  const deadline = Date.now() + 10_000;
  while (!caughtByKtctl(child.pid!)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`ktctl never caught SIGINT: ${stderr}`);
    await new Promise((r) => setImmediate(r));
  }
  const ranCommand = /watching for SIGINT/.test(stderr);
  child.kill('SIGINT');
  return { ...(await exited), stderr, ranCommand };
}

test('SIGINT while ktctl is still loading: a serving command exits 0 with nothing left; status ends by the signal', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kt-early-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = generateEd25519('early');
  writeFileSync(join(dir, 'id'), key.private, { mode: 0o600 });
  writeFileSync(join(dir, 'known_hosts'), '');
  const state = join(dir, 'state');
  // an "ssh server" on loopback that accepts and never answers: the tunnel stays "being made"
  const silent = createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => void silent.close());
  const port = (silent.address() as AddressInfo).port;
  const serving = await signalWhileLoading(['forward', '127.0.0.1:9', '0', '--via', `root@127.0.0.1:${port}`, '-i', join(dir, 'id'), '--knownHosts', join(dir, 'known_hosts'), '--debug'], state);
  t.false(serving.ranCommand, 'the signal came before the command ran');
  t.deepEqual([serving.code, serving.signal], [0, null], serving.stderr);
  t.regex(serving.stderr, /got SIGINT; stopping/);
  t.notRegex(serving.stderr, /^ktctl: /m);
  let records: string[] = [];
  try {
    records = readdirSync(state);
  } catch {
    // never made: nothing left either
  }
  t.deepEqual(records, []);

  const plain = await signalWhileLoading(['status', '--kubeconfig', join(dir, 'none')], state);
  t.deepEqual([plain.code, plain.signal], [null, 'SIGINT'], plain.stderr);
});
