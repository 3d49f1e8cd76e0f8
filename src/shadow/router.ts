/**
 * The mesh router (shadow role `router`): listens on a service's target ports in place of its pods
 * and sends each HTTP request whose version-mark header matches a developer's registered mark to
 * that developer (through their `forwarded-tcpip` channels), every other request to the original
 * pods (the stuntman Service, `upstream`).
 *
 * Each port has a protocol (RouterPortProtocol, from the Service port's appProtocol or name):
 * a `tcp` port is joined to the upstream at once and never read. On `http` and `sniff` ports what
 * arrives is told apart by its first bytes only; the protocols themselves are spoken by Node's
 * `http` and `http2` modules:
 * - an HTTP/1.x request line (classifyFirstBytes): an `http.Server` that routes every request of
 *   a keep-alive connection on its own; an Upgrade (WebSocket) or CONNECT request is routed on its
 *   header and then joined byte for byte (the 101 answer comes from the target);
 * - the HTTP/2 connection preface (h2c with prior knowledge, RFC 9113 §3.3, gRPC's way): an
 *   `http2` server session whose streams are routed one by one on the same header;
 * - anything else, or nothing within `sniffTimeoutMs` (a protocol where the server speaks
 *   first): a raw TCP connection to the upstream, with the bytes read so far.
 * The router never answers for the original service: bytes that are not HTTP go to it as they
 * came, also on a port declared `http` (its own server answers them as it would without the
 * mesh). An `http` port only waits longer (`httpWaitMs`) for a silent client, since an HTTP
 * client always speaks first.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders as Http2Headers, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import type { MeshMark, RouterPortProtocol, RouterPortSpec } from '../protocol/index.js';
import { silentLogger, type ShadowLogger } from './log.js';

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/**
 * The request methods Node's HTTP/1 parser (llhttp) accepts: any other one gets a 400 from it, so
 * such a connection is better passed on raw. Methods are case-sensitive (RFC 9110 §9.1).
 */
const METHODS = new Set(http.METHODS);
/** Every non-empty prefix of a method, to tell early that bytes can no longer become one. */
const METHOD_PREFIXES = new Set(http.METHODS.flatMap((m) => [...m].map((_, i) => m.slice(0, i + 1))));
/** The versions Node's parser serves in an HTTP/1 request line, with the line's end (RFC 9112 §2.3, §3). */
const HTTP1_ENDS = ['HTTP/1.1\r\n', 'HTTP/1.0\r\n'].map((v) => Buffer.from(v, 'latin1'));
/** A request line longer than this (Node's default header limit) is not waited for: raw. */
const MAX_REQUEST_LINE = 16 * 1024;
/** How long a port declared `http` waits for a silent client's first bytes before going raw. */
const HTTP_WAIT_MS = 60_000;
/** Idle keep-alive connections to an upstream are dropped after this (below Node's 5 s server default). */
const UPSTREAM_IDLE_MS = 4000;

/** RFC 9110 §7.6.1: connection-specific fields, never forwarded (Transfer-Encoding is redone by Node). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings']);
/** RFC 9113 §8.2.2: fields an HTTP/2 message must not carry. */
const H2_FORBIDDEN = new Set([...HOP_BY_HOP, 'transfer-encoding', 'host']);

/** What the first bytes of a connection are. */
export type FirstBytes = 'http1' | 'h2' | 'raw' | 'more';

const SP = 0x20;

/**
 * Classifies the start of a connection: the h2 preface (or a prefix of it: 'more'), an HTTP/1.x
 * request line (RFC 9112 §3: `method SP request-target SP HTTP-version CRLF`, with a method and a
 * version Node's parser serves), or something else ('raw'). 'more' while the bytes can still
 * become either. So `get k` (memcached), `PING x` and `GET k` (Redis inline commands) are raw:
 * a lower-case or unknown method, or a first line that ends without ` HTTP/1.x`.
 */
