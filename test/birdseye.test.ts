/**
 * `ktctl birdseye` against the lab while an exchange (web), a mesh (api, auto) and a preview (pv)
 * run in the test's namespace beside a natural service (other): one row each, in KT Connect's
 * `--sortBy status` order, with who holds it, since when, its router and marks, and ktctl's
 * objects with their ages and heartbeats; `--json`, `--hideNaturalService`, `--sortBy name`,
 * `--showConnector`. Then the exchange is killed with -9: its row is marked stale (the process
 * is gone on this machine), and after `ktctl recover web` it is natural again. Every ktctl runs
 * with KTCTL_PERMISSIONS=strict: a request outside birdseye's permission table fails the run.
 */
import test from 'ava';
import type http from 'node:http';
import type { Birdseye } from '../src/kube/birdseye.js';
import { closeServer, deployWeb, labKtctl, laptopServer } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { eventually, fileNamespace } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-birds');
const ktctl = labKtctl(test, 'kt-birds');
const strict = { env: { KTCTL_PERMISSIONS: 'strict' } };

let laptop: http.Server;
let laptopPort = 0;

test.before(async () => {
  ({ server: laptop, port: laptopPort } = await laptopServer());
  await deployWeb(ns, 1);
  await deployEcho(ns, { api: [{ name: 'http', port: 80, targetPort: 8080 }], other: [{ port: 81, targetPort: 8080 }] });
});
test.after.always(() => (laptop ? closeServer(laptop) : undefined));

async function birdseye(args: string[] = []): Promise<Birdseye> {
  const r = await ktctl.run(['birdseye', '-n', ns, '--json', ...args], strict);
  if (r.code !== 0) throw new Error(r.log);
  return JSON.parse(r.stdout) as Birdseye;
}

