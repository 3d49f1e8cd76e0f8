/**
 * The mesh router alone, on loopback: a ShadowServer in router role (in this process), real ssh2
 * clients (SshTunnel) that register marks with `tcpip-forward` and hand the forwarded channels to
 * "laptop" servers, and an "original service" the unmarked traffic goes to. The router listens on
 * 127.0.0.2, the original service on 127.0.0.3 (same ports, as in the cluster), the laptops on
 * 127.0.0.1. A second router (`quiet`) waits "forever" on its unknown ports, to show that a port
 * declared `tcp` is not sniffed at all.
 */
import test from 'ava';
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import { WebSocket, WebSocketServer } from 'ws';
import { parseVersionMark } from '../src/cli/mesh.js';
import { DialError, ListenError, UsageError } from '../src/errors.js';
import { routerPortSpecs, servicePortProtocol } from '../src/kube/mesh.js';
import { DNS_SUBSYSTEM, formatRouterPorts, meshBindAddress, parseMeshBindAddress, parseRouterPorts, type MeshMark } from '../src/protocol/index.js';
import { splice } from '../src/protocol/splice.js';
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
/**
 * The router's ports: P1 declared `http` (HTTP/1 and WebSocket), P2 unknown (h2c), P3 unknown (a
 * banner and an echo: raw TCP), P5 declared `http` but with the banner echo behind it; the
 * `quiet` router's P4, declared `tcp`, also with the banner echo behind it.
 */
let P1: number;
let P2: number;
let P3: number;
let P4: number;
let P5: number;

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

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
function unusedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
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
  P4 = await freePort();
  P5 = await freePort();
  const ports = [
    { port: P1, protocol: 'http' },
    { port: P2, protocol: 'sniff' },
    { port: P3, protocol: 'sniff' },
    { port: P5, protocol: 'http' },
  ] as const;
  // 1 s to sniff: a client's first bytes must beat it also when the machine is loaded.
  router = new MeshRouter({ ports, host: ROUTER_HOST, upstream: ORIGINAL_HOST, sniffTimeoutMs: 1000, log: (event, fields) => logLines.push({ event, ...fields }) });
  hooks.teardown(() => router.close());
  await router.listen();
  const quiet = new MeshRouter({ ports: [{ port: P4, protocol: 'tcp' }], host: ROUTER_HOST, upstream: ORIGINAL_HOST, sniffTimeoutMs: 3_600_000, httpWaitMs: 3_600_000 });
  hooks.teardown(() => quiet.close());
  await quiet.listen();
  shadow = new ShadowServer({ hostKey: hostKey.private, authorizedKey: userKey.public, port: 0, host: '127.0.0.1', router, log: (event, fields) => logLines.push({ event, ...fields }) });
  hooks.teardown(() => shadow.close());
  await shadow.listen();

  await whoServer('original', P1, ORIGINAL_HOST);
  await whoH2('original', P2, ORIGINAL_HOST);
  await bannerEcho(P3);
  await bannerEcho(P4);
  await bannerEcho(P5);
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
  t.is(c('POST /a?b=c HTTP/1.0\r\nHost: x\r\n'), 'http1');
  t.is(c('CONNECT db:5432 HTTP/1.1\r\n'), 'http1');
  t.is(c('M-SEARCH * HTTP/1.1\r\n'), 'http1');
  // still undecided: a method's start, a target, a version's start
  for (const more of ['G', 'GE', 'GET', 'GET ', 'GET /x', 'GET /x ', 'GET /x HTTP/1.', 'GET /x HTTP/1.1', 'GET /x HTTP/1.1\r', 'M-SEA']) t.is(c(more), 'more', more);
  t.is(c('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 'h2');
  t.is(c('PRI * HTTP/2.0\r\n'), 'more');
  // raw: what Node's HTTP/1 parser would answer with a 400, and everything that is no request line
  const raw = [
    'get k\r\n', // memcached (methods are case-sensitive)
    'set k 0 0 1\r\nx\r\n',
    'PING x\r\n', // Redis inline commands: no such method...
    'PING',
    'GET k\r\n', // ...or a first line without a version (also HTTP/0.9)
    'GET k\n',
    'GET / HTTP/1.1\n', // bare LF
    'GET / HTTP/1.2\r\n',
    'GET / HTTP/2.0\r\n',
    'GET  / HTTP/1.1\r\n', // empty target
    'GET /\xe9 HTTP/1.1\r\n', // not ASCII
    'FOO / HTTP/1.1\r\n', // a method Node does not serve
    'PRI /x HTTP/1.1\r\n',
    '\x16\x03\x01\x02\x00', // a TLS ClientHello
    ' GET',
    'A'.repeat(30),
    `GET /${'a'.repeat(17_000)}`, // no end of the line in sight
  ];
  for (const r of raw) t.is(c(r), 'raw', JSON.stringify(r.slice(0, 30)));
});

