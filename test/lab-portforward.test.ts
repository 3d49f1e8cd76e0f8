/**
 * pods/portforward of the lab's API server through @kubernetes/client-node's PortForward
 * (the WebSocket v4.channel.k8s.io protocol ktctl's transport uses).
 */
import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { CoreV1Api, PortForward, type V1Pod } from '@kubernetes/client-node';
import type WebSocket from 'isomorphic-ws';
import { eventually, fileNamespace, kubeConfig, waitForReadyPods } from './lab/fixture.js';
import { echoPatternSha256 } from './lab/images/echo.js';

const ns = fileNamespace(test, 'lt-pf');
let podName = '';

function podSpec(name: string, image: string, labels: Record<string, string>): V1Pod {
  return {
    metadata: { name, labels },
    spec: { containers: [{ name: 'main', image, ports: [{ containerPort: 8080 }] }] },
  };
}

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({ namespace: ns, body: podSpec('echo', 'ktlab/echo', { app: 'echo' }) });
  await core.createNamespacedPod({ namespace: ns, body: podSpec('broken', 'example.invalid/nope:1', { app: 'broken' }) });
  const [pod] = await waitForReadyPods(ns, 'app=echo', 1);
  podName = pod.metadata!.name!;
});

/** A local TCP port whose every connection is forwarded to the pod's port (client-node's usual pattern). */
async function localForward(t: { teardown(fn: () => void): void }, port: number): Promise<number> {
  const pf = new PortForward(kubeConfig());
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    pf.portForward(ns, podName, [port], socket, null, socket).then(
      (ws) => {
        // client-node does not end the local socket when the server closes the WebSocket
        (ws as WebSocket).on('close', () => socket.end());
        socket.on('close', () => (ws as WebSocket).close());
      },
      () => socket.destroy(),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

function get(port: number, path: string): Promise<{ status: number; sha256: string; bytes: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        const h = createHash('sha256');
        let bytes = 0;
        const small: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          h.update(c);
          bytes += c.length;
          if (bytes < 65536) small.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, sha256: h.digest('hex'), bytes, body: Buffer.concat(small) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

test('GET through a port-forward reaches the pod', async (t) => {
  const port = await localForward(t, 8080);
  const r = await get(port, '/hello');
  t.is(r.status, 200);
  const body = JSON.parse(r.body.toString('utf8')) as { pod: string; path: string };
  t.is(body.pod, podName);
  t.is(body.path, '/hello');
});

test('100 MiB down and 100 MiB up through one port-forward stream arrive intact (SHA-256)', async (t) => {
  const port = await localForward(t, 8080);
  const n = 100 * 1024 * 1024;
  const down = await get(port, `/bytes/${n}`);
  t.is(down.bytes, n);
  t.is(down.sha256, echoPatternSha256(n));

  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 3) & 0xff;
  const expect = createHash('sha256');
  for (let i = 0; i < 100; i++) expect.update(chunk);
  const up = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/sink', method: 'POST', agent: false, headers: { 'Content-Length': n } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString('utf8')) as { bytes: number; sha256: string }));
    });
    req.on('error', reject);
    let i = 0;
    const write = (): void => {
      while (i < 100) {
        i++;
        if (!req.write(chunk)) {
          req.once('drain', write);
          return;
        }
      }
      req.end();
    };
    write();
  });
  t.is(up.bytes, n);
  t.is(up.sha256, expect.digest('hex'));
});

test('many concurrent forwarded connections each get their own answer', async (t) => {
  const port = await localForward(t, 8080);
  const results = await Promise.all(Array.from({ length: 16 }, (_, i) => get(port, `/c/${i}`)));
  results.forEach((r, i) => {
    t.is(r.status, 200);
    t.is((JSON.parse(r.body.toString('utf8')) as { path: string }).path, `/c/${i}`);
  });
});

function collect(): { stream: Writable; text(): string } {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(parts).toString('utf8') };
}

test('a connection the pod closes closes the WebSocket', async (t) => {
  const pf = new PortForward(kubeConfig());
  const out = collect();
  const input = new PassThrough();
  const ws = (await pf.portForward(ns, podName, [8080], out.stream, null, input)) as WebSocket;
  const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
  input.write('GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await closed;
  t.regex(out.text(), /^HTTP\/1\.1 200/);
  t.regex(out.text(), /"path":"\/bye"/);
});

test('a port nobody listens on: error on the error channel, then the WebSocket closes', async (t) => {
  const pf = new PortForward(kubeConfig(), false);
  const out = collect();
  const err = collect();
  const ws = (await pf.portForward(ns, podName, [9], out.stream, err.stream, new PassThrough())) as WebSocket;
  await new Promise<void>((resolve) => ws.on('close', () => resolve()));
  t.regex(err.text(), /error forwarding port 9 .*connection refused/);
  t.is(out.text(), '');
});

test('a pod on the node that is not Running upgrades; the runtime\'s error comes on the error channel', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await eventually(async () => {
    const p = await core.readNamespacedPod({ namespace: ns, name: 'broken' });
    const reason = p.status?.containerStatuses?.[0]?.state?.waiting?.reason;
    return reason === 'ErrImagePull' || reason === 'ImagePullBackOff' ? reason : undefined;
  }, 'broken pod to show ErrImagePull');
  // kube-apiserver refuses only a pod without a node; the kubelet and containerd take this one
  const pf = new PortForward(kubeConfig(), false);
  const out = collect();
  const err = collect();
  const ws = (await pf.portForward(ns, 'broken', [8080], out.stream, err.stream, new PassThrough())) as WebSocket;
  await new Promise<void>((resolve) => ws.on('close', () => resolve()));
  t.regex(err.text(), /error forwarding port 8080 to pod [0-9a-f]{64}, uid : failed to execute portforward in network namespace "[^"]+": /);
  t.is(out.text(), '');
});

test('the read-only user may not port-forward (403)', async (t) => {
  const pf = new PortForward(kubeConfig('readonly'));
  const error = await pf.portForward(ns, podName, [8080], new PassThrough(), null, new PassThrough()).then(() => undefined, (e: unknown) => e);
  t.regex(String((error as { message?: unknown } | undefined)?.message), /Unexpected server response: 403/);
});
