/**
 * Help that reads like kubectl's, and shell completion, through the built CLI as a user runs it:
 * - `ktctl --help` (and `ktctl` alone) lists the commands in their groups, one line each;
 * - each command's `--help` shows its flags with their defaults, the global flags apart, and two or
 *   three examples;
 * - `ktctl completion bash` sourced into a real bash (with `ktctl` on PATH): `complete -p` names its
 *   function, and the function fills COMPREPLY with commands, sub-commands, flags, flag values, config
 *   keys and file names, service and deployment names from the lab's API server run in this process
 *   (test/helpers/inproc-lab.ts, no shared lab); `ktctl __complete` never writes to stderr and exits 0,
 *   whatever it is given, also when the API server cannot be reached.
 * - zsh and fish, where installed (Debian's zsh and fish packages; elsewhere only the scripts' text is
 *   checked): zsh's _ktctl with compadd standing in for the completion system, fish's `complete -C`.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers/cli-process.js';
import { startInProcessLab } from './helpers/inproc-lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';

function scratch(t: ExecutionContext): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), 'ktctl-help-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir, KUBECONFIG: join(dir, 'no-kubeconfig'), KTCTL_STATE_DIR: join(dir, 'state') } };
}

function ktctl(env: NodeJS.ProcessEnv, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
    });
  });
}

const GROUPS: Array<[string, string[]]> = [
  ['Reach the cluster', ['connect', 'forward']],
  ["Take over a service's traffic", ['exchange', 'mesh', 'preview']],
  ['Clean up, inspect and configure', ['clean', 'recover', 'status', 'birdseye', 'check', 'dashboard', 'config']],
  ['Other', ['completion']],
];

test('ktctl --help lists the commands in their groups, one line each, no flags', async (t) => {
  const { env } = scratch(t);
  for (const args of [['--help'], ['-h'], []]) {
    const r = await ktctl(env, args);
    t.is(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    const headers = lines.filter((l) => /^\S.*:$/.test(l)).map((l) => l.slice(0, -1));
    t.deepEqual(headers.filter((h) => h !== 'Usage'), GROUPS.map(([g]) => g), `groups of ktctl ${args.join(' ')}`);
    for (const [group, commands] of GROUPS) {
      const start = lines.indexOf(`${group}:`);
      const block = lines.slice(start + 1, lines.indexOf('', start));
      t.deepEqual(block.map((l) => l.trim().split(/\s+/)[0]), commands, group);
      for (const l of block) t.notRegex(l, /--|\[/, `one line, no flags: ${l}`);
    }
    t.notRegex(r.stdout, /__complete|config show/, 'the hidden command and sub-commands are not listed');
    t.true(lines.length < 40, 'a page, not a wall');
  }
});

test('each command\'s --help: defaults, global flags apart, two or three examples', async (t) => {
  const { env } = scratch(t);
  for (const command of GROUPS.flatMap(([, c]) => c)) {
    const r = await ktctl(env, [command, '--help']);
    t.is(r.code, 0, `${command}: ${r.stderr}`);
    t.regex(r.stdout, new RegExp(`^Usage:\\n  ktctl ${command}`, 'm'), command);
    const examples = r.stdout.slice(r.stdout.indexOf('Examples:')).split('\n').filter((l) => l.startsWith('  # '));
    t.true(examples.length >= 2 && examples.length <= 3, `${command} has ${examples.length} examples`);
  }
  const connect = (await ktctl(env, ['connect', '--help'])).stdout;
  t.regex(connect, /^\s+--proxyPort VALUE\s+port the proxy listens on \(socks mode\) \(default 2223\)$/m);
  t.regex(connect, /^Global flags:\n(.*\n)*\s+--podCreationTimeout VALUE\s+.*\(default 60\)$/m);
  t.regex(connect, /^\s+-l, --withLabel VALUE/m);
  const own = connect.slice(connect.indexOf('Flags:'), connect.indexOf('Global flags:'));
  t.notRegex(own, /--kubeconfig|--podCreationTimeout/, 'global flags apart');
  t.notRegex(connect, /disableTunDevice|useShadowDeployment/, 'refused KT flags are not offered');
  t.regex((await ktctl(env, ['exchange', '--help'])).stdout, /--recoverWaitTime VALUE\s+.*\(default 120\)/);
  const config = (await ktctl(env, ['config', '--help'])).stdout;
  t.regex(config, /^Commands:\n {2}show +show each flag's default/m);
});

test('a mistyped command or a missing argument: a short answer, not every command with every flag', async (t) => {
  const { env } = scratch(t);
  const typo = await ktctl(env, ['conect']);
  t.is(typo.code, 1);
  t.is(typo.stdout, 'ktctl: there is no command "conect"; did you mean connect? (ktctl --help lists them)\n');
  const missing = await ktctl(env, ['exchange']);
  t.is(missing.code, 1);
  t.regex(missing.stdout, /Not enough positional arguments\.\n\n\$ ktctl exchange <svc\|svc\/NAME\|deploy\/NAME> \[flags\] \[-- command args\.\.\.\]\n/);
  t.notRegex(missing.stdout, /--debug/);
});

interface Bash {
  complete(words: string[]): string[];
  run(script: string): string;
}

/** A bash with `ktctl completion bash` sourced and ktctl (the built CLI) on PATH. */
function bashWithCompletion(t: ExecutionContext): Bash {
  const { dir, env } = scratch(t);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'ktctl'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`);
  chmodSync(join(bin, 'ktctl'), 0o755);
  writeFileSync(join(dir, 'notes.txt'), '');
  const run = (script: string): string => {
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', `set -e\nsource <(ktctl completion bash)\n${script}`], { env: { ...env, PATH: `${bin}:${env.PATH}` }, cwd: dir, encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`bash exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  return {
    run,
    complete: (words) => {
      const array = ['ktctl', ...words].map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(' ');
      const out = run(`COMP_WORDS=(${array}); COMP_CWORD=${words.length}; _ktctl; printf '%s\\n' "\${COMPREPLY[@]}"`);
      return out.split('\n').filter((l) => l !== '');
    },
  };
}

