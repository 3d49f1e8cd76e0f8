/**
 * For test files that need the lab (`npm test` starts it; or `npm run lab -- up` by hand):
 * the kubeconfig and its contexts, client-node objects, a unique namespace per test file,
 * waiting for pods, running commands in pods, and kubectl.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { execInPod, type LabEndpoint } from './api/client.js';
import { CONTEXTS, FILES } from './api/pki.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Lab {
  kubeconfig: string;
  contexts: { admin: string; readonly: string };
}

/** The running lab, or a clear error if there is none. */
export function lab(): Lab {
  const fromEnv = process.env.KTLAB_KUBECONFIG;
  const fallback = path.join(path.resolve(process.env.KTLAB_DIR ?? path.join(REPO, '.lab')), FILES.kubeconfig);
  const kubeconfig = fromEnv ?? fallback;
  if (!fs.existsSync(kubeconfig)) {
    throw new Error(`the lab is not up (no ${kubeconfig}): run npm test, or npm run lab -- up first`);
  }
  return { kubeconfig, contexts: { admin: CONTEXTS.admin, readonly: CONTEXTS.readonly } };
}

export function kubeConfig(context: 'admin' | 'readonly' = 'admin'): KubeConfig {
  const l = lab();
  const kc = new KubeConfig();
  kc.loadFromFile(l.kubeconfig);
  kc.setCurrentContext(l.contexts[context]);
  return kc;
}

function endpointOf(kc: KubeConfig): LabEndpoint {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (!cluster?.caData || !user?.token) throw new Error('the lab kubeconfig lacks CA data or a token');
  return { server: cluster.server, ca: Buffer.from(cluster.caData, 'base64'), token: user.token };
}

interface FileHooks {
  before(fn: () => Promise<void>): void;
  after: { always(fn: () => Promise<void>): void };
}

/**
 * A namespace with a unique name for this test file: created in a before hook, deleted after all
 * tests of the file (also when they fail). Call at the top level, before the file's own hooks.
 */
export function fileNamespace(test: FileHooks, prefix: string): string {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  test.before(async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name, labels: { 'ktlab.test/owner': prefix } } } });
  });
  test.after.always(async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    await core.deleteNamespace({ name }).catch(() => undefined);
  });
  return name;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function isReady(p: V1Pod): boolean {
  return p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** Polls until `count` pods matching the selector are Running and Ready (ignores terminating ones). */
export async function waitForReadyPods(namespace: string, labelSelector: string, count: number, timeoutMs = 30_000): Promise<V1Pod[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const deadline = Date.now() + timeoutMs;
  let last: V1Pod[] = [];
  while (Date.now() < deadline) {
    const list = await core.listNamespacedPod({ namespace, labelSelector });
    last = list.items.filter((p) => !p.metadata?.deletionTimestamp);
    const ready = last.filter(isReady);
    if (ready.length === count && last.length === count) return ready;
    await sleep(150);
  }
  const seen = last.map((p) => `${p.metadata?.name}=${p.status?.phase}`).join(', ');
  throw new Error(`pods ${labelSelector} in ${namespace}: wanted ${count} ready, saw [${seen}]`);
}

export { eventually } from '../helpers/poll.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs a command inside a pod (its network namespace) through the API's pods/exec. */
export async function labExec(pod: { namespace: string; name: string; container?: string }, command: string[], input?: string): Promise<CommandResult> {
  const { PassThrough } = await import('node:stream');
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  let stdin: NodeJS.ReadableStream | undefined;
  if (input !== undefined) {
    const s = new PassThrough();
    s.end(input);
    stdin = s;
  }
  const res = await execInPod(endpointOf(kubeConfig()), pod.namespace, pod.name, command, { stdin, stdout, stderr, container: pod.container });
  return { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), exitCode: res.exitCode };
}

/** Runs kubectl against the lab (admin context unless --context is given). */
export function kubectl(args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'kubectl',
      args,
      { env: { ...process.env, KUBECONFIG: lab().kubeconfig }, timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ stdout: String(stdout), stderr: String(stderr), exitCode: code });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export function hasKubectl(): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, 'kubectl')));
}