test.serial('port protocols: Service port appProtocol and names (Istio convention), the ROUTER_ENV format', (t) => {
  const p = servicePortProtocol;
  for (const name of ['http', 'http-web', 'http2', 'h2c', 'grpc', 'grpc-api', 'grpc-web', 'HTTP-x']) t.is(p({ name }), 'http', name);
  for (const name of ['tcp', 'tcp-x', 'mysql', 'redis', 'mongo', 'tls', 'https', 'https-admin']) t.is(p({ name }), 'tcp', name);
  for (const name of [undefined, '', 'web', 'api', 'metrics', 'p8080']) t.is(p({ name }), 'sniff', String(name));
  t.is(p({ appProtocol: 'tcp', name: 'http' }), 'tcp', 'appProtocol comes first');
  t.is(p({ appProtocol: 'HTTP', name: 'mysql' }), 'http');
  t.is(p({ appProtocol: 'kubernetes.io/h2c' }), 'http');
  t.is(p({ appProtocol: 'kubernetes.io/ws' }), 'http');
  t.is(p({ appProtocol: 'postgresql', name: 'web' }), 'tcp', 'any other appProtocol names a protocol that is not HTTP');
  const service = {
    spec: {
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'grpc', port: 81, targetPort: 'grpc-port' },
        { name: 'tcp-db', port: 3306 },
        { name: 'web', port: 90 },
        { name: 'http-a', port: 7000 },
        { name: 'tcp-b', port: 7001, targetPort: 7000 }, // two service ports, one pod port, no agreement
        { name: 'http-udp', port: 5353, protocol: 'UDP' }, // not a TCP port: says nothing
      ],
    },
  };
  t.deepEqual(
    routerPortSpecs(service, [{ port: 8080 }, { port: 9000, name: 'grpc-port' }, { port: 3306 }, { port: 90 }, { port: 7000 }, { port: 5353 }]),
    [
      { port: 8080, protocol: 'http' },
      { port: 9000, protocol: 'http' },
      { port: 3306, protocol: 'tcp' },
      { port: 90, protocol: 'sniff' },
      { port: 7000, protocol: 'sniff' },
      { port: 5353, protocol: 'sniff' },
    ],
  );
  const specs = [
    { port: 8080, protocol: 'http' },
    { port: 3306, protocol: 'tcp' },
    { port: 90, protocol: 'sniff' },
  ] as const;
  t.is(formatRouterPorts(specs), '8080/http,3306/tcp,90');
  t.deepEqual(parseRouterPorts(formatRouterPorts(specs)), [...specs]);
  t.deepEqual(parseRouterPorts('8080, 9090'), [{ port: 8080, protocol: 'sniff' }, { port: 9090, protocol: 'sniff' }], 'what earlier versions wrote');
  for (const bad of ['80/udp', 'x', '0', '70000', '80/']) t.throws(() => parseRouterPorts(bad), { instanceOf: RangeError }, bad);
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
  // Lines of text protocols that look a little like HTTP: passed on as they are, no 400 from the router.
  for (const line of ['get k\r\n', 'set k 0 0 1\r\nx\r\n', 'PING x\r\n', 'GET k\r\n']) {
    t.is(await exchange(Buffer.from(line, 'latin1')), 'banner\n' + line, line);
  }
  t.is(await exchange(undefined), 'banner\n'); // server speaks first: decided after the sniff timeout
  // A request line on the raw port is HTTP: the original service answers it as HTTP would (here:
  // its echo sends the banner and the request back, which is no HTTP answer: the router says 502).
  const agent = new http.Agent();
  t.teardown(() => agent.destroy());
  const a = await request(agent, P3, {});
  t.is(a.status, 502);
});

/** Connects, reads the banner before sending anything, then sends `line` and reads it back. */
function greetingFirst(port: number, line: string): Promise<{ greeting: string; echo: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ROUTER_HOST, port });
    let got = '';
    let greeting: string | undefined;
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (greeting === undefined && got.includes('\n')) {
        greeting = got;
        got = '';
        s.write(line);
      }
      if (greeting !== undefined && got.length >= line.length) {
        s.destroy();
        resolve({ greeting, echo: got });
      }
    });
    s.on('error', reject);
  });
}

