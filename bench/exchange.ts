/**
 * Cluster -> laptop through `ktctl exchange` in the lab: a client pod talks to the service `web`
 * while it is exchanged to servers on this machine (the lab's echo HTTP server for /bytes and
 * /sink, a TCP echo for latency). Path: client pod -> service DNAT -> shadow pod -> ssh
 * `forwarded-tcpip` over the API server's port-forward -> ktctl -> 127.0.0.1. The same numbers
 * against the service's own pods (no exchange) come first, as the baseline. Needs a running lab
 * and a build (`npm run build`).
 *
 *   tsx bench/exchange.ts          prints a table; BENCH_JSON=path also writes the rows
 *
 * down = the pod downloads BENCH_BYTES (default 64 MiB) from /bytes/N, up = the pod uploads as
 * much to /sink (best of BENCH_REPEAT runs), p50/p99 = 64-byte request/response over one
 * connection (bench/client.ts, run inside the pod), conn/s = new connections per second.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { createEchoServer } from '../test/lab/images/echo.js';
import { eventually, kubeConfig, lab, labExec, waitForReadyPods } from '../test/lab/fixture.js';
import { best, printKubeRows, stopKtctl, type KubeRow } from './kube-connect.js';

const ROOT = resolve(import.meta.dirname, '..');
const BYTES = Number(process.env.BENCH_BYTES ?? 64 * 1024 * 1024);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);
const LAT_COUNT = 2000;
const CONN_SECONDS = 3;
const TSX = import.meta.resolve('tsx');
const TCP_ECHO = "require('node:net').createServer((s) => s.pipe(s)).listen(7007, '0.0.0.0')";

const listen = (s: Server | ReturnType<typeof createEchoServer>): Promise<number> =>
  new Promise((res) => s.listen(0, '127.0.0.1', () => res((s.address() as AddressInfo).port)));

/** Measures from the client pod against `host` (the service name): one row. */
async function measure(ns: string, id: string, path: string, note: string): Promise<KubeRow> {
  const pod = { namespace: ns, name: 'client' };
  const sh = async (script: string): Promise<string> => {
    const r = await labExec(pod, ['sh', '-c', script]);
    if (r.exitCode !== 0) throw new Error(`in the client pod: ${script}: exit ${r.exitCode}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const probe = async (args: string[]): Promise<Record<string, number>> => {
    const r = await labExec(pod, [process.execPath, '--import', TSX, join(ROOT, 'bench/client.ts'), ...args]);
    if (r.exitCode !== 0) throw new Error(`bench/client.ts ${args.join(' ')} in the client pod: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
  };
  const row: KubeRow = { id, path, note };
  row.downloadMbit = await best(REPEAT, async () => (Number(await sh(`curl -sS --fail -o /dev/null -w '%{speed_download}' http://web/bytes/${BYTES}`)) * 8) / 1e6);
  row.uploadMbit = await best(REPEAT, async () => (Number(await sh(`head -c ${BYTES} /dev/zero | curl -sS --fail -o /dev/null -w '%{speed_upload}' -X POST -T - http://web/sink`)) * 8) / 1e6);
  const lat = await probe(['latency', 'tcp', 'web', '7007', String(LAT_COUNT)]);
  row.p50us = lat.p50_us;
  row.p99us = lat.p99_us;
  row.connPerSec = (await probe(['connrate', 'tcp', 'web', '7007', String(CONN_SECONDS)])).per_second;
  return row;
}

/** The exchange rows: the service's own pods (baseline), then the same service exchanged to this machine. */
export async function exchangeRows(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<KubeRow[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const apps = kubeConfig().makeApiClient(AppsV1Api);
  const ns = `ktbench-x-${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ktbench-exchange-'));
  const http = createEchoServer({ pod: 'laptop', namespace: 'laptop', ip: '' });
  const echo = createServer((s) => s.pipe(s));
  let child: ReturnType<typeof spawn> | undefined;
  await core.createNamespace({ body: { metadata: { name: ns } } });
  try {
    const httpPort = await listen(http);
    const echoPort = await listen(echo);
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: {
              containers: [
                { name: 'web', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] },
                { name: 'echo', image: 'ktlab/echo', command: [process.execPath, '-e', TCP_ECHO], ports: [{ containerPort: 7007 }] },
              ],
            },
          },
        },
      },
    });
    await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'echo', port: 7007, targetPort: 7007 }] } } });
    await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
    await waitForReadyPods(ns, 'app=web', 1);
    await waitForReadyPods(ns, 'app=client', 1);
    // The service's endpoints and the lab's rules follow the ready pods a moment later, as in any cluster.
    await eventually(async () => {
      const r = await labExec({ namespace: ns, name: 'client' }, ['curl', '-s', '-m', '5', 'http://web/ready']);
      return r.exitCode === 0 ? true : undefined;
    }, 'the service web answering from its own pods', 60_000);
    const note = `${BYTES >> 20} MiB each way, best of ${REPEAT}; ${LAT_COUNT} requests`;
    const rows = [await measure(ns, 'lab-service-direct', 'lab pod -> service (its own pods)', note)];
    log('exchange bench: baseline done');

    child = spawn(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'exchange', 'web', '--expose', `${httpPort}:80,${echoPort}:7007`, '-n', ns], {
      env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: join(work, 'state') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await eventually(async () => (/exchanged service \S+ port 7007/.test(out) ? true : undefined), `ktctl exchange to come up: ${out}`, 60_000);
    await eventually(async () => {
      const r = await labExec({ namespace: ns, name: 'client' }, ['curl', '-s', '-m', '5', 'http://web/anything']);
      return r.exitCode === 0 && r.stdout.includes('"laptop"') ? true : undefined;
    }, 'the laptop behind web');
    log('exchange bench: exchanged');
    rows.push(await measure(ns, 'ktctl-exchange-lab', 'lab pod -> ktctl exchange -> laptop', note));
    return rows;
  } finally {
    await stopKtctl(child);
    http.close();
    echo.close();
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) printKubeRows(await exchangeRows());
