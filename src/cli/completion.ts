/**
 * Shell completion: `ktctl completion bash|zsh|fish` prints a script that, at each TAB, runs the hidden
 * `ktctl __complete WORD... CURRENT` and offers what it prints. One design for the three shells (as
 * cobra's `__complete`): the shell passes the words, ktctl answers from its own flag table (the one
 * config and help read), so the scripts never go stale.
 *
 * `__complete` prints a directive line (`:files` when file names fit, else `:nofiles`), then one
 * candidate a line. It never prints an error (a completion must not write into the user's prompt)
 * and always exits 0. What it completes: command and sub-command names, each command's flags, the
 * values of the flags that have a fixed set (modes, DNS modes, ssh ciphers), kubeconfig contexts
 * (read from the kubeconfig file, no API call), config keys and profile names, and the names of
 * services (and `deploy/NAME`) for exchange, mesh, forward and recover: one list call to the API server
 * (the `completion` profile of src/kube/permissions.ts), in the namespace and context the words name,
 * given at most CLUSTER_WAIT_MS; a cluster that does not answer in time, or refuses, completes nothing.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Command, Option } from 'clipanion';
import { load } from 'js-yaml';
import { listProfiles } from '../config/file.js';
import { CIPHERS } from '../ssh/tunnel.js';
import { DNS_MODES } from '../dns/mode.js';
import { COMMANDS } from '../kube/permissions.js';
import type { TableAware } from './common/cli.js';
import { type CommandInfo, type CommandTable, type FlagInfo, type Settings } from './common/settings.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** What a word can be completed with. */
export interface Completion {
  files: boolean;
  candidates: string[];
}

/** Values of flags with a fixed set, by `group.flag` or `flag`. */
const VALUES: Record<string, readonly string[]> = {
  'connect.mode': ['tun', 'socks'],
  'exchange.mode': ['selector', 'scale'],
  'mesh.mode': ['auto', 'manual'],
  dnsMode: DNS_MODES,
  sshCipher: CIPHERS,
  runAsUser: ['auto'],
};

/** How long a TAB waits for the cluster's answer (after loading the Kubernetes layer); KTCTL_COMPLETION_WAIT_MS for slow machines. */
export const CLUSTER_WAIT_MS = 2000;

/** The commands whose first argument is a service (and, for exchange and mesh, deploy/NAME). */
const SERVICE_ARGS: Record<string, { deployments: boolean }> = {
  exchange: { deployments: true },
  mesh: { deployments: true },
  forward: { deployments: false },
  recover: { deployments: false },
};

/** The value of a flag in the words (`-n dev`, `--namespace=dev`). */
function wordValue(words: string[], names: string[]): string | undefined {
  for (let i = words.length - 2; i >= 0; i--) {
    const w = words[i]!;
    if (names.includes(w)) return words[i + 1];
    const eq = names.find((n) => w.startsWith(`${n}=`));
    if (eq !== undefined) return w.slice(eq.length + 1);
  }
  return undefined;
}

/**
 * Service names (and `deploy/NAME`) of the namespace the words name, from the cluster; [] when it
 * cannot say in time. Loads the Kubernetes layer only here.
 */
async function clusterNames(words: string[], o: { deployments: boolean; current: string; settings?: Settings; command?: CommandInfo; waitMs: number }): Promise<string[]> {
  const flag = (key: string): string | undefined => {
    const info = o.command?.flags.find((f) => f.key === key);
    const typed = info === undefined ? undefined : wordValue(words, info.names);
    if (typed !== undefined || info === undefined || o.settings === undefined || o.command === undefined) return typed;
    const found = o.settings.lookup(o.command.group, info);
    return found === undefined ? undefined : String(found.value);
  };
  const [{ openKube }, { useProfile }] = await Promise.all([import('../kube/session.js'), import('../kube/permissions.js')]);
  useProfile({ command: 'completion', flags: {} });
  const kube = openKube({ kubeconfig: flag('kubeconfig'), context: flag('kubeContext'), namespace: flag('namespace') });
  const namespace = kube.namespace;
  const wantDeployments = o.deployments && o.current.startsWith('d');
  const [services, deployments] = await inTime<[string[], string[]]>(o.waitMs, [[], []], Promise.all([
    kube.core.listNamespacedService({ namespace }).then((l) => l.items.map((s) => s.metadata?.name ?? '')),
    wantDeployments ? kube.apps.listNamespacedDeployment({ namespace }).then((l) => l.items.map((d) => `deploy/${d.metadata?.name ?? ''}`)) : Promise.resolve([]),
  ]));
  const names = [...services, ...services.map((s) => `svc/${s}`), ...deployments].filter((n) => n !== '' && !n.endsWith('/'));
  return names.filter((n) => n.startsWith(o.current) && (o.current.includes('/') || !n.includes('/') || n.startsWith('deploy/')));
}

