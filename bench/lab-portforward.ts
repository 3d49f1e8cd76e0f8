/**
 * Port-forward throughput of the lab's API server for one stream (the ceiling of ktctl against
 * the lab). Needs a running lab (`npm run lab -- up`, or KTLAB_KUBECONFIG):
 * `tsx bench/lab-portforward.ts` prints a table and, with BENCH_JSON=path, writes the rows as JSON.
 *
 * Rows: a bare `ws` client speaking v4.channel.k8s.io (the server's own ceiling) and
 * client-node's PortForward (what ktctl's transport wraps); download = GET /bytes/N from the
 * echo pod, upload = POST /sink. Environment: BENCH_BYTES (default 1 GiB), BENCH_REPEAT (2).
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import WebSocket from 'ws';
import { CoreV1Api, PortForward, type KubeConfig } from '@kubernetes/client-node';
import { kubeConfig, waitForReadyPods } from '../test/lab/fixture.js';

const BYTES = Number(process.env.BENCH_BYTES ?? 1024 * 1024 * 1024);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);

interface Row {
  client: string;
  direction: 'download' | 'upload';
  gbit: number;
}

/** One HTTP exchange over one port-forward WebSocket, counting response body bytes. */
async function rawWs(kc: KubeConfig, ns: string, pod: string, direction: Row['direction']): Promise<number> {
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser()!;
  const ws = new WebSocket(`${cluster.server.replace(/^https/, 'wss')}/api/v1/namespaces/${ns}/pods/${pod}/portforward?ports=8080`, ['v4.channel.k8s.io'], {
    ca: Buffer.from(cluster.caData!, 'base64'),
    headers: { Authorization: `Bearer ${user.token}` },
    perMessageDeflate: false,
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const t0 = process.hrtime.bigint();
  const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
  let got = 0;
  ws.on('message', (d: Buffer) => {
    if (d[0] === 0) got += d.length - 1;
  });
  if (direction === 'download') {
    ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(`GET /bytes/${BYTES} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)]));
  } else {
    ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(`POST /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${BYTES}\r\n\r\n`)]));
    const chunk = Buffer.concat([Buffer.from([0]), randomBytes(256 * 1024)]);
    let sent = 0;
    while (sent < BYTES) {
      const n = Math.min(chunk.length - 1, BYTES - sent);
      ws.send(n === chunk.length - 1 ? chunk : chunk.subarray(0, n + 1));
      sent += n;
      while (ws.bufferedAmount > 8 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
    }
  }
  await closed;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (direction === 'download' && got < BYTES) throw new Error(`short download: ${got}`);
  return (BYTES * 8) / s / 1e9;
}

async function clientNode(kc: KubeConfig, ns: string, pod: string, direction: Row['direction']): Promise<number> {
  const pf = new PortForward(kc);
  const input = new PassThrough();
  let got = 0;
  const out = new Writable({
    write(c: Buffer, _e, cb) {
      got += c.length;
      cb();
    },
  });
  const ws = (await pf.portForward(ns, pod, [8080], out, null, input)) as unknown as WebSocket;
  const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
  const t0 = process.hrtime.bigint();
  if (direction === 'download') input.write(`GET /bytes/${BYTES} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  else {
    input.write(`POST /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${BYTES}\r\n\r\n`);
    const chunk = randomBytes(256 * 1024);
    let sent = 0;
    while (sent < BYTES) {
      const n = Math.min(chunk.length, BYTES - sent);
      input.write(n === chunk.length ? chunk : chunk.subarray(0, n));
      sent += n;
      // client-node ignores backpressure: wait on the WebSocket's buffer ourselves
      while (ws.bufferedAmount > 8 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
    }
  }
  await closed;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (direction === 'download' && got < BYTES) throw new Error(`short download: ${got}`);
  return (BYTES * 8) / s / 1e9;
}

export async function benchPortForward(): Promise<Row[]> {
  const kc = kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const ns = `bench-pf-${randomBytes(3).toString('hex')}`;
  await core.createNamespace({ body: { metadata: { name: ns } } });
  try {
    await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'echo', labels: { app: 'echo' } }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
    await waitForReadyPods(ns, 'app=echo', 1);
    const rows: Row[] = [];
    for (const [client, fn] of [['ws (v4.channel.k8s.io)', rawWs], ['client-node PortForward', clientNode]] as const) {
      for (const direction of ['download', 'upload'] as const) {
        let best = 0;
        for (let i = 0; i < REPEAT; i++) best = Math.max(best, await fn(kc, ns, 'echo', direction));
        rows.push({ client, direction, gbit: best });
      }
    }
    return rows;
  } finally {
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  benchPortForward().then(
    (rows) => {
      process.stdout.write(`lab port-forward, one stream, ${BYTES} bytes, best of ${REPEAT}\n`);
      for (const r of rows) process.stdout.write(`${r.client.padEnd(26)} ${r.direction.padEnd(9)} ${r.gbit.toFixed(2)} Gbit/s\n`);
      if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