test('exchange, mesh and preview rows; json, sort, filter; a killed exchange is stale until recovered', async (t) => {
  const exchange = ktctl.start(t, ['exchange', 'web', '--expose', `${laptopPort}:80`, '-n', ns]);
  const mesh = ktctl.start(t, ['mesh', 'api', '--expose', `${laptopPort}:80`, '--versionMark', 'version:alice', '-n', ns]);
  const preview = ktctl.start(t, ['preview', 'pv', '--expose', `${laptopPort}:80`, '-n', ns]);
  await exchange.waitFor(/exchanged service/, 90_000);
  await mesh.waitFor(/meshed service/, 90_000);
  await preview.waitFor(/previewing service/, 90_000);
  const owner = (pid: number | undefined): RegExp => new RegExp(`^\\S+@\\S+ ${pid}$`);

  const b = await birdseye();
  t.is(b.scope, `namespace ${ns}`);
  t.deepEqual(b.missing, []);
  t.deepEqual(
    b.rows.map((r) => `${r.name} ${r.state}`),
    ['web exchanged', 'api meshed', 'other natural', 'pv preview'],
    'status order: exchanged, meshed, natural, preview; the mesh\'s stuntman Service is no row of its own',
  );
  const [web, api, other, pv] = b.rows;
  t.like(web, { namespace: ns, mode: 'selector', stale: false });
  t.is(web!.holders.length, 1);
  t.regex(web!.holders[0]!.owner, owner(exchange.child.pid));
  t.like(web!.holders[0], { stale: false, here: true });
  t.true(web!.holders[0]!.heartbeatAgeSeconds! < 60);
  t.true(Date.parse(web!.since!) <= Date.parse(b.serverTime));
  t.true(web!.objects.some((o) => o.kind === 'pod' && o.role === 'exchange' && !o.stale && o.heartbeatAgeSeconds !== null), JSON.stringify(web!.objects));
  t.true(web!.objects.some((o) => o.kind === 'secret'));

  t.like(api, { mode: 'auto', stale: false });
  t.regex(api!.router ?? '', /^api-ktctl-router/);
  t.deepEqual(api!.marks.map((m) => m.mark), ['version=alice']);
  t.regex(api!.marks[0]!.owner, owner(mesh.child.pid));
  t.true(api!.objects.some((o) => o.kind === 'pod' && o.role === 'router'));
  t.true(api!.objects.some((o) => o.kind === 'service' && /stuntman/.test(o.name)), 'the stuntman Service belongs to api');

  t.like(other, { state: 'natural', mode: null, since: null, stale: false, holders: [], objects: [] });
  t.is(pv!.holders.length, 1);
  t.regex(pv!.holders[0]!.owner, owner(preview.child.pid));
  t.true(pv!.objects.some((o) => o.kind === 'pod' && o.role === 'preview'));

  t.deepEqual((await birdseye(['--hideNaturalService'])).rows.map((r) => r.name), ['web', 'api', 'pv']);
  t.deepEqual((await birdseye(['--sortBy', 'name'])).rows.map((r) => r.name), ['api', 'other', 'pv', 'web']);
  t.false('connectors' in b, 'connectors only with --showConnector');
  t.deepEqual((await birdseye(['--showConnector'])).connectors, []);

  const text = await ktctl.run(['birdseye', '-n', ns, '--showConnector'], strict);
  t.is(text.code, 0, text.log);
  t.regex(text.stdout, new RegExp(`^services in namespace ${ns} \\(4\\):\\n  web  exchanged \\(--mode selector\\) by \\S+ ${exchange.child.pid} \\(heartbeat \\d+ s ago\\), since `, 'm'));
  t.regex(text.stdout, new RegExp(`^  api  meshed \\(--mode auto\\) through router api-ktctl-router\\S*: version=alice by \\S+ ${mesh.child.pid} `, 'm'));
  t.regex(text.stdout, /^ {2}other {2}natural$/m);
  t.regex(text.stdout, new RegExp(`^  pv  preview by \\S+ ${preview.child.pid} `, 'm'));
  t.regex(text.stdout, /^ {6}pod ktctl-\S+ {2}role exchange {2}age \d+ s {2}heartbeat \d+ s ago$/m);
  t.regex(text.stdout, /^connected \(0\):$/m);
  t.notRegex(text.stdout, /STALE|stale/);

  // kill -9: the lock's holder is a process of this machine that is gone: stale at once
  exchange.child.kill('SIGKILL');
  await exchange.exited;
  const killed = (await birdseye()).rows.find((r) => r.name === 'web')!;
  t.like(killed, { state: 'exchanged', stale: true });
  t.like(killed.holders[0], { stale: true, here: true });
  t.true(killed.objects.filter((o) => o.kind === 'pod').every((o) => o.stale));
  const staleText = await ktctl.run(['birdseye', '-n', ns, '--hideNaturalService'], strict);
  t.regex(staleText.stdout, new RegExp(`^  web  exchanged \\(--mode selector\\) by \\S+ ${exchange.child.pid} \\(heartbeat \\d+ s ago, STALE\\), since \\S+  \\[stale: ktctl recover web puts it back\\]$`, 'm'));
  t.regex(staleText.stdout, /^ {6}pod ktctl-\S+ .* STALE$/m);
  // the live ones are not
  t.false((await birdseye()).rows.find((r) => r.name === 'api')!.stale);

  const r = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(r.code, 0, r.log);
  t.like(
    await eventually(async () => {
      const row = (await birdseye()).rows.find((x) => x.name === 'web');
      return row?.state === 'natural' ? row : undefined;
    }, 'web natural again'),
    { state: 'natural', objects: [] },
  );
  await mesh.stop(t);
  await preview.stop(t);
  t.deepEqual((await birdseye(['--hideNaturalService'])).rows, []);
});

test('bad input: one sentence, exit 1', async (t) => {
  const r = await ktctl.run(['birdseye', '--sortBy', 'age']);
  t.is(r.code, 1);
  t.regex(r.log, /^ktctl: .*--sortBy.*\n$/);
});
