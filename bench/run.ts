/**
 * `npm run bench`: every data path of ktctl beside its peers, in one run, on this machine.
 *
 * Topology (all made here, removed at the end): a *server* namespace with OpenSSH sshd, ktctl's
 * shadow and the targets (HTTP bulk + TCP echo on an address only it has), and a *client*
 * namespace, linked by a veth pair, where every client and tunnel runs. Rows:
 *   direct TCP            curl / probe straight to the target (routed over the veth)
 *   ssh -L                OpenSSH local forwards
 *   ssh -D                OpenSSH dynamic forward (SOCKS5, name resolved remotely)
 *   sshuttle              Debian's sshuttle (nft method) over the same sshd
 *   ssh2 forwardOut       a bare ssh2 client loop: the ceiling for anything built on ssh2
 *   ktctl socks via sshd  `ktctl connect --mode socks --via` against OpenSSH
 *   ktctl socks via shadow  the same against ktctl's own shadow server
 *   ktctl tun via sshd / shadow  `ktctl connect --via ... --includeIps TARGET/32` (TUN mode)
 *   ktctl tun, 1000 idle flows   RSS of the ktctl process holding 1000 open flows
 *   lab port-forward      one port-forward stream of the lab's API server, no ssh (its ceiling)
 *   ktctl socks via lab port-forward  `ktctl connect --mode socks` against the lab (a shadow pod)
 *   lab pod -> ktctl exchange -> laptop  the reverse direction: a client pod in the lab downloads
 *                         from / uploads to a server on this machine through an exchanged service
 *                         (beside the same pod talking to the service's own pods)
 *   udp-rtt               UDP echo round trips (p50/p99) and datagrams/s, laptop -> ktctl TUN -> pod,
 *                         beside pod -> pod in the lab (bench/udp-rtt.ts)
 *   mesh router           HTTP request latency (keep-alive) from a pod through `ktctl mesh`'s router,
 *                         marked (-> laptop) and unmarked (-> original pods), beside exchange
 *   start-up              `ktctl connect --mode socks` to the first answer through its proxy, in the
 *                         lab (bench/startup.ts; BENCH_STARTUP_BASELINE=DIR adds another build's)
 *   wan (wan-via, wan-kube)  a delay relay (bench/relay.ts) in front of sshd and of the lab's API
 *                         server, at 0/20/80 ms RTT: 1- and 8-flow throughput of ktctl TUN, SOCKS
 *                         and ssh -L beside the 2 MiB channel window's ceiling (bench/wan.ts; its
 *                         own table, and `wan` in the JSON)
 *   resume-*              the resume layer (bench/resume.ts): resume time after a cut in the lab
 *                         (resume-cut-lab), throughput with it and without it (resume-overhead: socks
 *                         and TUN via the shadow; resume-overhead-lab), memory at its bounds (resume-memory)
 * Columns: bulk download and upload (Mbit/s, best of BENCH_REPEAT runs of BENCH_BYTES; ktctl's SOCKS
 * and TUN rows through the same server take turns run by run), request/
 * response latency p50/p99 for 64-byte messages on one connection (after a second of untimed round
 * trips), new connections per second
 * (4 workers, connect + 1-byte echo + close). Same cipher everywhere it can be set (BENCH_CIPHER).
 *
 * Environment: BENCH_BYTES (default 268435456), BENCH_REPEAT (2), BENCH_CIPHER
 * (aes128-gcm@openssh.com), BENCH_RESULTS_DIR (where the JSON goes), BENCH_ONLY (comma-separated row ids to run, e.g. ktctl-startup-lab), BENCH_NODE_ARGS (node flags
 * for ktctl's own processes in the socks and tun rows, e.g. a CPU profile).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNetns, linkNetns, waitForTcp, runOk, type Netns, type Teardown } from '../test/helpers/netns.js';
import { sshdConfig } from '../test/helpers/ssh-fixtures.js';
import { labDown, labUp } from '../test/lab/cli.js';
import { exchangeRows } from './exchange.js';
import { best, kubeRows, type KubeRow } from './kube-connect.js';
import { meshRows } from './mesh.js';
import { startupRows } from './startup.js';
import { benchPortForward } from './lab-portforward.js';
import { udpRows } from './udp-rtt.js';
import { printWanTable, wanKubeRows, wanViaRows, type WanRow } from './wan.js';
import { resumeDetail, resumeLabRows, resumeNetnsRows } from './resume.js';

const ROOT = resolve(import.meta.dirname, '..');
// `npm run` puts node_modules/.bin first in PATH, where ava's dependency @vercel/nft installs an
// unrelated `nft`; sshuttle --method nft must find nftables' nft.
process.env.PATH = (process.env.PATH ?? '').split(':').filter((p) => !p.includes('node_modules')).join(':');
const BYTES = Number(process.env.BENCH_BYTES ?? 256 * 1024 * 1024);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);
const CIPHER = process.env.BENCH_CIPHER ?? 'aes128-gcm@openssh.com';
const ONLY = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
/** Extra node flags for the ktctl processes of the socks and tun rows (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"). */
const NODE_ARGS = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const LAT_COUNT = 2000;
const CONN_SECONDS = 3;