export function classifyFirstBytes(buf: Buffer): FirstBytes {
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return buf.length >= H2_PREFACE.length ? 'h2' : 'more';
  // method
  const sp = buf.indexOf(SP);
  const method = buf.subarray(0, sp < 0 ? buf.length : sp).toString('latin1');
  if (sp < 0) return METHOD_PREFIXES.has(method) ? 'more' : 'raw';
  if (!METHODS.has(method)) return 'raw';
  // request-target: visible ASCII (RFC 9112 §3.2; Node's parser refuses anything else), not empty
  let i = sp + 1;
  while (i < buf.length && buf[i]! > SP && buf[i]! < 0x7f) i++;
  if (i === buf.length) return buf.length > MAX_REQUEST_LINE ? 'raw' : 'more';
  if (i === sp + 1 || buf[i] !== SP) return 'raw'; // empty, a control byte, or the line ended (HTTP/0.9, Redis `GET k`)
  // HTTP-version and CRLF
  const rest = buf.subarray(i + 1);
  for (const end of HTTP1_ENDS) {
    const m = Math.min(rest.length, end.length);
    if (rest.subarray(0, m).equals(end.subarray(0, m))) return rest.length >= end.length ? 'http1' : 'more';
  }
  return 'raw';
}

/** A connection towards a developer's laptop, and how to join it with a client socket. */
export interface RouteStream {
  stream: Duplex;
  /** Joins `stream` with `socket` both ways until both are done (half-closes kept). */
  join(socket: Socket): void;
}

/** Where a mark's requests go: the ssh client that registered it. */
export interface MeshRoute {
  /** Names the owner in logs and in the refusal of a second registration of the same mark. */
  label: string;
  /** Opens a connection to the laptop (a `forwarded-tcpip` channel). */
  open(origin: { address: string; port: number }): Promise<RouteStream>;
}

export class MarkTakenError extends Error {
  constructor(readonly mark: MeshMark, readonly port: number, readonly holder: string) {
    super(`the mark ${mark.key}: ${mark.value} on port ${port} is already registered by ${holder}`);
  }
}

export class RoutePortError extends Error {}

export interface MeshRouterOptions {
  /** The ports to serve (the service's target ports), each with what is known of its protocol. */
  ports: readonly RouterPortSpec[];
  /** Listening address (default 0.0.0.0). */
  host?: string;
  /** Where unmarked traffic goes (the stuntman Service's address), on the same port. */
  upstream: string;
  /** How long a connection to a `sniff` port may stay silent before it is taken for a server-speaks-first protocol (default 500 ms). */
  sniffTimeoutMs?: number;
  /** How long a connection to an `http` port may stay silent before it goes raw to the upstream (default 60 s). */
  httpWaitMs?: number;
  /** Timeout of a TCP connect to the upstream (default 10 s). */
  connectTimeoutMs?: number;
  log?: ShadowLogger;
}

/** One registered mark on one port. */
interface Registration {
  /** header name, lower case */
  key: string;
  mark: MeshMark;
  route: MeshRoute;
  agent: RouteAgent;
  h2: Promise<ClientHttp2Session> | undefined;
}

interface PortState {
  port: number;
  protocol: RouterPortProtocol;
  listener: NetServer;
  h1: http.Server;
  h2: http2.Http2Server;
  routes: Registration[];
  upstreamH2: Promise<ClientHttp2Session> | undefined;
}

/**
 * Gives a stream the few `net.Socket` methods `http.Agent` calls on its sockets (keep-alive,
 * ref/unref, the idle timeout that drops pooled connections).
 */
