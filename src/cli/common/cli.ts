/**
 * clipanion's Cli as ktctl needs it, in three overrides:
 * - `register`: reads each command's flags into one table (settings.ts `CommandTable`: config, help
 *   and completion read it) and wraps each flag's transformer with the precedence flag > environment
 *   > config file > default, so every command gets it without a line of its own;
 * - `process`: a flag, environment or config value that fails its validator becomes one sentence
 *   (FlagErrorCommand; exit 1, or 2 for the config file);
 * - `usage`: help that reads like kubectl's: `ktctl --help` lists the commands in their groups, one
 *   line each; `ktctl COMMAND --help` shows the command's flags with their defaults, the global flags
 *   apart, details and examples.
 */
import { Cli, Command, formatMarkdownish, type BaseContext, type CommandClass } from 'clipanion';
import { KtctlError } from '../../errors.js';
import { ConfigFileError } from '../../config/file.js';
import { describeError } from './command.js';
import {
  CommandTable,
  defaultOf,
  precedenceTransformer,
  Settings,
  showValue,
  type CommandInfo,
  type FlagInfo,
  type Found,
  type OptionSpec,
  type PositionalInfo,
} from './settings.js';
import { ShadowCommand } from './shadow.js';

/**
 * A flag that fails its validator (validators.ts) fails while clipanion parses, before any command
 * runs: this command stands in for the one that could not be made, and reports the failure as
 * `execute()` reports every other (`ktctl: <sentence>` on stderr, exit 1; 2 for the config file).
 */
class FlagErrorCommand extends Command {
  constructor(
    readonly error: KtctlError,
    readonly withStack: boolean,
  ) {
    super();
  }

  async execute(): Promise<number> {
    this.context.stderr.write(`ktctl: ${describeError(this.error, this.withStack)}\n`);
    return this.error instanceof ConfigFileError ? this.error.exitCode : 1;
  }
}

/** A command that wants the flag table (`config`, `completion`) says so with this method. */
export interface TableAware {
  useCommandTable(table: CommandTable, settings: Settings): void;
}

function isTableAware(c: unknown): c is TableAware {
  return typeof (c as Partial<TableAware>).useCommandTable === 'function';
}

/** A command told where its flags' values came from (KtctlCommand logs them with --debug). */
export interface SourcesAware {
  settingSources: Array<{ flag: string; found: Found }>;
}

/** What register() learns from clipanion's builder calls. */
interface Declared {
  flags: Array<Omit<FlagInfo, 'key' | 'name' | 'original'>>;
  positionals: PositionalInfo[];
}

function declare(spec: OptionSpec, key: string): Declared {
  const out: Declared = { flags: [], positionals: [] };
  spec.definition(
    {
      addOption: (o: { names: string[]; arity?: number; hidden?: boolean; description?: string }) =>
        out.flags.push({ names: o.names, arity: o.arity ?? 0, hidden: o.hidden ?? false, description: o.description ?? '' }),
      addPositional: (o: { name?: string; required?: boolean }) => out.positionals.push({ name: o.name ?? key, required: o.required !== false }),
      addRest: (o: { name?: string }) => out.positionals.push({ name: `${o.name ?? key}...`, required: false }),
      addProxy: (o: { name?: string }) => out.positionals.push({ name: `-- ${o.name ?? 'COMMAND'}...`, required: false }),
    },
    key,
  );
  return out;
}

/** clipanion's Cli, with ktctl's precedence, flag errors and help (see the top of this file). */
export class KtctlCli extends Cli {
  readonly table = new CommandTable();
  #settings: Settings | undefined;
  #env: NodeJS.ProcessEnv = process.env;
  /** the sources of the values the last process() took from outside the command line */
  #sources: Array<{ flag: string; found: Found }> = [];

  constructor(options: ConstructorParameters<typeof Cli>[0]) {
    super(options);
    // the flags every shadow-making command shares are "global flags" in help (KT Connect's word)
    const probe = Reflect.construct(ShadowCommand, []) as Record<string, unknown>;
    for (const key of Object.keys(probe)) if (typeof probe[key] === 'object' && probe[key] !== null && Command.isOption in (probe[key] as object)) this.table.globalKeys.add(key);
  }

  /** The settings below the command line (tests give an environment of their own through run's context). */
  settings(): Settings {
    this.#settings ??= new Settings(this.#env);
    return this.#settings;
  }

