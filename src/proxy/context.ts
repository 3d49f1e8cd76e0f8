import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { UdpSession } from '../dialer.js';
import { DialError } from '../errors.js';

export type ProxyProtocol = 'socks5' | 'http-connect' | 'http';

/** What the proxy reports, for logs. Emitted only when someone listens (`onEvent`). */
export type ProxyEvent =
  | { type: 'listening'; host: string; port: number }
  | { type: 'tunnel'; protocol: ProxyProtocol; client: string; target: string }
  | { type: 'dial-failed'; protocol: ProxyProtocol; client: string; target: string; reason: string; error: Error }
  | { type: 'client-error'; protocol: ProxyProtocol | 'unknown'; client: string; message: string }
  | { type: 'closed' };

/** The part of the server that the protocol front ends (SOCKS5, HTTP) use. */
export interface ProxyContext {
  /**
   * Dials host:port through the Dialer on behalf of `client`. The dial is aborted when the client
   * goes away; the returned stream is tracked (buffer accounting, destroyed by `close()`).
   */
  dial(client: Socket, protocol: ProxyProtocol, host: string, port: number): Promise<Duplex>;
  /**
   * Dials host:port and joins it with the client (SOCKS5 CONNECT, HTTP CONNECT): watches the client
   * while the dial is pending, then sends `replies.succeeded` and splices, or the failure reply and
   * a lingering close. `head`: bytes the client sent after its request, already read.
   */
  tunnel(client: Socket, protocol: ProxyProtocol, host: string, port: number, replies: TunnelReplies, head?: Buffer): void;
  /** Reports a malformed or unsupported request from a client. */
  clientError(client: Socket, protocol: ProxyProtocol | 'unknown', message: string): void;
  /** The client's request is in: its handshake deadline ends. */
  handshakeDone(client: Socket): void;
  /** The connection waits for another request head (HTTP keep-alive): a new handshake deadline. */
  awaitRequest(client: Socket): void;
  /** Sends a last reply and closes the connection within the linger bound, whatever the client does. */
  refuse(client: Socket, reply: Buffer | string): void;
  /** The Dialer's UDP session (SOCKS5 UDP ASSOCIATE), undefined when the far side carries no UDP. */
  udp(): Promise<UdpSession | undefined>;
}

/** What a tunnel answers its client, in the front end's protocol. */
export interface TunnelReplies {
  succeeded: Buffer | string;
  failed(err: unknown): Buffer | string;
}

export function clientName(socket: Socket): string {
  const host = socket.remoteAddress ?? '?';
  return `${host.includes(':') ? `[${host}]` : host}:${socket.remotePort ?? 0}`;
}

export function targetName(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * One line a person can read for a failed dial, used as the HTTP 502 body and in logs:
 * "connection refused by 198.18.0.5:80", "cannot resolve web.ns".
 */
export function describeDialFailure(err: unknown, host: string, port: number): string {
  const target = targetName(host, port);
  if (err instanceof DialError) {
    switch (err.reason) {
      case 'refused':
        return `connection refused by ${target}`;
      case 'unresolvable':
        return `cannot resolve ${host}`;
      case 'unreachable':
        return `${target} is unreachable (no route or connection timed out)`;
      case 'prohibited':
        return `the tunnel server does not allow connections to ${target}`;
      case 'tunnel':
        // Its own words say which: down, not up yet, closed, ktctl stopping, the start-up failed.
        return err.message;
    }
  }
  const detail = err instanceof Error ? err.message : String(err);
  return `cannot reach ${target}: ${detail}`;
}
