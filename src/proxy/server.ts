import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dialer } from '../dialer.js';
import { DialError, ListenError } from '../errors.js';
import {
  clientName,
  describeDialFailure,
  targetName,
  type ProxyContext,
  type ProxyEvent,
  type ProxyProtocol,
} from './context.js';
import { HttpFrontEnd } from './http.js';
import { serveSocks5 } from './socks5.js';
import { serveTunnel } from './tunnel.js';

export const DEFAULT_PROXY_HOST = '127.0.0.1';
export const DEFAULT_PROXY_PORT = 2223;
/** How long close() waits for destroyed streams to report that they are closed. */
const CLOSE_WAIT_MS = 2000;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
export const DEFAULT_LINGER_MS = 2_000;
export const DEFAULT_DIAL_TIMEOUT_MS = 60_000;

/** The proxy's bounds with the defaults (what `ktctl connect --mode socks` runs with), in ms. */
export const PROXY_BOUNDS = { handshakeDeadline: DEFAULT_HANDSHAKE_TIMEOUT_MS, lingerAfterRefusal: DEFAULT_LINGER_MS, dialTimeout: DEFAULT_DIAL_TIMEOUT_MS } as const;

export interface ProxyServerOptions {
  /** Where every stream goes: the ssh tunnel in ktctl, a plain socket dialer in tests. */
  dialer: Dialer;
  /** Listening address and port (CLI `--proxyAddr`, `--proxyPort`); port 0 picks a free one. */
  host?: string;
  port?: number;
  /**
   * Deadline for a handshake, counted from accept (not reset by incoming bytes): the SOCKS5
   * greeting and request, or an HTTP request head. On a kept-alive HTTP connection the next head
   * must be complete this long after the previous response was sent. Past it the socket is
   * destroyed. Default 30 s.
   */
  handshakeTimeoutMs?: number;
  /**
   * After a refusal (a SOCKS5 error reply, an HTTP 400/501/502 that ends the connection) the proxy
   * half-closes, drops what the client still sends, and destroys the socket at the client's FIN
   * or after this long, whichever is first. Default 2 s.
   */
  lingerMs?: number;
  /** A dial that has not produced a stream by then is aborted ('unreachable'). Default 60 s. */
  dialTimeoutMs?: number;
  /** Log hook. Events are built only when it is set. */
  onEvent?: (event: ProxyEvent) => void;
}

export interface ProxyStats {
  listening: boolean;
  /** Client connections open now, and since start. */
  activeConnections: number;
  totalConnections: number;
  /** Streams open through the Dialer now (tunnels and forwarded requests), and dials that failed. */
  activeUpstreams: number;
  dialFailures: number;
  /** Dials the proxy is waiting for now (each one belongs to an open client connection). */
  pendingDials: number;
  /** Bytes read from and written to clients (proxy protocol bytes included), since start. */
  bytesFromClients: number;
  bytesToClients: number;
  /**
   * Bytes held in the proxy's own stream buffers right now (client sockets and upstream streams,
   * both directions): what a slow reader could make grow, bounded by backpressure.
   */
  bufferedBytes: number;
}

/**
 * SOCKS5 and HTTP proxy on one local TCP port, both on top of a `Dialer`. The first byte of a
 * connection tells them apart: 0x05 is SOCKS5 (RFC 1928), an ASCII letter starts an HTTP request
 * line (CONNECT or an absolute-URI request). Anything else is dropped.
 */
/** What the server keeps per client connection. */
interface Client {
  /** Aborted when the connection closes: cancels its pending dial. */
  readonly abort: AbortController;
  /** The one deadline the connection has now (handshake or linger), if any. */
  timer: NodeJS.Timeout | undefined;
  refused: boolean;
}

export class ProxyServer {
  readonly #dialer: Dialer;
  readonly #host: string;
  readonly #port: number;
  readonly #handshakeTimeoutMs: number;
  readonly #lingerMs: number;
  readonly #dialTimeoutMs: number;
  readonly #onEvent: ((event: ProxyEvent) => void) | undefined;
  readonly #server: NetServer;
  readonly #context: ProxyContext;
  readonly #http: HttpFrontEnd;
  readonly #clients = new Map<Socket, Client>();
  readonly #upstreams = new Set<Duplex>();
  #closing: Promise<void> | undefined;
  #listening = false;
  #totalConnections = 0;
  #dialFailures = 0;
  #pendingDials = 0;
  #closedBytesIn = 0;
  #closedBytesOut = 0;

