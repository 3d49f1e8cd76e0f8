/**
 * Where a flag's value comes from when the command line does not give it: the precedence of every
 * ktctl command, implemented once, at clipanion's level (KtctlCli wraps each option's transformer,
 * so a value from the environment or the config file goes through the flag's own validator, exactly
 * as if it had been typed):
 *
 *   1. the flag on the command line;
 *   2. the environment: `KTCTL_<COMMAND>_<FLAG>`, then `KTCTL_<FLAG>` (`KTCTL_CONNECT_MODE`, `KTCTL_DNS_MODE`);
 *   3. the config file (src/config/file.ts): `<command>.<flag>`, then `global.<flag>`;
 *   4. the flag's default.
 *
 * `<FLAG>` is the flag's first long name in upper snake case (`--dnsMode` -> `DNS_MODE`); the file
 * takes the flag's names without dashes (`dnsMode`, or KT Connect's `dns-mode`). A `global` or
 * unprefixed value applies to every command that has a flag of that name; the command's own wins,
 * for a name that means different things (`--mode` of connect and of exchange).
 */
import { ConfigFileError, configPath, readConfigFile, type ConfigData, type ConfigValue } from '../../config/file.js';
import { KtctlError, UsageError } from '../../errors.js';
import { ROUTER_ENV, SHADOW_ENV } from '../../protocol/index.js';
import { rawText } from './validators.js';

/** What clipanion's `Option.*` puts in a command's field before parsing (its "command option"). */
export interface OptionSpec {
  definition(builder: unknown, key: string): void;
  transformer(builder: unknown, key: string, state: ParseState, context: unknown): unknown;
}

/** The part of clipanion's parse state an option's transformer reads. */
export interface ParseState {
  options: Array<{ name: string; value: unknown }>;
  positionals: Array<{ value: string; extra: unknown }>;
  [other: string]: unknown;
}

/** One flag of one command, as its definition declared it. */
export interface FlagInfo {
  /** the command's field */
  key: string;
  /** every spelling, e.g. ['--dnsMode', '--dns-mode'] */
  names: string[];
  /** the first long name without dashes: the config key and the root of the env variable */
  name: string;
  /** 0 for a boolean */
  arity: number;
  hidden: boolean;
  description: string;
  /** the transformer before KtctlCli wrapped it: with an empty state it gives the default */
  original: OptionSpec['transformer'];
}

export interface PositionalInfo {
  name: string;
  required: boolean;
}

export interface CommandInfo {
  /** the group in the config file and in `KTCTL_<GROUP>_...`: the command's first path, words joined by '-' */
  group: string;
  paths: string[][];
  flags: FlagInfo[];
  positionals: PositionalInfo[];
  /** whether flags of this command come from the environment and the config file */
  configurable: boolean;
}

/** Where a value came from. */
export type SettingSource =
  | { kind: 'flag'; name: string }
  | { kind: 'env'; name: string }
  | { kind: 'file'; key: string; path: string }
  | { kind: 'default' };

export function describeSource(s: SettingSource): string {
  switch (s.kind) {
    case 'flag':
      return `flag ${s.name}`;
    case 'env':
      return `environment ${s.name}`;
    case 'file':
      return `config ${s.key} (${s.path})`;
    case 'default':
      return 'default';
  }
}

/** `dnsMode` -> `DNS_MODE`, `kubeconfig` -> `KUBECONFIG`, `preview` -> `PREVIEW`. */
export function envWord(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/-/g, '_')
    .toUpperCase();
}

/**
 * Variables ktctl and its shadow read for themselves (the shadow's listening port and keys, the state
 * directory, test switches): never a flag's value, so `KTCTL_PORT` of a shadow run by hand does not
 * become `ktctl dashboard --port` (that one is `KTCTL_DASHBOARD_PORT`).
 */
export const OWN_VARIABLES: ReadonlySet<string> = new Set([
  ...Object.values(SHADOW_ENV),
  ...Object.values(ROUTER_ENV),
  'KTCTL_STATE_DIR',
  'KTCTL_PERMISSIONS',
  'KTCTL_PERMISSIONS_LOG',
  'KTCTL_HEARTBEAT_SECONDS',
  'KTCTL_TUN_ADDON',
  'KTCTL_TUN_MTU',
  'KTCTL_DNS_RESOLV_CONF',
  'KTCTL_FUZZ_PACKETS',
  'KTCTL_CHROMIUM',
  'KTCTL_TEST_ARTIFACTS',
  'KTCTL_COMPLETION_WAIT_MS',
]);

/** The environment variables of a flag, the narrower first (ktctl's own variables left out). */
export function envNames(group: string, flag: string): string[] {
  return [`KTCTL_${envWord(group)}_${envWord(flag)}`, `KTCTL_${envWord(flag)}`].filter((n) => !OWN_VARIABLES.has(n));
}

