/**
 * Tokens that expire, as EKS/GKE/AKS hand them out through exec credential plugins
 * (client.authentication.k8s.io/v1): `lab up` writes a signing key (0600) and a plugin script into
 * the state folder, and the kubeconfig's user `lab-exec` runs that script. The plugin prints an
 * ExecCredential whose token is signed with the key (user name, groups, expiry); the API server
 * accepts it until the expiry and answers 401 after, like kube-apiserver with a token that its
 * authenticators reject (k8s.io/apiserver bearertoken.Authenticator.AuthenticateRequest: a token
 * no authenticator accepts is an error, never anonymous; filters.Unauthorized writes
 * apierrors.NewUnauthorized("Unauthorized") as the Status). Connections that were authenticated
 * before (a watch, a port-forward) stay open, as on a real API server: only new requests are
 * refused.
 *
 * Token: `ktlab-exec.v1.<base64url JSON {sub, groups, exp}>.<base64url HMAC-SHA256 of the part
 * before the last dot>`; `exp` in whole seconds (RFC 3339 in the ExecCredential has seconds).
 *
 * The plugin, for tests (see fixture.ts `execKubeconfig`): `KTLAB_TOKEN_TTL_SECONDS` (default 20)
 * sets the lifetime; with `KTLAB_EXEC_CONTROL_DIR` it appends one JSON line per run to `runs.log`
 * in that folder, and fails (stderr "error: ...", exit 1) while a file `fail` exists there. It
 * refuses to run without KUBERNETES_EXEC_INFO, which kubectl always sets: a client that runs it
 * without (client-node's own ExecAuth) is not running it as kubectl does.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const EXEC_USER = 'lab-exec';
export const EXEC_GROUPS = ['system:masters', 'system:authenticated'];
export const EXEC_API_VERSION = 'client.authentication.k8s.io/v1';
export const DEFAULT_TTL_SECONDS = 20;
const PREFIX = 'ktlab-exec.v1.';

/** Who a valid token names (the RBAC lab's `User` shape). */
export interface ExecTokenUser {
  name: string;
  groups: string[];
}

/** Where `lab up` put the key and the plugin. */
export interface ExecFiles {
  keyFile: string;
  plugin: string;
}

function sign(key: Buffer, body: string): string {
  return createHmac('sha256', key).update(body).digest('base64url');
}

/** A token for `user` that expires at `expSeconds` (Unix seconds); what the plugin prints. */
export function signExecToken(key: Buffer, user: ExecTokenUser, expSeconds: number): string {
  const body = PREFIX + Buffer.from(JSON.stringify({ sub: user.name, groups: user.groups, exp: expSeconds })).toString('base64url');
  return `${body}.${sign(key, body)}`;
}

/**
 * The lab's side: the user a token names, or undefined when it is not one of these tokens, its
 * signature is wrong, or it has expired (`nowMs` at or after `exp`).
 */
export class ExecTokenVerifier {
  #key: Buffer;

  constructor(key: Buffer) {
    this.#key = key;
  }

  /** A new signing key (tests: tokens of the old key get 401 from now on, before their expiry). */
  rotate(key: Buffer): void {
    this.#key = key;
  }

  verify(token: string, nowMs = Date.now()): ExecTokenUser | undefined {
    if (!token.startsWith(PREFIX)) return undefined;
    const dot = token.lastIndexOf('.');
    const body = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), 'base64url');
    const want = Buffer.from(sign(this.#key, body), 'base64url');
    if (mac.length !== want.length || !timingSafeEqual(mac, want)) return undefined;
    let claims: unknown;
    try {
      claims = JSON.parse(Buffer.from(body.slice(PREFIX.length), 'base64url').toString('utf8'));
    } catch {
      return undefined;
    }
    const c = claims as { sub?: unknown; groups?: unknown; exp?: unknown };
    if (typeof c.sub !== 'string' || typeof c.exp !== 'number' || !Array.isArray(c.groups)) return undefined;
    if (nowMs >= c.exp * 1000) return undefined;
    return { name: c.sub, groups: c.groups.filter((g): g is string => typeof g === 'string') };
  }
}

export function readExecKey(file: string): Buffer {
  return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex');
}