test.serial('a port declared tcp is joined at once: the greeting of a server-first protocol comes before the client says anything', async (t) => {
  // The quiet router would wait an hour for the first bytes of a port it sniffs: the banner can
  // only arrive because P4 is not sniffed at all. An HTTP request on it is not routed either.
  const request = 'GET / HTTP/1.1\r\nVERSION: a\r\n\r\n';
  t.deepEqual(await greetingFirst(P4, request), { greeting: 'banner\n', echo: request });
});

test.serial('a port declared http that gets no HTTP: the bytes go on to the original service as they came (its server answers, not the router)', async (t) => {
  // The router does not judge a protocol for the original service: the same bytes reach it as
  // without the mesh (here an echo; a real HTTP server would send its own 400).
  const s = connect({ host: ROUTER_HOST, port: P5 });
  t.teardown(() => s.destroy());
  const got = await new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (d) => {
      text += d.toString('latin1');
      if (text.length >= 'banner\nget k\r\n'.length) resolve(text);
    });
    s.on('error', reject);
    s.write('get k\r\n');
  });
  t.is(got, 'banner\nget k\r\n');
  // HTTP on the same port is still HTTP (the echo is no HTTP answer: the router's 502).
  const agent = new http.Agent();
  t.teardown(() => agent.destroy());
  t.is((await request(agent, P5, {})).status, 502);
});

/** A plain ssh2 client of the router with the developers' shared key. */
async function sshClient(t: { teardown(fn: () => void): void }): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  t.teardown(() => client.end());
  const pinned = ssh2.utils.parseKey(hostKey.public);
  if (pinned instanceof Error) throw pinned;
  const blob = pinned.getPublicSSH();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', reject);
    client.connect({ host: '127.0.0.1', port: shadow.address()!.port, username: 'ktctl', privateKey: userKey.private, hostVerifier: (key: Buffer) => key.equals(blob) });
  });
  return client;
}

test.serial('the router serves marks only: direct-tcpip refused as sshd does ("administratively prohibited", "open failed"), nothing is connected', async (t) => {
  let reached = 0;
  const target = createServer((s) => {
    reached++;
    s.destroy();
  });
  t.teardown(() => target.close());
  await listen(target, 0, '127.0.0.1');
  const client = await sshClient(t);
  const err = await new Promise<Error | undefined>((resolve) => {
    client.forwardOut('127.0.0.1', 0, '127.0.0.1', portOf(target), (e, ch) => {
      ch?.destroy();
      resolve(e);
    });
  });
  t.truthy(err);
  t.is(Reflect.get(err ?? {}, 'reason'), 1, 'RFC 4254 §5.1 SSH_OPEN_ADMINISTRATIVELY_PROHIBITED');
  t.regex(err?.message ?? '', /open failed$/);
  // What ktctl's own tunnel makes of it.
  const dialErr = await t.throwsAsync(tunnelA.dial('127.0.0.1', portOf(target)));
  t.true(dialErr instanceof DialError && dialErr.reason === 'prohibited', String(dialErr));
  t.is(reached, 0);
  t.true(logLines.some((l) => l.event === 'open-failed' && l.reason === 'prohibited' && l.port === portOf(target)));
});

test.serial('the router serves marks only: tcpip-forward of an address or a bad mark refused, nothing listens; no DNS subsystem', async (t) => {
  const client = await sshClient(t);
  const free = await unusedPort();
  const forwardIn = (addr: string, port: number): Promise<Error | undefined> => new Promise((resolve) => client.forwardIn(addr, port, (e) => resolve(e)));
  t.truthy(await forwardIn('127.0.0.1', free));
  t.truthy(await forwardIn('', free));
  t.truthy(await forwardIn('ktctl-mesh:bad header=x', P1), 'not a mark: an address, refused');
  const refused = await new Promise<string>((resolve) => {
    const s = connect({ host: '127.0.0.1', port: free });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''));
  });
  t.is(refused, 'ECONNREFUSED');
  t.true(logLines.some((l) => l.event === 'forward' && l.ok === false && String(l.detail).includes('only takes mesh marks')));
  const dnsErr = await new Promise<Error | undefined>((resolve) => {
    client.subsys(DNS_SUBSYSTEM, (e, ch) => {
      ch?.destroy();
      resolve(e);
    });
  });
  t.truthy(dnsErr);
  t.is(Reflect.get(dnsErr ?? {}, 'reason'), 1);
  // A mark on the same connection is still taken (the client is one of the developers).
  const mark = await new Promise<Error | undefined>((resolve) => client.forwardIn(meshBindAddress({ key: 'VERSION', value: 'raw-client' }), P1, (e) => resolve(e)));
  t.is(mark, undefined);
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
  const dead = await unusedPort();
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
