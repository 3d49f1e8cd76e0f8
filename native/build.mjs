// Builds the TUN addon (native/build/Release/ktctl_tun.node) with node-gyp and the local Node
// headers: no download. Run by `npm ci` / `npm install` (the package's "install" script).
// Never fails the install: where building is impossible (no compiler, no headers, not Linux)
// it prints why and exits 0; src/tun/device.ts then reports a clear error when TUN mode is used.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function warn(why) {
  process.stderr.write(`ktctl: the TUN addon was not built (${why}); --mode tun will be unavailable, --mode socks still works.\n`);
  process.exit(0);
}

if (process.platform !== 'linux') warn(`TUN mode needs Linux, this is ${process.platform}`);

// Node's headers: an explicit npm config, else the installation this node runs from.
const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..')].filter(Boolean);
const nodedir = candidates.find((d) => existsSync(join(d, 'include', 'node', 'node_api.h')));
if (!nodedir) warn(`no Node headers found in ${candidates.join(' or ')}`);

// node-gyp: the one npm runs scripts with, else the one bundled with npm next to this node.
const gyp = [
  process.env.npm_config_node_gyp,
  resolve(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].find((p) => p && existsSync(p));
if (!gyp) warn('node-gyp not found (it comes with npm)');

const r = spawnSync(process.execPath, [gyp, 'rebuild', '--directory', here, `--nodedir=${nodedir}`], {
  stdio: ['ignore', 'inherit', 'inherit'],
  env: { ...process.env, npm_config_nodedir: nodedir },
});
if (r.error) warn(r.error.message);
if (r.status !== 0) warn(`node-gyp exited with ${r.status}; it needs python3, make and g++`);
