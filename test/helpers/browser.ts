/**
 * Debian's chromium driven by playwright-core (no browser download: /usr/bin/chromium), for the
 * dashboard's tests and its README screenshot. It resolves no name but localhost, sends anything
 * not for loopback to a closed loopback port (a proxy that is not there), and runs without
 * background networking, so it sends nothing beyond the loopback pages a test opens. Screenshots go to `artifactsDir()`.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { REPO } from './ssh-fixtures.js';

export const CHROMIUM = process.env.KTCTL_CHROMIUM ?? '/usr/bin/chromium';

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
      // and whatever is not loopback goes to a closed loopback port (loopback bypasses a proxy)
      '--proxy-server=http://127.0.0.1:9',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-domain-reliability',
      '--no-pings',
      '--disable-sync',
    ],
  });
}

/** Where tests put screenshots: $KTCTL_TEST_ARTIFACTS, else test/artifacts (ignored by git). */
export function artifactsDir(): string {
  const dir = process.env.KTCTL_TEST_ARTIFACTS ?? join(REPO, 'test', 'artifacts');
  mkdirSync(dir, { recursive: true });
  return dir;
}
