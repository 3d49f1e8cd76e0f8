/**
 * Micro-benchmarks of the packet engine alone (no TUN, no ssh): how fast NetStack moves bytes
 * between packets and in-memory far streams, how many connections it sets up per second, and what
 * 1000 idle flows cost. The "kernel" side is a minimal in-process peer that acknowledges every
 * batch, so the numbers are an upper bound for the engine's own cost, not end-to-end figures.
 * The measurements are in bench/engine-measure.ts; bench/compare-engine.ts runs them against two trees.
 *
 *   npx tsx bench/netstack-engine.ts [--json out.json]
 */
import { writeFileSync } from 'node:fs';
import { NetStack } from '../src/netstack/stack.js';
import { measureEngine } from './engine-measure.js';

const results = await measureEngine(NetStack);
const f = (x: number): string => x.toFixed(2);
console.log('| engine only (in-process peer) | no offload | offload (GSO/TSO, partial csum) |');
console.log('|---|---|---|');
console.log(`| download Gbit/s | ${f(results.downloadGbps.plain)} | ${f(results.downloadGbps.offload)} |`);
console.log(`| upload Gbit/s | ${f(results.uploadGbps.plain)} | ${f(results.uploadGbps.offload)} |`);
console.log(`| handshakes/s | ${results.connectionsPerSecond.toFixed(0)} | |`);
console.log(`| 1000 idle flows: heap growth MB / process RSS before -> after MB | ${f(results.idle1000.heapMB)} / ${f(results.idle1000.rssBeforeMB)} -> ${f(results.idle1000.rssMB)} | |`);
const jsonAt = process.argv.indexOf('--json');
if (jsonAt > 0 && process.argv[jsonAt + 1]) writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify(results, null, 2));