/** `work`'s result, or `late` after `ms`. */
async function inTime<T>(ms: number, late: T, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(late), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** `clusterNames`, or [] when the cluster does not answer in time or at all. */
async function clusterNamesInTime(words: string[], o: Omit<Parameters<typeof clusterNames>[1], 'waitMs'> & { env: NodeJS.ProcessEnv }): Promise<string[]> {
  const wait = Number(o.env.KTCTL_COMPLETION_WAIT_MS);
  return clusterNames(words, { ...o, waitMs: Number.isFinite(wait) && wait > 0 ? wait : CLUSTER_WAIT_MS }).catch(() => []);
}

/** Flags whose value is a file name. */
const FILE_FLAGS = new Set(['kubeconfig', 'identity', 'knownHosts', 'envFile', 'envJson']);

/** The paths a user types (builtins like -h and the hidden __complete left out); `alias` for a command's other paths. */
function typedPaths(table: CommandTable): Array<{ path: string[]; command: CommandInfo; alias: boolean }> {
  const out: Array<{ path: string[]; command: CommandInfo; alias: boolean }> = [];
  for (const command of table.commands) {
    command.paths.forEach((path, i) => {
      if (path.length === 0 || path[0]!.startsWith('-') || path[0]!.startsWith('__')) return;
      out.push({ path, command, alias: i > 0 });
    });
  }
  return out;
}

function flagFor(command: CommandInfo, word: string): FlagInfo | undefined {
  return command.flags.find((f) => f.names.includes(word));
}

/** Contexts of the kubeconfig the words name (--kubeconfig, else $KUBECONFIG, else ~/.kube/config). */
function kubeContexts(words: string[], env: NodeJS.ProcessEnv): string[] {
  const i = words.findIndex((w) => w === '--kubeconfig' || w === '-c');
  const files = i >= 0 && words[i + 1] !== undefined ? [words[i + 1]!] : env.KUBECONFIG ? env.KUBECONFIG.split(delimiter) : [join(env.HOME ?? homedir(), '.kube', 'config')];
  const names: string[] = [];
  for (const f of files) {
    try {
      const doc = load(readFileSync(f, 'utf8')) as { contexts?: Array<{ name?: unknown }> } | undefined;
      for (const c of doc?.contexts ?? []) if (typeof c.name === 'string') names.push(c.name);
    } catch {
      /* no file, or not YAML: nothing to offer */
    }
  }
  return names;
}

/**
 * The completion of the last of `words` (what the user is typing; '' after a space), the words
 * before it being the command line after `ktctl`.
 */
export async function complete(table: CommandTable, words: string[], o: { env: NodeJS.ProcessEnv; settings?: Settings }): Promise<Completion> {
  const current = words.at(-1) ?? '';
  const before = words.slice(0, -1);
  const paths = typedPaths(table);
  // the longest path the words before begin with
  let matched: { path: string[]; command: CommandInfo; alias: boolean } | undefined;
  for (const p of paths) {
    if (p.path.length <= before.length && p.path.every((w, i) => before[i] === w) && (matched === undefined || p.path.length > matched.path.length)) matched = p;
  }
  const none: Completion = { files: false, candidates: [] };
  const prefixed = (xs: Iterable<string>): string[] => [...new Set([...xs].filter((x) => x.startsWith(current)))];

  // still typing a command (or a sub-command: `config s`)
  const depth = matched?.path.length ?? 0;
  if (before.length === depth && !current.startsWith('-')) {
    // aliases (run, drop-profile) complete only once nothing else fits
    const under = paths.filter((p) => p.path.length > depth && (matched?.path ?? []).every((w, i) => p.path[i] === w));
    const main = under.filter((p) => !p.alias && p.path[depth]!.startsWith(current));
    const next = (main.length > 0 ? main : under).map((p) => p.path[depth]!);
    if (next.length > 0 || matched === undefined) {
      const words2 = prefixed(next);
      if (words2.length > 0 || matched === undefined) return { files: false, candidates: words2 };
    }
  }
  if (matched === undefined) return none;
  const command = matched.command;
  const group = command.group;

  // the value of the flag before
  const previous = before.at(-1);
  if (previous !== undefined && previous.startsWith('-') && before.length > matched.path.length) {
    const flag = flagFor(command, previous);
    if (flag !== undefined && flag.arity > 0) {
      if (FILE_FLAGS.has(flag.name)) return { files: true, candidates: [] };
      if (flag.name === 'context') return { files: false, candidates: prefixed(kubeContexts(words, o.env)) };
      const values = VALUES[`${group}.${flag.name}`] ?? VALUES[flag.name];
      return { files: false, candidates: values === undefined ? [] : prefixed(values) };
    }
  }

  // a flag
  if (current.startsWith('-')) {
    const out: string[] = [];
    for (const f of command.flags) {
      if (f.hidden) continue;
      const long = f.names.filter((n) => n.startsWith('--'));
      const shorts = f.names.filter((n) => /^-[^-]/.test(n));
      // the flag's first name, or the spelling the user started (--dns- finds --dns-mode)
      const hit = current === '-' || current === '--' ? (long[0] ?? shorts[0]) : [...long, ...shorts].find((n) => n.startsWith(current));
      if (hit !== undefined && hit.startsWith(current)) out.push(hit);
    }
    out.push(...['--help'].filter((h) => h.startsWith(current)));
    return { files: false, candidates: [...new Set(out)] };
  }

  // a positional argument
  const full = matched.path.join(' ');
  if (full === 'completion') return { files: false, candidates: prefixed(SHELLS) };
  if (full === 'check') return { files: false, candidates: prefixed(COMMANDS) };
  if (full === 'config get' || full === 'config set' || full === 'config unset') {
    if (full === 'config set' && before.length > matched.path.length) return none;
    const keys: string[] = [];
    for (const c of table.configurable()) for (const f of c.flags) if (!f.hidden) keys.push(`${c.group}.${f.name}`, `global.${f.name}`);
    return { files: false, candidates: prefixed(keys).sort() };
  }
  if (full === 'config load-profile' || full === 'config remove-profile' || full === 'config drop-profile' || full === 'config save-profile') {
    try {
      return { files: false, candidates: prefixed(listProfiles(o.env).map((p) => p.name)) };
    } catch {
      return none;
    }
  }
  if (full === 'config show') return { files: false, candidates: prefixed(table.configurable().map((c) => c.group)) };
  const service = SERVICE_ARGS[full];
  // the first argument only (forward's second is ports)
  const args = before.slice(matched.path.length).filter((w, i, all) => !w.startsWith('-') && !(i > 0 && flagFor(command, all[i - 1]!)?.arity));
  if (service !== undefined && args.length === 0) {
    return { files: false, candidates: await clusterNamesInTime(words, { deployments: service.deployments, current, command, env: o.env, ...(o.settings ? { settings: o.settings } : {}) }) };
  }
  return none;
}

/** The script for `shell`; it runs `bin __complete ...`. */
export function completionScript(shell: Shell, bin = 'ktctl'): string {
  const fn = `_${bin.replace(/[^A-Za-z0-9_]/g, '_')}`;
  switch (shell) {
    case 'bash':
      return `# ${bin} completion for bash. Load it with:  source <(${bin} completion bash)
# or save it as /etc/bash_completion.d/${bin}.
${fn}() {
  local cur=\${COMP_WORDS[COMP_CWORD]}
  local out
  out=$(${bin} __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
  local directive=\${out%%$'\\n'*}
  local candidates=
  [[ $out == *$'\\n'* ]] && candidates=\${out#*$'\\n'}
  local IFS=$'\\n'
  COMPREPLY=($(compgen -W "$candidates" -- "$cur" || true))
  if [[ \${#COMPREPLY[@]} -eq 0 && $directive == :files ]]; then
    COMPREPLY=($(compgen -f -- "$cur" || true))
    compopt -o filenames 2>/dev/null || true
  fi
  return 0
}
complete -F ${fn} ${bin}
`;
    case 'zsh':
      return `#compdef ${bin}
# ${bin} completion for zsh. Load it with:  source <(${bin} completion zsh)   (after compinit)
# or save it as _${bin} in a directory of $fpath.
${fn}() {
  local -a lines candidates
  lines=("\${(@f)$(${bin} __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  candidates=("\${(@)lines[2,-1]}")
  candidates=(\${candidates:#})
  if (( \${#candidates} )); then
    compadd -- "\${candidates[@]}"
  elif [[ \${lines[1]} == :files ]]; then
    _files
  fi
}
if [[ "\${funcstack[1]}" == "${fn}" ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${bin}
fi
`;
    case 'fish':
      return `# ${bin} completion for fish. Load it with:  ${bin} completion fish | source
# or save it as ~/.config/fish/completions/${bin}.fish.
function __${fn}_complete
    set -l words (commandline -opc)
    set -e words[1]
    set -l out (${bin} __complete $words (commandline -ct) 2>/dev/null)
    if test (count $out) -gt 1
        printf '%s\\n' $out[2..-1]
    else if test "$out[1]" = ":files"
        __fish_complete_path (commandline -ct)
    end
end
complete -c ${bin} -f -a '(__${fn}_complete)'
`;
  }
}

export class CompletionCommand extends Command {
  static override paths = [['completion']];

  static override usage = Command.Usage({
    category: 'Other',
    description: 'print the shell completion script for bash, zsh or fish',
    details: `
      Completes commands, sub-commands, flags, the values of flags with a fixed set (modes, DNS modes, ssh
      ciphers), kubeconfig contexts, config keys, profile names, and the cluster's services (and deployments)
      for exchange, mesh, forward and recover. The script calls \`ktctl __complete\`, so it follows the
      installed ktctl.
    `,
    examples: [
      ['bash, for this shell', 'source <($0 completion bash)'],
      ['zsh, for this shell (after compinit)', 'source <($0 completion zsh)'],
      ['fish, for good', '$0 completion fish > ~/.config/fish/completions/ktctl.fish'],
    ],
  });

  shell = Option.String({ name: 'bash|zsh|fish' });

  async execute(): Promise<number> {
    const shell = SHELLS.find((s) => s === this.shell);
    if (shell === undefined) {
      this.context.stderr.write(`ktctl: completion scripts are for ${SHELLS.join(', ')} (got "${this.shell}")\n`);
      return 1;
    }
    this.context.stdout.write(completionScript(shell, this.cli.binaryName));
    return 0;
  }
}

/** `ktctl __complete WORD... CURRENT`: what the scripts call (see the top of this file). */
export class CompleteCommand extends Command implements TableAware {
  static override paths = [['__complete']];

  words = Option.Proxy();
  #table: CommandTable | undefined;
  #settings: Settings | undefined;

  useCommandTable(table: CommandTable, settings: Settings): void {
    this.#table = table;
    this.#settings = settings;
  }

  async execute(): Promise<number> {
    try {
      const words = this.words.length === 0 ? [''] : this.words;
      const c = await complete(this.#table!, words, { env: this.#settings?.env ?? process.env, ...(this.#settings ? { settings: this.#settings } : {}) });
      this.context.stdout.write(`${c.files ? ':files' : ':nofiles'}\n${c.candidates.map((x) => `${x}\n`).join('')}`);
    } catch {
      // never an error into the user's prompt
      this.context.stdout.write(':nofiles\n');
    }
    // A request to a cluster that answered too late may still hold a socket: the shell waits for this
    // process, so it ends now that the answer is written.
    if (this.context.stdout === process.stdout) process.stdout.write('', () => process.exit(0));
    return 0;
  }
}

