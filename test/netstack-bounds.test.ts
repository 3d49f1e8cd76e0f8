/**
 * The engine's resource bounds on a simulated clock (findings N1, N2 and the SYN-flood policy of
 * the outside fuzzing campaign): idle flows cost the timer nothing, a drained flow moves while
 * readers that stopped hold the budget, and legitimate connections get through a SYN flood.
 */
import test from 'ava';
import { seq } from '../src/netstack/seq.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, netstackBounds } from '../src/netstack/stack.js';
import { PROXY_BOUNDS } from '../src/proxy/index.js';
import { CLI } from './helpers/cli-process.js';
import { run as run$ } from './helpers/netns.js';
import { Peer, SimNet, settle, OUR4 } from './helpers/netstack-sim.js';
import { prng } from './helpers/prng.js';

/** Runs the peers and the clock: `steps` times, each peer's output in, stream events, `ms` later. */
async function run(net: SimNet, peers: Peer[], steps: number, ms: number, until?: () => boolean): Promise<void> {
  for (let i = 0; i < steps; i++) {
    for (const p of peers) net.input(p.output(net.clock.now));
    await settle();
    if (until?.()) return;
    net.clock.advance(ms);
  }
}

async function connect(net: SimNet, p: Peer): Promise<void> {
  net.input([p.syn()]);
  await settle();
  net.input(p.output(net.clock.now));
  await settle();
}

test('engine_idleFinWait2FlowsLeaveTheTimerAlone', async (t) => {
  // Finding N1: three duplicate ACKs and an ACK of data and FIN in one batch left flows in
  // FIN-WAIT-2 with a fast retransmit pending: the engine woke every 1 ms and scanned every flow.
  const net = new SimNet();
  net.dialer.sourceBytes = 3000; // two segments and the FIN, all within the initial window
  const fw2: Peer[] = [];
  for (let i = 0; i < 100; i++) {
    const p = new Peer(net, 20000 + i, 19, false, 0xffffff00 + i);
    fw2.push(p);
    await connect(net, p);
  }
  const idle: Peer[] = [];
  for (let i = 0; i < 100; i++) {
    const p = new Peer(net, 30000 + i, 7, false, 0xfffff000 + i);
    idle.push(p);
    await connect(net, p);
  }
  for (const p of fw2) {
    t.true(p.finReceived, 'the source sent its data and FIN');
    const dup = (): Buffer => p.packet({ ackNumber: p.irs1 });
    net.input([dup(), dup(), dup(), p.packet({})]);
  }
  await settle();
  t.is(net.stack.stats().flows, 200);
  const before = net.stack.stats();
  const runsBefore = net.clock.runs;
  for (let i = 0; i < 1000; i++) net.clock.advance(10); // 10 simulated seconds
  const after = net.stack.stats();
  t.log(`10 s idle: ${net.clock.runs - runsBefore} timer runs, ${after.timerFlowsDue - before.timerFlowsDue} flows due, ${after.timerStalls} stalls`);
  t.true(net.clock.runs - runsBefore <= 2, `timer ran ${net.clock.runs - runsBefore} times`);
  t.true(after.timerFlowsDue - before.timerFlowsDue <= 100);
  t.is(after.timerStalls, 0);
  t.deepEqual(net.logs, []);
  // FIN-WAIT-2 ends (tcp_fin_timeout, 60 s): those flows are reset, their far streams destroyed.
  net.clock.advance(55_000);
  await settle();
  const end = net.stack.stats();
  t.is(end.flows, 100);
  t.true(fw2.every((p) => p.state === 'reset'));
  t.is(net.dialer.open.size, 100);
  t.is(net.badPackets, 0);
});

test('engine_drainedFlowMovesWhileStoppedReadersHoldTheBudget', async (t) => {
  // Finding N2: local programs that stopped reading held the whole budget; a new echo flow got
  // 1,460 bytes back and stalled until they were reset.
  const budget = 1 << 20;
  const net = new SimNet({ limits: { maxBufferedBytes: budget, txBufferPerFlow: 512 << 10 } });
  net.dialer.sourceBytes = 8 << 20;
  const stopped: Peer[] = [];
  for (let i = 0; i < 8; i++) {
    const p = new Peer(net, 21000 + i, 19, false, 0xfffff000 + i);
    stopped.push(p);
    await connect(net, p);
    p.window = 0; // the program stopped reading
    p.ackDue = true;
  }
  await run(net, stopped, 400, 10, () => net.stack.stats().bytesBuffered >= budget);
  const held = net.stack.stats().bytesBuffered;
  t.log(`stopped readers hold ${held} bytes (budget ${budget})`);
  t.true(held >= budget * 0.9, 'the stopped readers did use up the budget');
  const echo = new Peer(net, 22000, 7, false, 0xffffff00);
  echo.toSend = 1 << 20;
  echo.finQueued = true;
  await connect(net, echo);
  t.is(echo.state, 'established');
  await run(net, [...stopped, echo], 3000, 1, () => echo.state === 'done');
  t.log(`echo: ${echo.received} of ${echo.toSend} bytes back, state ${echo.state}, after ${net.clock.now} ms`);
  t.true(echo.verified, `echo got ${echo.received} bytes back, state ${echo.state}`);
  const st = net.stack.stats();
  const bounds = net.stack.bounds;
  t.true(st.bytesBuffered <= bounds.maxBufferedBytes + 9 * bounds.flowShare + 9 * (64 << 10), `buffered ${st.bytesBuffered}`);
  t.is(net.badPackets, 0);
});