  override register(commandClass: CommandClass<BaseContext>): void {
    super.register(commandClass);
    const record = this.registrations.get(commandClass)!;
    const paths = commandClass.paths ?? [];
    const configurable = (commandClass as { configurable?: boolean }).configurable === true && paths.length > 0;
    const group = (paths[0] ?? []).join('-');
    const info: CommandInfo = { group, paths, flags: [], positionals: [], configurable };
    for (const [key, spec] of record.specs.entries()) {
      const s = spec as unknown as OptionSpec;
      const declared = declare(s, key);
      info.positionals.push(...declared.positionals);
      for (const d of declared.flags) {
        const long = d.names.find((n) => n.startsWith('--')) ?? d.names[0]!;
        const flag: FlagInfo = { ...d, key, name: long.replace(/^-+/, ''), original: s.transformer.bind(s) };
        info.flags.push(flag);
        if (configurable && !d.hidden) {
          const transformer = precedenceTransformer(group, flag, () => this.settings(), (_key, found) => this.#sources.push({ flag: long, found }));
          record.specs.set(key, { ...spec, transformer } as typeof spec);
        }
      }
    }
    this.table.add(info);
  }

  override process(input: string[], context: Partial<BaseContext> | void): Command<BaseContext> {
    const env = (context as { env?: NodeJS.ProcessEnv } | undefined)?.env;
    if (env !== undefined && env !== this.#env) {
      this.#env = env;
      this.#settings = undefined;
    }
    this.#sources = [];
    let command: Command<BaseContext>;
    try {
      command = super.process(input, context ?? {});
    } catch (error) {
      if (!(error instanceof KtctlError)) throw error;
      return new FlagErrorCommand(error, input.includes('--debug') || input.includes('-d'));
    }
    if (isTableAware(command)) command.useCommandTable(this.table, this.settings());
    if ('settingSources' in command) (command as unknown as SourcesAware).settingSources = this.#sources;
    return command;
  }

  /**
   * clipanion's syntax errors list the candidate commands with every flag inline (the wall of text
   * help used to be): each becomes its short usage line here.
   */
  override error(error: Error, opts?: { colored?: boolean; command?: Command<BaseContext> | null }): string {
    const text = super.error(error, opts);
    if (error.message.startsWith('Command not found')) {
      // clipanion lists every command with all its flags; one sentence with the nearest name instead
      const typed = (/While running (.*)$/m.exec(error.message)?.[1] ?? '').trim();
      const word = typed.split(' ')[0] ?? '';
      const names = [...new Set(this.table.commands.flatMap((c) => c.paths.map((p) => p[0] ?? '')).filter((n) => /^[a-z]/.test(n)))];
      const near = names.map((n) => ({ n, d: editDistance(word, n) })).sort((a, b) => a.d - b.d)[0];
      const hint = near !== undefined && near.d <= Math.max(2, Math.floor(word.length / 3)) ? `; did you mean ${near.n}?` : '';
      return `ktctl: there is no command "${typed}"${hint} (ktctl --help lists them)\n`;
    }
    return text.replace(/^(\s*)\$ (\S+) (.*)$/gm, (line, indent: string, _bin: string, rest: string) => {
      const words = rest.split(' ');
      const path = words.slice(0, words.findIndex((w) => /^[[<-]/.test(w)) >>> 0);
      const info = [...this.table.commands].sort((a, b) => b.paths[0]!.length - a.paths[0]!.length).find((c) => c.paths.some((p) => p.length > 0 && p.every((w, i) => path[i] === w)));
      return info === undefined ? line : `${indent}$ ${this.usageLine(info)}`;
    });
  }

  // --- help

  override usage(command: CommandClass<BaseContext> | Command<BaseContext> | null = null, opts?: { colored?: boolean; detailed?: boolean; prefix?: string }): string {
    const cls = command === null ? null : command instanceof Command ? (command.constructor as CommandClass<BaseContext>) : command;
    if (cls === null) return this.overview();
    const info = this.table.commands.find((c) => c.paths === cls.paths);
    if (info === undefined || cls.usage === undefined) return super.usage(command, opts);
    return opts?.detailed ? this.commandHelp(cls, info) : `$ ${this.usageLine(info)}\n`;
  }

  /** `ktctl exchange <svc|svc/NAME|deploy/NAME> [flags]` */
  usageLine(info: CommandInfo): string {
    const args = info.positionals.filter((p) => !p.name.startsWith('-- ')).map((p) => (p.required ? `<${p.name}>` : `[${p.name}]`));
    const proxy = info.positionals.filter((p) => p.name.startsWith('-- ')).map((p) => `[${p.name}]`);
    return [this.binaryName, ...(info.paths[0] ?? []), ...args, ...(info.flags.some((f) => !f.hidden) ? ['[flags]'] : []), ...proxy].join(' ');
  }

  /** The commands in their groups (Usage.category, else Other; in the order of registration), one line each. */
  overview(): string {
    const groups = new Map<string, Array<{ name: string; description: string }>>();
    for (const cls of this.registrations.keys()) {
      const usage = cls.usage;
      const path = cls.paths?.[0];
      // sub-commands (config show) are listed by their command's help; builtins (-h) and __complete not at all
      if (usage === undefined || path === undefined || path.length !== 1 || /^(-|__)/.test(path[0]!)) continue;
      const category = usage.category ?? 'Other';
      const aliases = (cls.paths ?? []).slice(1).map((p) => p.join(' '));
      const list = groups.get(category) ?? [];
      list.push({ name: path[0]!, description: `${usage.description ?? ''}${aliases.length > 0 ? ` (also: ${aliases.join(', ')})` : ''}` });
      groups.set(category, list);
    }
    const width = Math.max(...[...groups.values()].flat().map((c) => c.name.length)) + 3;
    let out = `${this.binaryLabel ?? this.binaryName} ${this.binaryVersion ?? ''}: join this machine to a Kubernetes cluster's network, in the spirit of KT Connect\n`;
    for (const [category, commands] of groups) {
      out += `\n${category}:\n`;
      for (const c of commands) out += `  ${c.name.padEnd(width)}${c.description}\n`;
    }
    out += `\nUsage:\n  ${this.binaryName} COMMAND [flags]\n\n`;
    out += `Use "${this.binaryName} COMMAND --help" for a command's flags, their defaults and examples, "${this.binaryName} --version" for the version.\n`;
    return out;
  }

  commandHelp(cls: CommandClass<BaseContext>, info: CommandInfo): string {
    const usage = cls.usage!;
    const md = (text: string, paragraphs: boolean): string => formatMarkdownish(text, { format: this.format(false), paragraphs });
    let out = `${md(usage.description ?? '', false).trimEnd().replace(/^./, (c) => c.toUpperCase())}\n`;
    out += `\nUsage:\n  ${this.usageLine(info)}\n`;
    const visible = info.flags.filter((f) => !f.hidden);
    const own = visible.filter((f) => !this.table.globalKeys.has(f.key));
    const global = visible.filter((f) => this.table.globalKeys.has(f.key));
    const rows = (flags: FlagInfo[]): string[][] =>
      flags.map((f) => {
        const short = f.names.filter((n) => /^-[^-]/.test(n));
        const long = f.names.find((n) => n.startsWith('--')) ?? '';
        const spelled = `${short.length > 0 ? `${short.join(', ')}, ` : '    '}${long}${f.arity > 0 ? ' VALUE' : ''}`;
        const dflt = f.arity > 0 ? defaultOf(f) : undefined;
        const text = f.description + (dflt !== undefined && !/\bdefault\b/.test(f.description) ? ` (default ${showValue(dflt)})` : '');
        return [spelled, text];
      });
    const all = [...rows(own), ...rows(global)];
    const width = Math.min(36, Math.max(0, ...all.map((r) => r[0]!.length)) + 2);
    const table = (title: string, r: string[][]): string =>
      r.length === 0 ? '' : `\n${title}:\n${r.map(([a, b]) => (a!.length + 2 > width ? `  ${a}\n  ${''.padEnd(width)}  ${b}` : `  ${a!.padEnd(width)}  ${b}`)).join('\n')}\n`;
    const path = info.paths[0] ?? [];
    const subs = this.table.commands.filter((c) => c.paths[0]!.length === path.length + 1 && path.every((w, i) => c.paths[0]![i] === w));
    if (subs.length > 0) {
      const swidth = Math.max(...subs.map((c) => c.paths[0]!.at(-1)!.length)) + 3;
      out += `\nCommands:\n`;
      for (const c of subs) {
        const cls = [...this.registrations.keys()].find((k) => k.paths === c.paths);
        out += `  ${c.paths[0]!.at(-1)!.padEnd(swidth)}${cls?.usage?.description ?? ''}\n`;
      }
    }
    out += table('Flags', rows(own));
    out += table('Global flags', rows(global));
    if (usage.details !== undefined) out += `\nDetails:\n${md(usage.details, true).replace(/ +$/gm, '').replace(/^(?=.)/gm, '  ')}`;
    if (usage.examples !== undefined && usage.examples.length > 0) {
      out += `\nExamples:\n`;
      out += usage.examples.map(([label, line]) => `  # ${md(label, false).trimEnd()}\n  ${line.replace(/\$0/g, this.binaryName)}\n`).join('\n');
    }
    if (info.configurable && visible.length > 0) {
      out += `\nEvery flag also takes its kebab-case spelling (--dry-run for --dryRun). A flag not given comes from KTCTL_${info.group.toUpperCase()}_<FLAG> or KTCTL_<FLAG> in the environment, then from the config file (ktctl config), then from its default.\n`;
    }
    return out;
  }
}

/** Levenshtein distance, for "did you mean". */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row.push(Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = row;
  }
  return prev[b.length]!;
}
