/**
 * The mesh router alone, on loopback: a ShadowServer in router role (in this process), real ssh2
 * clients (SshTunnel) that register marks with `tcpip-forward` and hand the forwarded channels to
 * "laptop" servers, and an "original service" the unmarked traffic goes to. The router listens on
 * 127.0.0.2, the original service on 127.0.0.3 (same ports, as in the cluster), the laptops on
 * 127.0.0.1.
 */
import test from 'ava';
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { parseVersionMark } from '../src/cli/mesh.js';
import { ListenError, UsageError } from '../src/errors.js';
import { meshBindAddress, parseMeshBindAddress, type MeshMark } from '../src/protocol/index.js';
import { splice } from '../src/proxy/splice.js';
import { MeshRouter, classifyFirstBytes } from '../src/shadow/router.js';
import { ShadowServer } from '../src/shadow/server.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { TeardownList, ed25519, eventually, readAll, type KeyPair } from './helpers/ssh-fixtures.js';

const ROUTER_HOST = '127.0.0.2';
const ORIGINAL_HOST = '127.0.0.3';

const hooks = new TeardownList();
let hostKey: KeyPair;
let userKey: KeyPair;
let shadow: ShadowServer;
let router: MeshRouter;
const logLines: Record<string, unknown>[] = [];
/** the router's ports: HTTP/1 and WebSocket, h2c, raw TCP */
let P1: number;
let P2: number;
let P3: number;

/** A free port on both the router's and the original service's address. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, ROUTER_HOST, () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, ORIGINAL_HOST, () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
}

function listen<T extends Server | http.Server | http2.Http2Server>(server: T, port: number, host: string): Promise<T> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function portOf(server: Server | http.Server | http2.Http2Server): number {
  return (server.address() as AddressInfo).port;
}

/**
 * An HTTP/1 server that says who it is and what it got (method, path, the raw headers, the body),
 * with a WebSocket echo on /ws that prefixes `who`.
 */
async function whoServer(who: string, port: number, host: string): Promise<{ server: http.Server; connections: () => number }> {
  let connections = 0;
  const server = http.createServer((req, res) => {
    void readAll(req).then((body) => {
      const out = JSON.stringify({ who, method: req.method, url: req.url, rawHeaders: req.rawHeaders, body: body.toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': who });
      res.end(out);
    });
  });
  server.on('connection', () => connections++);
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`${who}:${String(data)}`)));
  hooks.teardown(() => {
    wss.close();
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  await listen(server, port, host);
  return { server, connections: () => connections };
}

/** An h2c server that answers with who it is, and gRPC-like trailers. */
async function whoH2(who: string, port: number, host: string): Promise<http2.Http2Server> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    void readAll(stream).then((body) => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-who': who }));
      stream.end(JSON.stringify({ who, path: headers[':path'], body: body.toString() }));
    });
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  hooks.teardown(() => {
    for (const s of sessions) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return listen(server, port, host);
}

/** The original service's raw port: a banner at once, then an echo. */
async function bannerEcho(port: number): Promise<void> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write('banner\n');
    s.pipe(s);
  });
  hooks.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  await listen(server, port, ORIGINAL_HOST);
}

/** A developer: an ssh connection to the router that sends the mark's traffic to local ports. */
async function developer(mark: MeshMark, routes: Array<{ remote: number; local: number }>): Promise<SshTunnel> {
  const tunnel = new SshTunnel({
    host: '127.0.0.1',
    port: shadow.address()!.port,
    username: 'ktctl',
    privateKey: userKey.private,
    hostKey: { pinned: hostKey.public },
    serverLabel: 'the test router',
  });
  hooks.teardown(() => tunnel.close());
  await tunnel.connect();
  for (const r of routes) {
    await tunnel.forwardIn(meshBindAddress(mark), r.remote, (stream) => {
      splice(stream, connect({ host: '127.0.0.1', port: r.local, allowHalfOpen: true }));
    });
  }
  return tunnel;
}

interface Answer {
  status: number;
  who: string;
  rawHeaders: string[];
  body: string;
  reused: boolean;
}

