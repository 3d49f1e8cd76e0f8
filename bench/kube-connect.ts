/**
 * The lab path of `ktctl connect --mode socks`: the proxy on this machine, ssh over the lab API
 * server's port-forward WebSocket, the shadow pod, the target pod. Needs a running lab
 * (`npm run lab -- up`, or KTLAB_KUBECONFIG) and a build (`npm run build`).
 *
 *   tsx bench/kube-connect.ts          prints a table; BENCH_JSON=path also writes the rows
 *
 * Same columns as bench/run.ts (download/upload Mbit/s best of BENCH_REPEAT runs of BENCH_BYTES,
 * 64-byte request/response p50/p99 over one connection, new connections per second) so its row
 * sits next to `ktctl socks via shadow` (the same engine over plain TCP): `kubeRows()` is what
 * bench/run.ts calls for that. Everything runs in the host namespace: only the lab's outside
 * segment (its API server) is reached directly, the pods only through ktctl.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { kubeConfig, lab, waitForReadyPods } from '../test/lab/fixture.js';

const ROOT = resolve(import.meta.dirname, '..');
const BYTES = Number(process.env.BENCH_BYTES ?? 256 * 1024 * 1024);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);
const LAT_COUNT = 2000;
const CONN_SECONDS = 3;

export interface KubeRow {
  id: string;
  path: string;
  downloadMbit?: number;
  uploadMbit?: number;
  p50us?: number;
  p99us?: number;
  connPerSec?: number;
  note?: string;
}

const TCP_ECHO = "require('node:net').createServer((s) => s.pipe(s)).listen(7007, '0.0.0.0')";

function exec(cmd: string, args: string[], timeoutMs = 300_000): Promise<string> {
  return new Promise((res, rej) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (e, stdout, stderr) => (e ? rej(new Error(`${cmd} ${args.join(' ')}: ${String(stderr) || e.message}`)) : res(String(stdout)))),
  );
}

/** The best of `n` runs of `fn`. */
export async function best(n: number, fn: () => Promise<number>): Promise<number> {
  let top = 0;
  for (let i = 0; i < n; i++) top = Math.max(top, await fn());
  return top;
}

/** Runs the lab rows: `ktctl connect --mode socks` through the lab's port-forward. */
export async function kubeRows(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<KubeRow[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const ns = `ktbench-${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ktbench-kube-'));
  await core.createNamespace({ body: { metadata: { name: ns } } });
  let child: ReturnType<typeof spawn> | undefined;
  try {
    await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'bulk', labels: { app: 'bulk' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
    await core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: 'echo', labels: { app: 'echo' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', command: [process.execPath, '-e', TCP_ECHO], ports: [{ containerPort: 7007 }] }] } },
    });
    const bulkIp = (await waitForReadyPods(ns, 'app=bulk', 1))[0]!.status!.podIP!;
    const echoIp = (await waitForReadyPods(ns, 'app=echo', 1))[0]!.status!.podIP!;
    const uploadFile = join(work, 'upload');
    writeFileSync(uploadFile, randomBytes(Math.min(BYTES, 64 * 1024 * 1024)));

    child = spawn(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns], {
      env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: join(work, 'state') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const port = await new Promise<number>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`ktctl connect did not come up: ${out}`)), 60_000);
      const check = (): void => {
        const m = /socks5h:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(t);
          res(Number(m[1]));
        } else setTimeout(check, 100);
      };
      check();
    });
    log(`ktctl connect (lab) up, proxy port ${port}`);
    const proxy = ['-x', `socks5h://127.0.0.1:${port}`];
    const row: KubeRow = { id: 'ktctl-socks-lab', path: 'ktctl socks via lab port-forward' };
    row.downloadMbit = await best(REPEAT, async () => (Number(await exec('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{speed_download}', ...proxy, `http://${bulkIp}:8080/bytes/${BYTES}`])) * 8) / 1e6);
    row.uploadMbit = await best(REPEAT, async () => (Number(await exec('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{speed_upload}', '-T', uploadFile, ...proxy, `http://${bulkIp}:8080/sink`])) * 8) / 1e6);
    const probe = async (args: string[]): Promise<Record<string, number>> =>
      JSON.parse((await exec(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/client.ts'), ...args], 120_000)).trim().split('\n').pop()!) as Record<string, number>;
    const lat = await probe(['latency', 'socks', '127.0.0.1', String(port), echoIp, '7007', String(LAT_COUNT)]);
    row.p50us = lat.p50_us;
    row.p99us = lat.p99_us;
    row.connPerSec = (await probe(['connrate', 'socks', '127.0.0.1', String(port), echoIp, '7007', String(CONN_SECONDS)])).per_second;
    row.note = `upload file ${Math.min(BYTES, 64 * 1024 * 1024) >> 20} MiB`;
    return [row];
  } finally {
    await stopKtctl(child);
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

/** Stops a ktctl process as a user would (SIGINT: it cleans up), SIGKILL after 20 s. */
export async function stopKtctl(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGINT');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** Prints `rows` as a table on stdout; BENCH_JSON=path also writes them. */
export function printKubeRows(rows: KubeRow[]): void {
  const f = (n: number | undefined, d = 0): string => (n === undefined ? '-' : n.toFixed(d));
  const width = Math.max(36, ...rows.map((r) => r.path.length));
  process.stdout.write(`${'path'.padEnd(width)} ${'down Mbit/s'.padStart(12)} ${'up Mbit/s'.padStart(10)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)} ${'conn/s'.padStart(8)}\n`);
  for (const r of rows) {
    process.stdout.write(`${r.path.padEnd(width)} ${f(r.downloadMbit).padStart(12)} ${f(r.uploadMbit).padStart(10)} ${f(r.p50us).padStart(8)} ${f(r.p99us).padStart(8)} ${f(r.connPerSec).padStart(8)}\n`);
  }
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
}

if (import.meta.url === `file://${process.argv[1]}`) printKubeRows(await kubeRows());