test('bash: the script registers _ktctl and completes commands, sub-commands, flags and their values', (t) => {
  const bash = bashWithCompletion(t);
  t.is(bash.run('complete -p ktctl').trim(), 'complete -F _ktctl ktctl');
  t.deepEqual(bash.complete(['co']), ['connect', 'config', 'completion']);
  t.deepEqual(bash.complete(['ex']), ['exchange']);
  t.deepEqual(bash.complete(['config', 'load']), ['load-profile']);
  t.deepEqual(bash.complete(['connect', '--dnsM']), ['--dnsMode']);
  t.deepEqual(bash.complete(['connect', '--dns-m']), ['--dns-mode'], 'the kebab-case spelling when the user starts it');
  t.deepEqual(bash.complete(['connect', '--dnsMode', '']), ['localDNS', 'podDNS', 'hosts']);
  t.deepEqual(bash.complete(['connect', '-m', '']), ['tun', 'socks']);
  t.deepEqual(bash.complete(['exchange', 'web', '--mode', 's']), ['selector', 'scale']);
  t.deepEqual(bash.complete(['mesh', 'web', '--mode', '']), ['auto', 'manual']);
  t.deepEqual(bash.complete(['completion', '']), ['bash', 'zsh', 'fish']);
  t.deepEqual(bash.complete(['config', 'get', 'connect.dnsM']), ['connect.dnsMode']);
  t.true(bash.complete(['exchange', 'web', '--']).includes('--expose'));
  t.false(bash.complete(['exchange', 'web', '--']).includes('--useShadowDeployment'), 'hidden flags are not offered');
  t.deepEqual(bash.complete(['connect', '--kubeconfig', 'no']), ['notes.txt'], 'file names for a file flag');
});

