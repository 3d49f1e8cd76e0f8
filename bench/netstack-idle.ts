/**
 * What idle flows cost the engine's timer (finding N1): 10,000 flows left idle in FIN-WAIT-2
 * (reached through three duplicate ACKs and a full ACK in one batch, the sequence that left a
 * fast retransmit pending) and 10,000 idle ESTABLISHED flows; process CPU time over 10 s of real
 * time, nothing else running. In-process only.
 *
 *   npx tsx bench/netstack-idle.ts [flows] [seconds]
 */
import { Peer, SimNet, settle } from '../test/helpers/netstack-sim.js';

const FLOWS = Number(process.argv[2] ?? 10_000);
const SECONDS = Number(process.argv[3] ?? 10);

async function setUp(kind: 'finWait2' | 'established'): Promise<SimNet> {
  const net = new SimNet({ realTime: true, limits: { maxFlows: FLOWS + 16, maxHalfOpen: FLOWS + 16 } });
  net.dialer.sourceBytes = 3000;
  const peers: Peer[] = [];
  for (let i = 0; i < FLOWS; i += 250) {
    const group: Peer[] = [];
    for (let j = i; j < Math.min(FLOWS, i + 250); j++) {
      const p = new Peer(net, 1024 + j, kind === 'finWait2' ? 19 : 7, j % 2 === 1, 0xffffff00 - j);
      group.push(p);
      peers.push(p);
    }
    net.input(group.map((p) => p.syn()));
    await settle();
    net.input(group.flatMap((p) => p.output(0)));
    await settle(6);
  }
  if (kind === 'finWait2') {
    for (const p of peers) {
      const dup = (): Buffer => p.packet({ ackNumber: p.irs1 });
      net.input([dup(), dup(), dup(), p.packet({})]);
    }
    await settle();
  }
  return net;
}

async function measure(kind: 'finWait2' | 'established'): Promise<void> {
  const net = await setUp(kind);
  await new Promise((r) => setTimeout(r, 1000));
  const st0 = net.stack.stats();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const c1 = process.cpuUsage(c0);
  const wall = performance.now() - t0;
  const st = net.stack.stats();
  const cpu = (c1.user + c1.system) / 1000 / wall;
  console.log(JSON.stringify({
    kind, flows: st.flows, seconds: SECONDS, cpuPercent: Math.round(cpu * 1000) / 10,
    timerRuns: st.timerRuns === undefined ? null : st.timerRuns - st0.timerRuns,
    rssMB: Math.round(process.memoryUsage().rss / 1e6),
  }));
  net.stack.close();
}

await measure('finWait2');
await measure('established');
