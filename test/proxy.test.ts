/**
 * The SOCKS5 + HTTP proxy front end against real clients (curl 7.88, raw Node sockets) and real
 * origin servers, all on loopback. The Dialer is the plain-socket DirectDialer.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListenError } from '../src/errors.js';
import { ProxyServer, type ProxyEvent } from '../src/proxy/index.js';
import { DirectDialer, type DirectDialerOptions } from './helpers/direct-dialer.js';
import { closedPort } from './helpers/netns.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Curl {
  code: number;
  stdout: string;
  stderr: string;
}

function curl(...args: string[]): Promise<Curl> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '30', '--noproxy', '', ...args], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** An origin that answers every request with what it saw, as JSON. */
interface Seen {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  rawHeaderNames: string[];
  bodyLength: number;
  bodySha: string;
}

async function startOrigin(t: ExecutionContext, host = '127.0.0.1'): Promise<{ server: HttpServer; port: number }> {
  const blob = randomBytes(1 << 20);
  const server = createHttpServer((req, res) => {
    if (req.url === '/blob') {
      res.setHeader('x-sha256', sha256(blob));
      // No Content-Length: Node sends it chunked, the proxy must re-frame it.
      res.write(blob.subarray(0, 1000));
      res.end(blob.subarray(1000));
      return;
    }
    const hash = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      n += d.length;
    });
    req.on('end', () => {
      const rawHeaderNames = req.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase());
      const seen: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaderNames, bodyLength: n, bodySha: hash.digest('hex') };
      res.setHeader('content-type', 'application/json');
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.setHeader('connection', 'keep-alive, x-origin-hop');
      res.setHeader('x-origin-hop', 'must not reach the client');
      res.end(JSON.stringify(seen));
    });
  });
  server.listen(0, host);
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { server, port: (server.address() as AddressInfo).port };
}

async function startProxy(
  t: ExecutionContext,
  dialerOptions: DirectDialerOptions = {},
): Promise<{ proxy: ProxyServer; port: number; dialer: DirectDialer; events: ProxyEvent[] }> {
  const dialer = new DirectDialer({ names: { 'web.test': '127.0.0.1', 'web6.test': '::1' }, ...dialerOptions });
  const events: ProxyEvent[] = [];
  const proxy = new ProxyServer({ dialer, host: '127.0.0.1', port: 0, onEvent: (e) => events.push(e) });
  t.teardown(() => proxy.close());
  const { port } = await proxy.listen();
  return { proxy, port, dialer, events };
}

/** A raw SOCKS5 client: greeting and request sent in one write, returns the socket after the reply. */
async function socksRequest(proxyPort: number, request: Buffer, methods = [0x00]): Promise<{ socket: Socket; method: Buffer; reply: Buffer }> {
  const socket = connect(proxyPort, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(Buffer.concat([Buffer.from([0x05, methods.length, ...methods]), request]));
  const method = await readN(socket, 2);
  if (method[1] !== 0x00) return { socket, method, reply: Buffer.alloc(0) };
  const head = await readN(socket, 5);
  const rest = head[3] === 0x01 ? 5 : head[3] === 0x04 ? 17 : head[4]! + 2;
  const tail = await readN(socket, rest);
  return { socket, method, reply: Buffer.concat([head, tail]) };
}

function connectRequest(host: string, port: number, cmd = 0x01): Buffer {
  const name = Buffer.from(host);
  return Buffer.from([0x05, cmd, 0x00, 0x03, name.length, ...name, port >> 8, port & 0xff]);
}

async function readN(socket: Socket, n: number): Promise<Buffer> {
  for (;;) {
    const b = socket.read(n) as Buffer | null;
    if (b !== null) return b;
    if (socket.readableEnded || socket.destroyed) return Buffer.alloc(0);
    await Promise.race([once(socket, 'readable'), once(socket, 'close')]);
  }
}

async function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of socket) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

// ---- SOCKS5 -------------------------------------------------------------------------------------

