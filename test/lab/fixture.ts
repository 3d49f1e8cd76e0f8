/**
 * For test files that need the lab (`npm test` starts it; or `npm run lab -- up` by hand):
 * the kubeconfig and its contexts, client-node objects, a unique namespace per test file,
 * a service account with exactly the Roles a test gives it (`serviceAccountKubeconfig`),
 * waiting for pods, running commands in pods, and kubectl.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { CoreV1Api, KubeConfig, KubernetesObjectApi, loadAllYaml, type KubernetesObject, type V1Pod } from '@kubernetes/client-node';
import { execInPod, type LabEndpoint } from './api/client.js';
import { CONTEXTS, FILES, USERS } from './api/pki.js';
import { deleteFrozen, getFrozen, postFreeze, type FreezeAnswer, type FrozenPod, type PodFilter } from './api/freeze-client.js';

export { FaultRefused, type FreezeAnswer, type FrozenPod } from './api/freeze-client.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

export type LabContext = 'admin' | 'readonly' | 'dev' | 'exec';

export interface Lab {
  kubeconfig: string;
  contexts: Record<LabContext, string>;
}

/** The running lab, or a clear error if there is none. */
export function lab(): Lab {
  const fromEnv = process.env.KTLAB_KUBECONFIG;
  const fallback = path.join(path.resolve(process.env.KTLAB_DIR ?? path.join(REPO, '.lab')), FILES.kubeconfig);
  const kubeconfig = fromEnv ?? fallback;
  if (!fs.existsSync(kubeconfig)) {
    throw new Error(`the lab is not up (no ${kubeconfig}): run npm test, or npm run lab -- up first`);
  }
  return { kubeconfig, contexts: { admin: CONTEXTS.admin, readonly: CONTEXTS.readonly, dev: CONTEXTS.dev, exec: CONTEXTS.exec } };
}

/** admin: everything (system:masters); readonly: the `view` ClusterRole; dev: only what bindings give it; exec: tokens from the exec plugin (system:masters). */
export function kubeConfig(context: LabContext = 'admin'): KubeConfig {
  const l = lab();
  const kc = new KubeConfig();
  kc.loadFromFile(l.kubeconfig);
  kc.setCurrentContext(l.contexts[context]);
  return kc;
}

/** The lab's own API (faults, switches) as `kc`'s user, by default the admin. */
export function endpointOf(kc: KubeConfig = kubeConfig()): LabEndpoint {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (!cluster?.caData || !user?.token) throw new Error('the lab kubeconfig lacks CA data or a token');
  return { server: cluster.server, ca: Buffer.from(cluster.caData, 'base64'), token: user.token };
}

interface FileHooks {
  serial: { before(fn: () => Promise<void>): void };
  after: { always(fn: () => Promise<void>): void };
}

/**
 * A namespace with a unique name for this test file: created in a before hook, deleted after all
 * tests of the file (also when they fail). Call at the top level, before the file's own hooks.
 */
