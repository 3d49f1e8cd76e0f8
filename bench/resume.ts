/**
 * The resume layer's rows (issue 15, "Benchmark", and the memory cost of what it keeps), run by
 * bench/run.ts (BENCH_ONLY ids below). Each part prints its own table; the detail goes into the
 * result JSON under `resume`.
 *
 *   resume-cut-lab       Resume time after a cut, in the lab: `ktctl connect --mode socks --debug`, one
 *                        download through its proxy from a pod, 20 cuts of every port-forward stream of
 *                        the bench's namespace (POST /lab/v1/faults/cut-portforward, as `npm run lab --
 *                        fault cut-portforward -n NS`), each timed from the cut to the first byte moving
 *                        again on the client socket; split by ktctl's debug lines into reconnect (to
 *                        "ssh: connected"), HELLO + attach (to "resume: stream N re-attached") and the
 *                        rest. The download must end with the echo pattern's sha256.
 *                        The pod runs the lab's ktlab/echo image with a command that serves the same
 *                        pattern as its GET /bytes/N (byte k is k % 251), at a fixed rate. The rate has to
 *                        be the server's: a client reading slowly fills the socket buffers behind it and
 *                        then reads through an outage from them, and a stall is what is measured here:
 *                        the longest silence on the client socket in the second after the cut, from the
 *                        cut to the byte that ends it.
 *   resume-overhead      Throughput with the resume layer (the default) and without (`--resumeWindow 0`),
 *                        runs alternating A B A B, each a fresh ktctl process warmed by one short
 *                        download: ktctl socks via the bench's shadow, ktctl TUN via the bench's shadow.
 *   resume-overhead-lab  The same for ktctl socks via the lab's port-forward.
 *   resume-memory        VmRSS of a `ktctl connect --mode socks --via` process holding 200 uploads at their
 *                        bound (--resumeBuffer 1M) while its tunnel is down (a relay between ktctl and the
 *                        shadow, cut and refusing), then the same with --resumeBufferTotal 64M; after the
 *                        relay accepts again every upload completes and the far end's sha256 must match.
 *
 * Environment (beside bench/run.ts's): BENCH_RESUME_CUTS (20), BENCH_RESUME_RATE (bytes/s of the
 * download, 16 MiB), BENCH_RESUME_PAIRS (A/B pairs per overhead row, 8), BENCH_RESUME_STREAMS (200),
 * BENCH_RESUME_ABRUPT=1 (cuts without a close frame, 1006).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { request, type LabEndpoint } from '../test/lab/api/client.js';
import { kubeConfig, lab, waitForReadyPods } from '../test/lab/fixture.js';
import { echoPatternSha256 } from '../test/lab/images/echo.js';
import { runOk, type Netns } from '../test/helpers/netns.js';
import { stopKtctl, type KubeRow } from './kube-connect.js';

const ROOT = resolve(import.meta.dirname, '..');
const KTCTL = join(ROOT, 'dist/cli/main.js');
const CUTS = Number(process.env.BENCH_RESUME_CUTS ?? 20);
const RATE = Number(process.env.BENCH_RESUME_RATE ?? 16 << 20);
const PAIRS = Number(process.env.BENCH_RESUME_PAIRS ?? 8);
const STREAMS = Number(process.env.BENCH_RESUME_STREAMS ?? 200);
const ABRUPT = process.env.BENCH_RESUME_ABRUPT === '1';
/** Flow between cuts: the download moves this long after it came back before the next cut. */
const FLOW_MS = 400;
/** How long a cut's aftermath is watched for its longest silence. */
const WATCH_MS = 1000;
/** The warm-up download of each fresh process in the overhead rows. */
const WARM_BYTES = 64 << 20;

/** Everything the rows found, for the result JSON. */
export const resumeDetail: Record<string, unknown> = {};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function vmRssMiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** utime + stime of a process, in milliseconds (USER_HZ = 100). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function execOut(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 300_000): Promise<string> {
  return new Promise((res, rej) =>
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (e, stdout, stderr) => (e ? rej(new Error(`${cmd} ${args.join(' ')}: ${String(stderr) || e.message}`)) : res(String(stdout)))),
  );
}

function printTable(title: string, head: string[], body: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  process.stdout.write(`\n${title}\n${line(head)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n`);
  for (const b of body) process.stdout.write(line(b) + '\n');
}

