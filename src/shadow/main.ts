/**
 * The shadow's entry point: bundled into dist/shadow.mjs (shadow-image/bundle.ts), which runs in
 * the pod as `node /opt/ktctl/shadow.mjs` from its ConfigMap (src/kube/program.ts).
 *
 * Keys come from the environment (SHADOW_ENV: the key itself, or a `*_FILE` naming a file), else
 * from the mounted Secret (SHADOW_SECRET_MOUNT). One JSON line a event on stdout; a missing or
 * bad key is one line on stderr and exit code 1; SIGTERM closes everything and exits 0.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROUTER_ENV, SHADOW_ENV, SHADOW_PORT, SHADOW_SECRET_KEYS, SHADOW_SECRET_MOUNT, parseRouterPorts } from '../protocol/index.js';
import { jsonLineLogger } from './log.js';
import { MeshRouter, RoutePortError } from './router.js';
import { KeyError, ShadowServer } from './server.js';
import { tuneHeapForStreaming } from '../runtime/v8-heap.js';

tuneHeapForStreaming();

/** Test hook: a resolv.conf for the DNS subsystem other than /etc/resolv.conf. */
const DNS_RESOLV_CONF_ENV = 'KTCTL_DNS_RESOLV_CONF';

class StartupError extends Error {}

function readKey(env: NodeJS.ProcessEnv, valueVar: string, fileVar: string, secretName: string, what: string): string {
  const value = env[valueVar];
  if (value !== undefined && value.trim() !== '') return value;
  const file = env[fileVar] ?? join(SHADOW_SECRET_MOUNT, secretName);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const why = err instanceof Error && 'code' in err && err.code === 'ENOENT' ? 'does not exist' : 'cannot be read';
    throw new StartupError(`ktctl-shadow: no ${what}: set ${valueVar} or ${fileVar}, or mount it at ${file} (that file ${why})`);
  }
}

function parsePort(text: string | undefined): number {
  if (text === undefined || text === '') return SHADOW_PORT;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new StartupError(`ktctl-shadow: ${SHADOW_ENV.port}=${text} is not a port number`);
  return port;
}

/** Role `router`: the ports it serves and their protocols (ROUTER_ENV.ports) and where unmarked traffic goes. */
function routerFromEnv(env: NodeJS.ProcessEnv, log: ReturnType<typeof jsonLineLogger>): MeshRouter | undefined {
  if (env[SHADOW_ENV.role] !== 'router') return undefined;
  const upstream = env[ROUTER_ENV.upstream] ?? '';
  if (upstream === '') throw new StartupError(`ktctl-shadow: role router needs ${ROUTER_ENV.upstream} (the address of the original pods' service)`);
  const text = env[ROUTER_ENV.ports] ?? '';
  try {
    return new MeshRouter({ ports: parseRouterPorts(text), upstream, log });
  } catch (err) {
    if (err instanceof RoutePortError || err instanceof RangeError) throw new StartupError(`ktctl-shadow: ${ROUTER_ENV.ports}=${text}: ${err.message}`);
    throw err;
  }
}

async function main(): Promise<void> {
  const env = process.env;
  const log = jsonLineLogger(process.stdout);
  let server: ShadowServer;
  let router: MeshRouter | undefined;
  try {
    router = routerFromEnv(env, log);
    const hostKey = readKey(env, SHADOW_ENV.hostKey, SHADOW_ENV.hostKeyFile, SHADOW_SECRET_KEYS.hostKey, 'host key');
    const authorizedKey = readKey(env, SHADOW_ENV.authorizedKey, SHADOW_ENV.authorizedKeyFile, SHADOW_SECRET_KEYS.authorizedKey, 'authorized key');
    const resolvConf = env[DNS_RESOLV_CONF_ENV];
    server = new ShadowServer({
      hostKey,
      authorizedKey,
      port: parsePort(env[SHADOW_ENV.port]),
      host: env[SHADOW_ENV.listenAddress] || '0.0.0.0',
      dns: resolvConf ? { resolvConfPath: resolvConf } : undefined,
      log,
      router,
    });
  } catch (err) {
    if (err instanceof StartupError) process.stderr.write(`${err.message}\n`);
    else if (err instanceof KeyError) process.stderr.write(`ktctl-shadow: ${err.message}\n`);
    else throw err;
    process.exit(1);
  }
  try {
    await router?.listen();
    await server.listen();
  } catch (err) {
    process.stderr.write(`ktctl-shadow: cannot listen: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  const stop = (signal: string): void => {
    void Promise.all([server.close(), router?.close()]).then(() => {
      process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), event: 'exit', signal })}\n`, () => process.exit(0));
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

await main();
