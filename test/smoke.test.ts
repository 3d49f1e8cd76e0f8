import test from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DialError } from '../src/errors.js';

const REPO = join(import.meta.dirname, '..');
const run = (file: string, args: string[]): Promise<{ stdout: string; stderr: string }> => promisify(execFile)(file, args, { encoding: 'utf8' });

test('DialError carries a stable code and its reason', (t) => {
  const e = new DialError('refused', '198.18.0.5', 80, 'Connection refused');
  t.is(e.code, 'KTCTL_DIAL_REFUSED');
  t.is(e.reason, 'refused');
  t.is(e.name, 'DialError');
  t.regex(e.message, /198\.18\.0\.5:80/);
});

test('the V8 flag the CLI and the shadow set at startup exists in this Node: ktctl --version prints nothing on stderr', async (t) => {
  // An unknown flag would not fail: V8 prints "Error: unrecognized flag" on every start instead.
  const options = await run(process.execPath, ['--v8-options']);
  t.regex(options.stdout, /--heap-growing-percent\b/);
  const v = await run(process.execPath, [join(REPO, 'dist/cli/main.js'), '--version']);
  t.is(v.stderr, '');
  t.regex(v.stdout, /\d+\.\d+\.\d+/);
});
