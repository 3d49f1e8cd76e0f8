/**
 * `ktctl config`: the defaults of the flags in the config file, and profiles of them, as KT Connect's
 * `ktctl config` (show, get, set, unset, save-profile, load-profile, list-profile, and remove-profile
 * beside KT's drop-profile). The keys are the flags' names under their command or `global`
 * (`connect.dnsMode`, `global.namespace`); the precedence every command follows is in
 * common/settings.ts. These commands take no values from the file themselves.
 */
import { Command, Option } from 'clipanion';
import {
  ConfigFileError,
  configPath,
  listProfiles,
  loadProfile,
  readConfigFile,
  readProfile,
  removeProfile,
  renderConfig,
  saveProfile,
  writeConfigFile,
  type ConfigData,
} from '../config/file.js';
import { UsageError } from '../errors.js';
import type { TableAware } from './common/cli.js';
import { describeError } from './common/command.js';
import { checkedValue, describeSource, effective, fileKeys, type CommandTable, type Settings } from './common/settings.js';

const CATEGORY = 'Clean up, inspect and configure';

/** What every `config` command shares: the flag table, and a failure as one sentence (exit 2 for the file). */
abstract class ConfigBase extends Command implements TableAware {
  #table: CommandTable | undefined;
  #settings: Settings | undefined;

  useCommandTable(table: CommandTable, settings: Settings): void {
    this.#table = table;
    this.#settings = settings;
  }

