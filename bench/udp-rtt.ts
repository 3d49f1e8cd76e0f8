/**
 * UDP through ktctl, in the lab: round-trip time (p50/p99 of RTT_COUNT sequential 64-byte echoes,
 * after 200 untimed) and datagrams per second (64 in flight for 3 s) to a pod's UDP echo server
 * (test/helpers/udp-lab.ts), along two paths:
 *
 *   1. pod -> pod: a client pod in the lab straight to the echo pod's IP (the lab's own data path,
 *      no ktctl): the ceiling;
 *   2. laptop -> ktctl TUN -> pod: `ktctl connect` in a laptop namespace; the client there sends to
 *      the pod IP, which the laptop routes into ktctl's TUN; datagrams go over the shadow's UDP
 *      subsystem (ssh over the API server's port-forward) and out of the shadow pod's socket.
 *
 * Needs a running lab and a build (`npm run build`). Row id `udp-rtt` in bench/run.ts.
 *
 *   tsx bench/udp-rtt.ts      prints a table; writes bench/results/udp-rtt-<date>.json (BENCH_RESULTS_DIR elsewhere)
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { DEFAULT_SHADOW_IMAGE } from '../src/kube/names.js';
import { startCli } from '../test/helpers/cli-process.js';
import { run } from '../test/helpers/netns.js';
import { TeardownList } from '../test/helpers/ssh-fixtures.js';
import { CLIENT_SCRIPT, UDP_ECHO_PORT, deployUdpTarget } from '../test/helpers/udp-lab.js';
import { kubeConfig, lab, labExec, waitForReadyPods } from '../test/lab/fixture.js';
import { createLabNet } from '../test/lab/net/index.js';
import type { KubeRow } from './kube-connect.js';

const ROOT = resolve(import.meta.dirname, '..');
const RTT_COUNT = Number(process.env.BENCH_UDP_COUNT ?? 2000);
const SIZE = 64;

export interface UdpRow extends KubeRow {
  /** echoed datagrams per second, 64 in flight */
  datagramsPerSec?: number;
  /** round trips lost (1 s timeout each) */
  lost?: number;
}

interface Measured {
  samples: number[];
  lost: number;
  perSecond: number;
}

function row(id: string, path: string, m: Measured): UdpRow {
  const s = m.samples.slice(200).sort((a, b) => a - b);
  const at = (q: number): number => (s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? NaN) * 1000;
  return {
    id,
    path,
    p50us: at(0.5),
    p99us: at(0.99),
    datagramsPerSec: Math.round(m.perSecond),
    lost: m.lost,
    note: `UDP ${SIZE} B echo: ${RTT_COUNT} round trips; ${Math.round(m.perSecond)} datagrams/s with 64 in flight${m.lost ? `; ${m.lost} lost` : ''}`,
  };
}

/** The two rows; `labStateDir` is the running lab's state directory (for its laptop namespaces). */
export async function udpRows(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`), labStateDir = process.env.KTLAB_DIR ?? join(ROOT, '.lab')): Promise<UdpRow[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const ns = `ktbench-u-${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ktbench-udp-'));
  const hooks = new TeardownList();
  await core.createNamespace({ body: { metadata: { name: ns } } });
  try {
    const podIP = await deployUdpTarget(ns);
    await core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: DEFAULT_SHADOW_IMAGE, command: ['node', '-e', 'setInterval(() => {}, 1 << 30)'] }] } },
    });
    await waitForReadyPods(ns, 'app=client', 1);
    const args = [podIP, String(UDP_ECHO_PORT), 'rtt', String(RTT_COUNT + 200), String(SIZE)];
    // The servers may still be binding: one echo first, retried.
    const warm = await labExec({ namespace: ns, name: 'client' }, [process.execPath, '-e', CLIENT_SCRIPT, podIP, String(UDP_ECHO_PORT), 'echo', '0', '64']);
    if (!warm.stdout.includes('true')) throw new Error(`the echo pod does not answer: ${warm.stdout}${warm.stderr}`);
    log('udp bench: pod -> pod');
    const direct = await labExec({ namespace: ns, name: 'client' }, [process.execPath, '-e', CLIENT_SCRIPT, ...args]);
    if (direct.exitCode !== 0) throw new Error(`the client pod: ${direct.stderr}`);
    const rows = [row('udp-rtt-pod', 'UDP lab pod -> pod (no ktctl)', JSON.parse(direct.stdout.trim().split('\n').pop()!) as Measured)];

    const net = createLabNet({ stateDir: labStateDir });
    const laptop = `ktb-udp-${randomBytes(3).toString('hex')}`;
    await net.createLaptop(laptop);
    hooks.teardown(() => net.deleteLaptop(laptop));
    const ktctl = startCli(hooks, ['connect', '-n', ns], { netns: laptop, env: { KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: join(work, 'state') } });
    hooks.teardown(async () => {
      ktctl.child.kill('SIGINT');
      await Promise.race([ktctl.exited, new Promise((r) => setTimeout(r, 20_000))]);
    });
    await ktctl.waitFor(/press Ctrl-C to disconnect/, 90_000);
    log('udp bench: laptop -> ktctl TUN -> pod');
    const warmTun = await run('ip', ['netns', 'exec', laptop, 'node', '-e', CLIENT_SCRIPT, podIP, String(UDP_ECHO_PORT), 'echo', '0', '64']);
    if (!warmTun.stdout.includes('true')) throw new Error(`no echo through ktctl: ${warmTun.stdout}${warmTun.stderr}`);
    const tun = await run('ip', ['netns', 'exec', laptop, 'node', '-e', CLIENT_SCRIPT, ...args], { timeoutMs: 120_000 });
    if (tun.code !== 0) throw new Error(`the laptop client: ${tun.stderr}`);
    rows.push(row('udp-rtt', 'UDP laptop -> ktctl TUN -> pod', JSON.parse(tun.stdout.trim().split('\n').pop()!) as Measured));
    return rows;
  } finally {
    await hooks.run();
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await udpRows();
  const f = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '-' : n.toFixed(0));
  const head = `| ${'path'.padEnd(32)} | ${'p50 us'.padStart(7)} | ${'p99 us'.padStart(7)} | ${'datagrams/s'.padStart(11)} | ${'lost'.padStart(4)} |\n`;
  process.stdout.write(head + `|${'-'.repeat(34)}|${'-'.repeat(9)}|${'-'.repeat(9)}|${'-'.repeat(13)}|${'-'.repeat(6)}|\n`);
  for (const r of rows) {
    process.stdout.write(`| ${r.path.padEnd(32)} | ${f(r.p50us).padStart(7)} | ${f(r.p99us).padStart(7)} | ${f(r.datagramsPerSec).padStart(11)} | ${f(r.lost).padStart(4)} |\n`);
  }
  const pod = rows.find((r) => r.id === 'udp-rtt-pod');
  const tun = rows.find((r) => r.id === 'udp-rtt');
  if (pod?.p50us && tun?.p50us && pod.datagramsPerSec && tun.datagramsPerSec) {
    process.stdout.write(`udp-rtt / pod p50: ${(tun.p50us / pod.p50us).toFixed(2)}x; datagrams/s: ${(tun.datagramsPerSec / pod.datagramsPerSec).toFixed(2)}x\n`);
  }
  const dir = process.env.BENCH_RESULTS_DIR ?? join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const date = new Date().toISOString();
  writeFileSync(join(dir, `udp-rtt-${date.replace(/[:.]/g, '-')}.json`), JSON.stringify({ date, node: process.version, count: RTT_COUNT, size: SIZE, rows }, null, 2) + '\n');
}
