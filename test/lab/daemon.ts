/**
 * The lab daemon: runs in the node's network namespace (started by `lab up` through
 * labNodeCommand), attaches to the data plane that `up` made, and serves the Kubernetes API on
 * 198.18.255.2:6443. SIGTERM/SIGINT: stop serving, delete every pod through the data plane, exit.
 *
 *   node --import tsx test/lab/daemon.ts --state-dir DIR [--listen HOST:PORT] [--fake-net]
 *
 * `--fake-net` (development only) uses an in-process stand-in for the data plane and plain
 * loopback, so the API server can be tried without namespaces.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ControlPlane } from './api/lab.js';
import { FILES, readTokens } from './api/pki.js';
import { readExecKey } from './api/exec-token.js';
import { LAB, type LabNet } from './net/types.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const stateDir = path.resolve(arg('--state-dir') ?? process.env.KTLAB_DIR ?? '.lab');
  const listen = arg('--listen') ?? `${LAB.apiServerIp}:${LAB.apiServerPort}`;
  const fake = process.argv.includes('--fake-net');
  const log = (line: string): void => {
    process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  };
  let net: LabNet;
  if (fake) {
    const { FakeLabNet } = await import('./api/fake-net.js');
    net = new FakeLabNet();
  } else {
    const { createLabNet } = await import('./net/index.js');
    net = createLabNet({ stateDir, log });
  }
  const tokens = readTokens(stateDir);
  const tls = {
    key: fs.readFileSync(path.join(stateDir, FILES.serverKey)),
    cert: fs.readFileSync(path.join(stateDir, FILES.serverCert)),
  };
  const execKeyFile = path.join(stateDir, FILES.execKey);
  const execTokenKey = fs.existsSync(execKeyFile) ? readExecKey(execKeyFile) : undefined;
  const cp = new ControlPlane({ net, tokens, tls, log, execTokenKey });
  const [host, portText] = [listen.slice(0, listen.lastIndexOf(':')), listen.slice(listen.lastIndexOf(':') + 1)];
  const { port } = await cp.start(host, Number(portText));
  log(`lab api server listening on https://${host}:${port}`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    const hard = setTimeout(() => process.exit(1), 20_000);
    hard.unref();
    cp.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        log(`stop failed: ${String(e)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('uncaughtException', (e) => log(`uncaught: ${e.stack ?? e.message}`));
  process.on('unhandledRejection', (e) => log(`unhandled rejection: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
}

main().catch((e: unknown) => {
  process.stderr.write(`lab daemon: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