  protected get table(): CommandTable {
    if (this.#table === undefined) throw new TypeError('the command table comes from KtctlCli');
    return this.#table;
  }

  protected get settings(): Settings {
    if (this.#settings === undefined) throw new TypeError('the settings come from KtctlCli');
    return this.#settings;
  }

  protected get path_(): string {
    return this.settings.path;
  }

  abstract run(): number;

  async execute(): Promise<number> {
    try {
      return this.run();
    } catch (error) {
      this.context.stderr.write(`ktctl: ${describeError(error)}\n`);
      return error instanceof ConfigFileError ? error.exitCode : 1;
    }
  }

  protected out(line: string): void {
    this.context.stdout.write(`${line}\n`);
  }

  protected read(): ConfigData {
    return readConfigFile(this.path_);
  }
}

export class ConfigCommand extends ConfigBase {
  static override paths = [['config']];

  static override usage = Command.Usage({
    category: CATEGORY,
    description: 'set defaults for flags, and keep profiles of them',
    details: `
      The defaults live in \`$XDG_CONFIG_HOME/ktctl/config.yaml\` (default \`~/.config/ktctl/config.yaml\`), one
      group per command plus \`global\`, as KT Connect's \`~/.kt/config\`. A flag not given on the command line comes
      from \`KTCTL_<COMMAND>_<FLAG>\` or \`KTCTL_<FLAG>\` in the environment, then from \`<command>.<flag>\` or
      \`global.<flag>\` in the file, then from its default. Profiles are saved copies of the file.
    `,
    examples: [
      ['Use hosts DNS for every connect', '$0 config set connect.dnsMode hosts'],
      ['Every command works in namespace dev', '$0 config set global.namespace dev'],
      ['What each value is and where it comes from', '$0 config show'],
    ],
  });

  run(): number {
    this.context.stdout.write(this.cli.usage(ConfigCommand, { detailed: true }));
    return 0;
  }
}

export class ConfigShowCommand extends ConfigBase {
  static override paths = [['config', 'show']];

  static override usage = Command.Usage({
    description: 'show each flag\'s default and where it comes from (environment, config file or built in)',
    details: `
      Without \`--all\`, only the values that come from the environment or the config file. A value the flag
      refuses is shown with the sentence the command would fail with.
    `,
    examples: [
      ['What is set, and where', '$0 config show'],
      ['Every flag of connect', '$0 config show connect --all'],
    ],
  });

  command = Option.String({ name: 'COMMAND', required: false });
  all = Option.Boolean('--all,-a', false, { description: 'also the flags that keep their built-in default' });
  json = Option.Boolean('--json', false, { description: 'print one JSON document' });

  run(): number {
    const commands = this.command === undefined ? this.table.configurable() : [this.table.byGroup(this.command)];
    if (commands[0] === undefined) throw new UsageError(`there is no command ${this.command} with flags to configure (${this.table.configurable().map((c) => c.group).join(', ')})`);
    const data = this.read();
    const rows: Array<{ key: string; value: string; source: string; problem?: string }> = [];
    for (const command of commands) {
      for (const flag of command!.flags) {
        if (flag.hidden) continue;
        const e = effective(command!, flag, this.settings);
        if (!this.all && e.source.kind === 'default') continue;
        rows.push({ key: `${command!.group}.${flag.name}`, value: e.value, source: describeSource(e.source), ...(e.problem !== undefined ? { problem: e.problem } : {}) });
      }
    }
    const unknown = this.unknownKeys(data);
    if (this.json) {
      this.out(JSON.stringify({ file: this.path_, settings: rows, unknownKeys: unknown }, null, 2));
      return 0;
    }
    this.out(`# config file: ${this.path_}`);
    const width = Math.max(0, ...rows.map((r) => r.key.length)) + 2;
    const vwidth = Math.min(30, Math.max(0, ...rows.map((r) => r.value.length)) + 2);
    for (const r of rows) this.out(`${r.key.padEnd(width)}${r.value.padEnd(vwidth)}${r.source}${r.problem !== undefined ? `  INVALID: ${r.problem}` : ''}`);
    if (rows.length === 0) this.out('# nothing set: every flag keeps its default (--all lists them)');
    for (const k of unknown) this.out(`# ignored: ${k} in the file names no flag (ktctl config unset ${k})`);
    return 0;
  }

  /** Keys in the file that no command's flag reads. */
  unknownKeys(data: ConfigData): string[] {
    const out: string[] = [];
    for (const [group, items] of Object.entries(data)) {
      const commands = group === 'global' ? this.table.configurable() : [this.table.byGroup(group)].filter((c) => c !== undefined);
      for (const key of Object.keys(items)) {
        if (!commands.some((c) => c!.flags.some((f) => !f.hidden && fileKeys(f).includes(key)))) out.push(`${group}.${key}`);
      }
    }
    return out;
  }
}

export class ConfigGetCommand extends ConfigBase {
  static override paths = [['config', 'get']];

  static override usage = Command.Usage({
    description: 'print the value a flag takes when the command line does not give it, and where it comes from',
    examples: [['The DNS mode connect uses', '$0 config get connect.dnsMode']],
  });

  key = Option.String({ name: 'GROUP.FLAG' });

  run(): number {
    const { group, name, targets } = this.table.resolveKey(this.key);
    const { command, flag } = targets[0]!;
    const e = effective(command, flag, this.settings);
    this.out(`${group}.${name} = ${e.value}  (${describeSource(e.source)})`);
    if (e.problem !== undefined) throw new ConfigFileError(`${group}.${name} holds a value ktctl ${command.group} refuses: ${e.problem}`);
    return 0;
  }
}

export class ConfigSetCommand extends ConfigBase {
  static override paths = [['config', 'set']];

  static override usage = Command.Usage({
    description: 'set the default of a flag in the config file',
    details: `
      \`GROUP.FLAG VALUE\` or \`GROUP.FLAG=VALUE\` (KT Connect's forms). GROUP is a command or \`global\` (every command
      that has the flag); FLAG is the flag's name, camelCase or kebab-case. The value is checked as the flag checks it.
    `,
    examples: [
      ['connect in socks mode unless told otherwise', '$0 config set connect.mode socks'],
      ['A mirror of the shadow image for every command', '$0 config set global.image registry.example.test/node:22-alpine'],
    ],
  });

  key = Option.String({ name: 'GROUP.FLAG' });
  value = Option.String({ name: 'VALUE', required: false });

  run(): number {
    let key = this.key;
    let value = this.value;
    if (value === undefined) {
      const eq = key.indexOf('=');
      if (eq < 0) throw new UsageError('config set takes GROUP.FLAG VALUE or GROUP.FLAG=VALUE, e.g. ktctl config set connect.dnsMode hosts');
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    }
    const checked = checkedValue(this.table, key, value);
    const data = this.read();
    const group = { ...data[checked.group] };
    // one spelling per flag: KT Connect's dns-mode gives way to dnsMode
    const { targets } = this.table.resolveKey(`${checked.group}.${checked.name}`);
    for (const k of fileKeys(targets[0]!.flag)) delete group[k];
    group[checked.name] = checked.value;
    writeConfigFile(this.path_, { ...data, [checked.group]: group });
    this.out(`${checked.group}.${checked.name} = ${String(checked.value)}  (${this.path_})`);
    return 0;
  }
}

export class ConfigUnsetCommand extends ConfigBase {
  static override paths = [['config', 'unset']];

  static override usage = Command.Usage({
    description: 'remove flags\' defaults from the config file (--all: every one, also from a file that cannot be read)',
    examples: [
      ['connect\'s DNS mode back to its default', '$0 config unset connect.dnsMode'],
      ['Start again with an empty file', '$0 config unset --all'],
    ],
  });

  all = Option.Boolean('--all,-a', false, { description: 'remove every value (rewrites the file, also one that cannot be read)' });
  keys = Option.Rest({ name: 'GROUP.FLAG' });

  run(): number {
    if (this.all) {
      if (this.keys.length > 0) throw new UsageError('config unset takes keys or --all, not both');
      writeConfigFile(this.path_, {});
      this.out(`every value removed (${this.path_})`);
      return 0;
    }
    if (this.keys.length === 0) throw new UsageError('config unset needs a key (GROUP.FLAG, e.g. connect.dnsMode) or --all');
    const data = this.read();
    for (const key of this.keys) {
      // a key that names no flag any more (ktctl config show lists it as ignored) can still go
      const dot = key.indexOf('.');
      const [group, word] = [key.slice(0, dot), key.slice(dot + 1)];
      let spellings = [word];
      try {
        spellings = fileKeys(this.table.resolveKey(key).targets[0]!.flag);
      } catch (error) {
        if (dot <= 0 || data[group]?.[word] === undefined) throw error;
      }
      const items = { ...data[group] };
      const had = spellings.some((k) => items[k] !== undefined);
      for (const k of spellings) delete items[k];
      data[group] = items;
      this.out(had ? `${key} removed` : `${key} was not set`);
    }
    writeConfigFile(this.path_, data);
    return 0;
  }
}

export class ConfigSaveProfileCommand extends ConfigBase {
  static override paths = [['config', 'save-profile']];

  static override usage = Command.Usage({
    description: 'save the config file as a profile',
    examples: [['Keep the settings for the staging cluster', '$0 config save-profile staging']],
  });

  name = Option.String({ name: 'NAME' });
  force = Option.Boolean('--force', false, { description: 'overwrite a profile of that name' });

  run(): number {
    const path = saveProfile(this.name, { force: this.force, env: this.settings.env });
    this.out(`profile ${this.name} saved (${path})`);
    return 0;
  }
}

export class ConfigLoadProfileCommand extends ConfigBase {
  static override paths = [['config', 'load-profile']];

  static override usage = Command.Usage({
    description: 'replace the config file with a profile',
    examples: [
      ['Back to the staging settings', '$0 config load-profile staging'],
      ['Only print what the profile holds', '$0 config load-profile staging --dryRun'],
    ],
  });

  name = Option.String({ name: 'NAME' });
  dryRun = Option.Boolean('--dryRun,--dry-run', false, { description: 'print the profile, change nothing' });

  run(): number {
    if (this.dryRun) {
      this.context.stdout.write(renderConfig(readProfile(this.name, this.settings.env)));
      return 0;
    }
    loadProfile(this.name, this.settings.env);
    this.out(`profile ${this.name} loaded into ${configPath(this.settings.env)}`);
    return 0;
  }
}

export class ConfigListProfileCommand extends ConfigBase {
  static override paths = [['config', 'list-profile'], ['config', 'list-profiles']];

  static override usage = Command.Usage({
    description: 'list the saved profiles',
    examples: [['Which profiles there are', '$0 config list-profile']],
  });

  run(): number {
    const profiles = listProfiles(this.settings.env);
    if (profiles.length === 0) {
      this.out('no profile saved (ktctl config save-profile NAME)');
      return 0;
    }
    for (const p of profiles) this.out(`${p.name}\t${p.saved.toISOString()}`);
    return 0;
  }
}

export class ConfigRemoveProfileCommand extends ConfigBase {
  static override paths = [['config', 'remove-profile'], ['config', 'drop-profile']];

  static override usage = Command.Usage({
    description: 'delete a saved profile (KT Connect\'s drop-profile)',
    examples: [['Forget the staging settings', '$0 config remove-profile staging']],
  });

  name = Option.String({ name: 'NAME' });

  run(): number {
    removeProfile(this.name, this.settings.env);
    this.out(`profile ${this.name} removed`);
    return 0;
  }
}

export const CONFIG_COMMANDS = [
  ConfigCommand,
  ConfigShowCommand,
  ConfigGetCommand,
  ConfigSetCommand,
  ConfigUnsetCommand,
  ConfigSaveProfileCommand,
  ConfigLoadProfileCommand,
  ConfigListProfileCommand,
  ConfigRemoveProfileCommand,
];