function agentSocket(stream: Duplex): Duplex {
  let timer: NodeJS.Timeout | undefined;
  const shims = {
    setKeepAlive: () => stream,
    setNoDelay: () => stream,
    ref: () => stream,
    unref: () => stream,
    setTimeout: (ms: number, onTimeout?: () => void) => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (onTimeout) stream.once('timeout', onTimeout);
      if (ms > 0) {
        timer = setTimeout(() => stream.emit('timeout'), ms);
        timer.unref();
      }
      return stream;
    },
  };
  for (const [name, fn] of Object.entries(shims)) if (typeof Reflect.get(stream, name) !== 'function') Reflect.set(stream, name, fn);
  stream.on('data', () => timer?.refresh());
  stream.once('close', () => timer && clearTimeout(timer));
  return stream;
}

/** A keep-alive agent whose connections are a developer's forwarded channels. */
class RouteAgent extends http.Agent {
  readonly #route: MeshRoute;

  constructor(route: MeshRoute) {
    super({ keepAlive: true, timeout: UPSTREAM_IDLE_MS });
    this.#route = route;
  }

  /**
   * The stream comes later, through `callback`. With an error, Node's agent never looks at the
   * stream (lib/_http_agent.js `oncreate`), but the callback's type wants one: it gets an empty
   * stream that is already destroyed (without an error of its own: nobody listens to it).
   */
  override createConnection(_options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    this.#route.open({ address: '0.0.0.0', port: 0 }).then(
      (rs) => callback?.(null, agentSocket(rs.stream)),
      (err: unknown) => callback?.(err instanceof Error ? err : new Error(String(err)), new PassThrough().destroy()),
    );
    return undefined;
  }
}

/** Does a header (one value, a comma list, or repeated fields) carry `want`? */
function headerHas(value: string | string[] | undefined, want: string): boolean {
  if (value === undefined) return false;
  const all = Array.isArray(value) ? value : [value];
  return all.some((v) => v === want || (v.includes(',') && v.split(',').some((p) => p.trim() === want)));
}

