/**
 * --shareShadow: two connect processes of one user in one namespace use one shadow pod; the
 * first to exit leaves it (count 2 -> 1), the last removes pod, Secret and the local key file.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { labKtctl, MANAGED, type CliRun } from './helpers/ktctl.js';
import { fileNamespace, kubeConfig, kubectl } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-share');
const ktctl = labKtctl(test, 'kt-share');
const stateDir = ktctl.stateDir;

/** A shared-shadow connect and the port of its proxy. */
async function start(t: ExecutionContext): Promise<{ run: CliRun; port: number }> {
  const run = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '--shareShadow', '-n', ns]);
  const port = Number((await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/))[1]);
  return { run, port };
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
  const { run: a, port: portA } = await start(t);
  t.true(await curl(portA));
  const { run: b, port: portB } = await start(t);
  t.true(await curl(portB));
  t.regex(b.log(), /joined the shared shadow/);

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

  await a.stop(t);
  t.regex(a.log(), /left the shared shadow .* \(1 users remain\)/);
  const one = await shadows();
  t.deepEqual(one, [{ name: both[0]!.name, users: '1' }]);
  t.true(await curl(portB), 'the second connect still works after the first left');

  await b.stop(t);
  t.regex(b.log(), /deleted the shared shadow .* \(last user\)/);
  t.deepEqual(await shadows(), []);
  const k = await kubectl(['get', 'pods,secrets', '-n', ns, '-l', MANAGED, '-o', 'name']);
  t.is(k.stdout.trim(), '');
  t.deepEqual(readdirSync(stateDir).filter((f) => f.startsWith('shared-')), []);
});
