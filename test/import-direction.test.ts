/**
 * The direction of dependencies in src/ (README "Layout"): a module imports only from its own layer
 * or from a lower one, never from src/cli, and the shadow (a program of its own that runs in the
 * cluster) only from src/protocol and src/runtime. Read with the TypeScript compiler's own
 * pre-processor, so static imports, `export ... from` and `import()` all count, type-only ones too.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

/**
 * Higher imports lower, never the reverse. The top-level folder of src decides a module's layer;
 * files directly in src (dialer, transport, errors, undo, version, the state directory) are the
 * bottom, beside src/protocol and src/runtime.
 */
const RANK: Record<string, number> = {
  cli: 5, // one clipanion command a file: parses flags, calls one function below, prints
  connect: 4, // what a command runs: transport + front ends + undo (socks, tun, expose, serve)
  dashboard: 4, // ktctl dashboard: the local web server and its page, over kube and control
  kube: 3, // the transports and what talks to the API server
  ssh: 3,
  control: 2, // a session's live figures and its control socket: they see a Tunnel
  dns: 2, // front ends and engines: they see a Dialer, never ssh2 or Kubernetes
  proxy: 2,
  netstack: 2,
  tun: 2,
  config: 1, // the config file and its profiles (read by src/cli's flag precedence)
  protocol: 1,
  runtime: 1,
  '.': 1,
};
/** Folders whose modules may import only these folders (and their own). */
const ONLY: Record<string, string[]> = {
  shadow: ['protocol', 'runtime'],
};

export interface Edge {
  from: string; // path relative to src, e.g. kube/network.ts
  to: string;
}

function layerOf(path: string): string {
  const parts = path.split('/');
  return parts.length === 1 ? '.' : parts[0]!;
}

/** The edges that break the rules, with why. */
export function violations(edges: Edge[]): string[] {
  const out: string[] = [];
  for (const { from, to } of edges) {
    const a = layerOf(from);
    const b = layerOf(to);
    if (a === b) continue;
    const only = ONLY[a];
    if (only !== undefined) {
      if (!only.includes(b)) out.push(`${from} imports ${to}: src/${a} may import only ${only.map((o) => `src/${o}`).join(', ')}`);
      continue;
    }
    if (b === 'cli') {
      out.push(`${from} imports ${to}: nothing below src/cli may import it`);
      continue;
    }
    const ra = RANK[a];
    const rb = RANK[b];
    if (ra === undefined) out.push(`${from}: src/${a} has no place in the layer table of test/import-direction.test.ts`);
    else if (rb === undefined) out.push(`${from} imports ${to}: src/${b} has no place in the layer table`);
    else if (rb > ra) out.push(`${from} imports ${to}: src/${a} (layer ${ra}) may not import from src/${b} (layer ${rb})`);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every relative import of every module in src, resolved to a path relative to src. */
function importGraph(): Edge[] {
  const edges: Edge[] = [];
  for (const file of sourceFiles(SRC)) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    for (const ref of info.importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const target = resolve(dirname(file), ref.fileName).replace(/\.js$/, '.ts');
      edges.push({ from: relative(SRC, file), to: relative(SRC, target) });
    }
  }
  return edges;
}

test('no module in src imports from a higher layer, nor from src/cli', (t) => {
  const edges = importGraph();
  t.true(edges.length > 100, `read the import graph (${edges.length} edges)`);
  t.deepEqual(violations(edges), []);
});

test('the rules catch an upward import, one into src/cli, and one out of the shadow', (t) => {
  t.deepEqual(violations([{ from: 'kube/network.ts', to: 'kube/api.ts' }, { from: 'cli/connect.ts', to: 'connect/serve.ts' }]), []);
  t.is(violations([{ from: 'kube/network.ts', to: 'cli/connect.ts' }]).length, 1);
  t.is(violations([{ from: 'version.ts', to: 'cli/main.ts' }]).length, 1);
  t.is(violations([{ from: 'netstack/stack.ts', to: 'ssh/tunnel.ts' }]).length, 1);
  t.is(violations([{ from: 'transport.ts', to: 'ssh/reconnect.ts' }]).length, 1);
  t.is(violations([{ from: 'shadow/server.ts', to: 'errors.ts' }]).length, 1);
  t.is(violations([{ from: 'newlayer/x.ts', to: 'errors.ts' }]).length, 1);
});