/** A ktctl's live figures (`ktctl status --json`, the control socket in `stateDir`): streams resumed and lost. */
async function streamFigures(stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<{ resumed: number; lost: number } | null | undefined> {
  const out = await execOut(process.execPath, [KTCTL, 'status', '--json'], { ...env, KTCTL_STATE_DIR: stateDir }, 30_000).catch(() => undefined);
  if (out === undefined) return undefined;
  const doc = JSON.parse(out) as { sessions: Array<{ streams?: { resumed: number; lost: number } | null }> };
  return doc.sessions[0]?.streams;
}

/** A TCP socket through a SOCKS5 proxy on 127.0.0.1:`proxyPort` to host:port (the name resolved by the proxy). */
async function socksConnect(proxyPort: number, host: string, port: number): Promise<net.Socket> {
  const sock = net.connect({ host: '127.0.0.1', port: proxyPort, noDelay: true });
  let buf = Buffer.alloc(0);
  let want = 0;
  let wake: (() => void) | undefined;
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    if (wake && buf.length >= want) wake();
  };
  const read = (n: number): Promise<Buffer> =>
    new Promise((res, rej) => {
      want = n;
      const done = (): void => {
        wake = undefined;
        const out = buf.subarray(0, n);
        buf = buf.subarray(n);
        res(out);
      };
      if (buf.length >= n) return done();
      wake = done;
      sock.once('error', rej);
    });
  await new Promise<void>((res, rej) => sock.once('connect', res).once('error', rej));
  sock.on('data', onData);
  sock.write(Buffer.from([5, 1, 0]));
  if ((await read(2))[1] !== 0) throw new Error('the SOCKS proxy refused the method');
  const name = Buffer.from(host);
  sock.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 255])]));
  const head = await read(4);
  if (head[1] !== 0) throw new Error(`SOCKS reply ${head[1]} for ${host}:${port}`);
  await read(head[3] === 1 ? 6 : head[3] === 4 ? 18 : (await read(1))[0]! + 2);
  sock.removeListener('data', onData);
  if (buf.length > 0) sock.unshift(buf);
  return sock;
}

// ---------------------------------------------------------------------------------------------
// Resume time after a cut (lab)

/** The pod's server: GET /bytes/N?rate=R serves the ktlab/echo pattern (byte k is k % 251) at R bytes/s. */
const PACED_SERVER = String.raw`
const http = require('node:http');
const CH = Buffer.alloc(251 * 64);
for (let i = 0; i < CH.length; i++) CH[i] = i % 251;
http.createServer((req, res) => {
  const m = /^\/bytes\/(\d+)\?rate=(\d+)$/.exec(req.url || '');
  if (!m) { res.writeHead(404); res.end(); return; }
  const total = Number(m[1]);
  const perTick = Math.max(CH.length, Math.floor(Number(m[2]) / 100 / CH.length) * CH.length);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
  let sent = 0;
  let closed = false;
  res.on('close', () => { closed = true; });
  const tick = () => {
    if (closed) return;
    let ok = true;
    for (let budget = perTick; budget > 0 && sent < total; ) {
      const n = Math.min(CH.length, total - sent);
      ok = res.write(n === CH.length ? CH : CH.subarray(0, n));
      sent += n;
      budget -= n;
    }
    if (sent >= total) { res.end(); return; }
    if (ok) setTimeout(tick, 10); else res.once('drain', () => setTimeout(tick, 10));
  };
  tick();
}).listen(8080, '0.0.0.0');
`;

interface Cut {
  /** ms from the cut request to the first byte after the stall */
  resumeMs: number;
  /** the cut request's round trip (the streams are closed within it) */
  requestMs: number;
  /** bytes that still arrived after the cut, before the stall (already past the tunnel) */
  drained: number;
  /** ms from the cut to ktctl's "ssh: connected", to "resume: stream N re-attached" */
  sshMs?: number;
  attachedMs?: number;
  /** ms from the cut to ktctl's "dropped" line */
  droppedMs?: number;
}

interface Stamped {
  t: number;
  line: string;
}

/** Starts `ktctl connect --mode socks` against the lab; resolves with its proxy port once it serves. */
async function startLabSocks(ns: string, stateDir: string, extra: string[], lines?: Stamped[]): Promise<{ child: ChildProcess; port: number; out: () => string }> {
  const child = spawn(process.execPath, [KTCTL, 'connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns, ...extra], {
    env: { ...process.env, KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let partial = '';
  const onData = (d: Buffer): void => {
    const t = performance.now();
    const text = d.toString();
    out += text;
    if (out.length > 1 << 20) out = out.slice(-(1 << 19));
    if (lines) {
      const parts = (partial + text).split('\n');
      partial = parts.pop()!;
      for (const line of parts) lines.push({ t, line });
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const port = await new Promise<number>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`ktctl connect did not come up: ${out.slice(-3000)}`)), 60_000);
    const check = (): void => {
      const m = /socks5h:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        res(Number(m[1]));
      } else if (child.exitCode !== null) {
        clearTimeout(t);
        rej(new Error(`ktctl connect exited with ${child.exitCode}: ${out.slice(-3000)}`));
      } else setTimeout(check, 50);
    };
    check();
  });
  return { child, port, out: () => out };
}

function labEndpoint(): LabEndpoint {
  const kc = kubeConfig();
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (!cluster?.caData || !user?.token) throw new Error('the lab kubeconfig lacks CA data or a token');
  return { server: cluster.server, ca: Buffer.from(cluster.caData, 'base64'), token: user.token };
}

