/**
 * The engine micro-benchmarks (bench/engine-measure.ts) against two trees in one process: the
 * NetStack of a baseline checkout and this tree's, run in turns (A B, B A, A B, ...) so that the
 * drift of a shared, noisy machine falls on both alike. Prints the best and the median of each,
 * and the ratio of the bests (this tree / baseline). BENCH_SCALE multiplies the bytes and the
 * handshakes of each measurement (longer runs, less noise).
 *
 *   BENCH_BASELINE=/path/to/old/checkout [BENCH_ROUNDS=5] [BENCH_SCALE=1] node --expose-gc --import tsx bench/compare-engine.ts [--json out.json]
 *
 * The baseline needs only its sources (src/netstack/stack.ts and what it imports) and a
 * node_modules beside them (a symlink to this tree's will do); the in-process peer is this tree's.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NetStack } from '../src/netstack/stack.js';
import { measureEngine, type EngineClass, type EngineResults } from './engine-measure.js';

const baseDir = process.env.BENCH_BASELINE;
if (!baseDir) {
  console.error('BENCH_BASELINE must name the baseline checkout (a directory with src/netstack/stack.ts)');
  process.exit(2);
}
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const baseline = (await import(pathToFileURL(resolve(baseDir, 'src/netstack/stack.ts')).href)) as { NetStack: EngineClass };
if (typeof baseline.NetStack !== 'function') throw new Error(`${baseDir}: src/netstack/stack.ts exports no NetStack`);
if (typeof globalThis.gc !== 'function') console.error('note: without --expose-gc the idle-flow heap figures are noisy');

const variants: Array<{ name: string; Engine: EngineClass; runs: EngineResults[] }> = [
  { name: 'baseline', Engine: baseline.NetStack, runs: [] },
  { name: 'this tree', Engine: NetStack, runs: [] },
];

for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? variants : [...variants].reverse();
  for (const v of order) {
    const res = await measureEngine(v.Engine, SCALE);
    v.runs.push(res);
    console.error(`round ${r + 1}/${ROUNDS} ${v.name}: down ${res.downloadGbps.plain.toFixed(2)}/${res.downloadGbps.offload.toFixed(2)} up ${res.uploadGbps.plain.toFixed(2)}/${res.uploadGbps.offload.toFixed(2)} Gbit/s, ${res.connectionsPerSecond.toFixed(0)} conn/s, idle heap ${res.idle1000.heapMB.toFixed(2)} MB`);
  }
}

/** A row: how to read the metric from one run, and whether more is better. */
const rows: Array<{ label: string; get: (r: EngineResults) => number; higher: boolean; digits: number }> = [
  { label: 'download Gbit/s, no offload', get: (r) => r.downloadGbps.plain, higher: true, digits: 2 },
  { label: 'download Gbit/s, offload (GSO/TSO)', get: (r) => r.downloadGbps.offload, higher: true, digits: 2 },
  { label: 'upload Gbit/s, no offload', get: (r) => r.uploadGbps.plain, higher: true, digits: 2 },
  { label: 'upload Gbit/s, offload (GSO/TSO)', get: (r) => r.uploadGbps.offload, higher: true, digits: 2 },
  { label: 'handshakes/s', get: (r) => r.connectionsPerSecond, higher: true, digits: 0 },
  { label: '1000 idle flows: heap growth MB', get: (r) => r.idle1000.heapMB, higher: false, digits: 2 },
];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const table: Array<Record<string, number | string>> = [];
console.log(`| engine only, ${ROUNDS} rounds alternating${SCALE !== 1 ? `, scale ${SCALE}` : ''} | baseline best (median) | this tree best (median) | ratio of bests |`);
console.log('|---|---|---|---|');
for (const row of rows) {
  const stat = variants.map((v) => {
    const xs = v.runs.map(row.get);
    return { best: row.higher ? Math.max(...xs) : Math.min(...xs), median: median(xs) };
  });
  const [a, b] = stat as [typeof stat[0], typeof stat[0]];
  const ratio = b.best / a.best;
  const f = (x: number): string => x.toFixed(row.digits);
  console.log(`| ${row.label} | ${f(a.best)} (${f(a.median)}) | ${f(b.best)} (${f(b.median)}) | ${ratio.toFixed(3)}${row.higher ? '' : ' (lower is better)'} |`);
  table.push({ metric: row.label, baselineBest: a.best, baselineMedian: a.median, thisBest: b.best, thisMedian: b.median, ratio });
}
const jsonAt = process.argv.indexOf('--json');
if (jsonAt > 0 && process.argv[jsonAt + 1]) {
  writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify({ baseline: resolve(baseDir), rounds: ROUNDS, scale: SCALE, table, runs: variants.map((v) => ({ name: v.name, runs: v.runs })) }, null, 2));
}