  constructor(options: ProxyServerOptions) {
    this.#dialer = options.dialer;
    this.#host = options.host ?? DEFAULT_PROXY_HOST;
    this.#port = options.port ?? DEFAULT_PROXY_PORT;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
    this.#dialTimeoutMs = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    this.#onEvent = options.onEvent;
    // allowHalfOpen: a client's FIN ends only its direction of a tunnel (splice forwards it).
    this.#server = new NetServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
    this.#context = {
      dial: (client, protocol, host, port) => this.#dial(client, protocol, host, port),
      tunnel: (client, protocol, host, port, replies, head) => serveTunnel(this.#context, client, protocol, host, port, replies, head),
      clientError: (client, protocol, message) =>
        this.#emit(() => ({ type: 'client-error', protocol, client: clientName(client), message })),
      handshakeDone: (client) => this.#disarm(client),
      awaitRequest: (client) => this.#armHandshake(client),
      refuse: (client, reply) => this.#refuse(client, reply),
      udp: () => this.#dialer.udp?.() ?? Promise.resolve(undefined),
    };
    this.#http = new HttpFrontEnd(this.#context);
  }

  /** Starts listening; resolves with the bound address (useful with port 0). */
  listen(): Promise<AddressInfo> {
    if (this.#closing !== undefined) return Promise.reject(new ListenError('the proxy has been closed'));
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.#server.off('listening', onListening);
        const where = targetName(this.#host, this.#port);
        if (err.code === 'EADDRINUSE') {
          reject(new ListenError(`${where} is already in use; pick another with --proxyPort`, { cause: err }));
        } else if (err.code === 'EACCES') {
          reject(new ListenError(`not allowed to listen on ${where}; pick a port above 1023 with --proxyPort`, { cause: err }));
        } else if (err.code === 'EADDRNOTAVAIL') {
          reject(new ListenError(`${this.#host} is not an address of this machine; fix --proxyAddr`, { cause: err }));
        } else {
          reject(new ListenError(`cannot listen on ${where}: ${err.message}`, { cause: err }));
        }
      };
      const onListening = (): void => {
        this.#server.off('error', onError);
        this.#listening = true;
        const address = this.#server.address() as AddressInfo;
        this.#emit(() => ({ type: 'listening', host: address.address, port: address.port }));
        resolve(address);
      };
      this.#server.once('error', onError);
      this.#server.once('listening', onListening);
      this.#server.listen({ host: this.#host, port: this.#port, exclusive: true });
    });
  }

  /** The bound address, once listening. */
  address(): AddressInfo | undefined {
    const a = this.#server.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  stats(): ProxyStats {
    let bytesIn = this.#closedBytesIn;
    let bytesOut = this.#closedBytesOut;
    let buffered = 0;
    for (const socket of this.#clients.keys()) {
      bytesIn += socket.bytesRead;
      bytesOut += socket.bytesWritten;
      buffered += socket.readableLength + socket.writableLength;
    }
    for (const upstream of this.#upstreams) buffered += upstream.readableLength + upstream.writableLength;
    return {
      listening: this.#listening,
      activeConnections: this.#clients.size,
      totalConnections: this.#totalConnections,
      activeUpstreams: this.#upstreams.size,
      dialFailures: this.#dialFailures,
      pendingDials: this.#pendingDials,
      bytesFromClients: bytesIn,
      bytesToClients: bytesOut,
      bufferedBytes: buffered,
    };
  }

  /**
   * Stops listening and destroys every live connection and pending dial; resolves once every
   * socket and upstream stream has closed. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#listening = false;
      const closed: Promise<unknown>[] = [];
      if (this.#server.listening) closed.push(new Promise<void>((resolve) => this.#server.close(() => resolve())));
      for (const [socket, client] of this.#clients) {
        client.abort.abort();
        if (!socket.closed) closed.push(closeOf(socket));
        socket.destroy();
      }
      for (const upstream of this.#upstreams) {
        if (!upstream.closed) closed.push(closeOf(upstream));
        upstream.destroy();
      }
      // A stream whose far end never confirms its close (an ssh channel on a tunnel that is going
      // down) must not hold the exit: everything is destroyed already, so wait a bounded time.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
      this.#emit(() => ({ type: 'closed' }));
    })();
    return this.#closing;
  }

  #onConnection(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    const client: Client = { abort: new AbortController(), timer: undefined, refused: false };
    this.#clients.set(socket, client);
    this.#totalConnections++;
    socket.once('close', () => {
      clearTimeout(client.timer);
      client.abort.abort();
      this.#clients.delete(socket);
      this.#closedBytesIn += socket.bytesRead;
      this.#closedBytesOut += socket.bytesWritten;
    });
    // Errors are handled by whoever owns the socket next; this keeps a reset from throwing.
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    // A deadline, not socket.setTimeout(): an idle timeout is reset by every byte, so a client
    // dribbling one byte a second would hold the socket for as long as it likes.
    this.#armHandshake(socket);

    const onReadable = (): void => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) return;
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      const first = chunk[0]!;
      socket.unshift(chunk);
      if (first === 0x05) {
        serveSocks5(socket, this.#context);
      } else if ((first >= 0x41 && first <= 0x5a) || (first >= 0x61 && first <= 0x7a)) {
        // The handshake deadline stays armed until the first request head is in (HttpFrontEnd
        // clears it, and re-arms it between keep-alive requests).
        this.#http.accept(socket);
      } else {
        this.#emit(() => ({
          type: 'client-error',
          protocol: 'unknown',
          client: clientName(socket),
          message: `neither SOCKS5 nor HTTP (first byte 0x${first.toString(16).padStart(2, '0')})`,
        }));
        socket.destroy();
      }
    };
    const onEnd = (): void => {
      socket.off('readable', onReadable);
      socket.destroy();
    };
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
  }

  /** (Re-)starts the handshake deadline of a client connection. */
  #armHandshake(socket: Socket): void {
    const client = this.#clients.get(socket);
    if (client === undefined || client.refused) return;
    clearTimeout(client.timer);
    client.timer = setTimeout(() => {
      this.#emit(() => ({
        type: 'client-error',
        protocol: 'unknown',
        client: clientName(socket),
        message: `no complete request within ${this.#handshakeTimeoutMs} ms`,
      }));
      socket.destroy();
    }, this.#handshakeTimeoutMs);
  }

  #disarm(socket: Socket): void {
    const client = this.#clients.get(socket);
    if (client === undefined || client.refused) return;
    clearTimeout(client.timer);
    client.timer = undefined;
  }

  /**
   * Sends a final reply and closes: a lingering close, as web servers do it. Destroying at once
   * could turn into an RST (when the client has sent bytes we did not read) that makes the client's
   * kernel drop the reply; waiting for the client's FIN could wait for ever. So: half-close, read
   * and drop what still comes, destroy at the client's FIN or after lingerMs.
   */
  #refuse(socket: Socket, reply: Buffer | string): void {
    const client = this.#clients.get(socket);
    if (client === undefined || client.refused || socket.destroyed) return;
    client.refused = true;
    clearTimeout(client.timer);
    client.timer = setTimeout(() => socket.destroy(), this.#lingerMs);
    socket.once('end', () => socket.destroy());
    socket.on('data', () => undefined);
    socket.resume();
    socket.end(reply);
  }

  async #dial(socket: Socket, protocol: ProxyProtocol, host: string, port: number): Promise<Duplex> {
    const client = this.#clients.get(socket);
    if (client === undefined || client.abort.signal.aborted) throw new DialError('tunnel', host, port, 'the client went away');
    // One signal for the Dialer: the client went away, the deadline passed, or close().
    const dial = new AbortController();
    const onClientGone = (): void => dial.abort(new DialError('tunnel', host, port, 'the client went away'));
    client.abort.signal.addEventListener('abort', onClientGone, { once: true });
    const timer = setTimeout(
      () => dial.abort(new DialError('unreachable', host, port, `no connection within ${this.#dialTimeoutMs / 1000} s`)),
      this.#dialTimeoutMs,
    );
    this.#pendingDials++;
    let upstream: Duplex;
    try {
      const dialing = this.#dialer.dial(host, port, { signal: dial.signal, originHost: socket.remoteAddress, originPort: socket.remotePort });
      upstream = await untilAborted(dialing, dial.signal);
    } catch (err) {
      if (client.abort.signal.aborted) throw err;
      this.#dialFailures++;
      this.#emit(() => ({
        type: 'dial-failed',
        protocol,
        client: clientName(socket),
        target: targetName(host, port),
        reason: describeDialFailure(err, host, port),
        error: err instanceof Error ? err : new Error(String(err)),
      }));
      throw err;
    } finally {
      this.#pendingDials--;
      clearTimeout(timer);
      client.abort.signal.removeEventListener('abort', onClientGone);
    }
    if (client.abort.signal.aborted || this.#closing !== undefined) {
      upstream.destroy();
      throw new DialError('tunnel', host, port, 'the client went away while dialing');
    }
    this.#upstreams.add(upstream);
    upstream.once('close', () => this.#upstreams.delete(upstream));
    // Errors are passed on by splice / the HTTP client; this keeps a late one from throwing.
    upstream.on('error', () => undefined);
    this.#emit(() => ({ type: 'tunnel', protocol, client: clientName(socket), target: targetName(host, port) }));
    return upstream;
  }

  #emit(make: () => ProxyEvent): void {
    if (this.#onEvent !== undefined) this.#onEvent(make());
  }
}

/**
 * The dial, or its signal's reason as soon as the signal aborts: a Dialer that does not honour
 * the signal cannot hold the proxy. A stream that arrives after that is destroyed.
 */
function untilAborted(dialing: Promise<Duplex>, signal: AbortSignal): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    dialing.then(
      (stream) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) stream.destroy();
        else resolve(stream);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Resolves on 'close' only (an 'error' on the way there is someone else's to handle). */
function closeOf(stream: Duplex): Promise<void> {
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
