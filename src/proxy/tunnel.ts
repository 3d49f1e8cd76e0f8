import type { Socket } from 'node:net';
import type { ProxyContext, ProxyProtocol, TunnelReplies } from './context.js';
import { splice } from '../protocol/splice.js';

/**
 * Bytes a client may send after its CONNECT request and before the reply (a TLS ClientHello, the
 * first bytes of a protocol where the client speaks first). Kept in memory while the dial is
 * pending, forwarded once it succeeds. A client that sends more before being answered is dropped.
 */
export const EARLY_DATA_LIMIT = 64 * 1024;

/**
 * The part SOCKS5 CONNECT and HTTP CONNECT share: dial, answer, splice.
 *
 * While the dial is pending the client is read, so that its leaving is noticed: without a reader
 * neither a FIN nor an RST is seen, and a hung dial would hold the socket for ever. A client that
 * half-closes before it was answered counts as gone (as Squid's default `half_closed_clients off`):
 * the dial is aborted through its AbortSignal and the socket destroyed. An RST or error closes the
 * socket, which aborts the dial the same way (the server ties each dial to its client's close).
 */
export function serveTunnel(
  ctx: ProxyContext,
  client: Socket,
  protocol: ProxyProtocol,
  host: string,
  port: number,
  replies: TunnelReplies,
  head?: Buffer,
): void {
  const early: Buffer[] = [];
  let earlyBytes = 0;
  const onData = (chunk: Buffer): void => {
    earlyBytes += chunk.length;
    if (earlyBytes > EARLY_DATA_LIMIT) {
      ctx.clientError(client, protocol, `sent more than ${EARLY_DATA_LIMIT} bytes before its tunnel was open`);
      client.destroy();
      return;
    }
    early.push(chunk);
  };
  const onEnd = (): void => {
    ctx.clientError(client, protocol, 'closed its side while its tunnel was being opened');
    client.destroy();
  };
  const stopWatching = (): void => {
    client.off('data', onData);
    client.off('end', onEnd);
    client.pause();
  };
  if (head !== undefined && head.length > 0) onData(head);
  client.on('data', onData);
  client.once('end', onEnd);
  client.resume();
  if (client.readableEnded) onEnd();

  ctx.dial(client, protocol, host, port).then(
    (upstream) => {
      stopWatching();
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      client.write(replies.succeeded);
      for (const chunk of early) upstream.write(chunk);
      splice(client, upstream);
    },
    (err: unknown) => {
      stopWatching();
      if (!client.destroyed) ctx.refuse(client, replies.failed(err));
    },
  );
}
