/**
 * The suite's entry point (`npm test`, after the build): starts a lab of its own, runs ava over
 * every test file with KTLAB_KUBECONFIG set, ALWAYS takes the lab down, checks that nothing of the
 * lab is left (namespaces, links, nft tables, processes, /etc/netns entries) and prints a final
 * line `N passed, N failed`. Extra arguments go to ava (e.g. a file to run alone).
 *
 * "failed" counts ava's failed tests, plus one for each failure outside the tests: the lab did
 * not come up, ava ended with an error but no failed test (a crashed file, a timeout), or the
 * lab left something behind.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { labDown, labUp } from './lab/cli.js';
import { sysBin } from './lab/net/run.js';
import { FILES } from './lab/api/pki.js';
import { IMAGE_STORE_PREFIX } from './lab/images/store.js';
import { defaultStateDir } from '../src/state-records.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', () => resolve(out));
    c.on('error', () => resolve(''));
  });
}

/** Everything of the lab still present on the machine, as human-readable lines. */
export async function labLeftovers(): Promise<string[]> {
  const left: string[] = [];
  for (const line of (await sh('ip', ['netns', 'list'])).split('\n')) {
    const name = line.trim().split(/\s+/)[0];
    if (name?.startsWith('ktlab-')) left.push(`network namespace ${name}`);
  }
  for (const line of (await sh('ip', ['-o', 'link', 'show'])).split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m?.[1]?.startsWith('ktlab-')) left.push(`interface ${m[1]}`);
  }
  // nftables' nft, not the unrelated one npm puts first in PATH (ava depends on @vercel/nft).
  for (const line of (await sh(sysBin('nft'), ['list', 'tables'])).split('\n')) {
    const m = /^table (\S+) (\S+)$/.exec(line.trim());
    if (m?.[2]?.startsWith('ktlab-')) left.push(`nft table ${m[1]} ${m[2]}`);
  }
  if (fs.existsSync('/etc/netns')) for (const e of fs.readdirSync('/etc/netns')) if (e.startsWith('ktlab-')) left.push(`/etc/netns/${e}`);
  for (const e of fs.readdirSync(os.tmpdir())) if (e.startsWith(IMAGE_STORE_PREFIX)) left.push(`the lab's image store ${path.join(os.tmpdir(), e)}`);
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      continue;
    }
    if (/test\/lab\/(daemon\.ts|net\/agent\.ts)|test\/lab\/images\//.test(cmdline)) left.push(`process ${pid}: ${cmdline.trim().slice(0, 160)}`);
  }
  return left;
}

/** The files in this machine's own ktctl state directory (tests must use directories of their own). */
function machineStateFiles(): Set<string> {
  try {
    return new Set(fs.readdirSync(defaultStateDir()));
  } catch {
    return new Set();
  }
}

interface AvaCounts {
  passed: number;
  failed: number;
  skipped: number;
  exitCode: number;
}

function runAva(args: string[], env: NodeJS.ProcessEnv): Promise<AvaCounts> {
  return new Promise((resolve) => {
    const ava = path.join(REPO, 'node_modules/.bin/ava');
    const child = spawn(ava, ['--tap', ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'inherit'] });
    const counts: AvaCounts = { passed: 0, failed: 0, skipped: 0, exitCode: 0 };
    let buf = '';
    // ava's own summary (`# pass N`, `# fail N`) wins over counting lines: a failed hook is one
    // `not ok` line but fails every test of its file
    const summary: Partial<Record<'pass' | 'fail' | 'skip' | 'todo', number>> = {};
    const onLine = (line: string): void => {
      const m = /^# (pass|fail|skip|todo) (\d+)$/.exec(line.trim());
      if (m) {
        summary[m[1] as 'pass' | 'fail' | 'skip' | 'todo'] = Number(m[2]);
        return;
      }
      if (/^not ok \d+/.test(line)) {
        if (/# TODO/.test(line)) counts.skipped++;
        else counts.failed++;
      } else if (/^ok \d+/.test(line)) {
        if (/# (SKIP|TODO)/i.test(line)) counts.skipped++;
        else counts.passed++;
      }
    };
    child.stdout.on('data', (d: Buffer) => {
      process.stdout.write(d);
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    const forward = (sig: NodeJS.Signals): void => {
      child.kill(sig);
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('close', (code) => {
      if (buf) onLine(buf);
      if (summary.pass !== undefined) counts.passed = summary.pass;
      if (summary.fail !== undefined) counts.failed = Math.max(summary.fail, counts.failed);
      if (summary.skip !== undefined || summary.todo !== undefined) counts.skipped = (summary.skip ?? 0) + (summary.todo ?? 0);
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      counts.exitCode = code ?? 1;
      resolve(counts);
    });
  });
}

async function main(): Promise<number> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-test-'));
  const log = (line: string): void => {
    process.stderr.write(`run: ${line}\n`);
  };
  let extraFailures = 0;
  let counts: AvaCounts = { passed: 0, failed: 0, skipped: 0, exitCode: 0 };
  let interrupted = false;
  const machineStateBefore = machineStateFiles();
  const onSignal = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let kubeconfig: string | undefined;
    try {
      const up = await labUp(stateDir);
      kubeconfig = up.kubeconfig;
      log(`lab up in ${(up.ms / 1000).toFixed(1)} s (state ${stateDir})`);
    } catch (e) {
      log(`lab up FAILED: ${e instanceof Error ? e.message : String(e)}`);
      extraFailures++;
    }
    if (kubeconfig && !interrupted) {
      // every ktctl the tests run fails a request its permission table does not list (src/kube/permissions.ts)
      counts = await runAva(process.argv.slice(2), { ...process.env, KTLAB_KUBECONFIG: kubeconfig, KTLAB_DIR: stateDir, KTCTL_PERMISSIONS: 'strict' });
      if (counts.exitCode !== 0 && counts.failed === 0) {
        log(`ava exited with ${counts.exitCode} without a failed test (a file crashed or timed out): counted as one failure`);
        extraFailures++;
      }
    }
  } finally {
    try {
      const daemonLog = path.join(stateDir, FILES.log);
      if ((counts.failed > 0 || extraFailures > 0) && fs.existsSync(daemonLog)) {
        log('last lines of the lab daemon log:');
        process.stderr.write(fs.readFileSync(daemonLog, 'utf8').split('\n').slice(-40).join('\n') + '\n');
      }
      await labDown(stateDir);
    } catch (e) {
      log(`lab down FAILED: ${e instanceof Error ? e.message : String(e)}`);
      extraFailures++;
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
  const left = await labLeftovers();
  for (const f of machineStateFiles()) if (!machineStateBefore.has(f)) left.push(`${path.join(defaultStateDir(), f)} (a test ran ktctl without a state directory of its own)`);
  if (left.length > 0) {
    log(`the suite LEFT THINGS BEHIND (after lab down):\n  ${left.join('\n  ')}`);
    extraFailures++;
  } else {
    log(`lab down: no namespace, interface, nft table, /etc/netns entry or process left, nothing new in ${defaultStateDir()}`);
  }
  const failed = counts.failed + extraFailures;
  process.stdout.write(`${counts.passed} passed, ${failed} failed\n`);
  return failed > 0 || counts.exitCode !== 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`run: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.stdout.write('0 passed, 1 failed\n');
    process.exit(1);
  },
);
