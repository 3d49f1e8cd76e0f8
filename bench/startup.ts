/**
 * How long `ktctl connect --mode socks` takes from the command to a working proxy, against the lab:
 * a curl through the proxy to a pod is tried every 50 ms from the moment ktctl starts, and the time
 * of the first answer is the row's. The first run in a namespace makes the shadow program's
 * ConfigMap; the runs after it reuse it (their median is the second row).
 *
 * `BENCH_STARTUP_BASELINE=DIR` (a built checkout of another version, e.g. a `git worktree` of the
 * commit before) measures that version the same way in the same run, each against its own lab
 * (the lab changed with the shadow: the older one mapped an image of its own to dist/).
 *
 *   tsx bench/startup.ts         (root; brings each lab up and down; BENCH_JSON=path writes the rows)
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stopKtctl, type KubeRow } from './kube-connect.js';

const ROOT = resolve(import.meta.dirname, '..');
const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 5);

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) =>
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (e, stdout, stderr) =>
      res({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    ),
  );
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** One start: ms from spawning ktctl to the first curl answered through its proxy. */
async function oneStart(tree: string, kubeconfig: string, ns: string, target: string): Promise<number> {
  const port = await freePort();
  const state = mkdtempSync(join(tmpdir(), 'ktbench-start-'));
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(tree, 'dist/cli/main.js'), 'connect', '--mode', 'socks', '--proxyPort', String(port), '-n', ns], {
    env: { ...process.env, KUBECONFIG: kubeconfig, KTCTL_STATE_DIR: state },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`ktctl exited with ${child.exitCode}: ${err}`);
      if (performance.now() - t0 > 90_000) throw new Error(`no answer through the proxy within 90 s: ${err}`);
      const r = await exec('curl', ['-s', '--fail', '-o', '/dev/null', '--max-time', '5', '-x', `socks5h://127.0.0.1:${port}`, target]);
      if (r.code === 0) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await stopKtctl(child);
    rmSync(state, { recursive: true, force: true });
  }
}

/** Brings `tree`'s lab up, measures RUNS starts in a fresh namespace, takes the lab down. */
async function measureTree(tree: string, label: string, log: (line: string) => void): Promise<KubeRow[]> {
  const stateDir = mkdtempSync(join(tmpdir(), 'ktbench-startlab-'));
  const { labDown, labUp } = (await import(join(tree, 'test/lab/cli.ts'))) as typeof import('../test/lab/cli.js');
  try {
    const { kubeconfig } = await labUp(stateDir);
    const env = { ...process.env, KUBECONFIG: kubeconfig };
    const ns = `ktbench-start-${randomBytes(3).toString('hex')}`;
    const kubectl = async (args: string[]): Promise<string> => {
      const r = await exec('kubectl', args, env);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    await kubectl(['create', 'namespace', ns]);
    await kubectl(['-n', ns, 'run', 'target', '--image=ktlab/echo']);
    await kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/target', '--timeout=60s']);
    const ip = (await kubectl(['-n', ns, 'get', 'pod', 'target', '-o', 'jsonpath={.status.podIP}'])).trim();
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      times.push(await oneStart(tree, kubeconfig, ns, `http://${ip}:8080/`));
      log(`${label}: start ${i + 1}: ${times.at(-1)!.toFixed(0)} ms`);
    }
    const rest = times.slice(1).sort((a, b) => a - b);
    const median = rest[Math.floor(rest.length / 2)] ?? times[0]!;
    return [
      { id: 'ktctl-startup-lab', path: `connect -> working proxy, ${label}, first run`, note: `${times[0]!.toFixed(0)} ms` },
      { id: 'ktctl-startup-lab', path: `connect -> working proxy, ${label}, next runs`, note: `${median.toFixed(0)} ms (median of ${rest.length})` },
    ];
  } finally {
    await labDown(stateDir);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** This checkout, and BENCH_STARTUP_BASELINE's when given, one after the other. */
export async function startupRows(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<KubeRow[]> {
  const rows: KubeRow[] = [];
  const baseline = process.env.BENCH_STARTUP_BASELINE;
  if (baseline) rows.push(...(await measureTree(resolve(baseline), 'baseline', log)));
  rows.push(...(await measureTree(ROOT, 'this build', log)));
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await startupRows();
  for (const r of rows) process.stdout.write(`${r.path.padEnd(56)} ${r.note}\n`);
  if (process.env.BENCH_JSON) (await import('node:fs')).writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
}
