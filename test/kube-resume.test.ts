/**
 * Open connections survive a dropped tunnel, on the lab: the API server closes every port-forward
 * stream of this file's namespace (`fault cut-portforward`) three times in the middle of a 200 MB
 * transfer, and the transfer completes with the right SHA-256. Through SOCKS and TUN (download and
 * upload), `forward` with an interactive WebSocket session that keeps typing, and a pod uploading to
 * the laptop through `exchange`. `ktctl status --json` counts the streams resumed (none lost).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { request, type LabEndpoint } from './lab/api/client.js';
import { CoreV1Api } from '@kubernetes/client-node';
import { endpointOf, fileNamespace, freezeShadow, kubeConfig, labExec, thawShadow, waitForReadyPods } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { closeServer, ktctlObjects, labKtctl, laptopServer, MANAGED, type CliRun } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { echoPatternSha256 } from './lab/images/echo.js';
import { REPO } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-rsm');
const lk = labKtctl(test, 'kt-rsm');
const SIZE = 200 * 1024 * 1024;
/** Slow enough that three cuts land inside the transfer, whatever the machine does meanwhile. */
const RATE = '60M';
let echoPod = '';

test.before(async () => {
  echoPod = (await deployEcho(ns, { echo: [{ port: 80, targetPort: 8080, name: 'http' }] })).metadata!.name!;
});

const admin = (): LabEndpoint => endpointOf();

/** The lab closes every port-forward stream to this namespace's pods, as a dropped connection would. */
async function cut(): Promise<void> {
  const r = await request(admin(), 'POST', '/lab/v1/faults/cut-portforward', { namespace: ns });
  if (r.status !== 200) throw new Error(`the lab refused the fault (${r.status}): ${JSON.stringify(r.body)}`);
}

/** Cuts when `progress()` passes each quarter of `total`; stops early when `done` settles. */
async function cutThrice(progress: () => number, total: number, done: Promise<unknown>): Promise<number> {
  let finished = false;
  void done.finally(() => (finished = true));
  let cuts = 0;
  for (const mark of [0.25, 0.5, 0.75]) {
    while (!finished && progress() < total * mark) await new Promise((r) => setTimeout(r, 10));
    if (finished) break;
    await cut();
    cuts++;
  }
  return cuts;
}

interface Proc {
  pid: number;
  done: Promise<{ code: number; stdout: string; stderr: string }>;
}

function start(t: ExecutionContext, argv: string[]): Proc {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr })));
  return { pid: child.pid!, done };
}

/** Bytes a process read so far (its uploads read their file as they send it). */
function bytesRead(pid: number): number {
  try {
    return Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function tmp(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'kt-rsm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A file of SIZE random bytes, and its SHA-256. */
function randomFile(dir: string): { path: string; sha: string } {
  const path = join(dir, 'up');
  const body = randomBytes(SIZE);
  writeFileSync(path, body);
  return { path, sha: createHash('sha256').update(body).digest('hex') };
}

/** This run's resume counts from `ktctl status --json`. */
async function streams(run: CliRun): Promise<{ resumed: number; lost: number }> {
  const r = await lk.run(['status', '--json', '-n', ns]);
  const sessions = (JSON.parse(r.stdout) as { sessions: Array<{ pid: number; streams?: { resumed: number; lost: number } | null }> }).sessions;
  const mine = sessions.find((s) => s.pid === run.child.pid);
  if (!mine?.streams) throw new Error(`no resume figures for pid ${run.child.pid}: ${r.stdout}`);
  return mine.streams;
}

async function stopClean(t: ExecutionContext, run: CliRun): Promise<void> {
  t.notRegex(run.log(), /stream \d+ reset|will not survive/);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
}

/** Download and upload of SIZE bytes each through `curl` (argv before the URL), three cuts each. */
async function transfers(t: ExecutionContext, run: CliRun, curl: string[], base: string): Promise<void> {
  const dir = tmp(t);
  const down = join(dir, 'down');
  const get = start(t, [...curl, '-sS', '--limit-rate', RATE, '-o', down, `${base}/bytes/${SIZE}`]);
  t.is(await cutThrice(() => sizeOf(down), SIZE, get.done), 3, 'three cuts inside the download');
  const got = await get.done;
  t.is(got.code, 0, got.stderr);
  t.is(sizeOf(down), SIZE);
  const h = createHash('sha256');
  for await (const c of createReadStream(down)) h.update(c as Buffer);
  t.is(h.digest('hex'), echoPatternSha256(SIZE));

  const up = randomFile(dir);
  const put = start(t, [...curl, '-sS', '--limit-rate', RATE, '-X', 'POST', '-T', up.path, '-H', 'content-type: application/octet-stream', `${base}/sink`]);
  t.is(await cutThrice(() => bytesRead(put.pid), SIZE, put.done), 3, 'three cuts inside the upload');
  const sent = await put.done;
  t.is(sent.code, 0, sent.stderr);
  t.deepEqual(JSON.parse(sent.stdout), { bytes: SIZE, sha256: up.sha });

  const s = await streams(run);
  t.true(s.resumed >= 6, `resumed ${s.resumed}`);
  t.is(s.lost, 0);
}

test.serial('SOCKS: a 200 MB download and a 200 MB upload, each cut three times, arrive whole', async (t) => {
  const run = lk.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '-n', ns]);
  const port = Number((await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/))[1]);
  await transfers(t, run, ['curl', '--socks5-hostname', `127.0.0.1:${port}`], `http://echo.${ns}`);
  await stopClean(t, run);
});