test('__complete never writes an error and always exits 0', async (t) => {
  const { dir, env } = scratch(t);
  mkdirSync(join(dir, 'ktctl'));
  writeFileSync(join(dir, 'ktctl', 'config.yaml'), 'x: [\n');
  for (const args of [[], ['connect', '--context', ''], ['nosuch', ''], ['config', 'load-profile', ''], ['connect', '--dnsMode', 'hosts', '--'], ['--help'], ['config', 'set', 'a', '']]) {
    const r = await ktctl({ ...env, KUBECONFIG: join(dir, 'ktctl', 'config.yaml') }, ['__complete', ...args]);
    t.is(r.code, 0, args.join(' '));
    t.is(r.stderr, '', args.join(' '));
    t.regex(r.stdout, /^:(files|nofiles)\n/);
  }
  const contexts = join(dir, 'kubeconfig');
  writeFileSync(contexts, 'apiVersion: v1\nkind: Config\ncontexts:\n- name: lab\n  context: {cluster: a, user: b}\n- name: lab-dev\n  context: {cluster: a, user: b}\n- name: prod\n  context: {cluster: a, user: b}\n');
  const r = await ktctl(env, ['__complete', 'status', '--kubeconfig', contexts, '--context', 'lab']);
  t.is(r.stdout, ':nofiles\nlab\nlab-dev\n', 'contexts from the kubeconfig the words name');
});