async function cutRow(ns: string, podIp: string, work: string, log: (line: string) => void): Promise<KubeRow[]> {
  const size = Math.ceil((RATE * (CUTS * ((WATCH_MS + FLOW_MS) / 1000 + 0.5) + 4)) / 65536) * 65536;
  const stateDir = join(work, 'cut-state');
  const lines: Stamped[] = [];
  const ktctl = await startLabSocks(ns, stateDir, ['--debug'], lines);
  try {
    log(`resume-cut-lab: ${size >> 20} MiB at ${(RATE / 2 ** 20).toFixed(0)} MiB/s from ${podIp}, ${CUTS} cuts${ABRUPT ? ' (abrupt)' : ''}`);
    const sock = await socksConnect(ktctl.port, podIp, 8080);
    sock.write(`GET /bytes/${size}?rate=${RATE} HTTP/1.1\r\nHost: ${podIp}\r\nConnection: close\r\n\r\n`);
    const hash = createHash('sha256');
    let head: Buffer | undefined = Buffer.alloc(0);
    let body = 0;
    let last = performance.now();
    /** set while a cut waits for the stall and the first byte after it */
    let watch: { t0: number; times: number[]; sizes: number[] } | undefined;
    const ended = new Promise<void>((res, rej) => {
      sock.on('data', (d: Buffer) => {
        const t = performance.now();
        if (watch) {
          watch.times.push(t);
          watch.sizes.push(d.length);
        }
        last = t;
        if (head !== undefined) {
          head = Buffer.concat([head, d]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          const text = head.subarray(0, end).toString();
          if (!/^HTTP\/1\.1 200/.test(text) || !text.includes(`content-length: ${size}`)) rej(new Error(`unexpected answer: ${text}`));
          d = head.subarray(end + 4);
          head = undefined;
        }
        body += d.length;
        hash.update(d);
      });
      sock.on('end', res);
      sock.on('error', rej);
    });
    ended.catch(() => undefined);
    const ep = labEndpoint();
    const cuts: Cut[] = [];
    const flowing = async (): Promise<void> => {
      const from = body;
      const deadline = performance.now() + 30_000;
      while (body === from || performance.now() - last > 50) {
        if (performance.now() > deadline) throw new Error(`the download does not move (at ${body} bytes): ${ktctl.out().slice(-3000)}`);
        await sleep(10);
      }
    };
    await flowing();
    await sleep(1000);
    for (let i = 0; i < CUTS; i++) {
      await sleep(FLOW_MS);
      await flowing();
      if (body >= size) throw new Error(`the download ended after ${i} cuts: raise BENCH_RESUME_RATE`);
      const t0 = performance.now();
      // Every byte's arrival for a while after the cut: the resume is the longest silence in it
      // (counted from the cut), ended by the first byte after it. A stall threshold would miss a
      // resume quicker than the threshold.
      const w = { t0, times: [] as number[], sizes: [] as number[] };
      watch = w;
      const r = await request(ep, 'POST', '/lab/v1/faults/cut-portforward', { abrupt: ABRUPT, namespace: ns });
      const requestMs = performance.now() - t0;
      if (r.status !== 200 || !((r.body as { cut: number }).cut >= 1)) throw new Error(`the lab did not cut (${r.status}): ${JSON.stringify(r.body)}`);
      await sleep(WATCH_MS);
      watch = undefined;
      if (w.times.length === 0) throw new Error(`cut ${i + 1}: the download did not move again within ${WATCH_MS} ms: ${ktctl.out().slice(-3000)}`);
      let gapEnd = w.times[0]!;
      let gap = gapEnd - t0;
      let drained = 0;
      let before = 0;
      for (let k = 1; k < w.times.length; k++) {
        before += w.sizes[k - 1]!;
        if (w.times[k]! - w.times[k - 1]! > gap) {
          gap = w.times[k]! - w.times[k - 1]!;
          gapEnd = w.times[k]!;
          drained = before;
        }
      }
      const t1 = gapEnd;
      const cut: Cut = { resumeMs: t1 - t0, requestMs, drained };
      const after = lines.filter((l) => l.t >= t0 && l.t <= t1);
      const at = (re: RegExp): number | undefined => {
        const l = after.find((x) => re.test(x.line));
        return l === undefined ? undefined : l.t - t0;
      };
      cut.droppedMs = at(/dropped/);
      cut.sshMs = at(/debug: ssh: connected/);
      cut.attachedMs = at(/resume: stream \d+ re-attached/);
      cuts.push(cut);
      log(`cut ${i + 1}: ${cut.resumeMs.toFixed(0)} ms (ssh ${cut.sshMs?.toFixed(0) ?? '?'}, attached ${cut.attachedMs?.toFixed(0) ?? '?'})`);
    }
    await ended;
    const sha = hash.digest('hex');
    const want = echoPatternSha256(size);
    const figures = await streamFigures(stateDir, { ...process.env, KUBECONFIG: lab().kubeconfig });
    if (body !== size || sha !== want) throw new Error(`the download after ${CUTS} cuts: ${body} bytes, sha256 ${sha}; wanted ${size} bytes, ${want}`);
    const sorted = cuts.map((c) => c.resumeMs).sort((a, b) => a - b);
    const part = (f: (c: Cut) => number | undefined): number[] => cuts.map(f).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    const ssh = part((c) => c.sshMs);
    const attach = part((c) => (c.sshMs !== undefined && c.attachedMs !== undefined ? c.attachedMs - c.sshMs : undefined));
    const deliver = part((c) => (c.attachedMs !== undefined ? c.resumeMs - c.attachedMs : undefined));
    const dropped = part((c) => c.droppedMs);
    const p = (xs: number[], q: number): string => (xs.length ? pct(xs, q).toFixed(0) : 'n/a');
    printTable(`Resume time after a cut (lab, ktctl socks, ${CUTS} cuts${ABRUPT ? ' without a close frame' : ' with a close frame 1001'}, download ${size >> 20} MiB at ${(RATE / 2 ** 20).toFixed(0)} MiB/s; goal p99 <= 1000 ms)`, ['from the cut to', 'p50 ms', 'p99 ms', 'max ms', 'n'], [
      ['ktctl sees the drop ("dropped")', p(dropped, 50), p(dropped, 99), p(dropped, 100), String(dropped.length)],
      ['ssh up again ("ssh: connected")', p(ssh, 50), p(ssh, 99), p(ssh, 100), String(ssh.length)],
      ['  then HELLO + attach ("re-attached")', p(attach, 50), p(attach, 99), p(attach, 100), String(attach.length)],
      ['  then the first byte at the client', p(deliver, 50), p(deliver, 99), p(deliver, 100), String(deliver.length)],
      ['first byte moving again (total)', p(sorted, 50), p(sorted, 99), p(sorted, 100), String(sorted.length)],
    ]);
    process.stdout.write(
      `download: ${size} bytes, sha256 ${sha === want ? 'matches' : 'WRONG'} the echo pattern; ktctl status: streams ${JSON.stringify(figures)}; ` +
        `bytes that still arrived after a cut before its longest silence: at most ${Math.max(...cuts.map((c) => c.drained))}; the cut request took at most ${Math.max(...cuts.map((c) => c.requestMs)).toFixed(0)} ms\n`,
    );
    resumeDetail.cut = { size, rate: RATE, abrupt: ABRUPT, watchMs: WATCH_MS, flowMs: FLOW_MS, cuts, sha256: sha, shaMatches: sha === want, streams: figures };
    return [{ id: 'resume-cut-lab', path: 'ktctl socks via lab: cut -> first byte again', p50us: pct(sorted, 50) * 1000, p99us: pct(sorted, 99) * 1000, note: `${CUTS} cuts; p50 ${pct(sorted, 50).toFixed(0)} ms, p99 ${pct(sorted, 99).toFixed(0)} ms; sha256 ok; streams ${JSON.stringify(figures)}` }];
  } finally {
    await stopKtctl(ktctl.child);
  }
}

// ---------------------------------------------------------------------------------------------
// Overhead: the same build with the resume layer (A, the default) and without (B, --resumeWindow 0)

interface Sample {
  variant: 'on' | 'off';
  downloadMbit: number;
  uploadMbit: number;
  /** CPU time of the ktctl process per GiB downloaded, uploaded */
  cpuMsPerGiB: number;
  upCpuMsPerGiB: number;
  /** the same for the far end's process (the bench's shadow), where the bench has it */
  farCpuMsPerGiB?: number;
  farUpCpuMsPerGiB?: number;
}

interface Started {
  pid: number;
  stop: () => Promise<void>;
  /** curl arguments that reach `path` on the target through this ktctl */
  curl: (path: string) => string[];
}

const VARIANT_ARGS = { on: [] as string[], off: ['--resumeWindow', '0'] };

/**
 * Runs A (resume on) and B (off) in turns, `pairs` times: a download of `bytes` and an upload of
 * `uploadFile` each. `keep`: both processes run side by side for the whole row (warmed once);
 * else each run starts a fresh process (the TUN, one per namespace), warmed by a short download.
 */
async function alternate(what: string, pairs: number, bytes: number, uploadFile: string, curlIn: (args: string[]) => Promise<string>, start: (variant: 'on' | 'off') => Promise<Started>, log: (line: string) => void, o: { keep: boolean; farPid?: number }): Promise<Sample[]> {
  const farPid = o.farPid;
  const upBytes = statSync(uploadFile).size;
  const speed = async (args: string[]): Promise<number> => (Number((await curlIn(['-sS', '--fail', '-o', '/dev/null', ...args])).trim()) * 8) / 1e6;
  const samples: Sample[] = [];
  const kept = o.keep ? { on: await start('on'), off: await start('off') } : undefined;
  try {
    await runPairs();
  } finally {
    await kept?.on.stop();
    await kept?.off.stop();
  }
  return samples;

  async function runPairs(): Promise<void> {
    for (let i = 0; i < pairs; i++) {
      for (const variant of ['on', 'off'] as const) {
        const k = kept?.[variant] ?? (await start(variant));
        try {
          if (!kept || i === 0) await speed(['-w', '%{speed_download}', ...k.curl(`/bytes/${WARM_BYTES}`)]);
          const gib = bytes / 2 ** 30;
          const upGib = upBytes / 2 ** 30;
          const cpu0 = cpuMs(k.pid);
          const far0 = farPid === undefined ? 0 : cpuMs(farPid);
          const down = await speed(['-w', '%{speed_download}', ...k.curl(`/bytes/${bytes}`)]);
          const cpu1 = cpuMs(k.pid);
          const far1 = farPid === undefined ? 0 : cpuMs(farPid);
          const up = await speed(['-w', '%{speed_upload}', '-T', uploadFile, ...k.curl('/sink')]);
          const sample: Sample = { variant, downloadMbit: down, uploadMbit: up, cpuMsPerGiB: (cpu1 - cpu0) / gib, upCpuMsPerGiB: (cpuMs(k.pid) - cpu1) / upGib };
          if (farPid !== undefined) {
            sample.farCpuMsPerGiB = (far1 - far0) / gib;
            sample.farUpCpuMsPerGiB = (cpuMs(farPid) - far1) / upGib;
          }
          samples.push(sample);
          log(`${what} ${variant === 'on' ? 'resume on ' : 'resume off'} run ${i + 1}: down ${down.toFixed(0)} Mbit/s, up ${up.toFixed(0)} Mbit/s; CPU ms/GiB ktctl ${sample.cpuMsPerGiB.toFixed(0)} down ${sample.upCpuMsPerGiB.toFixed(0)} up${farPid === undefined ? '' : `, shadow ${sample.farCpuMsPerGiB!.toFixed(0)} down ${sample.farUpCpuMsPerGiB!.toFixed(0)} up`}`);
        } finally {
          if (!kept) await k.stop();
        }
      }
    }
  }
}

interface OverheadRow {
  path: string;
  samples: Sample[];
}

function overheadSummary(rows: OverheadRow[], note: string): KubeRow[] {
  const out: KubeRow[] = [];
  const body: string[][] = [];
  for (const r of rows) {
    const of = (v: 'on' | 'off', k: keyof Omit<Sample, 'variant'>): number => median(r.samples.filter((s) => s.variant === v).map((s) => s[k] ?? NaN));
    const line = (k: 'downloadMbit' | 'uploadMbit', label: string): void => {
      const on = of('on', k);
      const off = of('off', k);
      const runs = (v: 'on' | 'off'): string => r.samples.filter((s) => s.variant === v).map((s) => s[k].toFixed(0)).join(' ');
      // the runs in pairs (on, off as they ran): the median of on/off within each pair
      const ratios: number[] = [];
      for (let i = 0; i + 1 < r.samples.length; i += 2) ratios.push(r.samples[i]![k] / r.samples[i + 1]![k]);
      body.push([`${r.path}, ${label}`, off.toFixed(0), on.toFixed(0), (on / off).toFixed(3), median(ratios).toFixed(3), `${((1 - on / off) * 100).toFixed(1)}%`, `off: ${runs('off')}; on: ${runs('on')}`]);
    };
    line('downloadMbit', 'download');
    line('uploadMbit', 'upload');
    const cpuLine = (k: 'cpuMsPerGiB' | 'upCpuMsPerGiB' | 'farCpuMsPerGiB' | 'farUpCpuMsPerGiB', label: string): void => {
      if (Number.isNaN(of('on', k))) return;
      body.push([`${r.path}, ${label}`, of('off', k).toFixed(0), of('on', k).toFixed(0), (of('on', k) / of('off', k)).toFixed(3), '', '', '(CPU ms per GiB, medians)']);
    };
    cpuLine('cpuMsPerGiB', 'ktctl CPU, download');
    cpuLine('upCpuMsPerGiB', 'ktctl CPU, upload');
    cpuLine('farCpuMsPerGiB', 'shadow CPU, download');
    cpuLine('farUpCpuMsPerGiB', 'shadow CPU, upload');
    out.push({
      id: r.path.includes('lab') ? 'resume-overhead-lab' : 'resume-overhead',
      path: `${r.path} (resume on / off)`,
      downloadMbit: of('on', 'downloadMbit'),
      uploadMbit: of('on', 'uploadMbit'),
      note: `off ${of('off', 'downloadMbit').toFixed(0)}/${of('off', 'uploadMbit').toFixed(0)} Mbit/s; on/off down ${(of('on', 'downloadMbit') / of('off', 'downloadMbit')).toFixed(3)}, up ${(of('on', 'uploadMbit') / of('off', 'uploadMbit')).toFixed(3)} (medians)`,
    });
  }
  printTable(`Resume layer overhead (${note}; medians; goal: on/off >= 0.95)`, ['path', 'off Mbit/s', 'on Mbit/s', 'on/off', 'pairs: median on/off', 'overhead', 'runs'], body);
  return out;
}

async function labOverheadRow(ns: string, podIp: string, work: string, uploadFile: string, bytes: number, log: (line: string) => void): Promise<KubeRow[]> {
  const start = async (variant: 'on' | 'off'): Promise<Started> => {
    const k = await startLabSocks(ns, join(work, `ovh-${variant}`), VARIANT_ARGS[variant]);
    return { pid: k.child.pid!, stop: () => stopKtctl(k.child), curl: (path) => ['-x', `socks5h://127.0.0.1:${k.port}`, `http://${podIp}:8080${path}`] };
  };
  const samples = await alternate('ktctl socks via lab', PAIRS, bytes, uploadFile, (args) => execOut('curl', args), start, log, { keep: true });
  resumeDetail.overheadLab = { bytes, pairs: PAIRS, samples };
  return overheadSummary([{ path: 'ktctl socks via lab port-forward', samples }], `${PAIRS} pairs, ${bytes >> 20} MiB each way`);
}

/** The lab rows: `resume-cut-lab`, `resume-overhead-lab`. Needs the lab up (KTLAB_KUBECONFIG) and a build. */
export async function resumeLabRows(want: (id: string) => boolean, bytes: number, log: (line: string) => void): Promise<KubeRow[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const ns = `ktbench-resume-${randomBytes(3).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ktbench-resume-'));
  await core.createNamespace({ body: { metadata: { name: ns } } });
  const rows: KubeRow[] = [];
  try {
    await core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name: 'paced', labels: { app: 'paced' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', command: [process.execPath, '-e', PACED_SERVER], ports: [{ containerPort: 8080 }] }] } },
    });
    await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'bulk', labels: { app: 'bulk' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
    const pacedIp = (await waitForReadyPods(ns, 'app=paced', 1))[0]!.status!.podIP!;
    const bulkIp = (await waitForReadyPods(ns, 'app=bulk', 1))[0]!.status!.podIP!;
    if (want('resume-cut-lab')) rows.push(...(await cutRow(ns, pacedIp, work, log)));
    if (want('resume-overhead-lab')) {
      const uploadFile = join(work, 'upload');
      writeFileSync(uploadFile, randomBytes(Math.min(bytes, 64 << 20)));
      rows.push(...(await labOverheadRow(ns, bulkIp, work, uploadFile, bytes, log)));
    }
    return rows;
  } finally {
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The netns rows (bench/run.ts's client and server namespaces, its shadow and targets)

export interface ResumeNetns {
  client: Netns;
  server: Netns;
  serverIp: string;
  /** bench/targets.ts's address in the server namespace (HTTP :8080) */
  target: string;
  uploadFile: string;
  /** bench/run.ts's key folder: client (identity), shadow_host.pub, known_hosts */
  work: string;
  shadowPort: number;
  cipher: string;
  nodeArgs: string[];
  bytes: number;
  /** Starts a process in a namespace, resolves once `ready(output)`; killed at the bench's end. */
  startIn: (ns: Netns, cmd: string, args: string[], ready: (out: string) => boolean, what: string, env?: NodeJS.ProcessEnv) => Promise<ChildProcess>;
  stop: (child: ChildProcess) => Promise<void>;
  log: (line: string) => void;
}

/** The rows `resume-overhead` (socks and TUN via the shadow) and `resume-memory`. */
export async function resumeNetnsRows(o: ResumeNetns, want: (id: string) => boolean): Promise<KubeRow[]> {
  const rows: KubeRow[] = [];
  const stateRoot = mkdtempSync(join(tmpdir(), 'ktbr-'));
  try {
    if (want('resume-overhead')) rows.push(...(await netnsOverhead(o, stateRoot)));
    if (want('resume-memory')) rows.push(...(await memoryRows(o, stateRoot)));
  } finally {
    rmSync(stateRoot, { recursive: true, force: true });
  }
  return rows;
}

function viaArgs(o: ResumeNetns, host: string, port: number, knownHosts = join(o.work, 'known_hosts')): string[] {
  return [...o.nodeArgs, KTCTL, 'connect', '--via', `root@${host}:${port}`, '--identity', join(o.work, 'client'), '--knownHosts', knownHosts, '--sshCipher', o.cipher];
}

async function netnsOverhead(o: ResumeNetns, stateRoot: string): Promise<KubeRow[]> {
  const curlIn = (args: string[]): Promise<string> => o.client.execOk('curl', args, { timeoutMs: 300_000 });
  let n = 0;
  const socks = async (variant: 'on' | 'off'): Promise<Started> => {
    const port = 12230 + (n++ % 50);
    const p = await o.startIn(o.client, 'node', [...viaArgs(o, o.serverIp, o.shadowPort), '--mode', 'socks', '--proxyPort', String(port), ...VARIANT_ARGS[variant]], (out) => out.includes('ALL_PROXY='), `ktctl socks (resume ${variant})`, {
      KTCTL_STATE_DIR: join(stateRoot, `s${n}`),
    });
    return { pid: p.pid!, stop: () => o.stop(p), curl: (path) => ['-x', `socks5h://127.0.0.1:${port}`, `http://${o.target}:8080${path}`] };
  };
  const tun = async (variant: 'on' | 'off'): Promise<Started> => {
    const p = await o.startIn(o.client, 'node', [...viaArgs(o, o.serverIp, o.shadowPort), '--includeIps', `${o.target}/32`, ...VARIANT_ARGS[variant]], (out) => out.includes('connected through'), `ktctl tun (resume ${variant})`, {
      KTCTL_STATE_DIR: join(stateRoot, `t${n++}`),
    });
    return { pid: p.pid!, stop: () => o.stop(p), curl: (path) => [`http://${o.target}:8080${path}`] };
  };
  // the bench's shadow: the one process of the server namespace that runs dist/shadow.mjs
  const pids = (await runOk('ip', ['netns', 'pids', o.server.name])).split(/\s+/).filter(Boolean).map(Number);
  const shadowPid = pids.find((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('shadow.mjs');
    } catch {
      return false;
    }
  });
  const socksSamples = await alternate('ktctl socks via shadow', PAIRS, o.bytes, o.uploadFile, curlIn, socks, o.log, { keep: true, farPid: shadowPid });
  // The TUN takes the target's route over while it runs (as in bench/run.ts's TUN rows).
  await runOk('ip', ['-n', o.client.name, 'route', 'del', `${o.target}/32`]);
  let tunSamples: Sample[];
  try {
    tunSamples = await alternate('ktctl tun via shadow', PAIRS, o.bytes, o.uploadFile, curlIn, tun, o.log, { keep: false, farPid: shadowPid });
  } finally {
    await runOk('ip', ['-n', o.client.name, 'route', 'replace', `${o.target}/32`, 'via', o.serverIp]);
  }
  resumeDetail.overhead = { bytes: o.bytes, pairs: PAIRS, socks: socksSamples, tun: tunSamples };
  return overheadSummary(
    [
      { path: 'ktctl socks via shadow', samples: socksSamples },
      { path: 'ktctl tun via shadow', samples: tunSamples },
    ],
    `${PAIRS} pairs A B A B, ${o.bytes >> 20} MiB each way; socks: both processes side by side, TUN: a fresh process each run, warmed by ${WARM_BYTES >> 20} MiB`,
  );
}

