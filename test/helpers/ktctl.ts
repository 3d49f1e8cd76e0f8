/**
 * ktctl against the lab, as a user runs it: the built CLI (a process, through cli-process.ts) with
 * the lab's kubeconfig in KUBECONFIG and a state directory of the test file's own in KTCTL_STATE_DIR.
 *
 * - `labKtctl(test, prefix)` at a file's top level; the state directory goes after the file.
 * - `.start(t, args)`: a long run (connect, exchange, preview): its output, `waitFor(line)`,
 *   `stop(t)` (SIGINT, exit 0 expected). One still running when its test ends gets SIGINT, so it
 *   restores what it changed in the cluster, and SIGKILL if it has not exited 15 s later.
 * - `.run(args)`: a one-shot command (recover, clean, status, a refused exchange): exit code and output.
 *
 * Also what ktctl labels as its own in a namespace, and the `web` deployment and service that the
 * exchange tests take over, with what an exchange may leave on them.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api, type V1PodSpec } from '@kubernetes/client-node';
import { eventually, kubeConfig, lab, labExec, waitForReadyPods } from '../lab/fixture.js';
import { CLI, startCli, type CliRun } from './cli-process.js';
import type { Teardown } from './netns.js';

export type { CliRun } from './cli-process.js';
export { errorSentence } from './cli-process.js';

/** The label selector of everything ktctl makes. */
export const MANAGED = 'app.kubernetes.io/managed-by=ktctl';

export interface KtctlResult {
  /** the exit code; 1 also for a process killed by a signal or by the timeout */
  code: number;
  stdout: string;
  stderr: string;
  /** stdout, then stderr */
  log: string;
}

export interface LabKtctl {
  /** KTCTL_STATE_DIR of this file's runs */
  readonly stateDir: string;
  /** KUBECONFIG and KTCTL_STATE_DIR, for a process a test starts itself */
  readonly env: Readonly<Record<string, string>>;
  start(hooks: Teardown, args: string[], o?: { netns?: string; env?: NodeJS.ProcessEnv }): CliRun;
  run(args: string[], o?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<KtctlResult>;
}

interface FileHooks {
  after: { always(fn: () => void): void };
}

export function labKtctl(test: FileHooks, prefix: string): LabKtctl {
  const stateDir = mkdtempSync(join(tmpdir(), `${prefix}-state-`));
  test.after.always(() => rmSync(stateDir, { recursive: true, force: true }));
  const env = { KUBECONFIG: lab().kubeconfig, KTCTL_STATE_DIR: stateDir };
  return {
    stateDir,
    env,
    start(hooks, args, o = {}) {
      const run = startCli(hooks, args, { netns: o.netns, env: { ...env, ...o.env } });
      // Runs before startCli's SIGKILL (teardowns run last registered first).
      hooks.teardown(() => interrupt(run));
      return run;
    },
    run(args, o = {}) {
      return new Promise((resolve) =>
        execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env, ...o.env }, timeout: o.timeoutMs ?? 60_000 }, (e, stdout, stderr) =>
          resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout: String(stdout), stderr: String(stderr), log: String(stdout) + String(stderr) }),
        ),
      );
    },
  };
}

/** SIGINT to a run that still goes, and up to 15 s for it to restore the cluster and exit. */
async function interrupt(run: CliRun): Promise<void> {
  if (run.child.exitCode !== null || run.child.signalCode !== null) return;
  run.child.kill('SIGINT');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([run.exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
  clearTimeout(timer);
}

/** ktctl's pods (not the terminating ones), Secrets and Services in `namespace`, as `kind/name`. */
export async function ktctlObjects(namespace: string): Promise<string[]> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const [pods, secrets, services] = await Promise.all([
    core.listNamespacedPod({ namespace, labelSelector: MANAGED }),
    core.listNamespacedSecret({ namespace, labelSelector: MANAGED }),
    core.listNamespacedService({ namespace, labelSelector: MANAGED }),
  ]);
  return [
    ...pods.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => `pod/${p.metadata?.name}`),
    ...secrets.items.map((s) => `secret/${s.metadata?.name}`),
    ...services.items.map((s) => `service/${s.metadata?.name}`),
  ];
}

