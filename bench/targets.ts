/**
 * The far end of every benchmark path, run inside the server namespace:
 *   HTTP on :8080  GET /bytes/N streams N bytes, PUT|POST /sink reads and counts the body
 *   TCP  on :7007  echo (request/response latency and connection-rate probes)
 * Usage: node --import tsx bench/targets.ts HOST
 */
import http from 'node:http';
import net from 'node:net';

const host = process.argv[2] ?? '127.0.0.1';
const CHUNK = Buffer.alloc(256 * 1024, 0x61);

const httpServer = http.createServer((req, res) => {
  const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
  if (req.method === 'GET' && m) {
    let left = Number(m[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return;
  }
  if ((req.method === 'PUT' || req.method === 'POST') && req.url === '/sink') {
    let bytes = 0;
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => res.end(JSON.stringify({ bytes })));
    return;
  }
  res.writeHead(404).end();
});
httpServer.listen(8080, host);

const echo = net.createServer((c) => {
  c.setNoDelay(true);
  c.pipe(c);
  c.on('error', () => c.destroy());
});
echo.listen(7007, host, () => process.stdout.write('ready\n'));
