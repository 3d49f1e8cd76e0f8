/**
 * KT Connect's `connect --skipCleanup` against the lab (pkg/kt/command/connect.go: `silenceCleanup`
 * runs at start unless it is given). ktctl's shadow commands clean the namespace's stale objects at
 * start too (src/kube/transport.ts); with --skipCleanup a crashed run's Secret (heartbeat an hour old)
 * survives the start, without it the start removes it.
 */
import test, { type ExecutionContext } from 'ava';
import { CoreV1Api } from '@kubernetes/client-node';
import { labKtctl, MANAGED } from './helpers/ktctl.js';
import { fileNamespace, kubeConfig } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-skipclean');
const ktctl = labKtctl(test, 'kt-skipclean');

async function staleSecret(name: string): Promise<void> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const hourAgo = new Date(Date.now() - 3600_000).toISOString().replace(/\.\d+Z$/, 'Z');
  await core.createNamespacedSecret({
    namespace: ns,
    body: {
      metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'ktctl', 'ktctl/role': 'connect' }, annotations: { 'ktctl/heartbeat': hourAgo, 'ktctl/owner': 'gone@nowhere 1' } },
      stringData: { x: 'y' },
    },
  });
}

async function secretNames(): Promise<string[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  return (await core.listNamespacedSecret({ namespace: ns, labelSelector: MANAGED })).items.map((s) => s.metadata!.name!);
}

async function connectOnce(t: ExecutionContext, extra: string[]): Promise<string[]> {
  const run = ktctl.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, ...extra]);
  await run.waitFor(/socks5h:\/\/127\.0\.0\.1:\d+/);
  const names = await secretNames();
  await run.stop(t);
  return names;
}

test.serial('connect --skipCleanup leaves a crashed run\'s objects; connect without it removes them at start', async (t) => {
  await staleSecret('ktctl-crashed-skip');
  t.true((await connectOnce(t, ['--skipCleanup'])).includes('ktctl-crashed-skip'));
  t.true((await connectOnce(t, [])).every((n) => n !== 'ktctl-crashed-skip'));
});
