/**
 * What the mesh router adds to a request, in the lab: HTTP/1.1 request latency (keep-alive, one
 * connection, sequential GETs of /anything) from a client pod to the service `web`
 *
 *   1. the service's own pods (no ktctl): the baseline;
 *   2. `ktctl exchange`: pod -> shadow -> ssh `forwarded-tcpip` over the port-forward -> laptop;
 *   3. `ktctl mesh`, marked: pod -> router (parses the request) -> the same ssh path -> laptop;
 *   4. `ktctl mesh`, unmarked: pod -> router -> stuntman Service -> the original pods.
 *
 * 3 minus 2 is what routing by header costs on the way to the laptop; 4 minus 1 is what every other
 * client of a meshed service pays. Needs a running lab and a build (`npm run build`).
 *
 *   tsx bench/mesh.ts          prints a table; BENCH_JSON=path also writes the rows
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { startCli, type CliRun } from '../test/helpers/cli-process.js';
import { deployEcho } from '../test/helpers/lab-echo.js';
import { TeardownList } from '../test/helpers/ssh-fixtures.js';
import { createEchoServer } from '../test/lab/images/echo.js';
import { eventually, kubeConfig, lab, labExec, waitForReadyPods } from '../test/lab/fixture.js';
import type { KubeRow } from './kube-connect.js';

const COUNT = Number(process.env.BENCH_MESH_REQUESTS ?? 2000);
const MARK = 'VERSION:bench';

/** Run in the client pod: COUNT sequential GETs on one keep-alive connection; prints {p50_us, p99_us}. */
const LATENCY_SCRIPT = String.raw`
const http = require('node:http');
const [url, count, header] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const headers = header ? { [header.split(':')[0]]: header.split(':')[1] } : {};
const get = () => new Promise((resolve, reject) => {
  const t0 = process.hrtime.bigint();
  http.get(url, { agent, headers }, (res) => { res.resume(); res.on('end', () => resolve(Number(process.hrtime.bigint() - t0) / 1000)); }).on('error', reject);
});
(async () => {
  for (let i = 0; i < 50; i++) await get();
  const us = [];
  for (let i = 0; i < Number(count); i++) us.push(await get());
  us.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ p50_us: us[Math.floor(us.length * 0.5)], p99_us: us[Math.floor(us.length * 0.99)] }) + '\n');
  agent.destroy();
})().catch((e) => { process.stderr.write(String(e)); process.exit(1); });
`;

async function latency(ns: string, id: string, path: string, header?: string): Promise<KubeRow> {
  const r = await labExec({ namespace: ns, name: 'client' }, [process.execPath, '-e', LATENCY_SCRIPT, 'http://web/anything', String(COUNT), header ?? '']);
  if (r.exitCode !== 0) throw new Error(`latency in the client pod (${id}): ${r.stderr}`);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { p50_us: number; p99_us: number };
  return { id, path, p50us: m.p50_us, p99us: m.p99_us, note: `HTTP/1.1 keep-alive, ${COUNT} GETs${header ? `, header ${header}` : ''}` };
}

/** Waits until a request from the pod (with `header`) is answered by `want` (a substring of the body). */
async function reaches(ns: string, want: string, header?: string): Promise<void> {
  await eventually(async () => {
    const r = await labExec({ namespace: ns, name: 'client' }, ['curl', '-s', '-m', '5', ...(header ? ['-H', header.replace(':', ': ')] : []), 'http://web/anything']);
    return r.exitCode === 0 && r.stdout.includes(want) ? true : undefined;
  }, `${want} behind web`, 60_000);
}

async function stop(run: CliRun): Promise<void> {
  run.child.kill('SIGINT');
  await Promise.race([run.exited, new Promise((r) => setTimeout(r, 30_000))]);
}

/** The mesh rows: baseline, exchange, mesh marked, mesh unmarked. */
export async function meshRows(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<KubeRow[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const ns = `ktbench-m-${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ktbench-mesh-'));
  const env = { KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: join(work, 'state') };
  const hooks = new TeardownList();
  const laptop = createEchoServer({ pod: 'laptop', namespace: 'laptop', ip: '' });
  await core.createNamespace({ body: { metadata: { name: ns } } });
  try {
    const port = await new Promise<number>((res) => laptop.listen(0, '127.0.0.1', () => res((laptop.address() as AddressInfo).port)));
    await deployEcho(ns, { web: [{ name: 'http', port: 80, targetPort: 8080 }] });
    await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
    await waitForReadyPods(ns, 'app=client', 1);
    await reaches(ns, '"pod":"echo-');
    const rows = [await latency(ns, 'lab-http-direct', 'lab pod -> service (its own pods)')];
    log('mesh bench: baseline done');

    const exchange = startCli(hooks, ['exchange', 'web', '-n', ns, '--expose', `${port}:80`], { env });
    await exchange.waitFor(/exchanged service \S+ port 80/, 90_000);
    await reaches(ns, '"laptop"');
    rows.push(await latency(ns, 'ktctl-exchange-http', 'lab pod -> ktctl exchange -> laptop'));
    await stop(exchange);
    await reaches(ns, '"pod":"echo-');
    log('mesh bench: exchange done');

    const mesh = startCli(hooks, ['mesh', 'web', '-n', ns, '--expose', `${port}:80`, '--versionMark', MARK], { env });
    await mesh.waitFor(/meshed service \S+ port 80/, 90_000);
    await reaches(ns, '"laptop"', MARK);
    rows.push(await latency(ns, 'ktctl-mesh-marked', 'lab pod -> mesh router -> laptop', MARK));
    rows.push(await latency(ns, 'ktctl-mesh-unmarked', 'lab pod -> mesh router -> original pods'));
    await stop(mesh);
    log('mesh bench: mesh done');
    return rows;
  } finally {
    await hooks.run();
    laptop.close();
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await meshRows();
  const f = (n: number | undefined): string => (n === undefined ? '-' : n.toFixed(0));
  process.stdout.write(`${'path'.padEnd(44)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)}\n`);
  for (const r of rows) process.stdout.write(`${r.path.padEnd(44)} ${f(r.p50us).padStart(8)} ${f(r.p99us).padStart(8)}\n`);
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
}
