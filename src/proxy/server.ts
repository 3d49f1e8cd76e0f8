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

export const DEFAULT_PROXY_HOST = '127.0.0.1';
export const DEFAULT_PROXY_PORT = 2223;
/** How long close() waits for destroyed streams to report that they are closed. */
const CLOSE_WAIT_MS = 2000;

export interface ProxyServerOptions {
  /** Where every stream goes: the ssh tunnel in ktctl, a plain socket dialer in tests. */
  dialer: Dialer;
  /** Listening address and port (CLI `--proxyAddr`, `--proxyPort`); port 0 picks a free one. */
  host?: string;
  port?: number;
  /** A client that has not finished its SOCKS5 handshake / first HTTP request by then is dropped. */
  handshakeTimeoutMs?: number;
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
export class ProxyServer {
  readonly #dialer: Dialer;
  readonly #host: string;
  readonly #port: number;
  readonly #handshakeTimeoutMs: number;
  readonly #onEvent: ((event: ProxyEvent) => void) | undefined;
  readonly #server: NetServer;
  readonly #context: ProxyContext;
  readonly #http: HttpFrontEnd;
  readonly #clients = new Map<Socket, AbortController>();
  readonly #upstreams = new Set<Duplex>();
  #closing: Promise<void> | undefined;
  #listening = false;
  #totalConnections = 0;
  #dialFailures = 0;
  #closedBytesIn = 0;
  #closedBytesOut = 0;

  constructor(options: ProxyServerOptions) {
    this.#dialer = options.dialer;
    this.#host = options.host ?? DEFAULT_PROXY_HOST;
    this.#port = options.port ?? DEFAULT_PROXY_PORT;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30_000;
    this.#onEvent = options.onEvent;
    // allowHalfOpen: a client's FIN ends only its direction of a tunnel (splice forwards it).
    this.#server = new NetServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
    this.#context = {
      dial: (client, protocol, host, port) => this.#dial(client, protocol, host, port),
      clientError: (client, protocol, message) =>
        this.#emit(() => ({ type: 'client-error', protocol, client: clientName(client), message })),
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
      for (const [socket, abort] of this.#clients) {
        abort.abort();
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
    const abort = new AbortController();
    this.#clients.set(socket, abort);
    this.#totalConnections++;
    socket.once('close', () => {
      abort.abort();
      this.#clients.delete(socket);
      this.#closedBytesIn += socket.bytesRead;
      this.#closedBytesOut += socket.bytesWritten;
    });
    // Errors are handled by whoever owns the socket next; this keeps a reset from throwing.
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    socket.setTimeout(this.#handshakeTimeoutMs, () => socket.destroy());

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
        // The handshake timeout stays armed until the first request head is in (HttpFrontEnd
        // clears it); between keep-alive requests Node's keepAliveTimeout re-arms it.
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

  async #dial(client: Socket, protocol: ProxyProtocol, host: string, port: number): Promise<Duplex> {
    const signal = this.#clients.get(client)?.signal;
    if (signal === undefined || signal.aborted) throw new DialError('tunnel', host, port, 'the client went away');
    let upstream: Duplex;
    try {
      upstream = await this.#dialer.dial(host, port, {
        signal,
        originHost: client.remoteAddress,
        originPort: client.remotePort,
      });
    } catch (err) {
      this.#dialFailures++;
      this.#emit(() => ({
        type: 'dial-failed',
        protocol,
        client: clientName(client),
        target: targetName(host, port),
        reason: describeDialFailure(err, host, port),
        error: err instanceof Error ? err : new Error(String(err)),
      }));
      throw err;
    }
    if (signal.aborted || this.#closing !== undefined) {
      upstream.destroy();
      throw new DialError('tunnel', host, port, 'the client went away while dialing');
    }
    this.#upstreams.add(upstream);
    upstream.once('close', () => this.#upstreams.delete(upstream));
    // Errors are passed on by splice / the HTTP client; this keeps a late one from throwing.
    upstream.on('error', () => undefined);
    this.#emit(() => ({ type: 'tunnel', protocol, client: clientName(client), target: targetName(host, port) }));
    return upstream;
  }

  #emit(make: () => ProxyEvent): void {
    if (this.#onEvent !== undefined) this.#onEvent(make());
  }
}

/** Resolves on 'close' only (an 'error' on the way there is someone else's to handle). */
function closeOf(stream: Duplex): Promise<void> {
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
