/**
 * `npm run screenshot`: the README's picture of `ktctl dashboard`, made from the lab, not drawn.
 * Needs a running lab (`npm run lab -- up`) and root. In a namespace of its own it runs what a
 * shared dev cluster shows: an exchange of `web`, a mesh of `api` (auto, version mark alice), a
 * preview `pv`, an exchange of `orders` killed with -9 (a stale row), and a `forward` to `api`
 * with downloads of varying size for 30 s (the throughput chart). Then the dashboard, chromium at
 * 1280x900, and docs/dashboard.png. Everything it starts is stopped, `orders` is recovered and the
 * namespace deleted, also when a step fails.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { startCli, CLI, type CliRun } from './helpers/cli-process.js';
import { deployWeb, laptopServer, closeServer } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { launchBrowser } from './helpers/browser.js';
import { REPO, TeardownList } from './helpers/ssh-fixtures.js';
import { kubeConfig, lab } from './lab/fixture.js';

const OUT = join(REPO, 'docs', 'dashboard.png');
const say = (line: string): void => void process.stdout.write(`${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const hooks = new TeardownList();
  const ns = `demo-${randomBytes(2).toString('hex')}`;
  const state = mkdtempSync(join(tmpdir(), 'ktctl-shot-'));
  hooks.teardown(() => rmSync(state, { recursive: true, force: true }));
  const env = { KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: state };
  const core = kubeConfig().makeApiClient(CoreV1Api);
  try {
    say(`namespace ${ns}: deployment and service web, services api, orders and pv's backends`);
    await core.createNamespace({ body: { metadata: { name: ns } } });
    hooks.teardown(() => core.deleteNamespace({ name: ns }));
    await deployWeb(ns, 1);
    await deployEcho(ns, { api: [{ name: 'http', port: 80, targetPort: 8080 }], orders: [{ port: 80, targetPort: 8080 }], payments: [{ port: 80, targetPort: 8080 }] });
    const { server: laptop, port } = await laptopServer();
    hooks.teardown(() => closeServer(laptop));

    const start = async (args: string[], ready: RegExp): Promise<CliRun> => {
      say(`$ ktctl ${args.join(' ')}`);
      const run = startCli(hooks, [...args, '-n', ns], { env });
      hooks.teardown(async () => {
        if (run.child.exitCode === null && run.child.signalCode === null) {
          run.child.kill('SIGINT');
          await Promise.race([run.exited, sleep(20_000)]);
        }
      });
      await run.waitFor(ready, 120_000);
      return run;
    };
    const dead = await start(['exchange', 'orders', '--expose', `${port}:80`], /exchanged service/);
    dead.child.kill('SIGKILL');
    await dead.exited;
    hooks.teardown(() => new Promise<void>((resolve) => spawn(process.execPath, [CLI, 'recover', 'orders', '-n', ns], { env: { ...process.env, ...env }, stdio: 'ignore' }).once('exit', () => resolve())));
    say('  (killed with -9: orders stays exchanged, its holder gone)');
    await start(['exchange', 'web', '--expose', `${port}:80`], /exchanged service/);
    await start(['mesh', 'api', '--expose', `${port}:80`, '--versionMark', 'version:alice'], /meshed service/);
    await start(['preview', 'pv', '--expose', `${port}:80`], /previewing service/);
    const forward = await start(['forward', 'api', '0:80'], /^forwarding 127\.0\.0\.1:\d+ -> /m);
    const local = Number(/^forwarding 127\.0\.0\.1:(\d+) -> /m.exec(forward.stdout())![1]);

    const dash = await start(['dashboard'], /^http:\/\/127\.0\.0\.1:\d+\/\?token=\S+$/m);
    const url = /^(http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)$/m.exec(dash.stdout())![1]!;

    say('downloads through the forward for 30 s (the chart), still going when the picture is taken');
    let downloading = true;
    const downloads = (async () => {
      for (let i = 0; downloading; i++) {
        const size = Math.round((1 + Math.sin(i / 3) * 0.8) * 3_000_000);
        const r = await fetch(`http://127.0.0.1:${local}/bytes/${size}`);
        await r.arrayBuffer();
        await sleep(150);
      }
    })();
    hooks.teardown(async () => {
      downloading = false;
      await downloads.catch(() => undefined);
    });
    await sleep(30_000);
    const browser = await launchBrowser();
    hooks.teardown(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
    await page.goto(url);
    await page.waitForSelector(`tr[data-service="${ns}/orders"][data-stale="true"]`, { timeout: 20_000 });
    await page.waitForSelector(`tr[data-service="${ns}/api"][data-state="meshed"]`, { timeout: 20_000 });
    await sleep(1500);
    mkdirSync(join(REPO, 'docs'), { recursive: true });
    await page.screenshot({ path: OUT, fullPage: true });
    say(`wrote ${OUT}`);
  } finally {
    await hooks.run();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`screenshot: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
