/**
 * The local side of the workload's environment (exchange and mesh `--envFile`, `--envJson`,
 * `-- command args`): the files, written 0600 because they hold the workload's secrets, and the
 * local command that runs with the environment while the exchange lasts.
 *
 * The dotenv dialect is docker compose's env_file (compose-go dotenv), which python-dotenv 1.x
 * reads the same way when it does not interpolate (`dotenv_values(path, interpolate=False)`):
 * `NAME=value` lines; a value that is not plain is written in single quotes, read raw (newlines,
 * `$`, `#`, `"` and spaces kept as they are, no interpolation); a value that has a `'`, a `\` or a
 * carriage return is written in double quotes with `\\`, `\"`, `\n` and `\r` escaped, which both
 * unescape. Limits: in double quotes compose interpolates `$` (so a value with a quote or backslash
 * and a `$` reads back differently there); python-dotenv's default interpolation replaces
 * `${NAME}` in every kind of quotes, and its parser cannot read a double-quoted value that ends in
 * a backslash (it takes the closing `\"` for an escaped quote). `--envJson` has no such limit.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { WorkloadEnv } from '../kube/env.js';
import { InputFileError } from '../errors.js';

/** Plain values need no quotes in any dialect. */
const PLAIN = /^[A-Za-z0-9_./:,@%+=-]*$/;

/** One value in the dialect described at the top. */
export function dotenvValue(v: string): string {
  if (PLAIN.test(v)) return v;
  if (!/['\\\r]/.test(v)) return `'${v}'`;
  return `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`;
}

/** The dotenv file: a comment naming the source, then one `NAME=value` line per variable. */
export function formatDotenv(env: WorkloadEnv): string {
  const lines = [`# environment of container ${env.container} of pod ${env.namespace}/${env.pod}, written by ktctl (it holds the workload's secrets)`];
  for (const [k, v] of env.vars) lines.push(`${k}=${dotenvValue(v)}`);
  return `${lines.join('\n')}\n`;
}

/** The JSON file: `{"NAME": "value", ...}`, in order. */
export function formatEnvJson(env: WorkloadEnv): string {
  return `${JSON.stringify(Object.fromEntries(env.vars), null, 2)}\n`;
}

/**
 * Writes `text` to `file` with mode 0600 (also when the file existed with a wider mode): a
 * temporary file beside it, then a rename, so a reader never sees half of it.
 */
export function writeSecretFile(file: string, text: string): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.ktctl-${process.pid}`);
  try {
    fs.writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    const e = error as NodeJS.ErrnoException;
    throw new InputFileError(`cannot write the environment to ${file} (${e.code ?? e.message}): name a file in a folder you can write`, { cause: error });
  }
}

/** Checks before anything is made that the files can be written: their folder exists and is writable. */
export function checkWritable(files: Array<string | undefined>): void {
  for (const f of files) {
    if (f === undefined) continue;
    const dir = path.dirname(path.resolve(f));
    try {
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (error) {
      throw new InputFileError(`cannot write the environment to ${f}: the folder ${dir} does not exist or is not writable`, { cause: error });
    }
    if (fs.existsSync(f) && fs.statSync(f).isDirectory()) throw new InputFileError(`cannot write the environment to ${f}: it is a folder`);
  }
}

/** A local command that runs with the workload's environment. */
export interface LocalCommand {
  /** its exit code: its own, or 128 + the signal's number when a signal ended it (as a shell reports it) */
  readonly exited: Promise<number>;
  /** passes a signal ktctl received on to the command */
  signal(s: NodeJS.Signals): void;
}

/**
 * Starts `argv` with `env` over ktctl's own environment, sharing ktctl's terminal (stdio inherited,
 * same process group, so an interactive program keeps its terminal). A command that cannot be
 * started ends with 127 (as a shell: not found) or 126, after one line on `log`.
 */
export function runLocalCommand(argv: string[], env: ReadonlyMap<string, string>, log: (line: string) => void): LocalCommand {
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...Object.fromEntries(env) }, stdio: 'inherit' });
  const exited = new Promise<number>((resolve) => {
    child.once('error', (e: NodeJS.ErrnoException) => {
      log(`could not run ${argv[0]}: ${e.code === 'ENOENT' ? 'no such command (not found in PATH)' : e.message}`);
      resolve(e.code === 'ENOENT' ? 127 : 126);
    });
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0)));
  });
  return {
    exited,
    signal(s) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill(s);
    },
  };
}