function request(agent: http.Agent, port: number, headers: Record<string, string>, method = 'GET', body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: ROUTER_HOST, port, path: '/anything?x=1', method, headers, agent }, (res: IncomingMessage) => {
      void readAll(res).then((data) => {
        const text = data.toString();
        let parsed: { who?: string; rawHeaders?: string[]; body?: string } = {};
        try {
          parsed = JSON.parse(text) as typeof parsed;
        } catch {
          /* an error page */
        }
        resolve({ status: res.statusCode ?? 0, who: parsed.who ?? '', rawHeaders: parsed.rawHeaders ?? [], body: parsed.body ?? text, reused: req.reusedSocket });
      }, reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

let laptopA: { server: http.Server; connections: () => number };
let laptopAH2: http2.Http2Server;
let tunnelA: SshTunnel;

test.before(async () => {
  hostKey = ed25519('router-host');
  userKey = ed25519('ktctl-user');
  P1 = await freePort();
  P2 = await freePort();
  P3 = await freePort();
  router = new MeshRouter({ ports: [P1, P2, P3], host: ROUTER_HOST, upstream: ORIGINAL_HOST, sniffTimeoutMs: 300, log: (event, fields) => logLines.push({ event, ...fields }) });
  hooks.teardown(() => router.close());
  await router.listen();
  shadow = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', router, log: (event, fields) => logLines.push({ event, ...fields }) });
  hooks.teardown(() => shadow.close());
  await shadow.listen();

  await whoServer('original', P1, ORIGINAL_HOST);
  await whoH2('original', P2, ORIGINAL_HOST);
  await bannerEcho(P3);
  laptopA = await whoServer('A', 0, '127.0.0.1');
  laptopAH2 = await whoH2('A', 0, '127.0.0.1');
  const laptopB = await whoServer('B', 0, '127.0.0.1');
  tunnelA = await developer({ key: 'VERSION', value: 'a' }, [
    { remote: P1, local: portOf(laptopA.server) },
    { remote: P2, local: portOf(laptopAH2) },
  ]);
  await developer({ key: 'X-Dev', value: 'b' }, [{ remote: P1, local: portOf(laptopB.server) }]);
});

test.after.always(() => hooks.run());

test.serial('classifyFirstBytes: request lines, the h2 preface, anything else', (t) => {
  const c = (s: string): string => classifyFirstBytes(Buffer.from(s, 'latin1'));
  t.is(c('GET / HTTP/1.1\r\n'), 'http1');
  t.is(c('M-SEARCH * HTTP/1.1'), 'http1');
  t.is(c('GE'), 'more');
  t.is(c('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 'h2');
  t.is(c('PRI * HTTP/2.0\r\n'), 'more');
  t.is(c('PRI /x HTTP/1.1\r\n'), 'http1');
  t.is(c('\x16\x03\x01\x02\x00'), 'raw'); // a TLS ClientHello
  t.is(c(' GET'), 'raw');
  t.is(c('A'.repeat(30)), 'raw');
});

test.serial('version marks: --versionMark forms, the bind address round trip, bad marks refused', (t) => {
  t.deepEqual(parseVersionMark('VERSION:alice'), { key: 'VERSION', value: 'alice' });
  t.deepEqual(parseVersionMark('x-dev: v2'), { key: 'x-dev', value: 'v2' });
  t.deepEqual(parseVersionMark('bob'), { key: 'VERSION', value: 'bob' });
  t.regex(parseVersionMark(undefined).value, /^[0-9a-f]{6}$/);
  for (const bad of ['bad header:x', 'VERSION:a,b', 'VERSION:', ':x']) t.throws(() => parseVersionMark(bad), { instanceOf: UsageError }, bad);
  const mark = { key: 'X-Dev', value: 'a:b=c' };
  t.is(meshBindAddress(mark), 'ktctl-mesh:X-Dev=a:b=c');
  t.deepEqual(parseMeshBindAddress(meshBindAddress(mark)), mark);
  t.is(parseMeshBindAddress('0.0.0.0'), undefined);
  t.is(parseMeshBindAddress('ktctl-mesh:=x'), undefined);
});

test.serial('HTTP/1.1 keep-alive: each request on one connection goes where its own header says', async (t) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const plan: Array<[Record<string, string>, string]> = [
    [{ VERSION: 'a' }, 'A'],
    [{}, 'original'],
    [{ version: 'a' }, 'A'], // header names in any case
    [{ 'x-dev': 'b' }, 'B'],
    [{ VERSION: 'zzz' }, 'original'], // a mark nobody registered
    [{ 'X-DEV': 'b' }, 'B'],
  ];
  const answers: Answer[] = [];
  for (const [headers, who] of plan) {
    const a = await request(agent, P1, headers);
    t.is(a.status, 200);
    t.is(a.who, who, JSON.stringify(headers));
    answers.push(a);
  }
  t.true(answers.slice(1).every((a) => a.reused), 'all requests after the first went on the same client connection');
  // The mark passes through unchanged (name as sent, value), the Host header too.
  const first = answers[0]!.rawHeaders;
  t.is(first[first.indexOf('VERSION') + 1], 'a');
  t.is(first[first.findIndex((h) => h.toLowerCase() === 'host') + 1], `${ROUTER_HOST}:${P1}`);
});

test.serial('HTTP/1.1 bodies both ways: a POST with a body reaches the laptop, chunked or with a length', async (t) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const big = 'x'.repeat(300_000);
  const a = await request(agent, P1, { VERSION: 'a', 'content-type': 'text/plain' }, 'POST', big);
  t.is(a.who, 'A');
  t.is(a.body.length, big.length);
  const chunked = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: ROUTER_HOST, port: P1, method: 'PUT', path: '/c', headers: { VERSION: 'a' }, agent }, (res) => {
      void readAll(res).then((d) => resolve((JSON.parse(d.toString()) as { body: string }).body), reject);
    });
    req.on('error', reject);
    req.write('part1-');
    setTimeout(() => req.end('part2'), 20);
  });
  t.is(chunked, 'part1-part2');
});