interface Row extends KubeRow {
  /** CPU time of the tunnel's own process per GiB moved (download), where there is one process */
  cpuMsPerGiB?: number;
}

/** utime + stime of a process, in milliseconds (USER_HZ = 100 on Linux). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

class Cleanup implements Teardown {
  readonly #fns: Array<() => unknown> = [];
  teardown(fn: () => unknown): void {
    this.#fns.push(fn);
  }
  async run(): Promise<void> {
    while (this.#fns.length) {
      try {
        await this.#fns.pop()!();
      } catch (e) {
        process.stderr.write(`cleanup: ${String(e)}\n`);
      }
    }
  }
}

const cleanup = new Cleanup();
const work = mkdtempSync(join(tmpdir(), 'ktbench-'));
cleanup.teardown(() => rmSync(work, { recursive: true, force: true }));

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** Starts a long-running process in a namespace and resolves once `ready(output)` says so. */
async function startIn(ns: Netns, cmd: string, args: string[], ready: (out: string) => boolean, what: string, env?: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = ns.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  cleanup.teardown(() => stop(child));
  let out = '';
  await new Promise<void>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not become ready: ${out.slice(-2000)}`)), 20_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (ready(out)) {
        clearTimeout(timer);
        resolveReady();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${out.slice(-2000)}`));
    });
  });
  child.removeAllListeners('exit');
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

async function curlSpeed(ns: Netns, args: string[]): Promise<number> {
  const out = await ns.execOk('curl', ['-sS', '--fail', '-o', '/dev/null', ...args], { timeoutMs: 300_000 });
  return (Number(out.trim()) * 8) / 1e6;
}

