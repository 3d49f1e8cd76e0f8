/**
 * The lab's image store: the files its images carry (the echo server, bundled into one ES module
 * with the same bundler as the shadow program, shadow-image/bundle.ts), in a directory of its own
 * that every pod user can read. Pods read their image from here, never from the checkout, which
 * may sit under a directory only root can enter (/root, a mktemp -d folder).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleProgram } from '../../../shadow-image/bundle.js';
import { echoProgramPath } from './table.js';

export const IMAGE_STORE_PREFIX = 'ktlab-images-';

/** Makes a new store under the system's temporary directory (mode 0755) and returns its path. */
export async function makeImageStore(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), IMAGE_STORE_PREFIX));
  try {
    fs.chmodSync(dir, 0o755);
    const file = echoProgramPath(dir);
    await bundleProgram('test/lab/images/echo.ts', file);
    fs.chmodSync(file, 0o644);
    return dir;
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Removes a store made by makeImageStore (nothing else: the name must be one of its). */
export function removeImageStore(dir: string): void {
  if (path.dirname(dir) === os.tmpdir() && path.basename(dir).startsWith(IMAGE_STORE_PREFIX)) fs.rmSync(dir, { recursive: true, force: true });
}