test.serial('TUN: a 200 MB download and a 200 MB upload, each cut three times, arrive whole', async (t) => {
  const laptop = `kt-rsm-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir: process.env.KTLAB_DIR ?? join(REPO, '.lab') });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  const run = lk.start(t, ['connect', '-n', ns], { netns: laptop });
  await run.waitFor(/press Ctrl-C to disconnect/);
  await transfers(t, run, ['ip', 'netns', 'exec', laptop, 'curl'], `http://echo.${ns}`);
  await stopClean(t, run);
});

test.serial('forward: an interactive WebSocket session keeps typing across three cuts; every message comes back once, in order', async (t) => {
  const run = lk.start(t, ['forward', 'echo', '0:80', '-n', ns]);
  const port = Number((await run.waitFor(/^forwarding 127\.0\.0\.1:(\d+) -> /m))[1]);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  t.teardown(() => ws.terminate());
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const echoed: string[] = [];
  ws.on('message', (m) => echoed.push(m.toString()));
  const closed = new Promise<number>((resolve) => ws.once('close', resolve));
  const sent: string[] = [];
  for (let i = 0; i < 200; i++) {
    const text = `keystroke ${i} ${'x'.repeat(i % 50)}`;
    sent.push(text);
    ws.send(text);
    if (i === 50 || i === 100 || i === 150) await cut();
    await new Promise((r) => setTimeout(r, 15));
  }
  while (echoed.length < sent.length && ws.readyState === WebSocket.OPEN) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(echoed, sent);
  t.is(ws.readyState, WebSocket.OPEN, 'the session is still open');
  ws.close();
  t.is(await closed, 1005);
  const s = await streams(run);
  t.true(s.resumed >= 3, `resumed ${s.resumed}`);
  t.is(s.lost, 0);
  await stopClean(t, run);
});

