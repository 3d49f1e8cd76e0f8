/**
 * The lab's long-running helper processes, started by `up()` (detached, so they outlive the
 * process that called it) and stopped by `down()`:
 *
 *   agent.ts node STATE_DIR     in the node namespace: the cluster DNS on 198.19.0.10:53 (records
 *                               from STATE_DIR/dns-records.json, reloaded when the file changes)
 *                               and a connect relay on STATE_DIR/node-relay.sock for callers that
 *                               are not in the node namespace themselves;
 *   agent.ts outside STATE_DIR  in the outside namespace: the upstream DNS on 198.18.255.3:53 and
 *                               www.example.test (the echo program) on 198.18.255.4:80.
 *
 * Writes "ready\n" to fd 3 (a pipe from up()) once everything listens.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LAB } from './types.js';
import { ClusterZone, clusterHandler, startDnsServer, upstreamHandler, type ClusterDnsRecords } from './dns.js';
import { createEchoServer } from '../images/echo.js';

import { DNS_RECORDS_FILE } from './constants.js';
import { RELAY_SOCKET } from './dial.js';

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`);
}

function signalReady(): void {
  try {
    fs.writeSync(3, 'ready\n');
    fs.closeSync(3);
  } catch {
    // not started by up() (no fd 3): nothing to tell
  }
}

function loadRecords(file: string, zone: ClusterZone): void {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return;
  }
  try {
    const parsed = JSON.parse(text) as ClusterDnsRecords;
    zone.set({ services: parsed.services ?? [], pods: parsed.pods ?? [] });
  } catch (e) {
    log(`dns: cannot parse ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Relay: "CONNECT ip port\n" -> "OK\n" then bytes both ways, or "ERR CODE message\n". */
function startRelay(socketPath: string): Promise<net.Server> {
  try {
    fs.unlinkSync(socketPath);
  } catch {
    // none yet
  }
  const server = net.createServer((client) => {
    let head = Buffer.alloc(0);
    const onData = (b: Buffer): void => {
      head = Buffer.concat([head, b]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 256) client.destroy();
        return;
      }
      client.removeListener('data', onData);
      client.pause();
      const rest = head.subarray(nl + 1);
      const m = /^CONNECT (\d+\.\d+\.\d+\.\d+) (\d+)$/.exec(head.subarray(0, nl).toString('latin1'));
      if (!m) {
        client.end('ERR EINVAL bad request\n');
        return;
      }
      const upstream = net.connect(Number(m[2]), m[1]!);
      upstream.setNoDelay(true);
      upstream.once('error', (e: NodeJS.ErrnoException) => {
        if (!client.destroyed) client.end(`ERR ${e.code ?? 'EIO'} ${e.message.replaceAll('\n', ' ')}\n`);
      });
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        client.write('OK\n');
        if (rest.length) upstream.write(rest);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        const kill = (): void => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', kill);
        upstream.on('error', kill);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.end());
      });
    };
    client.on('data', onData);
    client.on('error', () => client.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

async function runNode(stateDir: string): Promise<void> {
  const zone = new ClusterZone(LAB.clusterDomain);
  const recordsFile = path.join(stateDir, DNS_RECORDS_FILE);
  loadRecords(recordsFile, zone);
  let last = 0;
  const reload = (): void => {
    try {
      const m = fs.statSync(recordsFile).mtimeMs;
      if (m === last) return;
      last = m;
    } catch {
      return;
    }
    loadRecords(recordsFile, zone);
  };
  const watcher = fs.watch(stateDir, (_event, name) => {
    if (name === DNS_RECORDS_FILE) reload();
  });
  watcher.on('error', () => watcher.close()); // the folder went away (down): the poll below remains
  setInterval(reload, 500).unref();
  const handler = clusterHandler(zone, { host: LAB.upstreamDnsIp, port: 53 });
  await startDnsServer(LAB.clusterDnsIp, 53, handler);
  await startRelay(path.join(stateDir, RELAY_SOCKET));
  log(`node agent: cluster DNS on ${LAB.clusterDnsIp}:53, relay on ${path.join(stateDir, RELAY_SOCKET)}`);
}

async function runOutside(): Promise<void> {
  await startDnsServer(LAB.upstreamDnsIp, 53, upstreamHandler());
  const www = createEchoServer({ pod: 'www.example.test', namespace: '', ip: LAB.wwwIp }, log);
  await new Promise<void>((resolve, reject) => {
    www.once('error', reject);
    www.listen(80, LAB.wwwIp, () => resolve());
  });
  log(`outside agent: upstream DNS on ${LAB.upstreamDnsIp}:53, www on ${LAB.wwwIp}:80`);
}

const [mode, stateDir] = process.argv.slice(2);
process.on('SIGTERM', () => process.exit(0));
const started = mode === 'node' && stateDir ? runNode(stateDir) : mode === 'outside' ? runOutside() : Promise.reject(new Error('usage: agent.ts node|outside STATE_DIR'));
started.then(signalReady, (e: unknown) => {
  log(`agent ${mode ?? ''} failed: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
