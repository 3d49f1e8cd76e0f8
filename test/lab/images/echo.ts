/**
 * The lab's `ktlab/echo` image: an HTTP server that tells who answered.
 *
 *   GET  /anything   -> JSON {pod, namespace, ip, method, path, headers}
 *   GET  /bytes/N    -> N bytes of a fixed pattern (byte k is k % 251), with Content-Length
 *   POST /sink       -> reads the whole body, answers {bytes, sha256}
 *   GET  /ws         -> WebSocket upgrade; every message is sent back unchanged
 *
 * Port: $PORT, else $KTLAB_DEFAULT_PORT (the data plane passes the first container port), else 8080.
 * Identity: $KTLAB_POD_NAME / $KTLAB_POD_NAMESPACE / $KTLAB_POD_IP (set by the data plane for
 * this image), falling back to $HOSTNAME and the address the request arrived at.
 */
import http from 'node:http';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { WebSocketServer } from 'ws';

export interface EchoIdentity {
  pod: string;
  namespace: string;
  /** empty: report the local address the request arrived at */
  ip: string;
}

/** The pattern `/bytes/N` serves: byte k of the body is k % 251. */
export function echoPatternByte(k: number): number {
  return k % 251;
}

/** 251 * 256 bytes: a whole number of pattern periods, so chunks repeat exactly. */
const CHUNK = Buffer.alloc(251 * 256, 0);
for (let i = 0; i < CHUNK.length; i++) CHUNK[i] = echoPatternByte(i);

/** sha256 (hex) of the first n bytes of the pattern, as a client would compute it. */
export function echoPatternSha256(n: number): string {
  const h = createHash('sha256');
  let left = n;
  while (left > 0) {
    const len = Math.min(left, CHUNK.length);
    h.update(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len));
    left -= len;
  }
  return h.digest('hex');
}

function stripMapped(addr: string | undefined): string {
  if (!addr) return '';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function streamPattern(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
  let sent = 0;
  const pump = (): void => {
    while (sent < total) {
      const len = Math.min(CHUNK.length, total - sent);
      sent += len;
      const ok = res.write(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len));
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => res.removeListener('drain', pump));
  pump();
}

export function createEchoServer(identity: EchoIdentity, log: (line: string) => void = () => {}): http.Server {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    const done = (status: number): void => log(`${req.method ?? ''} ${url} ${status}`);
    const bytes = /^\/bytes\/(\d+)$/.exec(path);
    if (bytes && (req.method === 'GET' || req.method === 'HEAD')) {
      const n = Number(bytes[1]);
      req.resume();
      if (!Number.isSafeInteger(n)) {
        done(400);
        sendJson(res, 400, { error: 'bad length' });
        return;
      }
      done(200);
      if (req.method === 'HEAD') {
        res.writeHead(200, { 'content-length': String(n) });
        res.end();
      } else streamPattern(res, n);
      return;
    }
    if (path === '/sink' && req.method === 'POST') {
      const h = createHash('sha256');
      let count = 0;
      req.on('data', (b: Buffer) => {
        count += b.length;
        h.update(b);
      });
      req.on('end', () => {
        done(200);
        sendJson(res, 200, { bytes: count, sha256: h.digest('hex') });
      });
      return;
    }
    req.resume();
    req.on('end', () => {
      done(200); // logged before the answer leaves, so a client that got it finds the line
      sendJson(res, 200, {
        pod: identity.pod,
        namespace: identity.namespace,
        ip: identity.ip || stripMapped(req.socket.localAddress),
        method: req.method,
        path: url,
        headers: req.headers,
      });
    });
  });
  server.keepAliveTimeout = 30_000;
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      log(`WS ${req.url ?? ''} open`);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => ws.terminate());
    });
  });
  server.on('close', () => wss.close());
  return server;
}

function main(): void {
  const env = process.env;
  const port = Number(env.PORT || env.KTLAB_DEFAULT_PORT || 8080);
  const identity: EchoIdentity = {
    pod: env.KTLAB_POD_NAME || env.HOSTNAME || 'echo',
    namespace: env.KTLAB_POD_NAMESPACE || 'default',
    ip: env.KTLAB_POD_IP || '',
  };
  const server = createEchoServer(identity, (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`));
  const host = env.HOST || undefined;
  server.listen({ port, host }, () => {
    process.stdout.write(`echo: ${identity.pod} listening on ${host ?? '*'}:${port}\n`);
  });
  const stop = (): void => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