test.serial('exchange: a pod uploading 200 MB to the laptop through the exchanged service survives three cuts', async (t) => {
  let received = 0;
  const { server, port } = await laptopServer((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => {
      h.update(c);
      n += c.length;
      received = n;
    });
    req.on('end', () => res.end(`${n} ${h.digest('hex')}`));
  });
  t.teardown(() => closeServer(server));
  const run = lk.start(t, ['exchange', 'echo', '--expose', `${port}:80`, '-n', ns]);
  await run.waitFor(/exchanged service \S+ port 80/);
  // The upload: AES-256-CTR of zeros under a random key, made in the pod by openssl; the same here.
  const key = randomBytes(32);
  const stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const h = createHash('sha256');
  for (let left = SIZE; left > 0; left -= 1 << 20) h.update(stream.update(Buffer.alloc(Math.min(left, 1 << 20))));
  const want = `${SIZE} ${h.digest('hex')}`;
  const script =
    `openssl enc -aes-256-ctr -nosalt -K ${key.toString('hex')} -iv ${'0'.repeat(32)} -in /dev/zero 2>/dev/null | head -c ${SIZE} | ` +
    `curl -sS --limit-rate ${RATE} -X POST -T - http://echo.${ns}/upload`;
  // The service follows the exchange a moment later (endpoints, then the lab's rules): until then
  // the pod's own server answers; ask until the laptop does.
  for (let i = 0; i < 50; i++) {
    const probe = await labExec({ namespace: ns, name: echoPod }, ['curl', '-sS', '-m', '5', '-X', 'POST', '--data-binary', 'x', `http://echo.${ns}/probe`]);
    if (probe.stdout === '1 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  received = 0;
  const upload = labExec({ namespace: ns, name: echoPod }, ['sh', '-c', script]);
  t.is(await cutThrice(() => received, SIZE, upload), 3, 'three cuts inside the upload');
  const r = await upload;
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, want);
  const s = await streams(run);
  t.true(s.resumed >= 3, `resumed ${s.resumed}`);
  t.is(s.lost, 0);
  await stopClean(t, run);
  await waitForReadyPods(ns, 'app=echo', 1);
});

test.serial('a freeze longer than the resume window: the stream is reset on both ends, new connections work, the shadow holds no socket', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const run = lk.start(t, ['connect', '--mode', 'socks', '--proxyPort', '0', '--resumeWindow', '3', '--debug', '-n', ns]);
  const port = Number((await run.waitFor(/socks5h:\/\/127\.0\.0\.1:(\d+)/))[1]);
  const shadow = (await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGED })).items[0]!.metadata!.name!;
  const echoIp = (await core.readNamespacedPod({ name: echoPod, namespace: ns })).status!.podIP!;
  const dir = tmp(t);
  const down = join(dir, 'down');
  // A download that lasts (1 MB/s): open when the shadow freezes.
  const get = start(t, ['curl', '-sS', '--socks5-hostname', `127.0.0.1:${port}`, '--limit-rate', '1M', '-o', down, `http://echo.${ns}/bytes/${SIZE}`]);
  while (sizeOf(down) < 1 << 20) await new Promise((r) => setTimeout(r, 20));
  const toEcho = ['ss', '-tnH', 'state', 'all', 'dst', `${echoIp}:8080`];
  const during = await labExec({ namespace: ns, name: shadow }, toEcho);
  t.is(during.stdout.trim().split('\n').length, 1, `the shadow's socket to the echo pod while downloading: ${during.stdout}`);
  t.teardown(() => thawShadow({ namespace: ns }).then(() => undefined));
  // Frozen for longer than the window, and the port-forward cut so that ktctl notices at once.
  await freezeShadow(12, { namespace: ns, pod: shadow });
  await cut();
  const got = await get.done;
  t.not(got.code, 0, 'the download was reset, not completed');
  await run.waitFor(/stream \d+ reset: the tunnel did not come back within the resume window \(3 s\)/, 20_000);
  // After the thaw: the tunnel comes back, new connections work.
  await run.waitFor(/^reconnected to shadow pod/m, 60_000);
  const again = await new Promise<{ code: number; stdout: string }>((resolve) =>
    start(t, ['curl', '-sS', '-m', '10', '--socks5-hostname', `127.0.0.1:${port}`, `http://echo.${ns}/after`]).done.then(resolve),
  );
  t.is(again.code, 0);
  t.is((JSON.parse(again.stdout) as { path: string }).path, '/after');
  // The shadow reset its end when the client said it no longer held the stream, and keeps no socket to the echo pod.
  const log = await core.readNamespacedPodLog({ name: shadow, namespace: ns });
  t.regex(log, /"stream \d+ reset: the client no longer has it"|resume window/);
  const ss = await labExec({ namespace: ns, name: shadow }, toEcho);
  t.is(ss.exitCode, 0, ss.stderr);
  t.is(ss.stdout.trim(), '', `sockets to the echo pod left in the shadow: ${ss.stdout}`);
  const s = await streams(run);
  t.true(s.lost >= 1, `lost ${s.lost}`);
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});
