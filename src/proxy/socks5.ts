import type { Socket } from 'node:net';
import { DialError, type DialFailure } from '../errors.js';
import type { ProxyContext } from './context.js';
import { serveUdpAssociate } from './socks5-udp.js';
import {
  Command,
  MAX_GREETING,
  MAX_REQUEST,
  Method,
  Reply,
  encodeMethodSelection,
  encodeReply,
  parseGreeting,
  parseRequest,
  type Parse,
  type ReplyCode,
} from './socks5-wire.js';

/**
 * `DialError.reason` -> RFC 1928 §6 reply.
 * - refused -> 5 "Connection refused": curl prints "connection refused" for it.
 * - unresolvable -> 4 "Host unreachable": what SOCKS servers (Dante, Tor, OpenSSH's -D) send for a
 *   name that does not resolve, and what curl reports as "host unreachable"; RFC 1928 has no
 *   better code.
 * - unreachable -> 4 as well: our 'unreachable' covers no route *and* connect timeouts, which are
 *   about the host, while 3 ("Network unreachable") would claim more than we know.
 * - prohibited -> 2 "connection not allowed by ruleset".
 * - tunnel (and anything that is not a DialError) -> 1 "general SOCKS server failure".
 */
export const REPLY_FOR_FAILURE: Record<DialFailure, ReplyCode> = {
  refused: Reply.connectionRefused,
  unresolvable: Reply.hostUnreachable,
  unreachable: Reply.hostUnreachable,
  prohibited: Reply.notAllowed,
  tunnel: Reply.generalFailure,
};

export function replyForError(err: unknown): ReplyCode {
  return err instanceof DialError ? REPLY_FOR_FAILURE[err.reason] : Reply.generalFailure;
}

/**
 * Serves one SOCKS5 client: no-auth method selection, one CONNECT request, then a raw tunnel; or a
 * UDP ASSOCIATE request, then a UDP relay for as long as the connection lasts (socks5-udp.ts).
 * The socket may hold bytes that were read and unshifted by the sniffer; it is read in paused
 * mode and bytes beyond the request are unshifted, so the tunnel (src/proxy/tunnel.ts) gets them.
 * The server's handshake deadline runs from accept until the request is parsed.
 */
export function serveSocks5(socket: Socket, ctx: ProxyContext): void {
  let buffered: Buffer = Buffer.alloc(0);

  /** Reads until `parse` completes; leftover bytes are unshifted for the next reader. */
  const readMessage = <T>(parse: (b: Uint8Array) => Parse<T>, max: number, then: (r: Parse<T>) => void): void => {
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        const r = parse(buffered);
        if (r.kind === 'incomplete' && buffered.length < max) continue;
        socket.off('readable', onReadable);
        socket.off('end', onEnd);
        if (r.kind === 'ok' && r.length < buffered.length) socket.unshift(buffered.subarray(r.length));
        buffered = Buffer.alloc(0);
        then(r.kind === 'incomplete' ? { kind: 'invalid', reason: 'message too long' } : r);
        return;
      }
    };
    const onEnd = (): void => {
      socket.off('readable', onReadable);
      socket.destroy();
    };
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    onReadable();
  };

  const fail = (message: string, reply?: ReplyCode): void => {
    ctx.clientError(socket, 'socks5', message);
    if (reply === undefined) socket.destroy();
    else ctx.refuse(socket, encodeReply(reply));
  };

  readMessage(parseGreeting, MAX_GREETING, (greeting) => {
    if (greeting.kind !== 'ok') return fail(`bad SOCKS5 greeting: ${reason(greeting)}`);
    // RFC 1928 §3: only "no authentication required" is offered; otherwise X'FF' and close.
    if (!greeting.value.methods.includes(Method.noAuth)) {
      ctx.clientError(socket, 'socks5', 'client offers no acceptable authentication method (only "none" is served)');
      ctx.refuse(socket, encodeMethodSelection(Method.noAcceptable));
      return;
    }
    socket.write(encodeMethodSelection(Method.noAuth));
    readMessage(parseRequest, MAX_REQUEST, (request) => {
      if (request.kind !== 'ok') return fail(`bad SOCKS5 request: ${reason(request)}`, replyOf(request));
      const { command, host, port } = request.value;
      if (command === Command.udpAssociate) {
        ctx.handshakeDone(socket);
        const serve = (session: Awaited<ReturnType<ProxyContext['udp']>>): void => {
          if (!socket.destroyed) serveUdpAssociate(socket, ctx, request.value, session);
        };
        ctx.udp().then(serve, () => serve(undefined));
        return;
      }
      if (command !== Command.connect) {
        // RFC 1928 §6: X'07' Command not supported (BIND is not served).
        return fail(`SOCKS5 command ${command} not supported (only CONNECT and UDP ASSOCIATE)`, Reply.commandNotSupported);
      }
      ctx.handshakeDone(socket);
      ctx.tunnel(socket, 'socks5', host, port, { succeeded: encodeReply(Reply.succeeded), failed: (err) => encodeReply(replyForError(err)) });
    });
  });
}

function reason<T>(r: Parse<T>): string {
  return r.kind === 'invalid' ? r.reason : 'incomplete';
}

function replyOf<T>(r: Parse<T>): ReplyCode | undefined {
  return r.kind === 'invalid' ? r.reply : undefined;
}
