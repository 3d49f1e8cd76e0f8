/**
 * ktctl's config file and its profiles: defaults a user sets once (`ktctl config set connect.dnsMode
 * hosts`), read before every command so that a flag not given on the command line comes from the
 * environment (`KTCTL_DNS_MODE`), then from here, then from its default (src/cli/common/settings.ts).
 *
 * The file is `$XDG_CONFIG_HOME/ktctl/config.yaml` (default `~/.config/ktctl/config.yaml`), laid out
 * as KT Connect's `~/.kt/config`: one mapping per group (`global`, or a command's name), and in each a
 * flag's name and its value, a scalar:
 *
 *     global:
 *       namespace: dev
 *     connect:
 *       dnsMode: hosts
 *
 * Profiles are whole copies of that file under `profiles/NAME.yaml` beside it (KT's `~/.kt/profile/NAME`).
 * A file that cannot be read as that shape is a `ConfigFileError` (one sentence, exit 2); nothing here
 * writes a file that would not read back.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { dump, load } from 'js-yaml';
import { KtctlError, UsageError } from '../errors.js';

/** The config file (or a profile) cannot be read, parsed, or holds something other than group -> flag -> scalar. */
export class ConfigFileError extends KtctlError {
  /** configuration errors exit 2, as a bad command line does in most tools (flags exit 1 here, as before) */
  readonly exitCode = 2;
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_CONFIG_FILE', message, options);
  }
}

/** A value as the file holds it: what a flag would be given (numbers and booleans as YAML writes them). */
export type ConfigValue = string | number | boolean;

/** group (`global` or a command's name) -> flag name -> value. */
export type ConfigData = Record<string, Record<string, ConfigValue>>;

/** The directory of the config file and its profiles. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  // XDG Base Directory: "If $XDG_CONFIG_HOME is either not set or empty, a default equal to $HOME/.config should be used."
  // A relative path is invalid there and is ignored the same way.
  const base = xdg !== undefined && xdg !== '' && xdg.startsWith('/') ? xdg : join(env.HOME !== undefined && env.HOME !== '' ? env.HOME : homedir(), '.config');
  return join(base, 'ktctl');
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'config.yaml');
}

export function profilesDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'profiles');
}

/**
 * The file's text as ConfigData. `what` names it in the sentence ("the config file /x/config.yaml",
 * "profile dev (/x/profiles/dev.yaml)").
 */
export function parseConfig(text: string, what: string): ConfigData {
  // an empty file (or one of comments only) holds no settings; js-yaml 5 refuses a stream without a document
  if (text.split('\n').every((l) => l.trim() === '' || l.trim().startsWith('#'))) return {};
  let doc: unknown;
  try {
    doc = load(text);
  } catch (error) {
    const reason = error instanceof Error ? (error.message.split('\n')[0] ?? error.message) : String(error);
    throw new ConfigFileError(`${what} is not valid YAML (${reason}): fix it, or start again with ktctl config unset --all`, { cause: error });
  }
  if (doc === undefined || doc === null) return {};
  const bad = (detail: string): ConfigFileError =>
    new ConfigFileError(`${what} must map groups (global or a command) to flags and their values, e.g. "connect: {dnsMode: hosts}", but ${detail}: fix it, or start again with ktctl config unset --all`);
  if (typeof doc !== 'object' || Array.isArray(doc)) throw bad(`it holds a ${Array.isArray(doc) ? 'list' : typeof doc}`);
  const out: ConfigData = {};
  for (const [group, items] of Object.entries(doc)) {
    if (items === null) continue;
    if (typeof items !== 'object' || Array.isArray(items)) throw bad(`${group} is not a mapping`);
    const flags: Record<string, ConfigValue> = {};
    for (const [key, value] of Object.entries(items as Record<string, unknown>)) {
      if (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) flags[key] = value;
      else if (value !== null) throw bad(`${group}.${key} is not a single value`);
    }
    out[group] = flags;
  }
  return out;
}

/** The file at `path`, or {} when there is none. */
export function readConfigFile(path: string, what = `the config file ${path}`): ConfigData {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ConfigFileError(`cannot read ${what}: ${(error as Error).message}`, { cause: error });
  }
  return parseConfig(text, what);
}

/** YAML for `data`, groups and keys sorted, empty groups left out; it reads back as `data`. */
export function renderConfig(data: ConfigData): string {
  const sorted: ConfigData = {};
  for (const group of Object.keys(data).sort()) {
    const keys = Object.keys(data[group]!).sort();
    if (keys.length === 0) continue;
    sorted[group] = Object.fromEntries(keys.map((k) => [k, data[group]![k]!]));
  }
  return Object.keys(sorted).length === 0 ? '' : dump(sorted, { lineWidth: -1 });
}

/** Writes through a temporary file and a rename, so a crash never leaves half a file. */
export function writeConfigFile(path: string, data: ConfigData): void {
  writeText(path, renderConfig(data));
}

function writeText(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

// --- profiles

/** KT Connect's rule for profile names (pkg/kt/command/config/common.go profileNamePattern), without a leading dot. */
const PROFILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

export function profilePath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (!PROFILE_NAME.test(name) || name.length > 100) {
    throw new UsageError(`a profile name is letters, digits, '_', '-' and '.' (not first), at most 100 (got "${name}")`);
  }
  return join(profilesDir(env), `${name}.yaml`);
}

export interface ProfileInfo {
  name: string;
  saved: Date;
}

export function listProfiles(env: NodeJS.ProcessEnv = process.env): ProfileInfo[] {
  const dir = profilesDir(env);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ConfigFileError(`cannot list the profiles in ${dir}: ${(error as Error).message}`, { cause: error });
  }
  return names
    .filter((n) => n.endsWith('.yaml') && PROFILE_NAME.test(n.slice(0, -5)))
    .map((n) => ({ name: n.slice(0, -5), saved: statSync(join(dir, n)).mtime }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function profileExists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Saves the config file as profile `name` (refused over an existing one unless `force`). */
export function saveProfile(name: string, o: { force: boolean; env?: NodeJS.ProcessEnv }): string {
  const env = o.env ?? process.env;
  const target = profilePath(name, env);
  if (!o.force && profileExists(target)) throw new UsageError(`profile ${name} exists already: give --force to overwrite it, or another name`);
  // parsed first: a broken config file is not copied into a profile
  writeConfigFile(target, readConfigFile(configPath(env)));
  return target;
}

/** Profile `name`'s settings; a missing profile names the ones there are. */
export function readProfile(name: string, env: NodeJS.ProcessEnv = process.env): ConfigData {
  const path = profilePath(name, env);
  if (!profileExists(path)) {
    const names = listProfiles(env).map((p) => p.name);
    throw new UsageError(`there is no profile ${name} (${names.length === 0 ? 'none is saved yet: ktctl config save-profile NAME' : `saved: ${names.join(', ')}`})`);
  }
  return readConfigFile(path, `profile ${name} (${path})`);
}

/** Replaces the config file with profile `name`. */
export function loadProfile(name: string, env: NodeJS.ProcessEnv = process.env): ConfigData {
  const data = readProfile(name, env);
  writeConfigFile(configPath(env), data);
  return data;
}

export function removeProfile(name: string, env: NodeJS.ProcessEnv = process.env): void {
  const path = profilePath(name, env);
  if (!profileExists(path)) throw new UsageError(`there is no profile ${name} to remove (ktctl config list-profile lists them)`);
  rmSync(path);
}
