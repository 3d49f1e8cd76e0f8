/**
 * `ktctl dashboard` against the lab, in a real browser (Debian's chromium through playwright-core):
 * - the service web shows as natural, turns exchanged while `ktctl exchange web` runs (pushed to
 *   the open page, no reload) with the exchange's session card, and natural again after it ends;
 * - a session's byte counters rise on the page during a download through `ktctl forward`;
 * - an exchange killed with -9 shows as stale; "recover" on the page, confirmed, puts the service
 *   back (checked with kubectl) and the row turns natural.
 * Screenshots of each step go to the test artifacts folder (helpers/browser.ts).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import type http from 'node:http';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { closeServer, deployWeb, labKtctl, laptopServer, webLeftovers } from './helpers/ktctl.js';
import { artifactsDir, launchBrowser } from './helpers/browser.js';
import { fileNamespace, hasKubectl, kubectl } from './lab/fixture.js';
import { until } from './helpers/poll.js';

const ns = fileNamespace(test, 'kt-dash');
const ktctl = labKtctl(test, 'kt-dash');
const strict = { env: { KTCTL_PERMISSIONS: 'strict' } };
/** How long the page may take to show a change (the dashboard reads once a second; generous for a loaded machine). */
const SHOWS = 15_000;

let laptop: http.Server;
let laptopPort = 0;

test.before(async () => {
  ({ server: laptop, port: laptopPort } = await laptopServer());
  await deployWeb(ns, 1);
});
test.after.always(() => (laptop ? closeServer(laptop) : undefined));

const row = (state: string, extra = ''): string => `tr[data-service="${ns}/web"][data-state="${state}"]${extra}`;

function curl(url: string): Promise<{ code: number; bytes: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-m', '30', '-o', '/dev/null', '-w', '%{size_download}', url], (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, bytes: Number(String(stdout)), stderr: String(stderr) });
    });
  });
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(artifactsDir(), `dashboard-${name}.png`), fullPage: true });
}

test('web natural, exchanged, natural; bytes rise during a download; a killed exchange is stale and recovered from the page', async (t) => {
  const dash = ktctl.start(t, ['dashboard', '-n', ns], strict);
  const url = (await dash.waitFor(/^(http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)$/m))[1]!;
  const browser = await launchBrowser();
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.waitForSelector(row('natural'), { timeout: SHOWS });
  t.is(await page.textContent('#live'), 'live');
  await shot(page, 'natural');

  // exchange: the open page turns web exchanged, with the session's card
  const exchange = ktctl.start(t, ['exchange', 'web', '--expose', `${laptopPort}:80`, '-n', ns]);
  await exchange.waitFor(/exchanged service/, 90_000);
  await page.waitForSelector(row('exchanged', '[data-stale="false"]'), { timeout: SHOWS });
  await page.waitForSelector(`.session[data-pid="${exchange.child.pid}"]`, { timeout: SHOWS });
  t.regex((await page.textContent(row('exchanged'))) ?? '', new RegExp(`exchangedselector.*@\\S+ ${exchange.child.pid} \\(heartbeat \\d+ s ago\\)`));
  t.regex((await page.textContent(`.session[data-pid="${exchange.child.pid}"] .title`)) ?? '', /^exchange --mode selector web$/);
  await shot(page, 'exchanged');
  await exchange.stop(t);
  await page.waitForSelector(row('natural'), { timeout: SHOWS });
  await page.waitForSelector(`.session[data-pid="${exchange.child.pid}"]`, { state: 'detached', timeout: SHOWS });

  // a download through a forward: its card's bytes in rise by at least the download
  const forward = ktctl.start(t, ['forward', 'web', '0:80', '-n', ns]);
  const local = Number((await forward.waitFor(/^forwarding 127\.0\.0\.1:(\d+) -> /m, 90_000))[1]);
  const card = `.session[data-pid="${forward.child.pid}"]`;
  await page.waitForSelector(card, { timeout: SHOWS });
  const bytesIn = async (): Promise<number> => Number(await page.getAttribute(`${card} [data-figure="bytes-in"]`, 'data-value'));
  const before = await bytesIn();
  const size = 8 * 1024 * 1024;
  const got = await curl(`http://127.0.0.1:${local}/bytes/${size}`);
  t.is(got.code, 0, got.stderr);
  t.is(got.bytes, size);
  await until(async () => (await bytesIn()) >= before + size, { timeoutMs: SHOWS, what: 'the page\'s bytes in to rise by the download' });
  t.true((await bytesIn()) >= before + size);
  t.regex((await page.textContent(`${card} [data-figure="bytes-in"]`)) ?? '', /MiB$/);
  t.true((await page.$$(`${card} svg.chart polyline`)).length === 2, 'a chart with in and out');
  await shot(page, 'download');
  await forward.stop(t);

  // kill -9: stale on the page; recover from the page
  const dead = ktctl.start(t, ['exchange', 'web', '--expose', `${laptopPort}:80`, '-n', ns]);
  await dead.waitFor(/exchanged service/, 90_000);
  dead.child.kill('SIGKILL');
  await dead.exited;
  await page.waitForSelector(row('exchanged', '[data-stale="true"]'), { timeout: SHOWS });
  t.regex((await page.textContent(row('exchanged'))) ?? '', /stale/);
  await shot(page, 'stale');
  await page.click(`${row('exchanged')} button[data-action="recover"]`);
  await page.waitForSelector('#confirm[open]');
  t.regex((await page.textContent('#confirm-text')) ?? '', new RegExp(`^Recover ${ns}/web\\?`));
  await page.click('#confirm-ok');
  await page.waitForSelector('#message.ok', { timeout: 60_000 });
  await until(async () => /restored the selector/.test((await page.textContent('#message')) ?? ''), { timeoutMs: 60_000, what: 'the recover\'s lines on the page' });
  t.regex((await page.textContent('#message')) ?? '', new RegExp(`restored the selector of service ${ns}/web to app=web`));
  await page.waitForSelector(row('natural'), { timeout: SHOWS });
  await shot(page, 'recovered');
  if (hasKubectl()) {
    const selector = await kubectl(['get', 'service', 'web', '-n', ns, '-o', 'jsonpath={.spec.selector}']);
    t.is(selector.stdout.trim(), '{"app":"web"}', selector.stderr);
    const annotations = await kubectl(['get', 'service', 'web', '-n', ns, '-o', 'jsonpath={.metadata.annotations}']);
    t.notRegex(annotations.stdout, /ktctl\//);
  }
  t.deepEqual(await webLeftovers(ns, 1), []);
  await dash.stop(t);
});