/** The spellings a config key may take for a flag: its long names without the dashes. */
export function fileKeys(flag: FlagInfo): string[] {
  return flag.names.filter((n) => n.startsWith('--')).map((n) => n.slice(2));
}

/** A boolean flag's value from text (environment) or YAML. */
export function parseBoolean(value: ConfigValue, what: string): boolean {
  if (typeof value === 'boolean') return value;
  const text = String(value).trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(text)) return true;
  if (['false', '0', 'no', 'off'].includes(text)) return false;
  throw new UsageError(`${what} is a switch: true or false (got "${String(value)}")`);
}

export interface Found {
  value: ConfigValue;
  source: SettingSource;
}

/**
 * The settings below the command line, for one process: the environment, and the config file,
 * read once, at the first flag that needs it (so a command whose flags are all given, and `--help`,
 * never read it).
 */
export class Settings {
  #data: ConfigData | undefined;
  readonly path: string;

  constructor(readonly env: NodeJS.ProcessEnv) {
    this.path = configPath(env);
  }

  /** The config file's contents; a broken file throws its ConfigFileError (exit 2) every time. */
  file(): ConfigData {
    this.#data ??= readConfigFile(this.path);
    return this.#data;
  }

  /** The value for `flag` of a command in `group`, from the environment or the file; undefined for its default. */
  lookup(group: string, flag: FlagInfo): Found | undefined {
    for (const name of envNames(group, flag.name)) {
      const v = this.env[name];
      if (v !== undefined && v !== '') return { value: v, source: { kind: 'env', name } };
    }
    const data = this.file();
    for (const g of [group, 'global']) {
      const items = data[g];
      if (items === undefined) continue;
      for (const k of fileKeys(flag)) {
        const v = items[k];
        if (v !== undefined) return { value: v, source: { kind: 'file', key: `${g}.${k}`, path: this.path } };
      }
    }
    return undefined;
  }
}

/** `state` with `flag` given `value` (as the parser would have put it), for the flag's own transformer. */
function stateWith(state: ParseState, flag: FlagInfo, value: ConfigValue, what: string): ParseState {
  const v = flag.arity === 0 ? parseBoolean(value, what) : String(value);
  return { ...state, options: [...state.options, { name: flag.names[0]!, value: v }] };
}

/** An error in a value from the environment or the file, with where it came from in front. */
function fromSource(error: unknown, source: SettingSource): unknown {
  if (!(error instanceof KtctlError)) return error;
  const where = source.kind === 'env' ? `${source.name} (environment)` : source.kind === 'file' ? `${source.key} in ${source.path}` : '';
  const message = `${where}: ${error.message}`;
  // a bad value in the file is a configuration error, as a file that cannot be read (exit 2)
  return source.kind === 'file' ? new ConfigFileError(message, { cause: error }) : new UsageError(message, { cause: error });
}

/**
 * The transformer that gives a flag its value by the precedence above. `record` collects the sources
 * of the values that did not come from the command line (for `--debug`).
 */
export function precedenceTransformer(
  group: string,
  flag: FlagInfo,
  settings: () => Settings,
  record: (key: string, found: Found) => void,
): OptionSpec['transformer'] {
  const names = new Set(flag.names);
  return (builder, key, state, context) => {
    if (state.options.some((o) => names.has(o.name))) return flag.original(builder, key, state, context);
    // `ktctl connect -h`: help needs no settings (and must work with a broken config file)
    if (state.options.some((o) => o.name === '-h' || o.name === '--help')) return flag.original(builder, key, state, context);
    const found = settings().lookup(group, flag);
    if (found === undefined) return flag.original(builder, key, state, context);
    try {
      const what = found.source.kind === 'env' ? found.source.name : found.source.kind === 'file' ? found.source.key : flag.names[0]!;
      const value = flag.original(builder, key, stateWith(state, flag, found.value, what), context);
      record(key, found);
      return value;
    } catch (error) {
      throw fromSource(error, found.source);
    }
  };
}

/** A flag's default: what its transformer gives when nothing sets it. */
export function defaultOf(flag: FlagInfo): unknown {
  try {
    return flag.original(undefined, flag.key, { options: [], positionals: [] }, {});
  } catch {
    return undefined;
  }
}

/** A parsed value as one short line (`60`, `a=b,c=d`, `-` for none). */
export function showValue(v: unknown): string {
  if (v === undefined || v === null) return '-';
  const raw = rawText(v);
  if (raw !== undefined) return raw;
  if (Array.isArray(v)) return v.map((x) => showValue(x)).join(',');
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>);
    if (entries.every(([, x]) => typeof x !== 'object')) return entries.map(([k, x]) => `${k}=${String(x)}`).join(',') || '-';
    return JSON.stringify(v);
  }
  return String(v);
}

