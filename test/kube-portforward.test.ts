/**
 * ktctl's port-forward stream (src/kube/portforward.ts) against the lab's API server: data both
 * ways with backpressure, the server's close ends the local stream, the kubelet's error text on
 * channel 1 becomes a PortForwardError, and RBAC/missing pods are KubeErrors.
 */
// ktctl's word-wise WebSocket masking, as the CLI loads it (before ws): the SHA-256 upload checks it.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { CoreV1Api } from '@kubernetes/client-node';
import { loadKubeConfig } from '../src/kube/config.js';
import { KubeForbiddenError, KubeNotFoundError, PortForwardError } from '../src/kube/errors.js';
import { openPortForward, type PortForwardStream } from '../src/kube/portforward.js';
import { fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-pf');
let pod = '';

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'echo', labels: { app: 'echo' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
  pod = (await waitForReadyPods(ns, 'app=echo', 1))[0]!.metadata!.name!;
});

const open = (port: number, context?: 'readonly', name = pod): Promise<PortForwardStream> =>
  openPortForward({ kc: loadKubeConfig({ kubeconfig: lab().kubeconfig, context: context ? lab().contexts.readonly : undefined }).kc, namespace: ns, pod: name, port, timeoutMs: 10_000 });

function collect(s: PortForwardStream): Promise<{ data: Buffer; error?: Error }> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let error: Error | undefined;
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('error', (e) => (error = e));
    s.on('close', () => resolve({ data: Buffer.concat(parts), error }));
  });
}

test('a request and the whole answer; the server closing ends the local stream', async (t) => {
  const s = await open(8080);
  const done = collect(s);
  s.write('GET /bytes/3000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const { data, error } = await done;
  t.is(error, undefined);
  const body = data.subarray(data.indexOf('\r\n\r\n') + 4);
  t.is(body.length, 3_000_000);
});

test('upload of 32 MiB arrives intact (writes wait for the WebSocket to drain)', async (t) => {
  const s = await open(8080);
  const done = collect(s);
  const n = 32 * 1024 * 1024;
  const chunk = randomBytes(1024 * 1024);
  const hash = createHash('sha256');
  s.write(`POST /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${n}\r\n\r\n`);
  let waited = 0;
  for (let i = 0; i < 32; i++) {
    hash.update(chunk);
    if (!s.write(chunk)) {
      waited++;
      await new Promise((r) => s.once('drain', r));
    }
  }
  const { data } = await done;
  const answer = JSON.parse(data.subarray(data.indexOf('\r\n\r\n') + 4).toString()) as { bytes: number; sha256: string };
  t.is(answer.bytes, n);
  t.is(answer.sha256, hash.digest('hex'));
  t.true(waited > 0, 'write() never asked the writer to wait');
});

test('nothing listens on the port: the kubelet\'s text as a PortForwardError', async (t) => {
  const s = await open(9999);
  const { error } = await collect(s);
  t.true(error instanceof PortForwardError);
  t.regex(error?.message ?? '', /connection refused/);
});

test('read-only context: KubeForbiddenError naming pods/portforward', async (t) => {
  const e = await t.throwsAsync(open(8080, 'readonly'));
  t.true(e instanceof KubeForbiddenError);
  // view grants nothing on pods/portforward: the filter refuses the upgrade's own verb, get, and says so
  t.regex(e?.message ?? '', /you may not get pods\/portforward in namespace \S+ \(RBAC\); the API server said: "pods "echo" is forbidden: User "lab-readonly" cannot get resource "pods\/portforward"/);
});

test('a pod that does not exist: KubeNotFoundError', async (t) => {
  const e = await t.throwsAsync(open(8080, undefined, 'no-such-pod'));
  t.true(e instanceof KubeNotFoundError, String(e));
});
