/**
 * Builds the shadow program (src/shadow/main.ts: the ssh server and the mesh router) into ONE
 * self-contained ES module, dist/shadow.mjs, which ktctl ships to the cluster in a ConfigMap and
 * runs on the stock Node.js image (src/kube/program.ts). `npm run build` runs this after tsc; the
 * lab bundles its echo image with the same function (test/lab/images/store.ts).
 *
 * - Pure JavaScript only: optional native pieces (ssh2's sshcrypto binding and cpu-features, ws's
 *   bufferutil) stay out; both libraries load them inside try/catch and fall back to JavaScript.
 * - ssh2 and ws are CommonJS and call require() for Node's built-ins (ssh2 also names its binding
 *   from __dirname); an ES module has neither, so the banner below defines both.
 * - Node 20 is the oldest runtime the bundle promises (`--image` may name any image with node >= 20).
 */
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** Bundles `entry` (relative to the repository) into the one file `outfile`; returns its size. */
export async function bundleProgram(entry: string, outfile: string): Promise<number> {
  await build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minify: true,
    legalComments: 'eof',
    external: ['cpu-features', 'bufferutil', 'utf-8-validate', '*.node'],
    banner: {
      js: [
        "import { createRequire as __ktctlCreateRequire } from 'node:module';",
        "import { fileURLToPath as __ktctlFileURLToPath } from 'node:url';",
        'const require = __ktctlCreateRequire(import.meta.url);',
        "const __dirname = __ktctlFileURLToPath(new URL('.', import.meta.url));",
      ].join(' '),
    },
    logLevel: 'warning',
  });
  return statSync(outfile).size;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const size = await bundleProgram('src/shadow/main.ts', `${ROOT}dist/shadow.mjs`);
  process.stdout.write(`shadow program: dist/shadow.mjs, ${size} bytes\n`);
}
