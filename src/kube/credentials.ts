/**
 * Exec credential plugins (client.authentication.k8s.io/v1 and v1beta1), the way EKS, GKE and AKS
 * kubeconfigs log in, run as kubectl runs them. They replace client-node's ExecAuth in each
 * KubeConfig (`installExecCredentials`): that one keeps a token until its expiry but never runs the
 * plugin again after a 401, runs several plugins at once when calls overlap, and does not set
 * KUBERNETES_EXEC_INFO. Token files, OIDC and the cloud auth providers stay client-node's.
 *
 * Followed: client-go plugin/pkg/client/auth/exec/exec.go, `Authenticator.refreshCredsLocked`
 * (the environment, KUBERNETES_EXEC_INFO with spec.interactive and, with provideClusterInfo,
 * spec.cluster; the checks on what the plugin prints), `isInteractive` (interactiveMode),
 * `wrapCmdRunErrorLocked` (a missing command with its installHint, an exit code) and
 * `roundTripper.RoundTrip` + `maybeRefreshCreds` (a 401 drops the credential the request was made
 * with, unless a newer one came meanwhile). One difference: a credential is renewed a little
 * before its expirationTimestamp (RENEW_MARGIN), so a request does not leave with a token that
 * expires on its way.
 *
 * One plugin run at a time per user (single flight): every call that needs a credential while the
 * plugin runs waits for that run. A 401 anywhere (kubeCall, a port-forward upgrade, a watch) calls
 * `renewAfterUnauthorized` with the `credentialEpoch` taken before the request: credentials obtained
 * up to then are dropped, so the next request runs the plugin once, however many calls saw the 401.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { KubeConfig, User } from '@kubernetes/client-node';
import { KubeError } from '../errors.js';

/** The kubeconfig's exec plugin gave no credential: not installed, failed (its stderr's first line), or printed no ExecCredential. */
export class ExecCredentialError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_EXEC_CREDENTIAL', message, options);
  }
}

const API_VERSIONS = ['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1'] as const;
/** A credential is renewed this long before its expiry: a fifth of its lifetime, at most 60 s. */
const RENEW_MARGIN = { fraction: 0.2, maxMs: 60_000 };
/** A plugin that does not end is killed after this (an interactive one, waiting for a person: INTERACTIVE_TIMEOUT_MS). */
const PLUGIN_TIMEOUT_MS = 120_000;
const INTERACTIVE_TIMEOUT_MS = 600_000;
/** At most this much of a plugin's stdout is read (a credential is a few KiB). */
const MAX_OUTPUT = 1024 * 1024;

interface ExecConfig {
  apiVersion?: string;
  command?: string;
  args?: string[];
  env?: Array<{ name: string; value: string }> | null;
  interactiveMode?: string;
  installHint?: string;
  provideClusterInfo?: boolean;
}

interface Credential {
  token?: string;
  cert?: string;
  key?: string;
  /** renew from then on (ms, this machine's clock); undefined: never expires */
  renewAt?: number;
  generation: number;
}

/** What a plugin needs to know besides its config: the cluster (provideClusterInfo) and the terminal. */
interface PluginContext {
  cluster?: Record<string, unknown>;
  stdinIsTTY: boolean;
}

let generations = 0;
/**
 * Every plugin of this process, by user, exec config and (with provideClusterInfo) cluster, as
 * client-go's globalCache: two KubeConfigs of the same kubeconfig share one credential.
 */
const plugins = new Map<string, ExecPlugin>();

/** How many credentials were obtained so far: taken before a request, given to `renewAfterUnauthorized` after its 401. */
export function credentialEpoch(): number {
  return generations;
}

/**
 * After a 401 of a request that left at `epoch`: drops every exec credential obtained up to then
 * (a newer one, fetched meanwhile by another call, is kept). True when an exec plugin is in use,
 * i.e. trying the request again can help.
 */