/**
 * What a pod needs to pass Pod Security `restricted` (a namespace labelled
 * pod-security.kubernetes.io/enforce=restricted): the pod's and each container's securityContext.
 */
export const RESTRICTED = {
  pod: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
  container: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
};

/** A pod spec running `ktlab/echo` (one container `main`), restricted-compliant when asked. */
export function echoPodSpec(restricted = false): V1PodSpec {
  return restricted
    ? { securityContext: RESTRICTED.pod, containers: [{ name: 'main', image: 'ktlab/echo', securityContext: RESTRICTED.container }] }
    : { containers: [{ name: 'main', image: 'ktlab/echo' }] };
}

/**
 * The deployment `web` (label app=web, `ktlab/echo` on 8080) and the service `web` (80 -> 8080); waits
 * for the pods. `restricted`: its pods pass Pod Security restricted.
 */
export async function deployWeb(namespace: string, replicas: number, restricted = false): Promise<void> {
  const labels = { app: 'web' };
  await kubeConfig().makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace,
    body: {
      metadata: { name: 'web', labels },
      spec: {
        replicas,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            ...(restricted ? { securityContext: RESTRICTED.pod } : {}),
            containers: [{ name: 'web', image: 'ktlab/echo', ports: [{ containerPort: 8080 }], ...(restricted ? { securityContext: RESTRICTED.container } : {}) }],
          },
        },
      },
    },
  });
  await kubeConfig().makeApiClient(CoreV1Api).createNamespacedService({ namespace, body: { metadata: { name: 'web' }, spec: { selector: labels, ports: [{ port: 80, targetPort: 8080 }] } } });
  await waitForReadyPods(namespace, 'app=web', replicas);
}

/**
 * What an exchange of `web` (made by deployWeb) may leave behind: ktctl's objects, `ktctl/*`
 * annotations on the service or the deployment, a selector other than app=web, another replica count.
 */
export async function webLeftovers(namespace: string, replicas: number): Promise<string[]> {
  const svc = await kubeConfig().makeApiClient(CoreV1Api).readNamespacedService({ name: 'web', namespace });
  const dep = await kubeConfig().makeApiClient(AppsV1Api).readNamespacedDeployment({ name: 'web', namespace });
  const out = await ktctlObjects(namespace);
  for (const [k, v] of Object.entries({ ...svc.metadata?.annotations, ...dep.metadata?.annotations })) if (k.startsWith('ktctl/')) out.push(`annotation ${k}=${v}`);
  if (JSON.stringify(svc.spec?.selector) !== JSON.stringify({ app: 'web' })) out.push(`selector ${JSON.stringify(svc.spec?.selector)}`);
  if (dep.spec?.replicas !== replicas) out.push(`replicas ${dep.spec?.replicas}`);
  return out;
}

/** curl from a pod of the lab (5 s at most): its exit code, body and error text. */
export async function podCurl(pod: { namespace: string; name: string }, args: string[]): Promise<{ code: number; body: string; stderr: string }> {
  const r = await labExec(pod, ['curl', '-s', '-m', '5', ...args]);
  return { code: r.exitCode, body: r.stdout, stderr: r.stderr };
}

/**
 * Waits until `web`'s own pods (or those named `podPrefix`*) answer again (the echo's JSON names its
 * pod) and returns that body.
 * After a selector is restored or replicas are back, the endpoints and the lab's service rules follow
 * a moment later, as in any cluster; a request in that moment may find no endpoint.
 */
export function webPodsAnswer(get: () => Promise<string>, podPrefix = 'web-'): Promise<string> {
  return eventually(async () => {
    const body = await get();
    return body.includes(`"pod":"${podPrefix}`) ? body : undefined;
  }, `the pods ${podPrefix}* answering again`);
}

/**
 * The laptop's own server that the cluster's traffic is sent to: HTTP on 127.0.0.1 (`port` 0: any
 * free one), answering `laptop <path>` unless given a handler. Close it with `closeServer`.
 */
export async function laptopServer(handler: http.RequestListener = (req, res) => res.end(`laptop ${req.url ?? ''}`), port = 0): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Closes a server and every connection it still has. */
export function closeServer(s: http.Server): Promise<void> {
  return new Promise((resolve) => {
    s.closeAllConnections();
    s.close(() => resolve());
  });
}
