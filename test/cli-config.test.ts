/**
 * `ktctl config` and the precedence every command follows (src/cli/common/settings.ts): flag, then
 * KTCTL_<COMMAND>_<FLAG> / KTCTL_<FLAG>, then the config file (<command>.<flag> / global.<flag>), then
 * the default. Parsed in-process through the real clipanion Cli (makeCli, as main.ts runs it), and
 * the built CLI as a process for what a user sees: `config show`'s sources, exit 2 and one sentence for
 * a file that cannot be parsed, the profiles. Each test has its own XDG_CONFIG_HOME; nothing talks to a
 * cluster (KUBECONFIG names a file that does not exist).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BaseContext, Command } from 'clipanion';
import { makeCli } from '../src/cli/commands.js';
import { CLI, errorSentence } from './helpers/cli-process.js';

interface Home {
  dir: string;
  file: string;
  env: NodeJS.ProcessEnv;
  write(text: string): void;
}

/** A config home of the test's own, removed after it. */
function home(t: ExecutionContext, text?: string): Home {
  const dir = mkdtempSync(join(tmpdir(), 'ktctl-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'ktctl', 'config.yaml');
  const write = (s: string): void => {
    mkdirSync(join(dir, 'ktctl'), { recursive: true });
    writeFileSync(file, s);
  };
  if (text !== undefined) write(text);
  // only what the test sets: no KTCTL_* of the machine running the tests
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir, KUBECONFIG: join(dir, 'no-kubeconfig'), KTCTL_STATE_DIR: join(dir, 'state') };
  return { dir, file, env, write };
}

/** The command clipanion makes for `argv` with this environment (nothing runs). */
function parse(h: Home, argv: string[], env: NodeJS.ProcessEnv = {}): Command<BaseContext> & Record<string, unknown> {
  const cli = makeCli();
  return cli.process(argv, { env: { ...h.env, ...env } } as Partial<BaseContext>) as Command<BaseContext> & Record<string, unknown>;
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function ktctl(h: Home, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...h.env, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

// --- precedence, parsed in-process

test('precedence: default, then the file, then KTCTL_<FLAG>, then KTCTL_<COMMAND>_<FLAG>, then the flag', (t) => {
  const h = home(t);
  t.is((parse(h, ['connect']).dnsMode as { mode: string }).mode, 'localDNS', 'the default');
  h.write('connect:\n  dnsMode: hosts\n');
  t.is((parse(h, ['connect']).dnsMode as { mode: string }).mode, 'hosts', 'the file');
  t.is((parse(h, ['connect'], { KTCTL_DNS_MODE: 'podDNS' }).dnsMode as { mode: string }).mode, 'podDNS', 'the environment beats the file');
  t.is((parse(h, ['connect'], { KTCTL_DNS_MODE: 'podDNS', KTCTL_CONNECT_DNS_MODE: 'localDNS' }).dnsMode as { mode: string }).mode, 'localDNS', 'the command\'s variable beats the plain one');
  t.is((parse(h, ['connect', '--dnsMode', 'hosts'], { KTCTL_DNS_MODE: 'podDNS', KTCTL_CONNECT_DNS_MODE: 'localDNS' }).dnsMode as { mode: string }).mode, 'hosts', 'the flag beats everything');
  t.is((parse(h, ['connect', '--dns-mode=podDNS']).dnsMode as { mode: string }).mode, 'podDNS', 'also in its kebab-case spelling');
  t.is((parse(h, ['connect'], { KTCTL_DNS_MODE: '' }).dnsMode as { mode: string }).mode, 'hosts', 'an empty variable is no value');
});

test('precedence: global.<flag> applies to every command that has the flag, <command>.<flag> wins for its command', (t) => {
  const h = home(t, 'global:\n  namespace: team\n  podCreationTimeout: 90\nexchange:\n  namespace: other\n');
  t.is(parse(h, ['connect']).namespace, 'team');
  t.is(parse(h, ['status']).namespace, 'team');
  t.is(parse(h, ['exchange', 'web']).namespace, 'other');
  t.is(parse(h, ['connect']).podCreationTimeout, 90, 'the value goes through the flag\'s validator (seconds as a number)');
  t.is(parse(h, ['connect', '-n', 'mine']).namespace, 'mine');
  t.is(parse(h, ['status'], { KTCTL_NAMESPACE: 'env' }).namespace, 'env');
});

test('precedence: ktctl\'s own variables (the shadow\'s KTCTL_PORT) are no flag\'s value; the command\'s variable is', (t) => {
  const h = home(t);
  t.is(parse(h, ['dashboard'], { KTCTL_PORT: '2222' }).port, 0);
  t.is(parse(h, ['dashboard'], { KTCTL_PORT: '2222', KTCTL_DASHBOARD_PORT: '8123' }).port, 8123);
});

test('precedence: switches from the file (YAML booleans) and the environment; --no-FLAG on the command line still wins', (t) => {
  const h = home(t, 'global:\n  forceUpdate: true\n');
  t.true(parse(h, ['connect']).forceUpdate);
  t.false(parse(h, ['connect', '--no-forceUpdate']).forceUpdate);
  t.false(parse(h, ['connect'], { KTCTL_FORCE_UPDATE: 'false' }).forceUpdate);
  t.true(parse(h, ['exchange', 'web'], { KTCTL_SKIP_PORT_CHECKING: '1' }).skipPortChecking);
});

test('precedence: KT Connect\'s dash-separated keys in the file are read (global.pod-quota, connect.dns-mode)', (t) => {
  const h = home(t, 'connect:\n  dns-mode: hosts\nglobal:\n  pod-quota: 0.5c,512m\n');
  t.is((parse(h, ['connect']).dnsMode as { mode: string }).mode, 'hosts');
  t.truthy(parse(h, ['preview', 'x']).podQuota);
});

// --- the CLI as a user runs it

test('a config file that cannot be parsed: one sentence on stderr, exit 2, for any command; --help still works', async (t) => {
  const h = home(t, 'connect: [1,\n');
  const r = await ktctl(h, ['status']);
  t.is(r.code, 2, r.stderr);
  t.is(r.stdout, '');
  const sentence = errorSentence(t, r.stderr);
  t.regex(sentence, /^ktctl: the config file .*config\.yaml is not valid YAML \(.*\): fix it, or start again with ktctl config unset --all$/);
  t.is(r.stderr.trim().split('\n').length, 1, 'nothing but the sentence');
  const show = await ktctl(h, ['config', 'show']);
  t.is(show.code, 2);
  errorSentence(t, show.stderr);
  const help = await ktctl(h, ['connect', '--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Global flags:/);
  const fixed = await ktctl(h, ['config', 'unset', '--all']);
  t.is(fixed.code, 0, fixed.stderr);
  t.is((await ktctl(h, ['config', 'show'])).code, 0);
});

test('a file of the wrong shape, and a value the flag refuses, are config errors too (exit 2, the key named)', async (t) => {
  const h = home(t, '- a\n- b\n');
  const list = await ktctl(h, ['status']);
  t.is(list.code, 2);
  t.regex(errorSentence(t, list.stderr), /must map groups \(global or a command\) to flags and their values.*but it holds a list/);
  h.write('connect:\n  dnsMode:\n    nested: 1\n');
  const nested = await ktctl(h, ['status']);
  t.is(nested.code, 2);
  t.regex(errorSentence(t, nested.stderr), /connect\.dnsMode is not a single value/);
  h.write('global:\n  podCreationTimeout: -3\n');
  const bad = await ktctl(h, ['preview', 'demo', '--expose', '8080']);
  t.is(bad.code, 2, bad.stderr);
  t.regex(errorSentence(t, bad.stderr), /^ktctl: global\.podCreationTimeout in .*config\.yaml: --podCreationTimeout takes a number of seconds greater than 0 \(got "-3"\)$/);
});

test('a bad value from the environment: one sentence naming the variable, exit 1', async (t) => {
  const h = home(t);
  const r = await ktctl(h, ['connect', '--mode', 'socks'], { KTCTL_DNS_MODE: 'bogus' });
  t.is(r.code, 1);
  t.regex(errorSentence(t, r.stderr), /^ktctl: KTCTL_DNS_MODE \(environment\): --dnsMode must be one of localDNS, podDNS, hosts/);
});

test('config show says where each value comes from; --all adds the defaults; unknown keys are pointed out', async (t) => {
  const h = home(t, 'connect:\n  dnsMode: hosts\nglobal:\n  image: mirror.example.test/node:22\n  nosuchflag: 1\n');
  const r = await ktctl(h, ['config', 'show'], { KTCTL_NAMESPACE: 'envns', KTCTL_CONNECT_MODE: 'socks' });
  t.is(r.code, 0, r.stderr);
  const line = (key: string): string => r.stdout.split('\n').find((l) => l.startsWith(`${key} `)) ?? '';
  t.regex(line('connect.dnsMode'), /hosts\s+config connect\.dnsMode \(.*config\.yaml\)$/);
  t.regex(line('exchange.image'), /mirror\.example\.test\/node:22\s+config global\.image /);
  t.regex(line('status.namespace'), /envns\s+environment KTCTL_NAMESPACE$/);
  t.regex(line('connect.mode'), /socks\s+environment KTCTL_CONNECT_MODE$/);
  t.is(line('exchange.mode'), '', 'KTCTL_CONNECT_MODE is connect\'s only');
  t.is(line('connect.proxyPort'), '', 'defaults only with --all');
  t.regex(r.stdout, /# ignored: global\.nosuchflag in the file names no flag/);
  const all = await ktctl(h, ['config', 'show', 'connect', '--all']);
  t.regex(all.stdout, /^connect\.proxyPort\s+2223\s+default$/m);
  t.notRegex(all.stdout, /^exchange\./m);
  const json = JSON.parse((await ktctl(h, ['config', 'show', '--json'], { KTCTL_DNS_MODE: 'podDNS' })).stdout) as { settings: Array<{ key: string; value: string; source: string }> };
  t.deepEqual(json.settings.find((s) => s.key === 'connect.dnsMode'), { key: 'connect.dnsMode', value: 'podDNS', source: 'environment KTCTL_DNS_MODE' });
  h.write('connect:\n  proxyPort: 99999\n');
  const invalid = await ktctl(h, ['config', 'show']);
  t.regex(invalid.stdout, /^connect\.proxyPort\s+99999\s+config connect\.proxyPort .*INVALID: --proxyPort must be a port number/m);
});

test('config set checks the value with the flag\'s own validator and writes the canonical key; get and unset', async (t) => {
  const h = home(t);
  t.is((await ktctl(h, ['config', 'set', 'connect.dns-mode', 'hosts'])).code, 0);
  t.is((await ktctl(h, ['config', 'set', 'global.podCreationTimeout=90'])).code, 0, 'KT Connect\'s KEY=VALUE form');
  t.is((await ktctl(h, ['config', 'set', 'global.forceUpdate', 'yes'])).code, 0);
  t.is(readFileSync(h.file, 'utf8'), 'connect:\n  dnsMode: hosts\nglobal:\n  forceUpdate: true\n  podCreationTimeout: 90\n');
  const get = await ktctl(h, ['config', 'get', 'connect.dnsMode']);
  t.regex(get.stdout, /^connect\.dnsMode = hosts {2}\(config connect\.dnsMode \(.*\)\)$/m);
  const before = readFileSync(h.file, 'utf8');
  const bad = await ktctl(h, ['config', 'set', 'connect.proxyPort', 'x']);
  t.is(bad.code, 1);
  t.regex(errorSentence(t, bad.stderr), /^ktctl: connect\.proxyPort: --proxyPort must be a port number between 0 and 65535 \(got "x"\)$/);
  const mixed = await ktctl(h, ['config', 'set', 'global.mode', 'socks']);
  t.is(mixed.code, 1);
  t.regex(errorSentence(t, mixed.stderr), /global\.mode sets --mode of every command that has it, and ktctl exchange refuses it .*: set connect\.mode instead$/);
  const unknown = await ktctl(h, ['config', 'set', 'connect.nosuch', '1']);
  t.regex(errorSentence(t, unknown.stderr), /ktctl connect has a flag --nosuch: ktctl config show --all lists the keys|has no flag/);
  const group = await ktctl(h, ['config', 'set', 'nosuch.image', '1']);
  t.regex(errorSentence(t, group.stderr), /there is no config group nosuch/);
  t.is(readFileSync(h.file, 'utf8'), before, 'a refused set changes nothing');
  t.is((await ktctl(h, ['config', 'unset', 'connect.dnsMode', 'global.forceUpdate'])).code, 0);
  t.is(readFileSync(h.file, 'utf8'), 'global:\n  podCreationTimeout: 90\n');
  t.is((parse(h, ['connect']).dnsMode as { mode: string }).mode, 'localDNS');
});

test('profiles: save, list, load (and --dryRun), remove; overwriting needs --force; missing ones are named', async (t) => {
  const h = home(t);
  await ktctl(h, ['config', 'set', 'global.namespace', 'staging']);
  t.is((await ktctl(h, ['config', 'save-profile', 'staging'])).code, 0);
  const again = await ktctl(h, ['config', 'save-profile', 'staging']);
  t.is(again.code, 1);
  t.regex(errorSentence(t, again.stderr), /profile staging exists already: give --force/);
  await ktctl(h, ['config', 'set', 'global.namespace', 'prod']);
  t.is((await ktctl(h, ['config', 'save-profile', 'prod'])).code, 0);
  const list = await ktctl(h, ['config', 'list-profile']);
  t.deepEqual(list.stdout.trim().split('\n').map((l) => l.split('\t')[0]), ['prod', 'staging']);
  const dry = await ktctl(h, ['config', 'load-profile', 'staging', '--dryRun']);
  t.is(dry.stdout, 'global:\n  namespace: staging\n');
  t.is(parse(h, ['status']).namespace, 'prod', 'a dry run changes nothing');
  t.is((await ktctl(h, ['config', 'load-profile', 'staging'])).code, 0);
  t.is(parse(h, ['status']).namespace, 'staging');
  const missing = await ktctl(h, ['config', 'load-profile', 'qa']);
  t.is(missing.code, 1);
  t.regex(errorSentence(t, missing.stderr), /there is no profile qa \(saved: prod, staging\)/);
  t.is((await ktctl(h, ['config', 'drop-profile', 'prod'])).code, 0, 'KT Connect\'s name for remove-profile');
  t.is((await ktctl(h, ['config', 'remove-profile', 'staging'])).code, 0);
  t.false(existsSync(join(h.dir, 'ktctl', 'profiles', 'staging.yaml')));
  const bad = await ktctl(h, ['config', 'save-profile', '../x']);
  t.regex(errorSentence(t, bad.stderr), /a profile name is letters, digits/);
  // a broken config file is not saved as a profile
  h.write('x: [\n');
  const broken = await ktctl(h, ['config', 'save-profile', 'broken']);
  t.is(broken.code, 2);
  t.false(existsSync(join(h.dir, 'ktctl', 'profiles', 'broken.yaml')));
});

test('the config directory follows XDG_CONFIG_HOME, else ~/.config', async (t) => {
  const h = home(t);
  const env = { XDG_CONFIG_HOME: '' };
  t.is((await ktctl(h, ['config', 'set', 'global.namespace', 'x'], env)).code, 0);
  t.true(existsSync(join(h.dir, '.config', 'ktctl', 'config.yaml')));
});
