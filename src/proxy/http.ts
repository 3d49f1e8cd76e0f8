import {
  Server as HttpServer,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { describeDialFailure, type ProxyContext } from './context.js';

/**
 * RFC 9110 §7.6.1: hop-by-hop fields that a proxy must not forward (plus the `Proxy-*` ones, and
 * `Keep-Alive`/`Upgrade`/`TE`/`Trailer` of RFC 9112). Tokens listed in `Connection` are added per
 * message.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * The HTTP proxy front end. Node's own HTTP parser does the parsing: sockets are handed to an
 * `http.Server` that never listens (`emit('connection', socket)`), which
 * - on `CONNECT host:port` gives up the socket (`'connect'`): dial, `200 Connection established`,
 *   then a raw tunnel;
 * - on an absolute-URI request (`GET http://host:port/path`) calls `'request'`: dial, forward the
 *   request in origin-form with hop-by-hop fields removed, and stream the response back.
 * Every forwarded request dials its own upstream stream (`Connection: close` towards the origin),
 * so keep-alive towards the client works for any mix of hosts on one connection; the request and
 * response bodies are re-framed by Node (Content-Length kept, chunked otherwise).
 *
 * Time bounds are the ProxyServer's, not Node's: `headersTimeout` and `requestTimeout` are checked
 * by a timer that only `listen()` starts, and `keepAliveTimeout` is an idle timeout that every
 * byte resets. So each request head has the server's handshake deadline (from accept, then from
 * the end of the previous response), and a request being served has none (a long poll may be
 * silent for long; its dial has the dial deadline).
 */
export class HttpFrontEnd {
  readonly #ctx: ProxyContext;
  readonly #server: HttpServer;
  /** Requests of a connection whose response is not finished yet (pipelining makes it > 1). */
  readonly #inFlight = new WeakMap<Socket, number>();

  constructor(ctx: ProxyContext) {
    this.#ctx = ctx;
    this.#server = new HttpServer({ requestTimeout: 0, headersTimeout: 0, keepAliveTimeout: 0 });
    this.#server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onConnect(req, socket, head));
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res));
    this.#server.on('upgrade', (req: IncomingMessage) => {
      this.#ctx.clientError(req.socket, 'http', `upgrade request for ${req.url ?? ''} not supported`);
      this.#ctx.refuse(req.socket, rawResponse(501, 'Not Implemented', 'protocol upgrades through the proxy are not supported'));
    });
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      const client = socket as Socket;
      this.#ctx.clientError(client, 'http', `malformed HTTP request: ${err.code ?? err.message}`);
      if (socket.writable && !client.destroyed && err.code !== 'ECONNRESET') {
        this.#ctx.refuse(client, rawResponse(400, 'Bad Request', `malformed request: ${err.code ?? err.message}`));
      } else {
        socket.destroy();
      }
    });
  }

  /** Takes over a client socket (bytes sniffed from it already unshifted back). */
  accept(socket: Socket): void {
    this.#server.emit('connection', socket);
  }

  #onConnect(req: IncomingMessage, _socket: Duplex, head: Buffer): void {
    const client = req.socket;
    this.#ctx.handshakeDone(client);
    const refuse = (text: string): void => {
      this.#ctx.clientError(client, 'http-connect', text);
      this.#ctx.refuse(client, rawResponse(400, 'Bad Request', text));
    };
    const hostProblem = checkHostField(req.rawHeaders);
    if (hostProblem !== undefined) return refuse(hostProblem);
    const target = parseAuthority(req.url ?? '');
    if (target === undefined) return refuse(`CONNECT needs host:port (port 1-65535), got ${JSON.stringify(req.url)}`);
    this.#ctx.tunnel(client, 'http-connect', target.host, target.port, {
      succeeded: 'HTTP/1.1 200 Connection established\r\n\r\n',
      failed: (err) => rawResponse(502, 'Bad Gateway', describeDialFailure(err, target.host, target.port)),
    }, head);
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const client = req.socket;
    // A request is in: its head's deadline ends, and no timeout runs while it is served (a long
    // poll may be silent for long). The next head gets a deadline once every response is out.
    this.#ctx.handshakeDone(client);
    this.#inFlight.set(client, (this.#inFlight.get(client) ?? 0) + 1);
    res.once('close', () => {
      const left = (this.#inFlight.get(client) ?? 1) - 1;
      this.#inFlight.set(client, left);
      if (left === 0 && !client.destroyed) this.#ctx.awaitRequest(client);
    });
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    // request message that lacks a Host header field and to any request message that contains
    // more than one Host header field line or a Host header field with an invalid field value."
    // (A missing one Node's parser refuses already.) The connection is closed after it.
    const hostProblem = checkHostField(req.rawHeaders);
    if (hostProblem !== undefined) {
      this.#ctx.clientError(client, 'http', hostProblem);
      return plainResponse(res, 400, hostProblem, true);
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      this.#ctx.clientError(client, 'http', `request target is not an absolute URI: ${req.url ?? ''}`);
      return plainResponse(res, 400, `this is a proxy: the request target must be an absolute http:// URI, got ${req.url ?? ''}`);
    }
    if (url.protocol !== 'http:') {
      this.#ctx.clientError(client, 'http', `scheme ${url.protocol} not supported`);
      return plainResponse(res, 400, `only http:// URIs can be forwarded (use CONNECT for ${url.protocol}//)`);
    }
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === '' ? 80 : Number(url.port);
    if (port < 1) {
      // As for CONNECT: port 0 names no service, and would reach the Dialer as "any port".
      this.#ctx.clientError(client, 'http', `bad port in ${req.url ?? ''}`);
      return plainResponse(res, 400, `the request target needs a port from 1 to 65535, got ${url.port}`);
    }

    const headers = forwardHeaders(req.rawHeaders, req.headers.connection, 'host');
    // RFC 9112 §3.2.2: a proxy replaces Host with the target URI's authority.
    headers.host = url.host;
    // A chunked request body is re-chunked by Node; a sized one keeps its Content-Length.
    if (req.headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = 'chunked';

    let dialFailed = false;
    const upstreamReq = httpRequest({
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers,
      setHost: false,
      // No `agent`: with createConnection, Node then uses no agent at all (agent: false would
      // make a fresh Agent that ignores createConnection). Connection: close towards the origin.
      createConnection: (_opts: unknown, callback: (err: Error | null, stream: Duplex) => void) => {
        this.#ctx.dial(client, 'http', host, port).then(
          (stream) => callback(null, stream),
          (err: unknown) => {
            dialFailed = true;
            // @types/node types the socket as always present; Node itself calls oncreate(err).
            callback(err instanceof Error ? err : new Error(String(err)), undefined as unknown as Duplex);
          },
        );
        return undefined;
      },
    });

    upstreamReq.on('response', (upstreamRes: IncomingMessage) => {
      const status = upstreamRes.statusCode ?? 502;
      res.writeHead(status, upstreamRes.statusMessage, flatten(forwardHeaders(upstreamRes.rawHeaders, upstreamRes.headers.connection)));
      upstreamRes.on('error', () => res.destroy());
      upstreamRes.on('aborted', () => res.destroy());
      upstreamRes.pipe(res);
    });
    upstreamReq.on('error', (err: Error) => {
      if (res.headersSent) {
        // Part of a response is out: the only honest signal left is to cut the connection.
        res.destroy();
        return;
      }
      const text = dialFailed ? describeDialFailure(err, host, port) : `bad response from ${url.host}: ${err.message}`;
      plainResponse(res, 502, text);
      req.resume();
    });
    // The client went away (or its connection broke) before the response was complete.
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    req.on('error', () => upstreamReq.destroy());
    req.pipe(upstreamReq);
  }
}

