/**
 * The standing proxy campaign (test/helpers/proxy-campaign.ts), short: fixed seeds, a few thousand
 * hostile and valid sessions against a real ProxyServer with short deadlines, and every socket
 * accounted for afterwards. `npm run fuzz` runs the long variant. Reproduce a failure with
 * FUZZ_SEED=<seed from the message> (FUZZ_SESSIONS scales the count).
 */
import test from 'ava';
import { runProxyCampaign } from './helpers/proxy-campaign.js';

const SEEDS = process.env.FUZZ_SEED !== undefined ? [Number(process.env.FUZZ_SEED)] : [0x9a0c5e11, 0x51ed2026];
const SESSIONS = Number(process.env.FUZZ_SESSIONS ?? 1500);

for (const seed of SEEDS) {
  test.serial(`proxy campaign, seed 0x${seed.toString(16)}: hostile sessions get cut, valid ones work, every socket is accounted for`, async (t) => {
    const report = await runProxyCampaign({ seed, sessions: SESSIONS, concurrency: 48, handshakeTimeoutMs: 400, lingerMs: 200, dialTimeoutMs: 600 });
    t.log(
      `${report.sessions} sessions (${report.valid} valid, ${report.hostile} hostile), ${(report.verifiedBytes / (1 << 20)).toFixed(1)} MiB verified, ` +
        `${report.durationMs} ms, max RSS ${report.maxRssMiB} MiB`,
    );
    t.log(JSON.stringify(report.kinds));
    t.deepEqual(report.failures.slice(0, 20), [], `${report.failures.length} failures`);
    t.like(report.settled, { activeConnections: 0, pendingDials: 0, activeUpstreams: 0 });
    t.is(report.dialerPending, 0, 'every dial of the test Dialer ended');
    t.deepEqual(report.leakedHandles, {}, 'no socket, server or timer left in the process');
    t.true(report.valid > 0 && report.hostile > report.valid);
  });
}