export function renewAfterUnauthorized(epoch: number): boolean {
  for (const p of plugins.values()) p.invalidate(epoch);
  return plugins.size > 0;
}

/** Runs `fn`; when it fails with what `unauthorized` recognizes as a 401 and an exec plugin is in use, once more. */
export async function retryUnauthorized<T>(fn: () => Promise<T>, unauthorized: (error: unknown) => boolean): Promise<T> {
  const epoch = credentialEpoch();
  try {
    return await fn();
  } catch (error) {
    if (!unauthorized(error) || !renewAfterUnauthorized(epoch)) throw error;
  }
  return fn();
}

/** One user's plugin: its cached credential and the run under way. */
class ExecPlugin {
  readonly #user: string;
  readonly #exec: ExecConfig;
  readonly #context: PluginContext;
  #cached: Credential | undefined;
  #running: Promise<Credential> | undefined;

  constructor(user: string, exec: ExecConfig, context: PluginContext) {
    this.#user = user;
    this.#exec = exec;
    this.#context = context;
  }

  get(): Promise<Credential> {
    const c = this.#cached;
    if (c && (c.renewAt === undefined || Date.now() < c.renewAt)) return Promise.resolve(c);
    this.#running ??= this.#run().finally(() => (this.#running = undefined));
    return this.#running;
  }

  invalidate(epoch: number): void {
    if (this.#cached && this.#cached.generation <= epoch) this.#cached = undefined;
  }

  #name(): string {
    return `the credential plugin ${this.#exec.command ?? '(none)'} of user ${this.#user}`;
  }

  async #run(): Promise<Credential> {
    const exec = this.#exec;
    const apiVersion = exec.apiVersion ?? '';
    if (!(API_VERSIONS as readonly string[]).includes(apiVersion)) {
      throw new ExecCredentialError(`the kubeconfig's user ${this.#user} names an exec plugin of apiVersion "${apiVersion}"; ktctl (like kubectl) runs ${API_VERSIONS.join(' and ')}`);
    }
    if (!exec.command) throw new ExecCredentialError(`the kubeconfig's user ${this.#user} has an exec plugin without a command`);
    const interactive = this.#interactive(apiVersion);
    const execInfo = {
      kind: 'ExecCredential',
      apiVersion,
      spec: { ...(exec.provideClusterInfo && this.#context.cluster ? { cluster: this.#context.cluster } : {}), interactive },
    };
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const e of exec.env ?? []) env[e.name] = e.value;
    env.KUBERNETES_EXEC_INFO = JSON.stringify(execInfo);
    const out = await this.#spawn(exec.command, exec.args ?? [], env, interactive);
    const credential = this.#parse(out, apiVersion);
    this.#cached = credential;
    return credential;
  }

  /** client-go `isInteractive`: Never, IfAvailable (a terminal on stdin), Always (a terminal, or an error); v1 must say which. */
  #interactive(apiVersion: string): boolean {
    const mode = this.#exec.interactiveMode ?? (apiVersion.endsWith('/v1beta1') ? 'IfAvailable' : undefined);
    switch (mode) {
      case 'Never':
        return false;
      case 'IfAvailable':
        return this.#context.stdinIsTTY;
      case 'Always':
        if (!this.#context.stdinIsTTY) throw new ExecCredentialError(`${this.#name()} needs a terminal (interactiveMode Always), and standard input is not one: run ktctl in a terminal, or log in first so the plugin need not ask`);
        return true;
      case undefined:
        throw new ExecCredentialError(`the kubeconfig's user ${this.#user} must set interactiveMode for its exec plugin (${apiVersion}): Never, IfAvailable or Always`);
      default:
        throw new ExecCredentialError(`the kubeconfig's user ${this.#user} has an unknown interactiveMode "${mode}" (Never, IfAvailable or Always)`);
    }
  }