/** The scratch dir with `ktctl` (the built CLI) in bin/. */
function withKtctlOnPath(t: ExecutionContext): { dir: string; env: NodeJS.ProcessEnv } {
  const { dir, env } = scratch(t);
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'ktctl'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`);
  chmodSync(join(dir, 'bin', 'ktctl'), 0o755);
  return { dir, env: { ...env, PATH: `${join(dir, 'bin')}:${env.PATH}` } };
}

const has = (shell: string): boolean => spawnSync('sh', ['-c', `command -v ${shell}`]).status === 0;

test('zsh: the script registers with compdef and _ktctl offers commands, flag values and sub-commands', (t) => {
  const { dir, env } = withKtctlOnPath(t);
  const script = join(dir, '_ktctl');
  writeFileSync(script, spawnSync(process.execPath, [CLI, 'completion', 'zsh'], { env, encoding: 'utf8' }).stdout);
  t.regex(spawnSync('cat', [script], { encoding: 'utf8' }).stdout, /^#compdef ktctl$/m);
  if (!has('zsh')) return t.log('zsh is not installed here: only the script\'s text is checked');
  // compadd and compdef stand in for zsh's completion system, which needs a terminal: they print what they are given
  const run = (words: string[]): string[] => {
    const r = spawnSync('zsh', ['-f', '-c', `compdef() { print "compdef $*" }; compadd() { shift; print -l -- "$@" }; source ${script}; words=(${words.map((w) => `'${w}'`).join(' ')}); CURRENT=${words.length}; _ktctl`], { env, encoding: 'utf8' });
    return r.stdout.split('\n').filter((l) => l !== '');
  };
  t.deepEqual(run(['ktctl', 'co']), ['compdef _ktctl ktctl', 'connect', 'config', 'completion']);
  t.deepEqual(run(['ktctl', 'connect', '--dnsMode', '']), ['compdef _ktctl ktctl', 'localDNS', 'podDNS', 'hosts']);
  t.deepEqual(run(['ktctl', 'config', 'lo']), ['compdef _ktctl ktctl', 'load-profile']);
});

test('fish: complete -C offers commands, flags, flag values and sub-commands', (t) => {
  const { dir, env } = withKtctlOnPath(t);
  const script = join(dir, 'ktctl.fish');
  writeFileSync(script, spawnSync(process.execPath, [CLI, 'completion', 'fish'], { env, encoding: 'utf8' }).stdout);
  t.regex(spawnSync('cat', [script], { encoding: 'utf8' }).stdout, /^complete -c ktctl -f -a '\(___ktctl_complete\)'$/m);
  if (!has('fish')) return t.log('fish is not installed here: only the script\'s text is checked');
  const run = (line: string): string[] => spawnSync('fish', ['--no-config', '-c', `source ${script}; complete -C ${JSON.stringify(line)}`], { env, encoding: 'utf8' }).stdout.split('\n').filter((l) => l !== '');
  t.deepEqual(run('ktctl co'), ['completion', 'config', 'connect']);
  t.deepEqual(run('ktctl connect --dnsM'), ['--dnsMode']);
  t.deepEqual(run('ktctl exchange web --mode '), ['scale', 'selector']);
  t.true(run('ktctl config ').includes('save-profile'));
});

test('completion for an unknown shell: one sentence, exit 1', async (t) => {
  const { env } = scratch(t);
  const bad = await ktctl(env, ['completion', 'tcsh']);
  t.is(bad.code, 1);
  t.is(bad.stderr, 'ktctl: completion scripts are for bash, zsh, fish (got "tcsh")\n');
});

test('service and deployment names from the cluster, in the namespace the words name, within the permission table', async (t) => {
  const lab = await startInProcessLab(new FakeLabNet(), 'ktlab-complete');
  t.teardown(() => lab.stop());
  const ns = 'ktcomplete';
  await lab.pods(ns, []);
  for (const name of ['web', 'worker', 'api']) {
    const r = await lab.request('POST', `/api/v1/namespaces/${ns}/services`, { metadata: { name }, spec: { selector: { app: name }, ports: [{ port: 80 }] } });
    t.is(r.status, 201, JSON.stringify(r.json));
  }
  const d = await lab.request('POST', `/apis/apps/v1/namespaces/${ns}/deployments`, {
    metadata: { name: 'web' },
    spec: { replicas: 0, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } },
  });
  t.is(d.status, 201, JSON.stringify(d.json));
  const { env } = scratch(t);
  // strict: a request the completion profile does not list fails (src/kube/permissions.ts); a long wait,
  // as the test machine is shared (the wait itself is no assertion)
  const e = { ...env, KUBECONFIG: lab.kubeconfig, KTCTL_PERMISSIONS: 'strict', KTCTL_COMPLETION_WAIT_MS: '20000' };
  const words = (args: string[]) => ktctl(e, ['__complete', ...args]);
  const names = async (args: string[]): Promise<string[]> => {
    const r = await words(args);
    t.is(r.stderr, '', args.join(' '));
    t.is(r.code, 0);
    return r.stdout.split('\n').slice(1).filter((l) => l !== '');
  };
  t.deepEqual(await names(['exchange', '--context', 'lab', '-n', ns, '']), ['api', 'web', 'worker']);
  t.deepEqual(await names(['exchange', '--context', 'lab', '-n', ns, 'w']), ['web', 'worker']);
  t.deepEqual(await names(['mesh', '--context', 'lab', `--namespace=${ns}`, 'deploy/']), ['deploy/web']);
  t.deepEqual(await names(['forward', '--context', 'lab', '-n', ns, 'svc/a']), ['svc/api']);
  t.deepEqual(await names(['recover', '--context', 'lab', '-n', ns, 'a']), ['api']);
  t.deepEqual(await names(['forward', '--context', 'lab', '-n', ns, 'web', '']), [], 'forward\'s second argument is ports');
  t.deepEqual(await names(['preview', '--context', 'lab', '-n', ns, '']), [], 'preview names a new service');
  // the namespace from the environment, as the command itself would take it
  t.deepEqual(await names(['exchange', '--context', 'lab', 'a']), [], 'the context\'s namespace has none');
  const fromEnv = await ktctl({ ...e, KTCTL_NAMESPACE: ns }, ['__complete', 'exchange', '--context', 'lab', 'a']);
  t.is(fromEnv.stdout, ':nofiles\napi\n');
  // a server that cannot be reached: nothing, no error, exit 0
  const gone = join(lab.dir, 'kubeconfig-gone');
  writeFileSync(gone, readFileSync(lab.kubeconfig, 'utf8').replace(/server: https:\/\/127\.0\.0\.1:\d+/g, 'server: https://127.0.0.1:1'));
  const r = await ktctl({ ...env, KUBECONFIG: gone }, ['__complete', 'exchange', '--context', 'lab', '']);
  t.is(r.code, 0);
  t.is(r.stderr, '');
  t.is(r.stdout, ':nofiles\n');
});
