/**
 * The built CLI (dist/cli/main.js) as a process, as a user runs it: in the host namespace or in a
 * network namespace through `ip netns exec` (which also shows the programs inside the
 * namespace's /etc/netns/NAME files as /etc/resolv.conf and /etc/hosts), killed at teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { Teardown } from './netns.js';
import { REPO } from './ssh-fixtures.js';

export const CLI = join(REPO, 'dist/cli/main.js');

export interface CliRun {
  child: ChildProcess;
  stdout: () => string;
  /** stdout and stderr as they came */
  log: () => string;
  exited: Promise<number | null>;
  /** Resolves with the first match of `re` in the output; rejects when the process exits first or after `ms`. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  /** SIGINT, then expects exit code 0 within 20 s. */
  stop(t: ExecutionContext): Promise<void>;
}

export function startCli(hooks: Teardown, args: string[], o: { netns?: string; env?: NodeJS.ProcessEnv } = {}): CliRun {
  const [cmd, pre] = o.netns !== undefined ? ['ip', ['netns', 'exec', o.netns, 'node']] : [process.execPath, []];
  const child = spawn(cmd, [...pre, CLI, ...args], { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  hooks.teardown(() => child.kill('SIGKILL'));
  let out = '';
  let log = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    log += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  // 'close' comes after the process's last output, so log() is complete when `exited` resolves.
  let closed = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      closed = true;
      resolve(code);
    }),
  );
  return {
    child,
    stdout: () => out,
    log: () => log,
    exited,
    async waitFor(re, ms = 60_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = re.exec(log);
        if (m) return m;
        if (closed) throw new Error(`ktctl ${args[0]} exited with ${child.exitCode} before ${re}: ${log}`);
        if (Date.now() > deadline) throw new Error(`no ${re} from ktctl ${args[0]} after ${ms} ms: ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop(t) {
      child.kill('SIGINT');
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGINT'), 20_000))]);
      t.is(code, 0, log);
    },
  };
}

/**
 * The one `ktctl: ...` error sentence in a run's output (lines above it may log what was undone);
 * the test fails unless there is exactly one.
 */
export function errorSentence(t: ExecutionContext, output: string): string {
  const lines = output.split('\n').filter((l) => l.startsWith('ktctl: '));
  t.is(lines.length, 1, output);
  return lines[0] ?? '';
}