test('socks5h: curl reaches an origin by a name only the dialer knows; the name is dialed unresolved', async (t) => {
  const origin = await startOrigin(t);
  const { port, dialer, events } = await startProxy(t);
  for (const flag of [['--socks5-hostname', `127.0.0.1:${port}`], ['-x', `socks5h://127.0.0.1:${port}`]]) {
    const r = await curl(...flag, `http://web.test:${origin.port}/hello?x=1`);
    t.is(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout) as Seen;
    t.is(seen.url, '/hello?x=1');
  }
  t.deepEqual(dialer.requests, [`web.test:${origin.port}`, `web.test:${origin.port}`]);
  t.true(events.some((e) => e.type === 'tunnel' && e.protocol === 'socks5' && e.target === `web.test:${origin.port}`));
});

test('socks5: IPv4 and IPv6 literals are passed through as addresses', async (t) => {
  const origin4 = await startOrigin(t);
  const origin6 = await startOrigin(t, '::1');
  const { port, dialer } = await startProxy(t);
  const r4 = await curl('-x', `socks5h://127.0.0.1:${port}`, `http://127.0.0.1:${origin4.port}/v4`);
  t.is(r4.code, 0, r4.stderr);
  const r6 = await curl('-x', `socks5h://127.0.0.1:${port}`, `http://[::1]:${origin6.port}/v6`);
  t.is(r6.code, 0, r6.stderr);
  t.is((JSON.parse(r6.stdout) as Seen).url, '/v6');
  t.deepEqual(dialer.requests, [`127.0.0.1:${origin4.port}`, `::1:${origin6.port}`]);

  // A raw ATYP 4 request for an address outside the test rules: parsed right, refused by the dialer.
  const v6 = Buffer.from([0x05, 0x01, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(10).fill(0), 0x01, 0x00, 0, 80]);
  const { socket, reply } = await socksRequest(port, v6);
  t.deepEqual([...reply], [5, 2, 0, 1, 0, 0, 0, 0, 0, 0], 'prohibited -> reply 2');
  socket.destroy();
  t.is(dialer.requests[2], '2001:db8::100:80');
});