// ---------------------------------------------------------------------------------------------
// Memory: 200 uploads held at their bound while the tunnel is down

/** A TCP relay on 127.0.0.1:PORT to HOST:TPORT; stdin lines "cut" (drop every pair, refuse new ones) and "open". */
const RELAY = String.raw`
const net = require('node:net');
const [port, host, tport] = process.argv.slice(1);
const pairs = new Set();
let refusing = false;
net.createServer({ noDelay: true }, (a) => {
  if (refusing) { a.destroy(); return; }
  const b = net.connect({ host, port: Number(tport), noDelay: true });
  const pair = [a, b];
  pairs.add(pair);
  const end = () => { pairs.delete(pair); a.destroy(); b.destroy(); };
  a.on('error', end).on('close', end);
  b.on('error', end).on('close', end);
  a.pipe(b); b.pipe(a);
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
let buf = '';
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const cmd = buf.slice(0, i); buf = buf.slice(i + 1);
    if (cmd === 'cut') { refusing = true; for (const [a, b] of [...pairs]) { a.destroy(); b.destroy(); } }
    if (cmd === 'open') refusing = false;
    process.stdout.write(cmd + ' done\n');
  }
});
process.stdin.on('end', () => process.exit(0));
`;

/** The far end of the uploads: each connection's bytes and sha256, sent back at its end. */
const SINK = String.raw`
const net = require('node:net');
const { createHash } = require('node:crypto');
net.createServer({ allowHalfOpen: true }, (s) => {
  const h = createHash('sha256');
  let n = 0;
  s.on('data', (d) => { n += d.length; h.update(d); });
  s.on('end', () => s.end(n + ' ' + h.digest('hex') + '\n'));
  s.on('error', () => s.destroy());
}).listen(Number(process.argv[2]), process.argv[1], () => process.stdout.write('ready\n'));
`;

