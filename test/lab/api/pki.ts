/**
 * The lab's credentials: a CA and a server certificate made with the openssl CLI, three bearer
 * tokens (admin, read-only, and dev: a user with no rights but what RBAC bindings give), the
 * signing key and plugin of the expiring exec tokens (exec-token.ts) and the kubeconfig that
 * carries them.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { LAB } from '../net/types.js';
import { EXEC_USER, execUserYaml, writeExecFiles, type ExecFiles } from './exec-token.js';

const run = promisify(execFile);

export const FILES = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  serverCert: 'server.crt',
  serverKey: 'server.key',
  tokens: 'tokens.json',
  kubeconfig: 'kubeconfig',
  pid: 'daemon.pid',
  log: 'daemon.log',
  execKey: 'exec-token.key',
  execPlugin: 'exec-plugin.mjs',
} as const;

export const USERS = { admin: 'lab-admin', readonly: 'lab-readonly', dev: 'lab-dev', exec: EXEC_USER } as const;
export const CONTEXTS = { admin: 'lab', readonly: 'lab-readonly', dev: 'lab-dev', exec: 'lab-exec', byName: 'lab-byname' } as const;
export const SERVER_URL = `https://${LAB.apiServerIp}:${LAB.apiServerPort}`;
/**
 * The API server by host name, as most kubeconfigs name it: api.example.test, which the lab's
 * upstream DNS (net/dns.ts) answers with LAB.apiServerIp, so laptop namespaces resolve it (the host
 * itself does not use the lab's DNS). In the server certificate's SANs; context `lab-byname`.
 */
export const API_HOST_NAME = 'api.example.test';
export const SERVER_URL_BY_NAME = `https://${API_HOST_NAME}:${LAB.apiServerPort}`;

export interface Tokens {
  admin: string;
  readonly: string;
  dev: string;
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('openssl is not installed (apt-get install openssl)', { cause: e });
    throw new Error(`openssl ${args[0]} failed: ${err.stderr ?? err.message}`, { cause: e });
  }
}

/** Makes CA, server certificate, tokens and kubeconfig in `dir` (overwriting earlier ones). */
export async function makeCredentials(dir: string): Promise<{ kubeconfig: string; tokens: Tokens }> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = (f: string): string => path.join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl([
    'req', '-x509', ...ec, '-keyout', p(FILES.caKey), '-out', p(FILES.caCert), '-days', '3650',
    '-subj', '/CN=ktlab-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ]);
  const sans = [
    `IP:${LAB.apiServerIp}`, 'IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', `DNS:${API_HOST_NAME}`,
  ].join(',');
  await openssl([
    'req', '-x509', ...ec, '-CA', p(FILES.caCert), '-CAkey', p(FILES.caKey),
    '-keyout', p(FILES.serverKey), '-out', p(FILES.serverCert), '-days', '825',
    '-subj', '/CN=kube-apiserver',
    '-addext', `subjectAltName=${sans}`,
    '-addext', 'basicConstraints=critical,CA:FALSE',
    '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment',
    '-addext', 'extendedKeyUsage=serverAuth',
  ]);
  fs.chmodSync(p(FILES.caKey), 0o600);
  fs.chmodSync(p(FILES.serverKey), 0o600);
  const tokens: Tokens = { admin: randomBytes(24).toString('hex'), readonly: randomBytes(24).toString('hex'), dev: randomBytes(24).toString('hex') };
  fs.writeFileSync(p(FILES.tokens), JSON.stringify(tokens), { mode: 0o600 });
  const kubeconfig = p(FILES.kubeconfig);
  const exec = writeExecFiles(dir, { key: FILES.execKey, plugin: FILES.execPlugin });
  fs.writeFileSync(kubeconfig, renderKubeconfig(fs.readFileSync(p(FILES.caCert)), tokens, SERVER_URL, exec), { mode: 0o600 });
  return { kubeconfig, tokens };
}

/** `exec`: also the user and context `lab-exec` (tokens from the exec plugin, exec-token.ts). */
export function renderKubeconfig(ca: Buffer, tokens: Tokens, server = SERVER_URL, exec?: ExecFiles): string {
  const caData = ca.toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'preferences: {}',
    'clusters:',
    '- name: lab',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${caData}`,
    `- name: ${CONTEXTS.byName}`,
    '  cluster:',
    `    server: ${SERVER_URL_BY_NAME}`,
    `    certificate-authority-data: ${caData}`,
    'users:',
    `- name: ${USERS.admin}`,
    '  user:',
    `    token: ${tokens.admin}`,
    `- name: ${USERS.readonly}`,
    '  user:',
    `    token: ${tokens.readonly}`,
    `- name: ${USERS.dev}`,
    '  user:',
    `    token: ${tokens.dev}`,
    ...(exec ? execUserYaml(exec) : []),
    'contexts:',
    `- name: ${CONTEXTS.admin}`,
    '  context:',
    '    cluster: lab',
    `    user: ${USERS.admin}`,
    '    namespace: default',
    `- name: ${CONTEXTS.readonly}`,
    '  context:',
    '    cluster: lab',
    `    user: ${USERS.readonly}`,
    '    namespace: default',
    `- name: ${CONTEXTS.dev}`,
    '  context:',
    '    cluster: lab',
    `    user: ${USERS.dev}`,
    '    namespace: default',
    ...(exec ? [`- name: ${CONTEXTS.exec}`, '  context:', '    cluster: lab', `    user: ${USERS.exec}`, '    namespace: default'] : []),
    `- name: ${CONTEXTS.byName}`,
    '  context:',
    `    cluster: ${CONTEXTS.byName}`,
    `    user: ${USERS.admin}`,
    '    namespace: default',
    `current-context: ${CONTEXTS.admin}`,
    '',
  ].join('\n');
}

export function readTokens(dir: string): Tokens {
  return JSON.parse(fs.readFileSync(path.join(dir, FILES.tokens), 'utf8')) as Tokens;
}