/**
 * Every command's flags, read from the clipanion option specs (KtctlCli fills it at register time).
 * `config`, `completion` and help read it; nothing else.
 */
export class CommandTable {
  readonly commands: CommandInfo[] = [];
  /** the flags of the shared base classes (kubeconfig, shadow pod): "global options" in help */
  globalKeys = new Set<string>();

  add(info: CommandInfo): void {
    this.commands.push(info);
  }

  configurable(): CommandInfo[] {
    return this.commands.filter((c) => c.configurable);
  }

  byGroup(group: string): CommandInfo | undefined {
    return this.configurable().find((c) => c.group === group);
  }

  /** `connect.dnsMode`, `global.image`, `connect.dns-mode` -> the canonical key and the flags it sets. */
  resolveKey(key: string): { group: string; name: string; targets: Array<{ command: CommandInfo; flag: FlagInfo }> } {
    const dot = key.indexOf('.');
    const groups = ['global', ...this.configurable().map((c) => c.group)];
    if (dot <= 0 || dot === key.length - 1) {
      throw new UsageError(`a config key is GROUP.FLAG, GROUP being global or one of ${groups.slice(1).join(', ')} (got "${key}")`);
    }
    const group = key.slice(0, dot);
    const word = key.slice(dot + 1).replace(/^-+/, '');
    const commands = group === 'global' ? this.configurable() : [this.byGroup(group)].filter((c): c is CommandInfo => c !== undefined);
    if (commands.length === 0) throw new UsageError(`there is no config group ${group}: it is global or one of ${groups.slice(1).join(', ')}`);
    const targets: Array<{ command: CommandInfo; flag: FlagInfo }> = [];
    for (const command of commands) {
      const flag = command.flags.find((f) => !f.hidden && fileKeys(f).includes(word));
      if (flag !== undefined) targets.push({ command, flag });
    }
    if (targets.length === 0) {
      throw new UsageError(`${group === 'global' ? 'no command' : `ktctl ${group}`} has a flag --${word}: ktctl config show --all lists the keys`);
    }
    return { group, name: targets[0]!.flag.name, targets };
  }
}

/** A flag's value for a command as `ktctl config show` reports it. */
export interface Effective {
  value: string;
  source: SettingSource;
  /** the flag's validator refused the value (the command would fail with this sentence) */
  problem?: string;
}

/** What `flag` of `command` is when the command line does not give it. */
export function effective(command: CommandInfo, flag: FlagInfo, settings: Settings): Effective {
  const found = settings.lookup(command.group, flag);
  if (found === undefined) return { value: showValue(flag.arity > 0 ? defaultOf(flag) : defaultOf(flag) ?? false), source: { kind: 'default' } };
  try {
    const state = stateWith({ options: [], positionals: [] }, flag, found.value, flag.names[0]!);
    return { value: showValue(flag.original(undefined, flag.key, state, {})), source: found.source };
  } catch (error) {
    return { value: String(found.value), source: found.source, problem: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * `value` checked by every flag `key` sets (`config set`), as the file will hold it: a switch as
 * true/false, a whole number as a number, anything else as text.
 */
export function checkedValue(table: CommandTable, key: string, value: string): { group: string; name: string; value: ConfigValue } {
  const { group, name, targets } = table.resolveKey(key);
  const refusals: Array<{ group: string; sentence: string }> = [];
  for (const { command, flag } of targets) {
    try {
      flag.original(undefined, flag.key, stateWith({ options: [], positionals: [] }, flag, value, `${group}.${name}`), {});
    } catch (error) {
      refusals.push({ group: command.group, sentence: error instanceof Error ? error.message : String(error) });
    }
  }
  if (refusals.length > 0) {
    const first = refusals[0]!;
    if (targets.length === 1) throw new UsageError(`${group}.${name}: ${first.sentence}`);
    const takers = targets.map((t) => t.command.group).filter((g) => !refusals.some((r) => r.group === g));
    throw new UsageError(
      `global.${name} sets --${name} of every command that has it, and ktctl ${first.group} refuses it (${first.sentence})${takers.length > 0 ? `: set ${takers.map((g) => `${g}.${name}`).join(' or ')} instead` : ''}`,
    );
  }
  const isSwitch = targets.every((t) => t.flag.arity === 0);
  const stored: ConfigValue = isSwitch ? parseBoolean(value, `${group}.${name}`) : /^(0|[1-9]\d{0,14})$/.test(value) ? Number(value) : value;
  return { group, name, value: stored };
}
