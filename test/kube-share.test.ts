/**
 * --shareShadow: two connect processes of one user in one namespace use one shadow pod; the
 * first to exit leaves it (count 2 -> 1), the last removes pod, Secret and the local key file.
 */
import test from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api } from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, kubectl, lab } from './lab/fixture.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const CLI = join(REPO, 'dist/cli/main.js');
const ns = fileNamespace(test, 'kt-share');
const stateDir = mkdtempSync(join(tmpdir(), 'kt-share-state-'));
const MANAGED = 'app.kubernetes.io/managed-by=ktctl';
const children: ChildProcess[] = [];

test.after.always(async () => {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.kill('SIGINT');
    await new Promise((r) => {
      c.once('exit', r);
      setTimeout(r, 15_000);
    });
    if (c.exitCode === null) c.kill('SIGKILL');
  }
  rmSync(stateDir, { recursive: true, force: true });
});

function start(): { child: ChildProcess; port: Promise<number>; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, 'connect', '--mode', 'socks', '--proxyPort', '0', '--shareShadow', '-n', ns], {
    env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const port = eventually(async () => {
    const m = /socks5h:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (!m && child.exitCode !== null) throw new Error(`ktctl exited: ${err}`);
    return m ? Number(m[1]) : undefined;
  }, `the proxy line (stderr: ${err})`, 45_000);
  return { child, port, err: () => err, exited };
}

function curl(port: number): Promise<boolean> {
  return new Promise((resolve) =>
    execFile('curl', ['-s', '-m', '5', '--proxy', `socks5h://127.0.0.1:${port}`, 'http://web.default/share'], (e, stdout) => resolve(!e && String(stdout).includes('"pod"'))),
  );
}

async function shadows(): Promise<Array<{ name: string; users: string | undefined }>> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED });
  return pods.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => ({ name: p.metadata!.name!, users: p.metadata?.annotations?.['ktctl/users'] }));
}

test('two connects share one shadow; the first exit keeps it, the second removes it', async (t) => {
  const a = start();
  const portA = await a.port;
  t.true(await curl(portA));
  const b = start();
  const portB = await b.port;
  t.true(await curl(portB));
  t.regex(b.err(), /joined the shared shadow/);

  const both = await shadows();
  t.is(both.length, 1, JSON.stringify(both));
  t.is(both[0]!.users, '2');
  const keyFiles = readdirSync(stateDir).filter((f) => f.startsWith('shared-'));
  t.is(keyFiles.length, 1);
  t.is(statSync(join(stateDir, keyFiles[0]!)).mode & 0o777, 0o600);
  // the private key is not in the cluster
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const secret = await core.readNamespacedSecret({ name: both[0]!.name, namespace: ns });
  for (const v of Object.values(secret.data ?? {})) t.notRegex(Buffer.from(v, 'base64').toString(), /BEGIN OPENSSH PRIVATE KEY[\s\S]*ktctl/);
  t.deepEqual(Object.keys(secret.data ?? {}).sort(), ['authorized_key', 'host_key']);

  a.child.kill('SIGINT');
  t.is(await a.exited, 0, a.err());
  t.regex(a.err(), /left the shared shadow .* \(1 users remain\)/);
  const one = await shadows();
  t.deepEqual(one, [{ name: both[0]!.name, users: '1' }]);
  t.true(await curl(portB), 'the second connect still works after the first left');

  b.child.kill('SIGINT');
  t.is(await b.exited, 0, b.err());
  t.regex(b.err(), /deleted the shared shadow .* \(last user\)/);
  t.deepEqual(await shadows(), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.stdout.trim(), '');
  t.deepEqual(readdirSync(stateDir).filter((f) => f.startsWith('shared-')), []);
});