async function probe(ns: Netns, args: string[]): Promise<Record<string, number>> {
  const out = await ns.execOk('node', ['--import', 'tsx', join(ROOT, 'bench/client.ts'), ...args], { timeoutMs: 120_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
}

type Via = { kind: 'tcp'; host: string; httpPort: number; echoPort: number } | { kind: 'socks'; port: number } | { kind: 'direct' };

interface Measured {
  row: Row;
  via: Via;
  /** the tunnel's own process, for its CPU time per GiB downloaded */
  pid?: number;
}

/**
 * Measures several paths, interleaved: every download run of each path, then every upload run,
 * then latency and connection rate per path. Paths compared with each other (ktctl's SOCKS and TUN
 * through the same server) thus see the same moments of this machine, not one the first minute
 * and the other the next.
 */
async function measureInterleaved(ns: Netns, paths: Measured[], target: string, uploadFile: string): Promise<void> {
  const url = (host: string, port: number, path: string): string => `http://${host}:${port}${path}`;
  const curlVia = (via: Via, path: string): string[] => {
    if (via.kind === 'tcp') return [url(via.host, via.httpPort, path)];
    if (via.kind === 'socks') return ['-x', `socks5h://127.0.0.1:${via.port}`, url(target, 8080, path)];
    return [url(target, 8080, path)];
  };
  const probeVia = (via: Via): string[] => {
    if (via.kind === 'tcp') return ['tcp', via.host, String(via.echoPort)];
    if (via.kind === 'socks') return ['socks', '127.0.0.1', String(via.port), target, '7007'];
    return ['tcp', target, '7007'];
  };
  const cpu = new Map<Measured, number>(paths.map((m) => [m, 0]));
  for (let i = 0; i < REPEAT; i++) {
    for (const m of paths) {
      const cpu0 = m.pid ? cpuMs(m.pid) : 0;
      const mbit = await curlSpeed(ns, ['-w', '%{speed_download}', ...curlVia(m.via, `/bytes/${BYTES}`)]);
      if (m.pid) cpu.set(m, cpu.get(m)! + cpuMs(m.pid) - cpu0);
      m.row.downloadMbit = Math.max(m.row.downloadMbit ?? 0, mbit);
    }
  }
  for (const m of paths) if (m.pid) m.row.cpuMsPerGiB = cpu.get(m)! / ((REPEAT * BYTES) / 2 ** 30);
  for (let i = 0; i < REPEAT; i++) {
    for (const m of paths) {
      const mbit = await curlSpeed(ns, ['-w', '%{speed_upload}', '-T', uploadFile, ...curlVia(m.via, '/sink')]);
      m.row.uploadMbit = Math.max(m.row.uploadMbit ?? 0, mbit);
    }
  }
  for (const m of paths) {
    const lat = await probe(ns, ['latency', ...probeVia(m.via), String(LAT_COUNT)]);
    m.row.p50us = lat.p50_us;
    m.row.p99us = lat.p99_us;
  }
  for (const m of paths) m.row.connPerSec = (await probe(ns, ['connrate', ...probeVia(m.via), String(CONN_SECONDS)])).per_second;
}

/** One path on its own: download and upload best of REPEAT, latency, connection rate. */
function measure(ns: Netns, row: Row, via: Via, target: string, uploadFile: string, pid?: number): Promise<void> {
  return measureInterleaved(ns, [{ row, via, ...(pid !== undefined ? { pid } : {}) }], target, uploadFile);
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined ? 'n/a' : n.toFixed(digits);
}

function printTable(rows: Row[]): void {
  const head = ['path', 'down Mbit/s', 'up Mbit/s', 'p50 us', 'p99 us', 'conn/s', 'CPU ms/GiB down', 'note'];
  const body = rows.map((r) => [r.path, fmt(r.downloadMbit), fmt(r.uploadMbit), fmt(r.p50us), fmt(r.p99us), fmt(r.connPerSec), fmt(r.cpuMsPerGiB), r.note ?? '']);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  process.stdout.write(line(head) + '\n');
  process.stdout.write('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|\n');
  for (const b of body) process.stdout.write(line(b) + '\n');
}

async function main(): Promise<void> {
  const want = (id: string): boolean => !ONLY || ONLY.includes(id);
  const server = await createNetns(cleanup, 'ktb');
  const client = await createNetns(cleanup, 'ktb');
  const link = await linkNetns(cleanup, client, server);
  const serverIp = link.bIp;
  const target = await server.addTargetAddress();
  await runOk('ip', ['-n', client.name, 'route', 'add', `${target}/32`, 'via', serverIp]);
  log(`server ${server.name} (${serverIp}), client ${client.name} (${link.aIp}), target ${target}`);

  await startIn(server, 'node', ['--import', 'tsx', join(ROOT, 'bench/targets.ts'), target], (o) => o.includes('ready'), 'targets');

  // Keys: one client key, sshd's host key, the shadow's host key; known_hosts pins both servers.
  for (const name of ['client', 'sshd_host', 'shadow_host']) {
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `ktbench-${name}`, '-f', join(work, name)]);
  }
  const clientPub = readFileSync(join(work, 'client.pub'), 'utf8');
  writeFileSync(join(work, 'authorized_keys'), clientPub, { mode: 0o600 });
  const sshdPort = 2022;
  const shadowPort = 2222;
  writeFileSync(
    join(work, 'known_hosts'),
    `[${serverIp}]:${sshdPort} ${readFileSync(join(work, 'sshd_host.pub'), 'utf8').trim()}\n` +
      `[${serverIp}]:${shadowPort} ${readFileSync(join(work, 'shadow_host.pub'), 'utf8').trim()}\n`,
  );
  writeFileSync(join(work, 'sshd_config'), sshdConfig(work, sshdPort, [`ListenAddress ${serverIp}`, `Ciphers ${CIPHER}`]));
  mkdirSync('/run/sshd', { recursive: true });
  const sshd = server.spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(work, 'sshd_config')], { stdio: 'ignore' });
  cleanup.teardown(() => stop(sshd));
  await waitForTcp(server, serverIp, sshdPort);

  if (want('ktctl-socks-shadow') || want('ktctl-tun-shadow') || want('ktctl-tun-idle') || want('resume-overhead') || want('resume-memory')) await startIn(
    server,
    'node',
    [join(ROOT, 'dist/shadow.mjs')],
    (o) => o.includes('"event":"listen"'),
    'shadow',
    {
      KTCTL_HOST_KEY_FILE: join(work, 'shadow_host'),
      KTCTL_AUTHORIZED_KEY_FILE: join(work, 'client.pub'),
      KTCTL_PORT: String(shadowPort),
      KTCTL_LISTEN_ADDRESS: serverIp,
    },
  );

  const uploadFile = join('/dev/shm', `ktbench-${process.pid}`);
  cleanup.teardown(() => rmSync(uploadFile, { force: true }));
  await runOk('dd', ['if=/dev/zero', `of=${uploadFile}`, 'bs=1M', `count=${Math.ceil(BYTES / 1048576)}`, 'status=none']);

  const sshBase = [
    '-i', join(work, 'client'),
    '-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`,
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes',
    '-o', 'ExitOnForwardFailure=yes',
    '-c', CIPHER,
    '-p', String(sshdPort),
  ];
  const rows: Row[] = [];

  if (want('direct')) {
    const row: Row = { id: 'direct', path: 'direct TCP (no tunnel)' };
    log(row.path);
    await measure(client, row, { kind: 'direct' }, target, uploadFile);
    rows.push(row);
  }
  // From here on every path must go through its tunnel: the server drops what the client sends
  // straight to the target, so a tool that silently bypasses its tunnel fails instead of looking
  // fast (sshuttle did, when its nft rules did not match).
  await server.execOk('/usr/sbin/nft', ['-f', '-'], {
    input: `table ip ktbench {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ip saddr ${link.aIp} ip daddr ${target} drop\n  }\n}\n`,
  });
  if (want('ssh-L')) {
    const row: Row = { id: 'ssh-L', path: 'ssh -L (OpenSSH)' };
    log(row.path);
    const p = await startIn(client, 'ssh', [...sshBase, '-N', '-v', '-L', `127.0.0.1:18080:${target}:8080`, '-L', `127.0.0.1:17007:${target}:7007`, `root@${serverIp}`], (o) => o.includes('Entering interactive session') || o.includes('pledge: network'), 'ssh -L');
    await waitForTcp(client, '127.0.0.1', 18080);
    await measure(client, row, { kind: 'tcp', host: '127.0.0.1', httpPort: 18080, echoPort: 17007 }, target, uploadFile);
    await stop(p);
    rows.push(row);
  }
  if (want('ssh-D')) {
    const row: Row = { id: 'ssh-D', path: 'ssh -D (OpenSSH SOCKS)' };
    log(row.path);
    const p = await startIn(client, 'ssh', [...sshBase, '-N', '-v', '-D', '127.0.0.1:11080', `root@${serverIp}`], (o) => o.includes('Entering interactive session') || o.includes('pledge: network'), 'ssh -D');
    await waitForTcp(client, '127.0.0.1', 11080);
    await measure(client, row, { kind: 'socks', port: 11080 }, target, uploadFile);
    await stop(p);
    rows.push(row);
  }
  if (want('sshuttle')) {
    const row: Row = { id: 'sshuttle', path: 'sshuttle (nft)' };
    log(row.path);
    const sshCmd = ['ssh', ...sshBase.filter((a) => a !== '-p' && a !== String(sshdPort))].join(' ');
    const p = await startIn(client, 'sshuttle', ['--method', 'nft', '-r', `root@${serverIp}:${sshdPort}`, '-e', sshCmd, `${target}/32`], (o) => o.includes('Connected'), 'sshuttle');
    await measure(client, row, { kind: 'direct' }, target, uploadFile);
    await stop(p);
    rows.push(row);
  }
  if (want('ssh2')) {
    const row: Row = { id: 'ssh2', path: 'ssh2 forwardOut (bare loop)', note: 'ceiling for ssh2; no curl or SOCKS in the path' };
    log(row.path);
    const bare = async (args: string[]): Promise<Record<string, number>> => {
      const r = await client.exec('node', ['--import', 'tsx', join(ROOT, 'bench/ssh2-bare.ts'), serverIp, String(sshdPort), 'root', join(work, 'client'), join(work, 'sshd_host.pub'), CIPHER, target, ...args], { timeoutMs: 300_000 });
      if (r.code !== 0) throw new Error(`ssh2-bare ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
    };
    row.downloadMbit = await best(REPEAT, async () => (await bare(['download', String(BYTES)])).mbit!);
    row.uploadMbit = await best(REPEAT, async () => (await bare(['upload', String(BYTES)])).mbit!);
    const lat = await bare(['latency', String(LAT_COUNT)]);
    row.p50us = lat.p50_us;
    row.p99us = lat.p99_us;
    row.connPerSec = (await bare(['connrate', String(CONN_SECONDS)])).per_second;
    rows.push(row);
  }
  await ktctlRows({ want, client, serverIp, target, uploadFile, rows, sshdPort, shadowPort });
  // WAN-like rows (bench/wan.ts, its own table): a delay relay in front of sshd (wan-via) and of the
  // lab's API server (wan-kube); `wan` selects both.
  const wanRows: WanRow[] = [];
  if (want('wan') || want('wan-via')) wanRows.push(...(await wanViaRows({ log, client, server, serverIp, sshdPort, target, work, cipher: CIPHER })));
  if (want('resume-overhead') || want('resume-memory')) {
    rows.push(...(await resumeNetnsRows({ client, server, serverIp, target, uploadFile, work, shadowPort, cipher: CIPHER, nodeArgs: NODE_ARGS, bytes: BYTES, startIn, stop, log }, want)));
  }

  // Start-up: from `ktctl connect` to a working proxy (each measured tree brings its own lab up and
  // down, so this comes before the lab below).
  if (want('ktctl-startup-lab')) rows.push(...(await startupRows(log)));

  // Rows that need the lab: the forward path through the port-forward, and the reverse direction
  // (cluster -> laptop through exchange, and the mesh router's cost).
  if (want('ktctl-socks-lab') || want('ktctl-exchange-lab') || want('ktctl-mesh') || want('udp-rtt') || want('wan') || want('wan-kube') || want('resume-cut-lab') || want('resume-overhead-lab')) {
    // The lab path: ktctl on this machine, ssh over the lab API server's port-forward to a shadow
    // pod. The bench brings its own lab up (in a state folder of its own) and down again.
    const stateDir = mkdtempSync(join(tmpdir(), 'ktbench-lab-'));
    log('lab up');
    const { kubeconfig } = await labUp(stateDir);
    cleanup.teardown(async () => {
      await labDown(stateDir);
      rmSync(stateDir, { recursive: true, force: true });
    });
    process.env.KTLAB_KUBECONFIG = kubeconfig;
    // The lab's own ceiling: one port-forward stream without ssh (a bare ws client, and
    // client-node's PortForward), then ktctl through it.
    if (want('ktctl-socks-lab')) {
      const pf = await benchPortForward();
      for (const client of [...new Set(pf.map((r) => r.client))]) {
        const get = (d: 'download' | 'upload'): number | undefined => pf.find((r) => r.client === client && r.direction === d)?.gbit;
        rows.push({ id: 'lab-pf', path: `lab port-forward, ${client}`, downloadMbit: (get('download') ?? 0) * 1000, uploadMbit: (get('upload') ?? 0) * 1000, note: 'no ssh: the lab\'s ceiling' });
      }
      for (const r of await kubeRows(log)) rows.push({ ...r, id: 'ktctl-socks-lab' });
    }
    // exchange: a client pod downloads from / uploads to a server on this machine (rows
    // lab-service-direct and ktctl-exchange-lab); mesh: HTTP request latency through the router.
    if (want('ktctl-exchange-lab')) rows.push(...(await exchangeRows(log)));
    if (want('ktctl-mesh')) rows.push(...(await meshRows(log)));
    // UDP: round trips and datagrams/s from a laptop through ktctl's TUN to a pod, beside pod -> pod.
    if (want('udp-rtt')) rows.push(...(await udpRows(log, stateDir)));
    if (want('wan') || want('wan-kube')) wanRows.push(...(await wanKubeRows({ log, labStateDir: stateDir, kubeconfig })));
    if (want('resume-cut-lab') || want('resume-overhead-lab')) rows.push(...(await resumeLabRows(want, BYTES, log)));
  }
  if (rows.length || !wanRows.length) printTable(rows);
  if (wanRows.length) printWanTable(wanRows);
  const ssh2 = rows.find((r) => r.id === 'ssh2');
  const shuttle = rows.find((r) => r.id === 'sshuttle');
  const ratios: Record<string, number> = {};
  // laptop -> cluster rows only: the exchange and mesh rows run the other way
  for (const r of rows.filter((r) => r.id.startsWith('ktctl') && !/^ktctl-(exchange|mesh)/.test(r.id))) {
    if (ssh2?.downloadMbit && r.downloadMbit) ratios[`${r.id} / ssh2 download`] = r.downloadMbit / ssh2.downloadMbit;
    if (ssh2?.uploadMbit && r.uploadMbit) ratios[`${r.id} / ssh2 upload`] = r.uploadMbit / ssh2.uploadMbit;
    if (shuttle?.downloadMbit && r.downloadMbit) ratios[`${r.id} / sshuttle download`] = r.downloadMbit / shuttle.downloadMbit;
    if (shuttle?.uploadMbit && r.uploadMbit) ratios[`${r.id} / sshuttle upload`] = r.uploadMbit / shuttle.uploadMbit;
  }
  tunRatios(rows, ratios);
  const exchangeHttp = rows.find((r) => r.id === 'ktctl-exchange-http');
  for (const id of ['ktctl-mesh-marked', 'ktctl-mesh-unmarked']) {
    const r = rows.find((x) => x.id === id);
    if (r?.p50us && exchangeHttp?.p50us) ratios[`${id} / ktctl-exchange-http p50`] = r.p50us / exchangeHttp.p50us;
    if (r?.p99us && exchangeHttp?.p99us) ratios[`${id} / ktctl-exchange-http p99`] = r.p99us / exchangeHttp.p99us;
  }
  for (const [k, v] of Object.entries(ratios)) process.stdout.write(`${k}: ${v.toFixed(2)}x\n`);
  const result = { date: new Date().toISOString(), bytes: BYTES, repeat: REPEAT, cipher: CIPHER, node: process.version, rows, ratios, ...(wanRows.length ? { wan: wanRows } : {}), ...(Object.keys(resumeDetail).length > 0 ? { resume: resumeDetail } : {}) };
  // BENCH_RESULTS_DIR: elsewhere than bench/results (bench/compare-builds.ts keeps the committed ones)
  const resultsDir = process.env.BENCH_RESULTS_DIR ?? join(ROOT, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, '-');
  writeFileSync(join(resultsDir, `bench-${stamp}.json`), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
}

// ---------------------------------------------------------------------------------------------
// ktctl's own rows. SOCKS mode (`ktctl connect --mode socks --via ...`): curl and the probes use the
// proxy. TUN mode (`ktctl connect --via ... --includeIps TARGET/32`): they go straight to the target
// address, which the client namespace routes into ktctl's TUN device. Rows ktctl-socks-sshd/-shadow
// and ktctl-tun-sshd/-shadow (SOCKS and TUN through the same server run at once and are measured
// interleaved), and ktctl-tun-idle (VmRSS of the ktctl process holding 1000 concurrent idle flows to
// the echo target through the shadow).

const IDLE_FLOWS = 1000;

/** Opens N connections to HOST:PORT, echoes one byte on each, prints "open N", holds them until stdin ends. */
const IDLE_CLIENT = String.raw`
const net = require('node:net');
const [host, port, n] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
let open = 0;
const socks = [];
for (let i = 0; i < n; i++) {
  const s = net.connect({ host, port });
  socks.push(s);
  s.on('error', (e) => { process.stderr.write('flow ' + i + ': ' + e.message + '\n'); process.exit(1); });
  s.on('connect', () => s.write('x'));
  s.once('data', () => { if (++open === n) process.stdout.write('open ' + n + '\n'); });
}
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

function vmRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function ktctlRows(o: { want: (id: string) => boolean; client: Netns; serverIp: string; target: string; uploadFile: string; rows: Row[]; sshdPort: number; shadowPort: number }): Promise<void> {
  const ids = ['ktctl-socks-sshd', 'ktctl-socks-shadow', 'ktctl-tun-sshd', 'ktctl-tun-shadow', 'ktctl-tun-idle'];
  if (!ids.some(o.want)) return;
  if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('run npm run build first (npm run bench does)');
  const ktctlArgs = (port: number): string[] => [...NODE_ARGS, join(ROOT, 'dist/cli/main.js'), 'connect', '--via', `root@${o.serverIp}:${port}`, '--identity', join(work, 'client'), '--knownHosts', join(work, 'known_hosts'), '--sshCipher', CIPHER];
  const startSocks = (label: string, port: number, proxyPort: number): Promise<ChildProcess> =>
    startIn(o.client, 'node', [...ktctlArgs(port), '--mode', 'socks', '--proxyPort', String(proxyPort)], (out) => out.includes('ALL_PROXY='), label);
  const startTun = (label: string, port: number): Promise<ChildProcess> =>
    startIn(o.client, 'node', [...ktctlArgs(port), '--includeIps', `${o.target}/32`], (out) => out.includes('connected through'), label, { KTCTL_STATE_DIR: join(work, 'tun-state') });
  // The client namespace routes the target over the veth for the other rows; the TUN takes that
  // route over while these rows run (the SOCKS path does not use it: its ssh goes to the server).
  const tunWanted = ids.slice(2).some(o.want);
  if (tunWanted) await runOk('ip', ['-n', o.client.name, 'route', 'del', `${o.target}/32`]);
  try {
    // ktctl's SOCKS and TUN through the same server run side by side, measured interleaved.
    const socksRows: Row[] = [];
    const tunRowsOut: Row[] = [];
    for (const [via, port, proxyPort] of [['sshd', o.sshdPort, 12223], ['shadow', o.shadowPort, 12224]] as const) {
      const paths: Measured[] = [];
      const procs: ChildProcess[] = [];
      if (o.want(`ktctl-socks-${via}`)) {
        const row: Row = { id: `ktctl-socks-${via}`, path: `ktctl socks via ${via}` };
        const p = await startSocks(row.path, port, proxyPort);
        procs.push(p);
        paths.push({ row, via: { kind: 'socks', port: proxyPort }, pid: p.pid! });
        socksRows.push(row);
      }
      let tun: { row: Row; p: ChildProcess } | undefined;
      if (o.want(`ktctl-tun-${via}`)) {
        const row: Row = { id: `ktctl-tun-${via}`, path: `ktctl tun via ${via}` };
        const p = await startTun(row.path, port);
        procs.push(p);
        paths.push({ row, via: { kind: 'direct' }, pid: p.pid! });
        tunRowsOut.push(row);
        tun = { row, p };
      }
      if (paths.length === 0) continue;
      log(paths.map((m) => m.row.path).join(' + ') + (paths.length > 1 ? ' (interleaved)' : ''));
      await measureInterleaved(o.client, paths, o.target, o.uploadFile);
      if (tun) tun.row.note = `ktctl RSS after the row ${vmRss(tun.p.pid!).toFixed(0)} MiB`;
      for (const p of procs) await stop(p);
    }
    o.rows.push(...socksRows, ...tunRowsOut);
    if (o.want('ktctl-tun-idle')) {
      const row: Row = { id: 'ktctl-tun-idle', path: `ktctl tun: ${IDLE_FLOWS} idle flows` };
      log(row.path);
      const p = await startTun('ktctl tun (idle flows)', o.shadowPort);
      const before = vmRss(p.pid!);
      const holder = o.client.spawn('node', ['-e', IDLE_CLIENT, o.target, '7007', String(IDLE_FLOWS)], { stdio: ['pipe', 'pipe', 'pipe'] });
      cleanup.teardown(() => stop(holder));
      let out = '';
      holder.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      holder.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 120_000;
      while (!out.includes(`open ${IDLE_FLOWS}`)) {
        if (holder.exitCode !== null || Date.now() > deadline) throw new Error(`the idle flows did not open: ${out.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 2000));
      const rss = vmRss(p.pid!);
      row.note = `VmRSS ${rss.toFixed(0)} MiB with ${IDLE_FLOWS} flows open (${before.toFixed(0)} MiB before)`;
      holder.stdin?.end();
      await stop(holder);
      await stop(p);
      o.rows.push(row);
    }
  } finally {
    if (tunWanted) await runOk('ip', ['-n', o.client.name, 'route', 'replace', `${o.target}/32`, 'via', o.serverIp]);
  }
}

/** Issue 5's goals as ratios: TUN vs ktctl's own SOCKS and vs sshuttle (throughput), p50 vs ssh -L. */
function tunRatios(rows: Row[], ratios: Record<string, number>): void {
  const by = (id: string): Row | undefined => rows.find((r) => r.id === id);
  const sshL = by('ssh-L');
  for (const via of ['sshd', 'shadow']) {
    const tun = by(`ktctl-tun-${via}`);
    const socks = by(`ktctl-socks-${via}`);
    if (!tun) continue;
    if (socks?.downloadMbit && tun.downloadMbit) ratios[`ktctl-tun-${via} / ktctl-socks-${via} download`] = tun.downloadMbit / socks.downloadMbit;
    if (socks?.uploadMbit && tun.uploadMbit) ratios[`ktctl-tun-${via} / ktctl-socks-${via} upload`] = tun.uploadMbit / socks.uploadMbit;
    if (sshL?.p50us && tun.p50us) ratios[`ktctl-tun-${via} p50 / ssh -L p50`] = tun.p50us / sshL.p50us;
  }
}

try {
  await main();
} finally {
  await cleanup.run();
}