export function fileNamespace(test: FileHooks, prefix: string): string {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  // serial: AVA runs a file's before hooks concurrently unless they are serial (runner.js
  // runMultiple), and the file's own hooks create things in this namespace
  test.serial.before(async () => {
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

/**
 * `npm run lab -- fault freeze-shadow SECONDS [-n NS] [--pod NAME]` from a test (the same request
 * to the lab's daemon, test/lab/api/freeze.ts): stops ktctl's pods of `namespace` (every
 * namespace if none; or the one pod `pod`) with SIGSTOP, and the daemon continues them (SIGCONT)
 * after `seconds`. Resolves at once, when every process of theirs reads T, with each frozen pod
 * and its pids (host pids: /proc/PID/status). Rejects with FaultRefused and the lab's sentence
 * (no such pod, no ktctl pod with a process). Give the test a `thawShadow` teardown, so a failure
 * does not leave a shadow stopped for the rest of `seconds`.
 */
export function freezeShadow(seconds: number, o: PodFilter = {}): Promise<FreezeAnswer> {
  return postFreeze(endpointOf(kubeConfig()), { seconds, namespace: o.namespace, pod: o.pod });
}

/** Continues the frozen pods (of a namespace, or one pod) now; resolves with those it continued. */
export function thawShadow(o: PodFilter = {}): Promise<FrozenPod[]> {
  return deleteFrozen(endpointOf(kubeConfig()), o);
}

/** The pods frozen now (of a namespace, or one pod), with the pids still stopped. */
export function frozenShadows(o: PodFilter = {}): Promise<FrozenPod[]> {
  return getFrozen(endpointOf(kubeConfig()), o);
}

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

export interface ServiceAccountUser {
  /** a kubeconfig file with one context (current) that authenticates as the service account */
  kubeconfig: string;
  context: string;
  /** `system:serviceaccount:NAMESPACE:NAME`, the user RBAC and `kubectl auth whoami` see */
  user: string;
  token: string;
  /** deletes the bindings, roles and service account it made, and the kubeconfig (idempotent) */
  cleanup(): Promise<void>;
}

export interface ServiceAccountOptions {
  /**
   * Roles to grant, as YAML (one or more documents) or objects. A Role is created in `namespace`
   * and bound with a RoleBinding; a ClusterRole is created and bound with a ClusterRoleBinding
   * (cluster-wide: give ClusterRoles names unique to the test). Their names are used as given.
   */
  roles?: Array<string | KubernetesObject>;
  /** seconds the token lives (TokenRequest spec.expirationSeconds, at least 600; default 3600) */
  expirationSeconds?: number;
  /** the admin kubeconfig to make everything with (default: the lab's, admin context) */
  adminKubeConfig?: KubeConfig;
}

/**
 * A service account of its own for one test: creates ServiceAccount `name` in `namespace` (which
 * must exist), the given Roles and their bindings to it, mints a token (TokenRequest, as
 * `kubectl create token`) and writes a kubeconfig with it. Test files can so run in parallel, each
 * as its own user with exactly the permissions it declares. Call `cleanup` in `t.teardown`.
 */
export async function serviceAccountKubeconfig(namespace: string, name: string, options: ServiceAccountOptions = {}): Promise<ServiceAccountUser> {
  const admin = options.adminKubeConfig ?? kubeConfig();
  const objects = KubernetesObjectApi.makeApiClient(admin);
  const core = admin.makeApiClient(CoreV1Api);
  const made: KubernetesObject[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-sa-'));
  const user = `system:serviceaccount:${namespace}:${name}`;
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    for (const o of made.reverse()) await objects.delete(o).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const sa = await objects.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace } });
    made.push(sa);
    const roles = (options.roles ?? []).flatMap((r) => (typeof r === 'string' ? (loadAllYaml(r) as KubernetesObject[]) : [r])).filter((r) => r !== null && r !== undefined);
    const subject = { kind: 'ServiceAccount', name, namespace };
    for (const role of roles) {
      const roleName = role.metadata?.name;
      if (role.kind !== 'Role' && role.kind !== 'ClusterRole') throw new Error(`serviceAccountKubeconfig: ${String(role.kind)} is not a Role or ClusterRole`);
      if (!roleName) throw new Error(`serviceAccountKubeconfig: a ${role.kind} without metadata.name`);
      const cluster = role.kind === 'ClusterRole';
      const body = { ...role, apiVersion: 'rbac.authorization.k8s.io/v1', metadata: { ...role.metadata, ...(cluster ? {} : { namespace }) } };
      made.push(await objects.create(body));
      const binding = {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: cluster ? 'ClusterRoleBinding' : 'RoleBinding',
        metadata: cluster ? { name: `${roleName}-${namespace}-${name}` } : { name: `${roleName}-${name}`, namespace },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: role.kind, name: roleName },
        subjects: [subject],
      };
      made.push(await objects.create(binding));
    }
    const tr = await core.createNamespacedServiceAccountToken({
      name,
      namespace,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [], expirationSeconds: options.expirationSeconds ?? 3600 } },
    });
    const token = tr.status?.token;
    if (!token) throw new Error(`serviceAccountKubeconfig: the TokenRequest for ${namespace}/${name} returned no token`);
    const cluster = admin.getCurrentCluster();
    if (!cluster?.caData) throw new Error('serviceAccountKubeconfig: the admin kubeconfig lacks the cluster CA data');
    const context = `${namespace}-${name}`;
    const kubeconfig = path.join(dir, 'kubeconfig');
    fs.writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'lab', cluster: { server: cluster.server, 'certificate-authority-data': cluster.caData } }],
        users: [{ name: user, user: { token } }],
        contexts: [{ name: context, context: { cluster: 'lab', user, namespace } }],
        'current-context': context,
      }),
      { mode: 0o600 },
    );
    return { kubeconfig, context, user, token, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** A copy of a kubeconfig whose `lab-exec` user has its own token lifetime and control folder. */
export interface ExecKubeconfig {
  /** the copy; its current context is lab-exec */
  kubeconfig: string;
  /** KTLAB_EXEC_CONTROL_DIR of the copy's plugin */
  controlDir: string;
  /** one entry per run of the plugin so far (runs.log) */
  runs(): Array<{ at: string; pid: number; expirationTimestamp: string; interactive: boolean | null }>;
  /** while on, the plugin fails (a file `fail` in the control folder) */
  setFailing(on: boolean): void;
}

/**
 * Writes a copy of the lab's kubeconfig (or `source`) into a new temporary folder, with the
 * `lab-exec` user's KTLAB_TOKEN_TTL_SECONDS set to `ttlSeconds` and a control folder of its own
 * (exec-token.ts: the plugin logs each run there and fails while `fail` exists). Removed at teardown.
 */
export function execKubeconfig(hooks: { teardown(fn: () => void): void }, o: { ttlSeconds: number; source?: string }): ExecKubeconfig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-exec-'));
  hooks.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const controlDir = path.join(dir, 'control');
  fs.mkdirSync(controlDir);
  const kc = new KubeConfig();
  kc.loadFromFile(o.source ?? lab().kubeconfig);
  const user = kc.users.find((u) => u.name === USERS.exec);
  const exec = user?.exec as { env?: Array<{ name: string; value: string }> } | undefined;
  if (!user || !exec) throw new Error(`the kubeconfig ${o.source ?? lab().kubeconfig} has no user ${USERS.exec} with exec (an older lab: npm run lab -- up again)`);
  const env = (exec.env ?? []).filter((e) => e.name !== 'KTLAB_TOKEN_TTL_SECONDS' && e.name !== 'KTLAB_EXEC_CONTROL_DIR');
  exec.env = [...env, { name: 'KTLAB_TOKEN_TTL_SECONDS', value: String(o.ttlSeconds) }, { name: 'KTLAB_EXEC_CONTROL_DIR', value: controlDir }];
  kc.setCurrentContext(CONTEXTS.exec);
  const kubeconfig = path.join(dir, 'kubeconfig');
  // exportConfig writes JSON, which is YAML too (kubectl reads it)
  fs.writeFileSync(kubeconfig, kc.exportConfig(), { mode: 0o600 });
  const log = path.join(controlDir, 'runs.log');
  return {
    kubeconfig,
    controlDir,
    runs: () =>
      fs.existsSync(log)
        ? fs
            .readFileSync(log, 'utf8')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as ReturnType<ExecKubeconfig['runs']>[number])
        : [],
    setFailing(on) {
      if (on) fs.writeFileSync(path.join(controlDir, 'fail'), '');
      else fs.rmSync(path.join(controlDir, 'fail'), { force: true });
    },
  };
}
