/**
 * The shadow program as ktctl ships it (src/kube/program.ts): the one-file bundle `npm run build`
 * makes runs alone, from a directory with nothing else in it (as from its ConfigMap on the stock
 * Node.js image), fits a ConfigMap and imports only Node's built-ins; a missing or oversized bundle
 * is one sentence naming the build step. And every pod ktctl makes passes Pod Security
 * `restricted`, checked with the lab's admission code (test/lab/api/podsecurity.ts).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client } from 'ssh2';
import { CONFIGMAP_MAX_BYTES, PROGRAM_DIR, PROGRAM_FILE, shadowProgram, ShadowProgramError } from '../src/kube/bundle.js';
import { programManifest } from '../src/kube/program.js';
import { podManifest, type ShadowSpec } from '../src/kube/shadow.js';
import { DEFAULT_POD_SETTINGS, parsePodQuota } from '../src/kube/pod-settings.js';
import { DEFAULT_SHADOW_IMAGE } from '../src/kube/names.js';
import { generateEd25519 } from '../src/ssh/keys.js';
import { evaluatePod } from './lab/api/podsecurity.js';
import type { JsonObject } from './lab/api/json.js';

const BUNDLE = new URL('../dist/shadow.mjs', import.meta.url);

test('the bundle fits a ConfigMap and its only imports are Node built-ins', (t) => {
  const program = shadowProgram(BUNDLE);
  t.true(Buffer.byteLength(program.text) < CONFIGMAP_MAX_BYTES, `${Buffer.byteLength(program.text)} bytes`);
  t.regex(program.configMap, /^ktctl-shadow-[0-9a-f]{12}$/);
  const specifiers = [...program.text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s*)["']([^"']+)["']/gm)].map((m) => m[1]!);
  t.true(specifiers.length > 0, 'the static imports were found');
  const builtins = new Set(builtinModules);
  for (const s of specifiers) t.true(s.startsWith('node:') && builtins.has(s.slice(5)), `imports ${s}`);
  const cm = programManifest(program, 'ns', new Date('2026-12-03T10:00:00Z'));
  t.is(cm.metadata?.name, program.configMap);
  t.is(cm.data?.[PROGRAM_FILE], program.text);
  t.is(cm.metadata?.labels?.['ktctl/role'], 'program');
});

test('the bundle runs alone from an empty directory and serves ssh with its keys', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktctl-bundle-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(BUNDLE, path.join(dir, PROGRAM_FILE));
  const host = generateEd25519();
  const client = generateEd25519('test');
  const child = spawn(process.execPath, [path.join(dir, PROGRAM_FILE)], {
    cwd: dir,
    // nothing of this checkout on the way: no NODE_PATH, no loader
    env: { PATH: process.env.PATH, KTCTL_HOST_KEY: host.private, KTCTL_AUTHORIZED_KEY: client.public, KTCTL_PORT: '0', KTCTL_LISTEN_ADDRESS: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"event":"listen".*"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('close', (code) => reject(new Error(`the bundle exited with ${code}: ${stderr}`)));
  });
  const ready = await new Promise<string>((resolve, reject) => {
    const c = new Client();
    c.on('ready', () => {
      c.end();
      resolve('ready');
    });
    c.on('error', reject);
    c.connect({ host: '127.0.0.1', port, username: 'ktctl', privateKey: client.private, hostVerifier: () => true, readyTimeout: 10_000 });
  });
  t.is(ready, 'ready');
  const code = await new Promise<number | null>((resolve) => {
    child.once('close', resolve);
    child.kill('SIGTERM');
  });
  t.is(code, 0, stderr);
});

test('a bundle missing from the installation, or too big for a ConfigMap, is one sentence naming the build', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktctl-bundle-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const missing = t.throws(() => shadowProgram(pathToFileURL(path.join(dir, 'shadow.mjs'))), { instanceOf: ShadowProgramError });
  t.regex(missing.message, /shadow program .*shadow\.mjs is missing from this installation: build it with npm run build/);
  const big = path.join(dir, 'big.mjs');
  fs.writeFileSync(big, 'x'.repeat(CONFIGMAP_MAX_BYTES + 1));
  const tooBig = t.throws(() => shadowProgram(pathToFileURL(big)), { instanceOf: ShadowProgramError });
  t.regex(tooBig.message, /more than a ConfigMap holds \(1 MiB\)/);
});

test('--podQuota: KT Connect\'s form and Kubernetes quantities; bad ones say why', (t) => {
  t.deepEqual(parsePodQuota('0.5c,512m'), { cpu: '500m', memory: '512Mi' });
  t.deepEqual(parsePodQuota('500m,1g'), { cpu: '500m', memory: '1Gi' });
  t.deepEqual(parsePodQuota('1,256Mi'), { cpu: '1', memory: '256Mi' });
  t.deepEqual(parsePodQuota(',128Mi'), { memory: '128Mi' });
  t.deepEqual(parsePodQuota('2c'), { cpu: '2' });
  t.throws(() => parsePodQuota('lots,512m'), { message: /CPU "lots"/ });
  t.throws(() => parsePodQuota('1c,big'), { message: /memory "big"/ });
  t.throws(() => parsePodQuota(','), { message: /takes CPU,MEMORY/ });
  t.throws(() => parsePodQuota('1,2,3'), { message: /takes CPU,MEMORY/ });
});

function spec(over: Partial<ShadowSpec> = {}): ShadowSpec {
  return { name: 'ktctl-abc', namespace: 'dev', image: DEFAULT_SHADOW_IMAGE, role: 'connect', labels: {}, annotations: {}, nodeSelector: {}, pod: DEFAULT_POD_SETTINGS, ...over };
}

test('every pod ktctl makes passes Pod Security restricted: shadow, exchange on port 80, router, --runAsUser auto', (t) => {
  const cases: Array<[string, ShadowSpec]> = [
    ['connect', spec()],
    ['exchange on port 80', spec({ role: 'exchange', ports: [{ containerPort: 80 }] })],
    ['router', spec({ role: 'router', ports: [{ name: 'http', containerPort: 8080 }], env: [{ name: 'X', value: '1' }] })],
    ['--runAsUser auto', spec({ pod: { ...DEFAULT_POD_SETTINGS, runAsUser: 'auto' } })],
    ['--podQuota --serviceAccount --forceUpdate', spec({ pod: { ...DEFAULT_POD_SETTINGS, resources: { cpu: '0.5', memory: '512Mi' }, serviceAccount: 'dev', pullPolicy: 'Always' } })],
  ];
  for (const [what, s] of cases) {
    const pod = podManifest(s, s.name, new Date(), 'ktctl-shadow-0123456789ab');
    t.deepEqual(evaluatePod('restricted', { annotations: pod.metadata?.annotations }, pod.spec as unknown as JsonObject), [], what);
  }
});

test('the pod runs node on the program from its ConfigMap, as the image\'s user node, with the flags\' settings', (t) => {
  const pod = podManifest(spec({ pod: { ...DEFAULT_POD_SETTINGS, resources: { cpu: '0.5', memory: '512Mi' }, serviceAccount: 'dev', pullPolicy: 'Always' } }), 'ktctl-abc', new Date(), 'ktctl-shadow-0123456789ab');
  const c = pod.spec!.containers[0]!;
  t.deepEqual(c.command, ['node', `${PROGRAM_DIR}/${PROGRAM_FILE}`]);
  t.is(c.image, DEFAULT_SHADOW_IMAGE);
  t.is(c.imagePullPolicy, 'Always');
  t.deepEqual(c.resources, { requests: { cpu: '0.5', memory: '512Mi' }, limits: { cpu: '0.5', memory: '512Mi' } });
  t.is(pod.spec!.serviceAccountName, 'dev');
  t.false(pod.spec!.automountServiceAccountToken);
  t.is(pod.spec!.securityContext?.runAsUser, 1000);
  t.deepEqual(pod.spec!.volumes?.find((v) => v.name === 'program')?.configMap, { name: 'ktctl-shadow-0123456789ab', items: [{ key: PROGRAM_FILE, path: PROGRAM_FILE }], defaultMode: 0o444 });
  t.deepEqual(c.volumeMounts?.find((m) => m.name === 'program'), { name: 'program', mountPath: PROGRAM_DIR, readOnly: true });
  const auto = podManifest(spec({ pod: { ...DEFAULT_POD_SETTINGS, runAsUser: 'auto' } }), 'ktctl-abc', new Date(), 'p');
  t.is(auto.spec!.securityContext?.runAsUser, undefined);
  t.is(auto.spec!.securityContext?.fsGroup, undefined);
  t.is(auto.spec!.containers[0]!.securityContext?.runAsUser, undefined);
  t.true(auto.spec!.securityContext?.runAsNonRoot);
});

test('shadow-image/Dockerfile, the recipe for a mirror, builds on the image ktctl uses and copies only the bundle', (t) => {
  const dockerfile = fs.readFileSync(new URL('../shadow-image/Dockerfile', import.meta.url), 'utf8');
  const lines = dockerfile.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
  t.deepEqual(lines, [`FROM ${DEFAULT_SHADOW_IMAGE}`, `COPY dist/shadow.mjs ${PROGRAM_DIR}/${PROGRAM_FILE}`, 'USER 1000:1000', 'EXPOSE 2222', `CMD ["node", "${PROGRAM_DIR}/${PROGRAM_FILE}"]`]);
});
