/**
 * `ktctl mesh` against the lab, as processes in the host namespace with "laptop" servers on
 * 127.0.0.1: from a client pod, requests with a developer's version header reach that developer's
 * laptop, requests without reach the original pods; two developers mesh one service at once with
 * different marks; a WebSocket goes through the router; a third developer with a taken mark is
 * refused naming the holder; after both stop the selector is back and router, stuntman and Secret
 * are gone. Manual mode prints the Istio objects and changes no selector.
 */
import test from 'ava';
import { CoreV1Api } from '@kubernetes/client-node';
import { WebSocketServer } from 'ws';
import { startCli } from './helpers/cli-process.js';
import { closeServer, labKtctl, laptopServer, MANAGED, podCurl, webPodsAnswer } from './helpers/ktctl.js';
import { deployEcho, ECHO_LABELS } from './helpers/lab-echo.js';
import { REPO, TeardownList } from './helpers/ssh-fixtures.js';
import { eventually, fileNamespace, kubeConfig, labExec, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-mesh');
const hooks = new TeardownList();
// The lab's kubeconfig and a state directory of this file's own (never the machine's /run/ktctl).
const env = labKtctl(test, 'kt-mesh').env;

/** A laptop server: `laptop-<who> <path>` over HTTP, `<who>:<message>` over WebSocket on /ws. */
async function laptop(who: string): Promise<number> {
  const { server, port } = await laptopServer((req, res) => res.end(`laptop-${who} ${req.url ?? ''} version=${String(req.headers.version ?? '')}`));
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (d) => ws.send(`${who}:${String(d)}`)));
  hooks.teardown(() => {
    wss.close();
    return closeServer(server);
  });
  return port;
}

async function curl(args: string[]): Promise<string> {
  const r = await podCurl({ namespace: ns, name: 'client' }, args);
  return r.code === 0 ? r.body : `curl exit ${r.code}: ${r.stderr}`;
}

/** A WebSocket client in the client pod (node with this repo's ws package), one message there and back. */
async function wsFromPod(url: string, headers: Record<string, string>): Promise<string> {
  const script = `
    const WebSocket = require(${JSON.stringify(`${REPO}/node_modules/ws`)});
    const ws = new WebSocket(${JSON.stringify(url)}, { headers: ${JSON.stringify(headers)} });
    ws.on('open', () => ws.send('ping'));
    ws.on('message', (d) => process.stdout.write(String(d), () => process.exit(0)));
    ws.on('error', (e) => { process.stdout.write('error: ' + e.message); process.exit(0); });
    setTimeout(() => { process.stdout.write('timeout'); process.exit(0); }, 5000);`;
  const r = await labExec({ namespace: ns, name: 'client' }, ['node', '-e', script]);
  return r.stdout;
}

const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);

/** ktctl's objects left in the namespace and the service's selector, for "nothing left behind". */
async function leftovers(): Promise<string[]> {
  const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: MANAGED });
  const secrets = await core().listNamespacedSecret({ namespace: ns, labelSelector: MANAGED });
  const services = await core().listNamespacedService({ namespace: ns });
  const out = [...pods.items.map((p) => `pod/${p.metadata?.name}`), ...secrets.items.map((s) => `secret/${s.metadata?.name}`)];
  for (const s of services.items) {
    if (s.metadata?.labels?.['app.kubernetes.io/managed-by'] === 'ktctl') out.push(`service/${s.metadata.name}`);
    if (s.metadata?.name !== 'web') continue;
    for (const [k, v] of Object.entries(s.metadata.annotations ?? {})) if (k.startsWith('ktctl/')) out.push(`annotation ${k}=${v}`);
    if (JSON.stringify(s.spec?.selector) !== JSON.stringify(ECHO_LABELS)) out.push(`selector ${JSON.stringify(s.spec?.selector)}`);
  }
  return out;
}

test.before(async () => {
  await deployEcho(ns, { web: [{ name: 'http', port: 80, targetPort: 8080 }] });
  await core().createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  await waitForReadyPods(ns, 'app=client', 1);
});

