/**
 * Two builds of ktctl side by side in one run: bench/run.ts's ktctl rows (SOCKS and TUN, via OpenSSH
 * and via the shadow) from a baseline checkout (BENCH_BASELINE=DIR, built) and from this one, in
 * turns (A B B A ...), each tree with its own bench script and build; the best of each row per build,
 * and the ratio. For a refactor that must not cost anything (issue "The house").
 *
 *   BENCH_BASELINE=/path/to/old/checkout npx tsx bench/compare-builds.ts
 *
 * BENCH_ROUNDS (2: four runs), BENCH_BYTES (128 MiB), BENCH_ONLY (the four ktctl rows). Writes
 * bench/results/compare-builds-<date>.json.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { KubeRow } from './kube-connect.js';

const ROOT = resolve(import.meta.dirname, '..');
const BASELINE = process.env.BENCH_BASELINE;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const ONLY = process.env.BENCH_ONLY ?? 'ktctl-socks-sshd,ktctl-tun-sshd,ktctl-socks-shadow,ktctl-tun-shadow';
const BYTES = process.env.BENCH_BYTES ?? String(128 * 1024 * 1024);

/** The columns bench/run.ts writes for every row (and kube-connect.ts for its own). */
type Row = KubeRow;

/** One bench/run.ts of `tree`; its rows (read from the results file it writes). */
async function runTree(tree: string): Promise<Row[]> {
  // Each run writes into a directory of its own (the committed results stay); a tree whose script
  // predates BENCH_RESULTS_DIR writes into its own checkout instead.
  const results = mkdtempSync(join(tmpdir(), 'ktbench-cmp-'));
  try {
    const code = await new Promise<number | null>((res) => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(tree, 'bench/run.ts')], {
        cwd: tree,
        env: { ...process.env, BENCH_ONLY: ONLY, BENCH_BYTES: BYTES, BENCH_REPEAT: '1', BENCH_RESULTS_DIR: results },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      child.on('close', res);
    });
    if (code !== 0) throw new Error(`bench/run.ts in ${tree} exited with ${code}`);
    // never the tree's committed latest.json when the run wrote its own: that read stale rows as the baseline's
    const own = join(results, 'latest.json');
    const file = existsSync(own) ? own : join(tree, 'bench/results/latest.json');
    return (JSON.parse(readFileSync(file, 'utf8')) as { rows: Row[] }).rows;
  } finally {
    rmSync(results, { recursive: true, force: true });
  }
}

const better = (a: number | undefined, b: number | undefined, lower = false): number | undefined =>
  a === undefined ? b : b === undefined ? a : lower ? Math.min(a, b) : Math.max(a, b);

function merge(into: Map<string, Row>, rows: Row[]): void {
  for (const r of rows) {
    const m = into.get(r.id);
    if (!m) {
      into.set(r.id, { ...r });
      continue;
    }
    m.downloadMbit = better(m.downloadMbit, r.downloadMbit);
    m.uploadMbit = better(m.uploadMbit, r.uploadMbit);
    m.p50us = better(m.p50us, r.p50us, true);
    m.p99us = better(m.p99us, r.p99us, true);
    m.connPerSec = better(m.connPerSec, r.connPerSec);
  }
}

if (!BASELINE) throw new Error('BENCH_BASELINE=DIR names the built checkout to compare with');
const trees = { baseline: resolve(BASELINE), 'this build': ROOT };
const best: Record<string, Map<string, Row>> = { baseline: new Map(), 'this build': new Map() };
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? (['baseline', 'this build'] as const) : (['this build', 'baseline'] as const);
  for (const name of order) {
    process.stderr.write(`compare: round ${round + 1}, ${name}\n`);
    merge(best[name]!, await runTree(trees[name]));
  }
}
const f = (n: number | undefined): string => (n === undefined ? '' : n.toFixed(0));
const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? (b / a).toFixed(2) : '');
process.stdout.write('| row | build | down Mbit/s | up Mbit/s | p50 us | p99 us | conn/s |\n|---|---|---|---|---|---|---|\n');
for (const [id, a] of best.baseline!) {
  const b = best['this build']!.get(id);
  process.stdout.write(`| ${a.path} | baseline | ${f(a.downloadMbit)} | ${f(a.uploadMbit)} | ${f(a.p50us)} | ${f(a.p99us)} | ${f(a.connPerSec)} |\n`);
  process.stdout.write(`| | this build | ${f(b?.downloadMbit)} | ${f(b?.uploadMbit)} | ${f(b?.p50us)} | ${f(b?.p99us)} | ${f(b?.connPerSec)} |\n`);
  process.stdout.write(`| | ratio | ${ratio(a.downloadMbit, b?.downloadMbit)} | ${ratio(a.uploadMbit, b?.uploadMbit)} | ${ratio(a.p50us, b?.p50us)} | ${ratio(a.p99us, b?.p99us)} | ${ratio(a.connPerSec, b?.connPerSec)} |\n`);
}
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(
  join(ROOT, 'bench/results', `compare-builds-${stamp}.json`),
  JSON.stringify({ date: new Date().toISOString(), baseline: trees.baseline, rounds: ROUNDS, bytes: Number(BYTES), only: ONLY, baselineRows: [...best.baseline!.values()], rows: [...best['this build']!.values()] }, null, 2) + '\n',
);