/** rawHeaders minus hop-by-hop fields (and those the Connection field names). */
function forwardable(raw: string[], drop: Set<string> = HOP_BY_HOP): string[] {
  const named = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') for (const n of raw[i + 1]!.split(',')) named.add(n.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (drop.has(name) || (named.has(name) && name !== 'transfer-encoding')) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** The request head again, for a tunnel (Upgrade, CONNECT): the target must see it byte for byte. */
function requestHead(req: IncomingMessage): Buffer {
  let head = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`;
  for (let i = 0; i < req.rawHeaders.length; i += 2) head += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/** Joins two TCP sockets both ways, half-closes kept; an error on one destroys the other. */
function joinSockets(a: Socket, b: Socket): void {
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.on('close', () => !b.destroyed && (a.readableEnded ? b.end() : b.destroy()));
  b.on('close', () => !a.destroyed && (b.readableEnded ? a.end() : a.destroy()));
  a.pipe(b);
  b.pipe(a);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class MeshRouter {
  readonly #options: MeshRouterOptions;
  readonly #log: ShadowLogger;
  readonly #ports = new Map<number, PortState>();
  readonly #sockets = new Set<Socket>();
  /** Keep-alive connections to the upstream, shared by every port. */
  readonly #upstreamAgent = new http.Agent({ keepAlive: true, timeout: UPSTREAM_IDLE_MS });
  #closing: Promise<void> | undefined;

  constructor(options: MeshRouterOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    for (const { port, protocol } of options.ports) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RoutePortError(`${port} is not a port number`);
      const known = this.#ports.get(port);
      // Named twice with different protocols: nothing is known for sure, the first bytes tell.
      if (known !== undefined) known.protocol = known.protocol === protocol ? protocol : 'sniff';
      else this.#ports.set(port, this.#portState(port, protocol));
    }
    if (this.#ports.size === 0) throw new RoutePortError('the router needs at least one port to serve');
  }

  #portState(port: number, protocol: RouterPortProtocol): PortState {
    const h1 = http.createServer({ keepAliveTimeout: 5000 });
    const h2 = http2.createServer();
    const state: PortState = {
      port,
      protocol,
      listener: createServer({ allowHalfOpen: true, pauseOnConnect: false, noDelay: true }, (socket) => this.#accept(state, socket)),
      h1,
      h2,
      routes: [],
      upstreamH2: undefined,
    };
    h1.on('request', (req: IncomingMessage, res: ServerResponse) => this.#request(state, req, res));
    h1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#tunnel(state, req, socket, head));
    h1.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#tunnel(state, req, socket, head));
    h1.on('clientError', (err: Error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
      this.#log('mesh-error', { port, kind: 'http1', message: err.message });
    });
    h2.on('stream', (stream: ServerHttp2Stream, headers: Http2Headers) => this.#stream(state, stream, headers));
    h2.on('sessionError', (err: Error) => this.#log('mesh-error', { port, kind: 'h2', message: err.message }));
    // The compatibility API would answer streams nobody handles; 'stream' does it all here.
    h2.removeAllListeners('request');
    return state;
  }

  /** Starts listening on every port. */
  async listen(): Promise<void> {
    for (const state of this.#ports.values()) {
      await new Promise<void>((resolve, reject) => {
        state.listener.once('error', reject);
        state.listener.listen({ port: state.port, host: this.#options.host ?? '0.0.0.0' }, () => {
          state.listener.off('error', reject);
          state.listener.on('error', (err) => this.#log('error', { port: state.port, message: err.message }));
          resolve();
        });
      });
    }
    this.#log('mesh-listen', { ports: [...this.#ports.values()].map((s) => `${s.port}/${s.protocol}`).join(','), upstream: this.#options.upstream });
  }

  get ports(): number[] {
    return [...this.#ports.keys()];
  }

  /**
   * Registers `mark` on `port` for `route`; returns the function that unregisters it. Throws
   * MarkTakenError when another route holds the same mark (header names compared in any case),
   * RoutePortError when the router does not serve `port`.
   */
  register(port: number, mark: MeshMark, route: MeshRoute): () => void {
    const state = this.#ports.get(port);
    if (state === undefined) throw new RoutePortError(`the router does not serve port ${port} (it serves ${this.ports.join(', ')})`);
    const key = mark.key.toLowerCase();
    const taken = state.routes.find((r) => r.key === key && r.mark.value === mark.value);
    if (taken !== undefined) throw new MarkTakenError(mark, port, taken.route.label);
    const reg: Registration = { key, mark, route, agent: new RouteAgent(route), h2: undefined };
    state.routes.push(reg);
    this.#log('mesh-register', { port, key: mark.key, value: mark.value, to: route.label });
    return () => {
      const i = state.routes.indexOf(reg);
      if (i < 0) return;
      state.routes.splice(i, 1);
      reg.agent.destroy();
      void reg.h2?.then((s) => s.close(), () => undefined);
      this.#log('mesh-unregister', { port, key: mark.key, value: mark.value, to: route.label });
    };
  }

  /** Stops listening and cuts every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = [...this.#ports.values()].map((s) => new Promise<void>((resolve) => s.listener.close(() => resolve())));
      for (const s of this.#sockets) s.destroy();
      for (const state of this.#ports.values()) {
        for (const r of state.routes) {
          r.agent.destroy();
          void r.h2?.then((s) => s.destroy(), () => undefined);
        }
        state.routes = [];
        void state.upstreamH2?.then((s) => s.destroy(), () => undefined);
        state.h1.closeAllConnections();
      }
      this.#upstreamAgent.destroy();
      await Promise.all(closed);
    })();
    return this.#closing;
  }

  #pick(state: PortState, headers: IncomingHttpHeaders | Http2Headers): Registration | undefined {
    for (const r of state.routes) if (headerHas(headers[r.key], r.mark.value)) return r;
    return undefined;
  }

  /** Reads the first bytes (not on a `tcp` port) and hands the connection to the matching path. */
  #accept(state: PortState, socket: Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined); // each path adds its own handling; a reset before that just ends it
    if (state.protocol === 'tcp') {
      this.#raw(state, socket, Buffer.alloc(0));
      return;
    }
    let seen: Buffer = Buffer.alloc(0);
    let decided = false;
    const decide = (kind: FirstBytes): void => {
      if (decided) return;
      decided = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      if (kind === 'raw') {
        this.#raw(state, socket, seen);
        return;
      }
      socket.unshift(seen);
      if (kind === 'http1') {
        state.h1.emit('connection', socket);
        socket.resume(); // the parser reads the socket's handle; what was unshifted comes first
      } else if (kind === 'h2') {
        state.h2.emit('connection', socket);
      }
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const kind = classifyFirstBytes(seen);
      if (kind !== 'more') decide(kind);
    };
    const wait = state.protocol === 'http' ? (this.#options.httpWaitMs ?? HTTP_WAIT_MS) : (this.#options.sniffTimeoutMs ?? 500);
    const timer = setTimeout(() => decide('raw'), wait);
    socket.on('data', onData);
    // A client that half-closes before the first bytes told anything: whatever it sent goes on raw.
    socket.once('end', () => decide('raw'));
    socket.once('close', () => clearTimeout(timer));
  }

  /** Not HTTP: the whole connection goes to the upstream. */
  #raw(state: PortState, socket: Socket, first: Buffer): void {
    const up = connect({ host: this.#options.upstream, port: state.port, allowHalfOpen: true, noDelay: true });
    this.#sockets.add(up);
    up.once('close', () => this.#sockets.delete(up));
    const timer = setTimeout(() => up.destroy(new Error('connect timed out')), this.#options.connectTimeoutMs ?? 10_000);
    up.once('connect', () => clearTimeout(timer));
    up.once('error', (err) => {
      clearTimeout(timer);
      this.#log('mesh-error', { port: state.port, kind: 'raw', message: err.message });
    });
    if (first.length > 0) up.write(first);
    joinSockets(socket, up);
    socket.resume();
  }

  /** One HTTP/1.x request: to the mark's owner or to the upstream, through a keep-alive agent. */
  #request(state: PortState, req: IncomingMessage, res: ServerResponse): void {
    const reg = this.#pick(state, req.headers);
    const target = reg ? reg.route.label : this.#options.upstream;
    const up = http.request({
      host: reg ? 'localhost' : this.#options.upstream,
      port: state.port,
      method: req.method,
      path: req.url,
      headers: forwardable(req.rawHeaders),
      setHost: false,
      agent: reg ? reg.agent : this.#upstreamAgent,
    });
    up.on('response', (ures: IncomingMessage) => {
      res.writeHead(ures.statusCode ?? 502, ures.statusMessage, forwardable(ures.rawHeaders));
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      this.#log('mesh-error', { port: state.port, kind: 'http1', to: target, message: err.message });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body = `ktctl mesh router: ${reg ? `the developer of ${reg.mark.key}: ${reg.mark.value}` : `the original service (${target}:${state.port})`} is not reachable: ${err.message}\n`;
      res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /** Upgrade (WebSocket) or CONNECT: routed on the request's header, then joined byte for byte. */
  #tunnel(state: PortState, req: IncomingMessage, socket: Socket, head: Buffer): void {
    const reg = this.#pick(state, req.headers);
    const first = Buffer.concat([requestHead(req), head]);
    const fail = (err: unknown): void => {
      this.#log('mesh-error', { port: state.port, kind: 'upgrade', to: reg?.route.label ?? this.#options.upstream, message: errorText(err) });
      if (socket.writable) socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
    };
    socket.on('error', () => undefined);
    if (reg) {
      reg.route.open({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }).then((rs) => {
        if (socket.destroyed) {
          rs.stream.destroy();
          return;
        }
        rs.stream.write(first);
        rs.join(socket);
      }, fail);
      return;
    }
    const up = connect({ host: this.#options.upstream, port: state.port, allowHalfOpen: true, noDelay: true });
    this.#sockets.add(up);
    up.once('close', () => this.#sockets.delete(up));
    up.once('error', fail);
    up.once('connect', () => {
      up.off('error', fail);
      up.write(first);
      joinSockets(socket, up);
    });
  }

  /** The upstream h2 session of a route (or of the upstream), made once and reused. */
  #session(state: PortState, reg: Registration | undefined): Promise<ClientHttp2Session> {
    const existing = reg ? reg.h2 : state.upstreamH2;
    if (existing) return existing;
    const made = (async (): Promise<ClientHttp2Session> => {
      let session: ClientHttp2Session;
      if (reg) {
        const rs = await reg.route.open({ address: '0.0.0.0', port: 0 });
        session = http2.connect('http://localhost', { createConnection: () => rs.stream });
      } else {
        session = http2.connect(`http://${this.#options.upstream}:${state.port}`);
      }
      const forget = (): void => {
        if (reg && reg.h2 === made) reg.h2 = undefined;
        if (!reg && state.upstreamH2 === made) state.upstreamH2 = undefined;
      };
      session.on('error', (err) => {
        forget();
        this.#log('mesh-error', { port: state.port, kind: 'h2-upstream', to: reg?.route.label ?? this.#options.upstream, message: err.message });
      });
      session.once('close', forget);
      session.once('goaway', forget);
      return session;
    })();
    made.catch(() => {
      if (reg && reg.h2 === made) reg.h2 = undefined;
      if (!reg && state.upstreamH2 === made) state.upstreamH2 = undefined;
    });
    if (reg) reg.h2 = made;
    else state.upstreamH2 = made;
    return made;
  }

  /** One h2 stream (a gRPC call): to the mark's owner or to the upstream; trailers and resets pass through. */
  #stream(state: PortState, stream: ServerHttp2Stream, headers: Http2Headers): void {
    const reg = this.#pick(state, headers);
    const target = reg?.route.label ?? this.#options.upstream;
    stream.on('error', () => undefined);
    const fail = (err: unknown): void => {
      this.#log('mesh-error', { port: state.port, kind: 'h2', to: target, message: errorText(err) });
      if (stream.destroyed || stream.closed) return;
      if (!stream.headersSent) {
        stream.respond({ ':status': 502, 'content-type': 'text/plain; charset=utf-8' });
        stream.end(`ktctl mesh router: ${target} is not reachable: ${errorText(err)}\n`);
      } else {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      }
    };
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) if (!H2_FORBIDDEN.has(name) && value !== undefined) out[name] = value;
    this.#session(state, reg).then((session) => {
      if (stream.destroyed || stream.closed) return;
      const up = session.request(out, { endStream: stream.readableEnded && stream.readableLength === 0 });
      let trailers: OutgoingHttpHeaders | undefined;
      up.on('response', (h, flags) => {
        if (stream.destroyed || stream.closed) return;
        const rh: OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(h)) if (!H2_FORBIDDEN.has(name) && value !== undefined) rh[name] = value;
        if ((flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0) {
          stream.respond(rh, { endStream: true });
          return;
        }
        stream.respond(rh, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
        up.pipe(stream);
      });
      up.on('trailers', (t) => {
        trailers = {};
        for (const [name, value] of Object.entries(t)) if (typeof value === 'string' || Array.isArray(value)) trailers[name] = value;
      });
      up.on('error', fail);
      up.on('close', () => {
        if (up.rstCode !== undefined && up.rstCode !== http2.constants.NGHTTP2_NO_ERROR && !stream.closed) stream.close(up.rstCode);
      });
      stream.on('close', () => {
        if (!up.closed) up.close(stream.rstCode ?? http2.constants.NGHTTP2_CANCEL);
      });
      if (!up.writableEnded) stream.pipe(up);
    }, fail);
  }
}

