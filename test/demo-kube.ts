/**
 * `npm run demo`: ktctl's main job against the lab cluster, end to end.
 *
 *   1. `lab up`: a small Kubernetes cluster on this machine (deployment and service `web`).
 *   2. `ktctl connect --mode socks` with the lab's kubeconfig: a shadow pod, ssh over the API
 *      server's port-forward, a local SOCKS5/HTTP proxy; curl `web` by name, by `web.default`
 *      and by its service IP through it; Ctrl-C; no ktctl object is left in the cluster.
 *      (Before it: the same curl "without ktctl" from a laptop namespace, which has no route there.)
 *      A 100 MiB download through it while the lab's API server cuts every port-forward
 *      (`npm run lab -- fault cut-portforward`): it arrives whole (the resume layer).
 *   3. `ktctl connect` (TUN mode) in that "laptop" namespace: curl `http://web/` as any program would,
 *      with no proxy; Ctrl-C; the laptop's resolv.conf is back byte for byte.
 *   4. `lab down`.
 * Every command is printed as it runs, so a person can repeat it by hand. Needs root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { echoPatternSha256 } from './lab/images/echo.js';
import { labDown, labUp, stateDirFromEnv } from './lab/cli.js';
import { createLabNet } from './lab/net/index.js';
import { run, runOk } from './helpers/netns.js';
import { REPO, TeardownList } from './helpers/ssh-fixtures.js';

const CLI = join(REPO, 'dist/cli/main.js');
const say = (line: string): void => void process.stdout.write(`${line}\n`);

/** Starts ktctl (optionally inside a namespace), echoing its stderr, resolving once `ready` matches. */
async function startKtctl(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, netns?: string): Promise<ChildProcess> {
  const argv = netns ? ['ip', ['netns', 'exec', netns, 'node', CLI, ...args]] as const : ['node', [CLI, ...args]] as const;
  say(`$ ${netns ? `ip netns exec ${netns} ` : ''}ktctl ${args.join(' ')}`);
  const child = spawn(argv[0], [...argv[1]], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      const text = d.toString();
      process.stdout.write(`  [ktctl] ${text.trimEnd().split('\n').join('\n  [ktctl] ')}\n`);
      seen += text;
      if (ready.test(seen)) resolve();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`ktctl exited with ${code}`)));
  });
  child.removeAllListeners('exit');
  return child;
}

async function stopKtctl(child: ChildProcess): Promise<void> {
  say('$ kill -INT <ktctl>');
  const code = await new Promise<number | null>((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGINT');
  });
  say(`ktctl exited with ${code}`);
  if (code !== 0) throw new Error(`ktctl exited with ${code}`);
}

/** A download through the proxy that the API server's cut of every port-forward does not break. */
async function survivesCut(cleanup: TeardownList): Promise<void> {
  const size = 100 << 20;
  const dir = mkdtempSync(join(tmpdir(), 'ktdemo-'));
  cleanup.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'download');
  const url = `http://web/bytes/${size}`;
  say(`$ curl -x socks5h://127.0.0.1:2223 --limit-rate 25M -o ${file} ${url} &     # lasts about 4 s`);
  const curl = spawn('curl', ['-sS', '-x', 'socks5h://127.0.0.1:2223', '--limit-rate', '25M', '-o', file, url], { stdio: 'ignore' });
  cleanup.teardown(() => curl.kill('SIGKILL'));
  const done = new Promise<number | null>((resolve) => curl.once('exit', resolve));
  const sizeNow = (): number => (existsSync(file) ? statSync(file).size : 0);
  while (sizeNow() < 30 << 20) await new Promise((r) => setTimeout(r, 20));
  say('$ npm run lab -- fault cut-portforward     # the API server drops every port-forward stream, as clusters do');
  say(`  ${(await runOk('npm', ['run', '-s', 'lab', '--', 'fault', 'cut-portforward'])).trim()}`);
  const code = await done;
  const sha = createHash('sha256').update(readFileSync(file)).digest('hex');
  const whole = code === 0 && sha === echoPatternSha256(size);
  say(`  curl exited ${code}; ${sizeNow()} bytes, sha256 ${sha.slice(0, 16)}...: ${whole ? 'whole, across the cut' : 'NOT whole'}`);
  if (!whole) throw new Error('the download did not survive the cut');
}