  #spawn(command: string, args: string[], env: NodeJS.ProcessEnv, interactive: boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      // Interactive: the plugin talks to the person on the terminal (its prompts go to stderr, which
      // is passed on as kubectl does); otherwise its stderr is kept for the error sentence.
      const child = spawn(command, args, { env, stdio: [interactive ? 'inherit' : 'ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      child.stdout.on('data', (c: Buffer) => {
        outBytes += c.length;
        if (outBytes <= MAX_OUTPUT) out.push(c);
      });
      child.stderr.on('data', (c: Buffer) => {
        if (interactive) process.stderr.write(c);
        if (err.length < 64 * 1024) err += c.toString('utf8');
      });
      const limit = interactive ? INTERACTIVE_TIMEOUT_MS : PLUGIN_TIMEOUT_MS;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, limit);
      let spawnError: NodeJS.ErrnoException | undefined;
      child.on('error', (e: NodeJS.ErrnoException) => (spawnError = e));
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (spawnError) {
          const hint = this.#exec.installHint?.trim();
          const why = spawnError.code === 'ENOENT' ? 'is not installed (no such file, or not on PATH)' : `could not start (${spawnError.message})`;
          reject(new ExecCredentialError(`${this.#name()} ${why}${hint ? `: ${hint.replace(/\s*\n\s*/g, ' ')}` : ''}`, { cause: spawnError }));
          return;
        }
        const first = err.split('\n').map((l) => l.trim()).find((l) => l !== '');
        if (timedOut) {
          reject(new ExecCredentialError(`${this.#name()} did not finish within ${limit / 1000} s${first ? ` (it said: ${first})` : ''}`));
          return;
        }
        if (code !== 0) {
          const how = code === null ? `was killed by ${signal ?? 'a signal'}` : `failed with exit code ${code}`;
          reject(new ExecCredentialError(`${this.#name()} ${how}${first ? `: ${first}` : ' and printed nothing on stderr'}`));
          return;
        }
        if (outBytes > MAX_OUTPUT) {
          reject(new ExecCredentialError(`${this.#name()} printed more than ${MAX_OUTPUT} bytes, which is no ExecCredential`));
          return;
        }
        resolve(Buffer.concat(out).toString('utf8'));
      });
    });
  }

  /** The checks of client-go's refreshCredsLocked on what the plugin printed. */
  #parse(text: string, apiVersion: string): Credential {
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      throw new ExecCredentialError(`${this.#name()} printed no JSON ExecCredential on stdout (${text.trim().slice(0, 80) || 'nothing'})`);
    }
    const cred = obj as { apiVersion?: unknown; kind?: unknown; status?: { token?: unknown; clientCertificateData?: unknown; clientKeyData?: unknown; expirationTimestamp?: unknown } };
    if (cred.apiVersion !== apiVersion || cred.kind !== 'ExecCredential') {
      throw new ExecCredentialError(`${this.#name()} is configured for ${apiVersion}, but printed ${String(cred.kind ?? 'no kind')} of ${String(cred.apiVersion ?? 'no apiVersion')}`);
    }
    const s = cred.status;
    if (!s || typeof s !== 'object') throw new ExecCredentialError(`${this.#name()} printed an ExecCredential without a status`);
    const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
    const token = str(s.token);
    const cert = str(s.clientCertificateData);
    const key = str(s.clientKeyData);
    if (!token && !cert && !key) throw new ExecCredentialError(`${this.#name()} printed neither a token nor a client certificate and key`);
    if (!cert !== !key) throw new ExecCredentialError(`${this.#name()} printed only a client certificate or only its key, not both`);
    let renewAt: number | undefined;
    if (s.expirationTimestamp !== undefined && s.expirationTimestamp !== null) {
      const expires = typeof s.expirationTimestamp === 'string' ? Date.parse(s.expirationTimestamp) : NaN;
      if (Number.isNaN(expires)) throw new ExecCredentialError(`${this.#name()} printed an expirationTimestamp that is no RFC 3339 time (${String(s.expirationTimestamp)})`);
      const now = Date.now();
      const margin = Math.min(RENEW_MARGIN.maxMs, Math.max(0, expires - now) * RENEW_MARGIN.fraction);
      renewAt = expires - margin;
    }
    return { token, cert, key, renewAt, generation: ++generations };
  }
}