/** `host:port` or `[v6]:port`, as in a CONNECT request target (RFC 9110 §9.3.6). */
export function parseAuthority(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:/[\]@]+)):(\d{1,5})$/.exec(text);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** The end-to-end fields of a message (names lower-cased), keeping repeated fields and their order. */
function forwardHeaders(raw: string[], connection: string | undefined, ...also: string[]): OutgoingHttpHeaders {
  const drop = new Set([...HOP_BY_HOP, ...also]);
  for (const token of (connection ?? '').split(',')) {
    const t = token.trim().toLowerCase();
    if (t !== '') drop.add(t);
  }
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (drop.has(name)) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev, value];
  }
  return out;
}

function flatten(headers: OutgoingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) out.push(name, String(v));
  }
  return out;
}

/** A response of our own; `close`: end the connection after it (the request's framing is in doubt). */
function plainResponse(res: ServerResponse, status: number, text: string, close = false): void {
  const body = `${text}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(body);
}

/**
 * Why a request's Host fields are unacceptable (RFC 9112 §3.2: more than one, or a value that is
 * not `uri-host [ ":" port ]` of RFC 3986), or undefined. An empty value is allowed there.
 */
export function checkHostField(rawHeaders: string[]): string | undefined {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === 'host') values.push(rawHeaders[i + 1]!);
  if (values.length > 1) return `more than one Host header field (${values.length})`;
  if (values.length === 1 && !HOST_FIELD.test(values[0]!)) return `invalid Host header field ${JSON.stringify(values[0])}`;
  return undefined;
}

/** RFC 3986 §3.2.2-3.2.3: IP-literal or reg-name (unreserved, pct-encoded, sub-delims), then an optional port. */
const HOST_FIELD = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::\d*)?$/;

/** A complete response written straight to a socket that Node's HTTP server has let go of. */
function rawResponse(status: number, phrase: string, text: string): string {
  const body = `${text}\n`;
  return (
    `HTTP/1.1 ${status} ${phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}
