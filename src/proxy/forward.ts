import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dialer } from '../dialer.js';
import { ListenError } from '../errors.js';
import { clientName, describeDialFailure, targetName } from './context.js';
import { splice } from '../protocol/splice.js';

/** How long close() waits for destroyed streams to report that they are closed. */
const CLOSE_WAIT_MS = 2000;

export type ForwardEvent =
  | { type: 'connection'; client: string; target: string }
  | { type: 'dial-failed'; client: string; target: string; reason: string; error: unknown }
  | { type: 'closed'; client: string; target: string; error?: Error };

export interface PortForwarderOptions {
  dialer: Dialer;
  /** local address and port (port 0: any free one) */
  host: string;
  port: number;
  /** where every connection goes, as the far side names it */
  target: { host: string; port: number };
  /** what to tell a person whose port is taken ("pick another local port: ...") */
  portHint?: string;
  onEvent?: (event: ForwardEvent) => void;
}

/**
 * `ktctl forward`'s local listener: each accepted connection gets its own stream to one fixed
 * target through the Dialer, spliced both ways (half-close kept, backpressure by `pipe`). A dial
 * that fails resets that connection (RST: the client sees "connection reset", like a refused
 * port) and the listener goes on.
 */
export class PortForwarder {
  readonly #o: PortForwarderOptions;
  readonly #server: NetServer;
  readonly #open = new Set<Socket | Duplex>();
  #closing: Promise<void> | undefined;

  constructor(options: PortForwarderOptions) {
    this.#o = options;
    this.#server = new NetServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
  }

  /** Starts listening; a taken or forbidden address rejects with one sentence (ListenError). */
  listen(): Promise<AddressInfo> {
    const { host, port } = this.#o;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.#server.off('listening', onListening);
        const where = targetName(host, port);
        const hint = this.#o.portHint ? `; ${this.#o.portHint}` : '';
        if (err.code === 'EADDRINUSE') reject(new ListenError(`${where} is already in use${hint}`, { cause: err }));
        else if (err.code === 'EACCES') reject(new ListenError(`not allowed to listen on ${where} (ports below 1024 need root)${hint}`, { cause: err }));
        else if (err.code === 'EADDRNOTAVAIL') reject(new ListenError(`${host} is not an address of this machine; fix --address`, { cause: err }));
        else reject(new ListenError(`cannot listen on ${where}: ${err.message}`, { cause: err }));
      };
      const onListening = (): void => {
        this.#server.off('error', onError);
        resolve(this.#server.address() as AddressInfo);
      };
      this.#server.once('error', onError);
      this.#server.once('listening', onListening);
      this.#server.listen({ host, port, exclusive: true });
    });
  }

  /** Stops listening and destroys every connection; resolves once they are closed. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed: Promise<unknown>[] = [];
      if (this.#server.listening) closed.push(new Promise<void>((resolve) => this.#server.close(() => resolve())));
      for (const s of this.#open) {
        if (!s.closed) closed.push(new Promise((resolve) => s.once('close', resolve)));
        s.destroy();
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
    })();
    return this.#closing;
  }

  #track(s: Socket | Duplex): void {
    this.#open.add(s);
    s.once('close', () => this.#open.delete(s));
  }

  #onConnection(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    const { dialer, target, onEvent } = this.#o;
    const client = clientName(socket);
    const where = targetName(target.host, target.port);
    this.#track(socket);
    // Errors are the splice's business once it runs; before that a reset must not throw.
    socket.on('error', () => undefined);
    socket.setNoDelay(true);
    const abort = new AbortController();
    socket.once('close', () => abort.abort());
    onEvent?.({ type: 'connection', client, target: where });
    dialer.dial(target.host, target.port, { signal: abort.signal, originHost: socket.remoteAddress, originPort: socket.remotePort }).then(
      (stream) => {
        if (socket.destroyed || this.#closing !== undefined) {
          stream.destroy();
          return;
        }
        this.#track(stream);
        splice(socket, stream, (error) => onEvent?.({ type: 'closed', client, target: where, ...(error ? { error } : {}) }));
      },
      (error: unknown) => {
        if (!abort.signal.aborted) onEvent?.({ type: 'dial-failed', client, target: where, reason: describeDialFailure(error, target.host, target.port), error });
        if (!socket.destroyed) socket.resetAndDestroy();
      },
    );
  }
}