/** The part of client-node's Authenticator interface a KubeConfig calls. */
interface Authenticator {
  isAuthProvider(user: User): boolean;
  applyAuthentication(user: User, opts: { headers?: Record<string, unknown>; cert?: unknown; key?: unknown }): Promise<void>;
}

/** What runs a kubeconfig user's `exec:`, one plugin (and credential) per user and exec config. */
class ExecCredentials implements Authenticator {
  readonly #kc: KubeConfig;
  /** client-node's ExecAuth, kept for the old `auth-provider: {config: {exec}}` form */
  readonly #legacy: Authenticator;

  constructor(kc: KubeConfig, legacy: Authenticator) {
    this.#kc = kc;
    this.#legacy = legacy;
  }

  isAuthProvider(user: User): boolean {
    return Boolean(user.exec) || this.#legacy.isAuthProvider(user);
  }

  async applyAuthentication(user: User, opts: { headers?: Record<string, unknown>; cert?: unknown; key?: unknown }): Promise<void> {
    if (!user.exec) return this.#legacy.applyAuthentication(user, opts);
    const c = await this.#plugin(user).get();
    if (c.cert && c.key) {
      opts.cert = c.cert;
      opts.key = c.key;
    }
    if (c.token) {
      opts.headers ??= {};
      opts.headers.Authorization = `Bearer ${c.token}`;
    }
  }

  #plugin(user: User): ExecPlugin {
    const exec = user.exec as ExecConfig;
    const cluster = exec.provideClusterInfo ? this.#clusterInfo() : undefined;
    const key = JSON.stringify([user.name, exec, cluster ?? null]);
    let p = plugins.get(key);
    if (!p) {
      p = new ExecPlugin(user.name, exec, { cluster, stdinIsTTY: process.stdin.isTTY === true });
      plugins.set(key, p);
    }
    return p;
  }

  /** spec.cluster of KUBERNETES_EXEC_INFO (client.authentication.k8s.io/v1 Cluster) from the current context's cluster. */
  #clusterInfo(): Record<string, unknown> | undefined {
    const c = this.#kc.getCurrentCluster();
    if (!c) return undefined;
    let ca = c.caData;
    if (!ca && c.caFile) {
      try {
        ca = readFileSync(c.caFile).toString('base64');
      } catch {
        ca = undefined;
      }
    }
    return {
      server: c.server,
      ...(c.tlsServerName ? { 'tls-server-name': c.tlsServerName } : {}),
      ...(c.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}),
      ...(ca ? { 'certificate-authority-data': ca } : {}),
      ...(c.proxyUrl ? { 'proxy-url': c.proxyUrl } : {}),
    };
  }
}

/**
 * Puts ktctl's exec plugin runner in the place of client-node's ExecAuth in `kc` (the
 * authenticator that claims users with `exec:`); the others (token files, OIDC, cloud auth
 * providers) stay as they are.
 */
export function installExecCredentials(kc: KubeConfig): void {
  // `authenticators` is private in client-node's typings; its order decides who handles a user.
  const list = (kc as unknown as { authenticators?: Authenticator[] }).authenticators;
  if (!Array.isArray(list)) return;
  const probe = { name: '', exec: { command: 'probe' } } as unknown as User;
  const i = list.findIndex((a) => !(a instanceof ExecCredentials) && a.isAuthProvider(probe));
  if (i >= 0) list[i] = new ExecCredentials(kc, list[i]!);
  else if (!list.some((a) => a instanceof ExecCredentials)) list.unshift(new ExecCredentials(kc, { isAuthProvider: () => false, applyAuthentication: async () => undefined }));
}