test.after.always(() => hooks.run());

test.serial('auto: two developers with different marks at once, WebSocket through the router, a taken mark refused, all restored after both stop', async (t) => {
  const portA = await laptop('A');
  const portB = await laptop('B');
  const a = startCli(hooks, ['mesh', 'web', '-n', ns, '--expose', `${portA}:80`, '--versionMark', 'VERSION:alice'], { env });
  await a.waitFor(/meshed service .*web port 80/, 90_000);
  const b = startCli(hooks, ['mesh', 'web', '-n', ns, '--expose', `${portB}:80`, '--versionMark', 'version:bob'], { env });
  await b.waitFor(/meshed service .*web port 80/, 90_000);
  t.regex(b.log(), /joined the mesh router/);

  const url = 'http://web/anything';
  t.regex(await eventually(async () => { const r = await curl(['-H', 'VERSION: alice', url]); return r.startsWith('laptop-') ? r : undefined; }, 'alice reaches a laptop'), /^laptop-A \/anything version=alice$/);
  t.regex(await curl(['-H', 'Version: bob', url]), /^laptop-B \/anything version=bob$/);
  const original = JSON.parse(await curl([url])) as { pod?: string };
  t.regex(original.pod ?? '', /^echo-/, 'without the header: the original pod answers');
  t.regex(await curl(['-H', 'VERSION: carol', url]), /"pod":"echo-/, 'a mark nobody registered: the original pod');
  // Keep-alive: two requests on one connection (curl reuses it for two URLs) go to two places.
  const both = await curl(['-H', 'VERSION: alice', url, '--next', url]);
  t.regex(both, /^laptop-A \/anything version=alice\{.*"pod":"echo-/s);

  t.is(await wsFromPod('ws://web/ws', { VERSION: 'alice' }), 'A:ping');
  t.is(await wsFromPod('ws://web/ws', {}), 'ping', 'without the header: the original pod echoes');

  // A third developer with alice's mark: one sentence naming the holder, exit 1, nothing changed.
  const c = startCli(hooks, ['mesh', 'web', '-n', ns, '--expose', `${portA}:80`, '--versionMark', 'VERSION:alice'], { env });
  t.is(await c.exited, 1);
  t.regex(c.log(), /the mark VERSION: alice on service .*web is already used by \S+@\S+ \d+/);

  await a.stop(t);
  t.regex(a.log(), /left the mesh router .* \(1 users remain\)/);
  t.regex(await curl(['-H', 'VERSION: alice', url]), /"pod":"echo-/, 'after alice left: her mark goes to the original pod');
  t.regex(await curl(['-H', 'VERSION: bob', url]), /^laptop-B /);
  await b.stop(t);
  t.regex(b.log(), /deleted the mesh router .* \(last user\)/);
  t.deepEqual(await leftovers(), []);
  t.regex(await webPodsAnswer(() => curl([url]), 'echo-'), /"pod":"echo-/);
});

test.serial('manual: a shadow with the service labels and version=<mark>, the Istio objects printed, no selector change', async (t) => {
  const port = await laptop('M');
  const m = startCli(hooks, ['mesh', 'web', '-n', ns, '--expose', `${port}:80`, '--mode', 'manual', '--versionMark', 'VERSION:m1'], { env });
  await m.waitFor(/meshed service .*web port 80 \(--mode manual\)/, 90_000);
  const out = m.stdout();
  t.regex(out, /kind: DestinationRule[\s\S]*version: "m1"/);
  t.regex(out, /kind: VirtualService[\s\S]*version:\n\s+exact: "m1"/);
  const svc = await core().readNamespacedService({ name: 'web', namespace: ns });
  t.deepEqual(svc.spec?.selector, ECHO_LABELS);
  const shadows = await core().listNamespacedPod({ namespace: ns, labelSelector: `${MANAGED},version=m1` });
  t.is(shadows.items.length, 1);
  t.like(shadows.items[0]!.metadata?.labels ?? {}, ECHO_LABELS);
  await m.stop(t);
  t.deepEqual(await leftovers(), []);
});