test('socks5: refused target -> reply 5 (curl 7.88: exit 97 "(5)"), full 10-byte reply', async (t) => {
  const closed = await closedPort();
  const { port, proxy } = await startProxy(t);
  const r = await curl('-x', `socks5h://127.0.0.1:${port}`, `http://127.0.0.1:${closed}/`);
  // curl 7.88 maps every SOCKS5 reply != 0 to CURLE_PROXY (97) and prints the code, not a word.
  t.is(r.code, 97);
  t.regex(r.stderr, /Can't complete SOCKS5 connection to 127\.0\.0\.1\. \(5\)/);
  const raw = await socksRequest(port, connectRequest('web.test', closed));
  t.deepEqual([...raw.reply], [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
  t.is((await readAll(raw.socket)).length, 0, 'then the proxy closes');
  t.is(proxy.stats().dialFailures, 2);
});

test('socks5: unresolvable name -> reply 4 (host unreachable)', async (t) => {
  const { port, events } = await startProxy(t);
  const r = await curl('-x', `socks5h://127.0.0.1:${port}`, 'http://no-such-name.test:80/');
  t.is(r.code, 97);
  t.regex(r.stderr, /no-such-name\.test\. \(4\)/);
  const failed = events.find((e) => e.type === 'dial-failed');
  t.is(failed?.type === 'dial-failed' ? failed.reason : undefined, 'cannot resolve no-such-name.test');
});

test('socks5: BIND and UDP ASSOCIATE -> reply 7, unknown ATYP -> 8, no acceptable method -> 0xFF', async (t) => {
  const { port, dialer } = await startProxy(t);
  for (const cmd of [0x02, 0x03]) {
    const { socket, reply } = await socksRequest(port, connectRequest('web.test', 80, cmd));
    t.deepEqual([...reply], [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    socket.destroy();
  }
  const bad = await socksRequest(port, Buffer.from([0x05, 0x01, 0x00, 0x09, 1, 2, 3, 4, 0, 80]));
  t.deepEqual([...bad.reply], [5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
  bad.socket.destroy();
  const auth = await socksRequest(port, Buffer.alloc(0), [0x02]);
  t.deepEqual([...auth.method], [0x05, 0xff]);
  t.is((await readAll(auth.socket)).length, 0);
  t.deepEqual(dialer.requests, [], 'nothing was dialed');
});

test('socks5: half-close travels both ways through the tunnel', async (t) => {
  // The target reads until the client's FIN, then answers with what it got and closes.
  const target = createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => s.end(`got ${Buffer.concat(chunks).toString()}`));
  });
  target.listen(0, '127.0.0.1');
  await once(target, 'listening');
  t.teardown(() => target.close());
  const { port } = await startProxy(t);
  const { socket, reply } = await socksRequest(port, connectRequest('web.test', (target.address() as AddressInfo).port));
  t.is(reply[1], 0);
  socket.end('ping');
  t.is((await readAll(socket)).toString(), 'got ping');
});

// ---- HTTP ---------------------------------------------------------------------------------------

test('http: absolute-URI GET is forwarded in origin-form, hop-by-hop fields dropped, Host rewritten', async (t) => {
  const origin = await startOrigin(t);
  const { port, dialer } = await startProxy(t);
  const r = await curl(
    '-i',
    '-x', `http://127.0.0.1:${port}`,
    '-H', 'Proxy-Connection: keep-alive',
    '-H', 'Proxy-Authorization: Basic Zm9vOmJhcg==',
    '-H', 'Connection: x-private',
    '-H', 'X-Private: hop',
    '-H', 'X-End-To-End: kept',
    `http://web.test:${origin.port}/a/b?c=d`,
  );
  t.is(r.code, 0, r.stderr);
  const [head = '', body = ''] = r.stdout.split('\r\n\r\n');
  const seen = JSON.parse(body) as Seen;
  t.is(seen.method, 'GET');
  t.is(seen.url, '/a/b?c=d');
  t.is(seen.headers.host, `web.test:${origin.port}`);
  t.is(seen.headers['x-end-to-end'], 'kept');
  for (const h of ['proxy-connection', 'proxy-authorization', 'x-private']) t.false(seen.rawHeaderNames.includes(h), h);
  t.is(seen.rawHeaderNames.filter((h) => h === 'host').length, 1);
  t.regex(head, /^HTTP\/1\.1 200 OK/);
  t.regex(head, /set-cookie: a=1\r\nset-cookie: b=2/i);
  t.notRegex(head, /x-origin-hop/i, 'a field named in the origin\'s Connection is dropped');
  t.deepEqual(dialer.requests, [`web.test:${origin.port}`]);
});

test('http: chunked response without Content-Length arrives intact', async (t) => {
  const origin = await startOrigin(t);
  const { port } = await startProxy(t);
  const dir = await mkdtemp(join(tmpdir(), 'ktctl-proxy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const r = await curl('-D', join(dir, 'h'), '-o', join(dir, 'b'), '-w', '%{size_download}', '-x', `http://127.0.0.1:${port}`, `http://web.test:${origin.port}/blob`);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, String(1 << 20));
  const headers = await readFile(join(dir, 'h'), 'latin1');
  t.regex(headers, /transfer-encoding: chunked/i, 'the origin sent it chunked, so does the proxy');
  t.is(/x-sha256: (\w+)/i.exec(headers)?.[1], sha256(await readFile(join(dir, 'b'))));
});

test('http: POST bodies, sized and chunked, reach the origin byte for byte', async (t) => {
  const origin = await startOrigin(t);
  const { port } = await startProxy(t);
  const dir = await mkdtemp(join(tmpdir(), 'ktctl-proxy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const body = randomBytes(1 << 20);
  const file = join(dir, 'body');
  await writeFile(file, body);
  const sized = await curl('-x', `http://127.0.0.1:${port}`, '--data-binary', `@${file}`, `http://web.test:${origin.port}/sized`);
  t.is(sized.code, 0, sized.stderr);
  const s = JSON.parse(sized.stdout) as Seen;
  t.like(s, { method: 'POST', bodyLength: body.length, bodySha: sha256(body) });
  t.is(s.headers['content-length'], String(body.length));
  const chunked = await curl('-x', `http://127.0.0.1:${port}`, '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, `http://web.test:${origin.port}/chunked`);
  t.is(chunked.code, 0, chunked.stderr);
  const c = JSON.parse(chunked.stdout) as Seen;
  t.like(c, { method: 'POST', bodyLength: body.length, bodySha: sha256(body) });
  t.is(c.headers['transfer-encoding'], 'chunked');
  t.is(c.headers['content-length'], undefined);
});

test('http: keep-alive client connection with requests to different hosts', async (t) => {
  const a = await startOrigin(t);
  const b = await startOrigin(t);
  const { port, proxy, dialer } = await startProxy(t);
  const urls = [`http://web.test:${a.port}/1`, `http://127.0.0.1:${b.port}/2`, `http://web.test:${a.port}/3`];
  const r = await curl('-x', `http://127.0.0.1:${port}`, ...urls);
  t.is(r.code, 0, r.stderr);
  const replies = r.stdout.split('}{').length;
  t.is(replies, 3);
  t.regex(r.stdout, /"url":"\/1".*"url":"\/2".*"url":"\/3"/);
  t.is(proxy.stats().totalConnections, 1, 'curl reused its one connection to the proxy');
  t.deepEqual(dialer.requests, [`web.test:${a.port}`, `127.0.0.1:${b.port}`, `web.test:${a.port}`]);
});

test('http: CONNECT (curl -p) tunnels to the origin', async (t) => {
  const origin = await startOrigin(t);
  const { port, events } = await startProxy(t);
  const r = await curl('-p', '-x', `http://127.0.0.1:${port}`, `http://web.test:${origin.port}/through`);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as Seen).url, '/through');
  t.true(events.some((e) => e.type === 'tunnel' && e.protocol === 'http-connect'));
});

test('http: dial failures are 502 with a one-line reason, for requests and CONNECT', async (t) => {
  const closed = await closedPort();
  const { port } = await startProxy(t);
  const refused = await curl('-i', '-x', `http://127.0.0.1:${port}`, `http://web.test:${closed}/`);
  t.is(refused.code, 0);
  t.regex(refused.stdout, /^HTTP\/1\.1 502 Bad Gateway/);
  t.true(refused.stdout.endsWith(`\r\n\r\nconnection refused by web.test:${closed}\n`));
  const unresolvable = await curl('-x', `http://127.0.0.1:${port}`, 'http://web.ns/');
  t.is(unresolvable.stdout, 'cannot resolve web.ns\n');
  const tunnel = await curl('-p', '-x', `http://127.0.0.1:${port}`, `http://127.0.0.1:${closed}/`);
  t.is(tunnel.code, 56);
  t.regex(tunnel.stderr, /CONNECT tunnel failed, response 502/);
  // The raw CONNECT reply carries the reason too.
  const s = connect(port, '127.0.0.1');
  s.end(`CONNECT web.ns:443 HTTP/1.1\r\nHost: web.ns:443\r\n\r\n`);
  const raw = (await readAll(s)).toString();
  t.regex(raw, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
  t.true(raw.endsWith('\r\n\r\ncannot resolve web.ns\n'));
});

test('http: malformed requests get 400 and the proxy keeps serving', async (t) => {
  const origin = await startOrigin(t);
  const { port } = await startProxy(t);
  const send = async (text: string): Promise<string> => {
    const s = connect(port, '127.0.0.1');
    s.write(text);
    const out = readAll(s);
    setTimeout(() => s.end(), 200).unref();
    return (await out).toString();
  };
  t.regex(await send('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.regex(await send('GET /relative HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 [^]*absolute http:\/\/ URI/);
  t.regex(await send('GET ftp://web.test/ HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 [^]*only http:\/\//);
  t.regex(await send('CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 /);
  const ok = await curl('-x', `http://127.0.0.1:${port}`, `http://web.test:${origin.port}/after`);
  t.is(ok.code, 0, ok.stderr);
});

test('a first byte that is neither SOCKS5 nor a letter closes the connection', async (t) => {
  const { port, events } = await startProxy(t);
  const s = connect(port, '127.0.0.1');
  s.write(Buffer.from([0x16, 0x03, 0x01]));
  t.is((await readAll(s)).length, 0);
  t.true(events.some((e) => e.type === 'client-error' && e.protocol === 'unknown'));
});

// ---- lifecycle ----------------------------------------------------------------------------------

test('listen on a port in use -> ListenError naming --proxyPort', async (t) => {
  const { port } = await startProxy(t);
  const second = new ProxyServer({ dialer: new DirectDialer(), host: '127.0.0.1', port });
  t.teardown(() => second.close());
  const err = await t.throwsAsync(second.listen(), { instanceOf: ListenError });
  t.is(err?.message, `127.0.0.1:${port} is already in use; pick another with --proxyPort`);
  t.is(err?.code, 'KTCTL_LISTEN');
});