async function main(cleanup: TeardownList): Promise<void> {
  const stateDir = stateDirFromEnv();
  say('$ npm run lab -- up');
  const { kubeconfig, ms } = await labUp(stateDir, (l) => say(`  [lab] ${l}`));
  cleanup.teardown(() => labDown(stateDir));
  say(`  lab is up in ${(ms / 1000).toFixed(1)} s; kubeconfig ${kubeconfig}`);
  const env = { KUBECONFIG: kubeconfig };
  const svcIp = (await runOk('kubectl', ['--kubeconfig', kubeconfig, 'get', 'service', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).trim();

  // A "laptop" namespace: a route to the lab's outside segment (the API server) and nothing else.
  // "Without ktctl" is shown from there: a service address has no route at all, so curl fails at
  // once and no packet goes anywhere. (Never from this machine's own namespace: it has no route to
  // the lab's ranges either, and the packet would follow its default route out of the machine; the
  // lab's guard refuses it, but the demo does not even try.)
  const laptop = `ktdemo-${process.pid}`;
  say(`$ npm run lab -- laptop ${laptop}`);
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  cleanup.teardown(() => net.deleteLaptop(laptop));
  const direct = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '2', `http://${svcIp}/`]);
  say(`$ ip netns exec ${laptop} curl http://${svcIp}/        # without ktctl\n  ${(direct.stderr || direct.stdout).trim()}`);
  if (direct.code === 0) throw new Error('the laptop reached a service address without ktctl');

  // 1. SOCKS mode, from this machine.
  const socks = await startKtctl(['connect', '--mode', 'socks', '--proxyPort', '2223'], env, /ALL_PROXY=/);
  cleanup.teardown(() => socks.kill('SIGKILL'));
  for (const url of ['http://web/hello', 'http://web.default/hello', `http://${svcIp}/hello`]) {
    say(`$ curl -x socks5h://127.0.0.1:2223 ${url}`);
    say(`  ${(await runOk('curl', ['-sS', '--max-time', '10', '-x', 'socks5h://127.0.0.1:2223', url])).trim()}`);
  }
  await survivesCut(cleanup);
  await stopKtctl(socks);
  const left = (await runOk('kubectl', ['--kubeconfig', kubeconfig, 'get', 'pods,secrets', '-A', '-l', 'app.kubernetes.io/managed-by=ktctl', '-o', 'name'])).trim();
  say(`$ kubectl get pods,secrets -A -l app.kubernetes.io/managed-by=ktctl\n  ${left || '(nothing: ktctl removed everything it made)'}`);
  const program = (await runOk('kubectl', ['--kubeconfig', kubeconfig, 'get', 'configmaps', '-l', 'ktctl/role=program', '-o', 'name'])).trim();
  say(`$ kubectl get configmaps -l ktctl/role=program     # the shadow program, kept for the next run; ktctl clean removes it once unused\n  ${program}`);
  if (left) throw new Error(`ktctl left objects behind: ${left}`);

  // 2. TUN mode, in the laptop namespace: no proxy, every program reaches the cluster.
  const resolvConf = `/etc/netns/${laptop}/resolv.conf`;
  const before = existsSync(resolvConf) ? readFileSync(resolvConf) : undefined;
  const tunState = join(stateDir, `ktctl-${laptop}`);
  // ktctl's records go when it stops; the folder is the demo's to remove (else lab down keeps .lab).
  cleanup.teardown(() => rmSync(tunState, { recursive: true, force: true }));
  const tun = await startKtctl(['connect'], { ...env, KTCTL_STATE_DIR: tunState }, /press Ctrl-C to disconnect/, laptop);
  cleanup.teardown(() => tun.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 500));
  for (const url of ['http://web/from-the-laptop', 'http://web.default.svc.cluster.local/', 'http://www.example.test/']) {
    say(`$ ip netns exec ${laptop} curl ${url}`);
    const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '10', url]);
    say(`  ${(r.stdout || r.stderr).trim().slice(0, 300)}`);
    if (r.code !== 0) throw new Error(`curl ${url} failed in the laptop`);
  }
  await stopKtctl(tun);
  const after = existsSync(resolvConf) ? readFileSync(resolvConf) : undefined;
  const same = before === undefined ? after === undefined : after !== undefined && before.equals(after);
  say(`the laptop's resolv.conf is ${same ? 'back byte for byte' : 'NOT restored'}`);
  if (!same) throw new Error('resolv.conf was not restored');
}

const cleanup = new TeardownList();
try {
  await main(cleanup);
  say('demo done; taking the lab down');
} catch (error) {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
} finally {
  await cleanup.run();
}
