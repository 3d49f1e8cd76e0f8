/**
 * Addresses, routes, overlap detection and crash recovery, each inside a network namespace of its
 * own. The code under test runs in a script inside the namespace and prints JSON lines.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { allocateBlock, createNetns, type Netns } from './helpers/netns.js';

const src = (p: string): string => JSON.stringify(pathToFileURL(fileURLToPath(new URL(`../src/tun/${p}`, import.meta.url))).href);

const PRELUDE = `
import { TunDevice } from ${src('device.ts')};
import * as ipm from ${src('ip.ts')};
import * as state from ${src('device-record.ts')};
import { recordOwnerAlive } from ${src('../state-records.ts')};
import { parseCidr, formatCidr } from ${src('cidr.ts')};
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const A = JSON.parse(process.argv[2]);
`;

interface Running {
  pid: number;
  exit: Promise<number | null>;
  first(): Promise<Record<string, unknown>>;
}

function scriptFile(t: ExecutionContext, body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ktt-tunst-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'script.mts');
  writeFileSync(file, PRELUDE + body);
  return file;
}

/** Runs a script to completion; returns its one JSON line. */
async function runOnce(t: ExecutionContext, ns: Netns, body: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await ns.exec('node', ['--import', 'tsx', scriptFile(t, body), JSON.stringify(args)], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`script failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** Starts a script that keeps running; `first()` resolves with its first JSON line. */
function start(t: ExecutionContext, ns: Netns, body: string, args: Record<string, unknown>): Running {
  const child = ns.spawn('node', ['--import', 'tsx', scriptFile(t, body), JSON.stringify(args)]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('close', resolve));
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) resolve(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
    });
    void exit.then((code) => reject(new Error(`script exited with ${code}: ${err}`)));
  });
  return { pid: child.pid!, exit, first: () => first };
}

function blocks(t: ExecutionContext, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const b = allocateBlock();
    t.teardown(() => b.release());
    out.push(`${b.base}/30`);
  }
  return out;
}

function stateDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'ktt-tunstate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function routesOf(ns: Netns): Promise<string> {
  return ns.execOk('ip', ['-4', 'route', 'show']);
}

test('configureInterface, addRoutes, listRoutes, deleteRoutes on a real device', async (t) => {
  const ns = await createNetns(t);
  const [own, r1, r2] = blocks(t, 3);
  const r = await runOnce(t, ns, `
const d = TunDevice.open({ name: 'ktip0' });
const own = A.own.replace('/30', '/32').replace(/\\.(\\d+)\\//, (m, x) => '.' + (Number(x) + 1) + '/');
await ipm.configureInterface(d.name, { mtu: 1400, addresses: [own, 'fd00:ab::1/128'] });
await ipm.addRoutes(d.name, [parseCidr(A.r1), parseCidr(A.r2), parseCidr('fd00:ab:1::/64')]);
const listed = (await ipm.listRoutes({ dev: d.name })).filter((e) => e.table === 'main').map((e) => e.text);
const link = JSON.parse((await ipm.ip(['-j', 'link', 'show', 'dev', d.name])).stdout)[0];
let dup = '';
try { await ipm.addRoutes(d.name, [parseCidr(A.r1)]); } catch (e) { dup = e.name + ': ' + e.message; }
const removed = (await ipm.deleteRoutes(d.name, [parseCidr(A.r1), parseCidr(A.r1)])).map(formatCidr);
const after = (await ipm.listRoutes({ dev: d.name })).filter((e) => e.table === 'main').map((e) => e.text);
const info = await ipm.linkInfo(d.name);
d.close();
emit({ listed, mtu: link.mtu, up: link.flags.includes('UP'), dup, removed, after, info, gone: await ipm.linkExists('ktip0') });
`, { own, r1, r2 });
  t.true((r.listed as string[]).includes(r1!));
  t.true((r.listed as string[]).includes(r2!));
  t.true((r.listed as string[]).includes('fd00:ab:1::/64'));
  t.is(r.mtu, 1400);
  t.true(r.up);
  t.regex(r.dup as string, /^RouteError: ip -4 route add .* failed: .*File exists/);
  t.deepEqual(r.removed, [r1], 'the second delete of the same route is not an error');
  t.false((r.after as string[]).includes(r1!));
  t.true((r.after as string[]).includes(r2!));
  t.deepEqual(r.info, { exists: true, kind: 'tun' });
  t.false(r.gone);
});

test('route overlap detection against the namespace real routes', async (t) => {
  const ns = await createNetns(t);
  const [taken, free, included] = blocks(t, 3);
  // Someone else's routes: a veth interface with one of the ranges and another we will include.
  await ns.execOk('ip', ['link', 'add', 'ktdum0', 'type', 'veth', 'peer', 'name', 'ktdum0p']);
  await ns.execOk('ip', ['link', 'set', 'ktdum0', 'up']);
  await ns.execOk('ip', ['route', 'add', taken!, 'dev', 'ktdum0']);
  await ns.execOk('ip', ['route', 'add', included!, 'dev', 'ktdum0']);
  const r = await runOnce(t, ns, `
const existing = await ipm.listRoutes();
const plan = ipm.planRoutes({
  discovered: [parseCidr(A.taken), parseCidr(A.free), parseCidr(A.included)],
  include: [parseCidr(A.included)],
  existing,
  ownDev: 'kt0',
});
emit({ routes: plan.routes.map(formatCidr), skipped: plan.skipped.map((s) => formatCidr(s.cidr) + ': ' + s.reason),
  overlaps: ipm.findOverlaps([parseCidr(A.taken)], existing).map((o) => o.route.text + ' ' + o.route.dev) });
`, { taken, free, included });
  t.deepEqual(r.overlaps, [`${taken} ktdum0`]);
  t.deepEqual((r.routes as string[]).sort(), [free!, included!].sort());
  t.is((r.skipped as string[]).length, 1);
  t.is((r.skipped as string[])[0], `${taken}: overlaps the existing route ${taken} dev ktdum0; add it to --includeIps to route it anyway`);
});

const HOLD = `
const rec = state.TunStateRecord.create('kt%d', { dir: A.dir });
const d = TunDevice.open({ name: A.name });
rec.update({ device: d.name, addresses: [A.addr] });
await ipm.configureInterface(d.name, { addresses: [A.addr] });
rec.update({ routes: A.routes });
await ipm.addRoutes(d.name, A.routes.map(parseCidr));
d.onPackets(() => {});
emit({ ready: true, record: rec.path, pid: process.pid });
`;

test('after kill -9 the kernel has removed device and routes; cleanStale removes the record', async (t) => {
  const ns = await createNetns(t);
  const [own, r1, r2] = blocks(t, 3);
  const dir = stateDir(t);
  const addr = own!.replace(/\.(\d+)\/30$/, (_m, x: string) => `.${Number(x) + 1}/32`);
  const p = start(t, ns, HOLD, { dir, name: 'ktkill0', addr, routes: [r1, r2] });
  const ready = await p.first();
  t.is(ready.pid, p.pid, 'ip netns exec ran node itself');
  t.regex(await routesOf(ns), new RegExp(`${r1!.replace(/\./g, '\\.')} dev ktkill0`));
  process.kill(p.pid, 'SIGKILL');
  await p.exit;
  // What remains: nothing in the kernel (non-persistent device, O_CLOEXEC fd), only the record.
  const links = await ns.execOk('ip', ['-o', 'link']);
  t.false(links.includes('ktkill0'));
  const routes = await routesOf(ns);
  t.false(routes.includes(r1!.split('/')[0]!));
  t.false(routes.includes(r2!.split('/')[0]!));
  t.true(existsSync(ready.record as string));
  const r = await runOnce(t, ns, `emit({ reports: await state.cleanStale({ dir: A.dir }), left: state.listRecords(A.dir).length });`, { dir });
  const reports = r.reports as Array<Record<string, unknown>>;
  t.is(reports.length, 1);
  t.is((reports[0]!.record as Record<string, unknown>).device, 'ktkill0');
  t.deepEqual((reports[0]!.record as Record<string, unknown>).routes, [r1, r2]);
  t.false(reports[0]!.removedDevice);
  t.deepEqual(reports[0]!.removedRoutes, []);
  t.is(r.left, 0);
  t.deepEqual(readdirSync(dir), []);
});

test('cleanStale removes a surviving (persistent) device and its routes, and leaves live records and foreign interfaces alone', async (t) => {
  const ns = await createNetns(t);
  const [r1, r2, r3] = blocks(t, 3);
  const dir = stateDir(t);
  // A device that outlived its process (persistent), with routes through it.
  await ns.execOk('ip', ['tuntap', 'add', 'dev', 'ktstale0', 'mode', 'tun']);
  await ns.execOk('ip', ['link', 'set', 'ktstale0', 'up']);
  await ns.execOk('ip', ['route', 'add', r1!, 'dev', 'ktstale0']);
  await ns.execOk('ip', ['route', 'add', r2!, 'dev', 'ktstale0']);
  // The name of a dead run's device now belongs to a veth interface: not ours to delete.
  await ns.execOk('ip', ['link', 'add', 'ktother0', 'type', 'veth', 'peer', 'name', 'ktother0p']);
  await ns.execOk('ip', ['link', 'set', 'ktother0', 'up']);
  await ns.execOk('ip', ['route', 'add', r3!, 'dev', 'ktother0']);
  const dead = spawnSync('true').pid!;
  const rec = (pid: number, device: string, routes: string[]) =>
    JSON.stringify({ version: 1, kind: 'tun', pid, pidStart: null, createdAt: new Date().toISOString(), device, addresses: [], routes });
  writeFileSync(join(dir, 'tun-1-a.json'), rec(dead, 'ktstale0', [r1!, r2!]));
  writeFileSync(join(dir, 'tun-2-b.json'), rec(dead, 'ktother0', [r3!]));
  writeFileSync(join(dir, 'tun-3-c.json'), rec(process.pid, 'ktlive0', []));
  writeFileSync(join(dir, 'tun-4-d.json'), 'garbage');
  const r = await runOnce(t, ns, `emit({ reports: await state.cleanStale({ dir: A.dir }) });`, { dir });
  const reports = (r.reports as Array<Record<string, unknown>>).sort((a, b) =>
    String((a.record as Record<string, unknown>).device).localeCompare(String((b.record as Record<string, unknown>).device)),
  );
  t.is(reports.length, 2, 'the live record is not touched');
  t.false(reports[0]!.removedDevice);
  t.regex(reports[0]!.note as string, /ktother0 exists but is a veth interface now: left alone/);
  t.true(reports[1]!.removedDevice);
  t.deepEqual(reports[1]!.removedRoutes, [r1, r2]);
  const links = await ns.execOk('ip', ['-o', 'link']);
  t.false(links.includes('ktstale0'));
  t.true(links.includes('ktother0'));
  t.true((await routesOf(ns)).includes(`${r3} dev ktother0`));
  t.deepEqual(readdirSync(dir).sort(), ['tun-3-c.json', 'tun-4-d.json']);
});

test('a clean exit removes the record; a pid reused by another process does not count as alive', async (t) => {
  const ns = await createNetns(t);
  const dir = stateDir(t);
  const r = await runOnce(t, ns, `
const rec = state.TunStateRecord.create('ktrec0', { dir: A.dir });
const listed = state.listRecords(A.dir).map((x) => x.record.device);
const alive = recordOwnerAlive(rec.record);
const reused = recordOwnerAlive({ pid: process.pid, pidStart: '1' });
const untouched = (await state.cleanStale({ dir: A.dir })).length;
rec.remove();
rec.remove();
emit({ listed, alive, reused, untouched, after: state.listRecords(A.dir).length });
`, { dir });
  t.deepEqual(r.listed, ['ktrec0']);
  t.true(r.alive);
  t.false(r.reused);
  t.is(r.untouched, 0);
  t.is(r.after, 0);
});