/** The key (0600) and the plugin (0755) in `dir`; the key is new each time. */
export function writeExecFiles(dir: string, names: { key: string; plugin: string }): ExecFiles {
  const keyFile = path.join(dir, names.key);
  const plugin = path.join(dir, names.plugin);
  fs.writeFileSync(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  fs.chmodSync(keyFile, 0o600);
  fs.writeFileSync(plugin, PLUGIN, { mode: 0o755 });
  fs.chmodSync(plugin, 0o755);
  return { keyFile, plugin };
}

/** The kubeconfig entry of user `lab-exec` (YAML lines, indented for `users:`). */
export function execUserYaml(files: ExecFiles, ttlSeconds = DEFAULT_TTL_SECONDS): string[] {
  return [
    `- name: ${EXEC_USER}`,
    '  user:',
    '    exec:',
    `      apiVersion: ${EXEC_API_VERSION}`,
    `      command: ${files.plugin}`,
    '      args: [token]',
    '      env:',
    '      - name: KTLAB_EXEC_KEY',
    `        value: ${files.keyFile}`,
    '      - name: KTLAB_TOKEN_TTL_SECONDS',
    `        value: "${ttlSeconds}"`,
    '      interactiveMode: Never',
    '      provideClusterInfo: false',
    `      installHint: "the lab's exec plugin is written by npm run lab -- up (into the state folder, .lab)"`,
  ];
}

/**
 * The plugin: plain Node (no TypeScript, no imports from the repository), so kubectl and ktctl
 * run it as any other credential plugin. It signs exactly as `signExecToken` does (a test checks
 * that the lab accepts what it prints).
 */
const PLUGIN = `#!/usr/bin/env node
// The lab's exec credential plugin (client.authentication.k8s.io/v1), written by \`npm run lab -- up\`
// (test/lab/api/exec-token.ts). Usage (from a kubeconfig's user.exec): exec-plugin.mjs token
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const fail = (message) => {
  process.stderr.write('error: ' + message + '\\n');
  process.exit(1);
};
if (process.argv[2] !== 'token') fail('unknown command "' + (process.argv[2] ?? '') + '" (usage: exec-plugin.mjs token)');
const rawInfo = process.env.KUBERNETES_EXEC_INFO;
if (!rawInfo) fail('KUBERNETES_EXEC_INFO is not set: run me as kubectl does (client.authentication.k8s.io/v1)');
let info;
try {
  info = JSON.parse(rawInfo);
} catch {
  fail('KUBERNETES_EXEC_INFO is not JSON');
}
if (info.apiVersion !== '${EXEC_API_VERSION}' || info.kind !== 'ExecCredential') fail('KUBERNETES_EXEC_INFO is not an ExecCredential of ${EXEC_API_VERSION}');
const control = process.env.KTLAB_EXEC_CONTROL_DIR;
if (control && fs.existsSync(path.join(control, 'fail'))) fail('the lab refuses to issue tokens (' + path.join(control, 'fail') + ' exists)');
const keyFile = process.env.KTLAB_EXEC_KEY;
if (!keyFile) fail('KTLAB_EXEC_KEY is not set');
let key;
try {
  key = Buffer.from(fs.readFileSync(keyFile, 'utf8').trim(), 'hex');
} catch (e) {
  fail('cannot read the signing key ' + keyFile + ': ' + e.message);
}
const ttl = Number(process.env.KTLAB_TOKEN_TTL_SECONDS ?? '${DEFAULT_TTL_SECONDS}');
if (!Number.isFinite(ttl) || ttl <= 0) fail('KTLAB_TOKEN_TTL_SECONDS must be a positive number');
const exp = Math.floor(Date.now() / 1000 + ttl);
const body = '${PREFIX}' + Buffer.from(JSON.stringify({ sub: '${EXEC_USER}', groups: ${JSON.stringify(EXEC_GROUPS)}, exp })).toString('base64url');
const token = body + '.' + createHmac('sha256', key).update(body).digest('base64url');
const expirationTimestamp = new Date(exp * 1000).toISOString().replace(/\\.\\d{3}Z$/, 'Z');
if (control) {
  fs.appendFileSync(path.join(control, 'runs.log'), JSON.stringify({ at: new Date().toISOString(), pid: process.pid, expirationTimestamp, interactive: info.spec?.interactive ?? null }) + '\\n');
}
process.stdout.write(JSON.stringify({ apiVersion: '${EXEC_API_VERSION}', kind: 'ExecCredential', status: { token, expirationTimestamp } }) + '\\n');
`;