/**
 * A flood of SYNs that never complete (random sources, `rate` a second) beside a legitimate
 * client that opens an echo connection every 100 ms (SYN retried after 1 s and 2 s, like a
 * kernel). Returns how many legitimate connections were attempted and how many completed.
 */
export async function synFlood(rate: number, seconds: number, seed = 7): Promise<{ attempted: number; succeeded: number; flows: number; far: number; evicted: number; dials: number }> {
  const rnd = prng(seed);
  const net = new SimNet();
  net.dialer.dialDelay = 5;
  const legit: Peer[] = [];
  const perTick = rate / 100;
  let carry = 0;
  for (let tick = 0; tick < seconds * 100; tick++) {
    const flood: Buffer[] = [];
    carry += perTick;
    for (; carry >= 1; carry--) {
      const src = Buffer.from([198, 18, 1 + Math.floor(rnd() * 250), 1 + Math.floor(rnd() * 250)]);
      flood.push(net.builder.tcp(src, OUR4, {
        srcPort: 1024 + Math.floor(rnd() * 60000), dstPort: 7, control: 'syn', seqNumber: seq(Math.floor(rnd() * 2 ** 32)),
        ackNumber: null, windowLen: 65535, windowScale: 7, maxSegSize: 1460, sackPermitted: false, payload: Buffer.alloc(0),
      }, 0xffff));
    }
    net.input(flood);
    if (tick % 10 === 0) {
      const p = new Peer(net, 10000 + legit.length, 7, false, 0xffff0000 + legit.length);
      p.toSend = 100;
      p.finQueued = true;
      legit.push(p);
      net.input([p.syn()]);
    }
    for (const p of legit) if (p.state === 'syn-sent' || p.state === 'established' || p.ackDue) net.input(p.output(net.clock.now));
    await settle();
    net.clock.advance(10);
  }
  // The last attempts get the same 3 s to finish as the others had.
  for (let i = 0; i < 300; i++) {
    for (const p of legit) net.input(p.output(net.clock.now));
    await settle();
    net.clock.advance(10);
  }
  const st = net.stack.stats();
  const result = {
    attempted: legit.length, succeeded: legit.filter((p) => p.verified).length, flows: st.flows,
    far: net.dialer.open.size, evicted: st.halfOpenEvicted, dials: net.dialer.dials,
  };
  net.stack.close();
  return result;
}

test('engine_synFloodLegitConnectionsStillSucceed', async (t) => {
  // Default limits; 2,000 SYNs a second for 20 s fill the 16,384-flow table after ~8 s. Before
  // the policy every later legitimate SYN was dropped (flowLimit) until the flood's SYN-RECEIVED
  // flows timed out (63 s); with it the oldest half-open flows make room.
  t.timeout(60_000);
  const r = await synFlood(2000, 20);
  t.log(`flood 2000/s x 20 s: legit ${r.succeeded}/${r.attempted}, flows ${r.flows}, far connections ${r.far}, half-open evicted ${r.evicted}, dials ${r.dials}`);
  t.true(r.succeeded >= r.attempted * 0.95, `${r.succeeded} of ${r.attempted}`);
  t.true(r.far <= DEFAULT_LIMITS.maxHalfOpen + DEFAULT_LIMITS.maxPendingDials + r.attempted);
});

test('engine_boundsExposeEveryLimit', (t) => {
  const net = new SimNet();
  const b = net.stack.bounds;
  t.like(b, {
    maxFlows: 16384, maxPendingDials: 256, maxHalfOpen: 1024, synPolicy: 'evict-oldest-half-open',
    maxBufferedBytes: 128 << 20, flowShare: 16 << 10, finWait2Timeout: 60_000, persistTimeout: 600_000,
    maxZeroWindowProbes: 10, handshakeTimeout: 63_000, dialTimeout: 30_000,
  });
  t.is(b.maxBufferedWorstCase, (128 << 20) + 16384 * (16 << 10));
});

test('bounds: ktctl status --json shows the ones a default engine keeps, and the proxy\'s', async (t) => {
  const net = new SimNet();
  t.deepEqual(net.stack.bounds, netstackBounds(), 'the defaults are what an engine built with them reports');
  const state = mkdtempSync(join(tmpdir(), 'kt-bounds-'));
  t.teardown(() => rmSync(state, { recursive: true, force: true }));
  const { stdout } = await run$('env', [`KTCTL_STATE_DIR=${state}`, `KUBECONFIG=${join(state, 'none')}`, process.execPath, CLI, 'status', '--json']);
  const shown = JSON.parse(stdout) as { bounds: { tun: unknown; proxy: unknown } };
  t.deepEqual(shown.bounds.tun, JSON.parse(JSON.stringify(netstackBounds())));
  t.deepEqual(shown.bounds.proxy, { ...PROXY_BOUNDS });
  t.is(netstackBounds().maxBufferedWorstCase, DEFAULT_LIMITS.maxBufferedBytes + DEFAULT_LIMITS.maxFlows * DEFAULT_LIMITS.flowShare);
});