/**
 * N uploads through a SOCKS proxy: opens them all ("open N"), then on stdin "go" writes on each a
 * 16-byte header (its index) and a shared body of SIZE bytes and ends it; checks the sha256 each
 * connection's far end answers and prints one JSON line.
 */
const UPLOADER = String.raw`
const net = require('node:net');
const { createHash, randomBytes } = require('node:crypto');
const [proxyPort, host, port, n, size] = process.argv.slice(1).map((v, i) => (i === 1 ? v : Number(v)));
const body = randomBytes(size);
const socks = [];
function connect(i) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: proxyPort });
    let got = Buffer.alloc(0);
    let stage = 0;
    const name = Buffer.from(host);
    const onData = (d) => {
      got = Buffer.concat([got, d]);
      if (stage === 0 && got.length >= 2) { got = got.subarray(2); stage = 1; s.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 255])])); }
      const need = got[3] === 1 ? 10 : got[3] === 4 ? 22 : got.length > 4 ? 7 + got[4] : 1e9;
      if (stage === 1 && got.length >= 4 && got[1] !== 0) return reject(new Error('SOCKS reply ' + got[1]));
      if (stage === 1 && got.length >= need) {
        s.removeListener('data', onData);
        resolve(s);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.on('connect', () => s.write(Buffer.from([5, 1, 0])));
  });
}
(async () => {
  for (let i = 0; i < n; i++) socks.push(await connect(i));
  process.stdout.write('open ' + n + '\n');
  await new Promise((r) => process.stdin.once('data', r));
  const results = socks.map((s, i) => new Promise((resolve) => {
    const head = Buffer.alloc(16); head.writeUInt32BE(i, 0);
    const want = createHash('sha256').update(head).update(body).digest('hex');
    let answer = '';
    s.on('data', (d) => (answer += d));
    s.on('error', (e) => resolve({ i, ok: false, error: e.message }));
    s.on('end', () => resolve({ i, ok: answer.trim() === (16 + size) + ' ' + want, answer: answer.trim() }));
    s.write(head);
    s.end(body);
  }));
  process.stdout.write('writing\n');
  const all = await Promise.all(results);
  const bad = all.filter((r) => !r.ok);
  process.stdout.write(JSON.stringify({ done: all.length, ok: all.length - bad.length, bad: bad.slice(0, 5) }) + '\n');
  process.exit(0);
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
`;