test.serial('WebSocket: the upgrade is routed on its header, then frames pass both ways', async (t) => {
  const talk = (headers: Record<string, string>): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${ROUTER_HOST}:${P1}/ws`, { headers });
      const got: string[] = [];
      ws.on('open', () => {
        ws.send('one');
        ws.send('two');
      });
      ws.on('message', (d) => {
        got.push(String(d));
        if (got.length === 2) ws.close();
      });
      ws.on('close', () => resolve(got));
      ws.on('error', reject);
    });
  t.deepEqual(await talk({ VERSION: 'a' }), ['A:one', 'A:two']);
  t.deepEqual(await talk({}), ['original:one', 'original:two']);
  t.deepEqual(await talk({ 'x-dev': 'b' }), ['B:one', 'B:two']);
});

test.serial('h2c (prior knowledge): streams of one session are routed one by one; trailers pass', async (t) => {
  const session = http2.connect(`http://${ROUTER_HOST}:${P2}`);
  t.teardown(() => session.destroy());
  const call = (headers: Record<string, string>, body = ''): Promise<{ who: string; trailers: Record<string, unknown>; status: unknown }> =>
    new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': '/pkg.Service/Method', 'content-type': 'application/grpc', ...headers });
      let status: unknown;
      let trailers: Record<string, unknown> = {};
      req.on('response', (h) => (status = h[':status']));
      req.on('trailers', (tr) => (trailers = { ...tr }));
      req.on('error', reject);
      void readAll(req).then((d) => resolve({ who: (JSON.parse(d.toString()) as { who: string }).who, trailers, status }), reject);
      req.end(body);
    });
  const [a, o, a2] = await Promise.all([call({ version: 'a' }, 'hello'), call({}), call({ version: 'a' })]);
  t.is(a.who, 'A');
  t.is(a.status, 200);
  t.is(a.trailers['grpc-status'], '0');
  t.is(a.trailers['x-who'], 'A');
  t.is(o.who, 'original');
  t.is(o.trailers['x-who'], 'original');
  t.is(a2.who, 'A');
});

test.serial('not HTTP: bytes that are no request line, and a client that waits for the server, go raw to the original service', async (t) => {
  const exchange = (send: Buffer | undefined): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = connect({ host: ROUTER_HOST, port: P3 });
      let got = '';
      s.on('data', (d) => {
        got += d.toString('latin1');
        const want = 'banner\n' + (send ? send.toString('latin1') : '');
        if (got.length >= want.length) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
      if (send) s.write(send);
    });
  const binary = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x20, 0x0a]);
  t.is(await exchange(binary), 'banner\n' + binary.toString('latin1'));
  t.is(await exchange(undefined), 'banner\n'); // server speaks first: decided after the sniff timeout
  // A request line on the raw port is HTTP: the original service answers it as HTTP would (here:
  // its echo sends the banner and the request back, which is no HTTP answer: the router says 502).
  const agent = new http.Agent();
  t.teardown(() => agent.destroy());
  const a = await request(agent, P3, {});
  t.is(a.status, 502);
});

test.serial('a second registration of the same mark is refused; other ports and marks are not affected', async (t) => {
  const laptop = await whoServer('A2', 0, '127.0.0.1');
  const error = await t.throwsAsync(developer({ key: 'version', value: 'a' }, [{ remote: P1, local: portOf(laptop.server) }]));
  t.true(error instanceof ListenError, String(error));
  t.true(logLines.some((l) => l.event === 'forward' && l.ok === false && String(l.detail).includes('already registered by ssh client')));
  // A port the router does not serve is refused as well.
  const other = await t.throwsAsync(developer({ key: 'VERSION', value: 'c' }, [{ remote: 1, local: portOf(laptop.server) }]));
  t.true(other instanceof ListenError);
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.is((await request(agent, P1, { VERSION: 'a' })).who, 'A');
});

test.serial('a laptop whose local server is down: the marked request gets a 502 that names the mark, others still work', async (t) => {
  const dead = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  await developer({ key: 'VERSION', value: 'down' }, [{ remote: P1, local: dead }]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const a = await request(agent, P1, { VERSION: 'down' });
  t.is(a.status, 502);
  t.regex(a.body, /VERSION: down/);
  t.is((await request(agent, P1, {})).who, 'original');
});

test.serial('when a developer disconnects, its mark goes to the original service again (last test: closes A)', async (t) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.is((await request(agent, P1, { VERSION: 'a' })).who, 'A');
  t.true(laptopA.connections() > 0);
  await tunnelA.close();
  t.true(await eventually(async () => logLines.some((l) => l.event === 'mesh-unregister' && l.value === 'a')));
  t.is((await request(agent, P1, { VERSION: 'a' })).who, 'original');
});
