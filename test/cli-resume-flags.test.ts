/**
 * The resume layer's flags refuse bad values before anything is made: one sentence naming the flag
 * and what it takes, exit 1 (as every refused flag), no state record left.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, errorSentence } from './helpers/cli-process.js';

const cases: Array<[string[], RegExp]> = [
  [['--resumeWindow', '1e999'], /^ktctl: --resumeWindow takes a number of seconds, 0 or more \(got "1e999"\)$/],
  [['--resumeWindow', 'soon'], /^ktctl: --resumeWindow takes a number of seconds, 0 or more \(got "soon"\)$/],
  [['--resumeBuffer', '3X'], /^ktctl: --resumeBuffer takes a size between 64K and 64M, like 4M or 512K \(got "3X"\)$/],
  [['--resumeBuffer', '1K'], /^ktctl: --resumeBuffer takes a size between 64K and 64M, like 4M or 512K \(got "1K"\)$/],
  [['--resumeBufferTotal', '2G'], /^ktctl: --resumeBufferTotal takes a size between 1M and 1G, like 4M or 512K \(got "2G"\)$/],
];

for (const [flags, sentence] of cases) {
  test(`connect ${flags.join(' ')}: one sentence, exit 1, nothing left`, async (t) => {
    const state = mkdtempSync(join(tmpdir(), 'kt-rflags-'));
    t.teardown(() => rmSync(state, { recursive: true, force: true }));
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(process.execPath, [CLI, 'connect', '--mode', 'socks', ...flags], { env: { ...process.env, KTCTL_STATE_DIR: state, KUBECONFIG: join(state, 'none') } }, (e, stdout, stderr) =>
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, out: String(stdout) + String(stderr) }),
      ),
    );
    t.is(r.code, 1, r.out);
    t.regex(errorSentence(t, r.out), sentence);
    t.deepEqual(readdirSync(state), []);
  });
}