interface LineProc {
  child: ChildProcess;
  out: () => string;
  waitFor: (text: string, ms: number) => Promise<void>;
}

function lineProc(child: ChildProcess): LineProc {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return {
    child,
    out: () => out,
    async waitFor(text, ms) {
      const deadline = Date.now() + ms;
      while (!out.includes(text)) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no "${text}" within ${ms / 1000} s: ${out.slice(-2000)}`);
        await sleep(50);
      }
    },
  };
}

/** Waits until the process's RSS changes by less than 1 MiB over 2 s (at most `ms`). */
async function steadyRss(pid: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let prev = vmRssMiB(pid);
  for (;;) {
    await sleep(2000);
    const now = vmRssMiB(pid);
    if (Math.abs(now - prev) < 1 || Date.now() > deadline) return now;
    prev = now;
  }
}

async function memoryRows(o: ResumeNetns, stateRoot: string): Promise<KubeRow[]> {
  const BOUND = 1 << 20;
  const PER_STREAM = 3 << 20;
  const relayPort = 12290;
  const sinkPort = 7011;
  const knownHosts = join(stateRoot, 'known_hosts');
  writeFileSync(knownHosts, `${readFileSync(join(o.work, 'known_hosts'), 'utf8')}[127.0.0.1]:${relayPort} ${readFileSync(join(o.work, 'shadow_host.pub'), 'utf8').trim()}\n`);
  await o.startIn(o.server, 'node', ['-e', SINK, o.target, String(sinkPort)], (out) => out.includes('ready'), 'upload sink');
  const rows: KubeRow[] = [];
  const body: string[][] = [];
  const detail: unknown[] = [];
  // The last run is the baseline for the peak: the same uploads with no resume layer and no cut.
  for (const total of [256 << 20, 64 << 20, 0]) {
    const label = total === 0 ? '--resumeWindow 0, no cut' : `--resumeBuffer 1M --resumeBufferTotal ${total >> 20}M`;
    o.log(`resume-memory: ${STREAMS} uploads, ${label}`);
    const relayChild = o.client.spawn('node', ['-e', RELAY, String(relayPort), o.serverIp, String(o.shadowPort)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const relay = lineProc(relayChild);
    const stateDir = join(stateRoot, `mem${total >> 20}`);
    mkdirSync(stateDir, { recursive: true });
    let uploader: LineProc | undefined;
    let ktctl: ChildProcess | undefined;
    try {
      await relay.waitFor('ready', 10_000);
      const proxyPort = 12280;
      ktctl = await o.startIn(
        o.client,
        'node',
        [...viaArgs(o, '127.0.0.1', relayPort, knownHosts), '--mode', 'socks', '--proxyPort', String(proxyPort), ...(total === 0 ? ['--resumeWindow', '0'] : ['--resumeBuffer', '1M', '--resumeBufferTotal', `${total >> 20}M`])],
        (out) => out.includes('ALL_PROXY='),
        `ktctl socks (${label})`,
        { KTCTL_STATE_DIR: stateDir },
      );
      const pid = ktctl.pid!;
      const idle = await steadyRss(pid, 6000);
      uploader = lineProc(o.client.spawn('node', ['-e', UPLOADER, String(proxyPort), o.target, String(sinkPort), String(STREAMS), String(PER_STREAM)], { stdio: ['pipe', 'pipe', 'pipe'] }));
      await uploader.waitFor(`open ${STREAMS}`, 60_000);
      const before = await steadyRss(pid, 10_000);
      if (total > 0) {
        relayChild.stdin!.write('cut\n');
        await relay.waitFor('cut done', 5000);
        await sleep(500);
      }
      uploader.child.stdin!.write('go\n');
      await uploader.waitFor('writing', 30_000);
      const atBound = total > 0 ? await steadyRss(pid, 60_000) : NaN;
      const kept = Math.min(STREAMS * BOUND, total);
      if (total > 0) relayChild.stdin!.write('open\n');
      await uploader.waitFor('"done"', 120_000);
      const result = JSON.parse(uploader.out().split('\n').find((l) => l.includes('"done"'))!) as { done: number; ok: number; bad: unknown[] };
      const figures = await streamFigures(stateDir);
      const afterDone = vmRssMiB(pid);
      const peak = vmRssMiB(pid, 'VmHWM');
      const perMiB = (atBound - before) / (kept / 2 ** 20);
      const f = (n: number, d = 0): string => (Number.isNaN(n) ? '-' : n.toFixed(d));
      body.push([label, f(idle), f(before), f(atBound), total > 0 ? String(kept >> 20) : '-', f(atBound - before), f(perMiB, 2), f(afterDone), f(peak), `${result.ok}/${result.done}`, JSON.stringify(figures)]);
      detail.push({ label, streams: STREAMS, perStream: PER_STREAM, idleMiB: idle, beforeMiB: before, atBoundMiB: atBound, boundKeptMiB: kept / 2 ** 20, perBufferedMiB: perMiB, afterMiB: afterDone, peakMiB: peak, result, streamsFigures: figures });
      rows.push({
        id: 'resume-memory',
        path: `ktctl socks, ${STREAMS} uploads, ${label}`,
        note: total > 0 ? `VmRSS ${f(before)} -> ${f(atBound)} MiB for ${kept >> 20} MiB kept (${f(perMiB, 2)} MiB RSS per MiB); peak ${f(peak)} MiB; ${result.ok}/${result.done} sha256 ok after` : `peak VmRSS ${f(peak)} MiB; ${result.ok}/${result.done} sha256 ok`,
      });
      if (result.ok !== result.done || result.done !== STREAMS) throw new Error(`resume-memory (${label}): ${result.ok} of ${STREAMS} uploads arrived intact after the tunnel came back: ${JSON.stringify(result.bad)}`);
    } finally {
      uploader?.child.kill('SIGKILL');
      if (ktctl) await o.stop(ktctl);
      relayChild.stdin?.end();
      relayChild.kill();
    }
  }
  printTable(
    `Resume layer memory, MiB (ktctl socks --via the bench's shadow through a relay; ${STREAMS} uploads of ${PER_STREAM >> 20} MiB, the relay cut and refusing while they write)`,
    ['limits', 'RSS idle', `RSS ${STREAMS} open`, 'RSS at bound', 'kept (bounds) MiB', 'RSS grew MiB', 'RSS MiB per kept MiB', 'RSS after', 'peak (VmHWM)', 'sha256 ok', 'status streams'],
    body,
  );
  resumeDetail.memory = detail;
  return rows;
}
