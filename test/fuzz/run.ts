/**
 * `npm run fuzz`: the proxy campaign at length (test/helpers/proxy-campaign.ts), outside ava.
 * Prints its figures and exits 1 on any failure. Loopback only.
 *   FUZZ_SEED=<n>       one seed (default: three fixed ones)
 *   FUZZ_SESSIONS=<n>   sessions per seed (default 20000)
 *   FUZZ_CONCURRENCY=<n> sessions at once (default 128)
 */
import { runProxyCampaign } from '../helpers/proxy-campaign.js';

const seeds = process.env.FUZZ_SEED !== undefined ? [Number(process.env.FUZZ_SEED)] : [0x9a0c5e11, 0x51ed2026, 0x0fa11e75];
const sessions = Number(process.env.FUZZ_SESSIONS ?? 20_000);
const concurrency = Number(process.env.FUZZ_CONCURRENCY ?? 128);

let failed = 0;
const started = Date.now();
for (const seed of seeds) {
  const r = await runProxyCampaign({
    seed,
    sessions,
    concurrency,
    handshakeTimeoutMs: 500,
    lingerMs: 250,
    dialTimeoutMs: 800,
    log: (line) => console.log(`  seed ${seed}: ${line}`),
  });
  const clean =
    r.failures.length === 0 && r.settled.activeConnections === 0 && r.settled.pendingDials === 0 &&
    r.settled.activeUpstreams === 0 && r.dialerPending === 0 && Object.keys(r.leakedHandles).length === 0;
  if (!clean) failed++;
  console.log(
    `seed ${seed} (0x${seed.toString(16)}): ${r.sessions} sessions, ${r.valid} valid, ${r.hostile} hostile; ` +
      `${(r.verifiedBytes / (1 << 20)).toFixed(1)} MiB verified; ${(r.durationMs / 1000).toFixed(1)} s; max RSS ${r.maxRssMiB} MiB; event loop blocked up to ${r.maxEventLoopDelayMs} ms; ` +
      `proxy after: ${r.settled.activeConnections} connections, ${r.settled.pendingDials} pending dials, ${r.settled.activeUpstreams} upstreams ` +
      `(${r.settled.totalConnections} accepted, ${r.settled.dialFailures} failed dials); leaked handles ${JSON.stringify(r.leakedHandles)}; ` +
      `${r.failures.length} failures`,
  );
  console.log(`  kinds: ${JSON.stringify(Object.fromEntries(Object.entries(r.kinds).sort()))}`);
  for (const f of r.failures.slice(0, 30)) console.log(`  FAIL ${f}`);
}
console.log(`${seeds.length} seeds, ${((Date.now() - started) / 1000).toFixed(1)} s, max RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB: ${failed === 0 ? 'ok' : `${failed} seed(s) failed`}`);
process.exit(failed === 0 ? 0 : 1);
