import type { Socket } from 'node:net';
import type { ServerChannel } from 'ssh2';

/** How long a socket may take to flush what the client sent before its channel closed. */
const LINGER_MS = 10_000;
const EMPTY = Buffer.alloc(0);

export interface SpliceResult {
  /** bytes the ssh client sent to the target */
  bytesUp: number;
  /** bytes the target sent to the ssh client */
  bytesDown: number;
  /** the socket's error, if it failed (reset, timeout) */
  error?: Error;
}

/**
 * Joins an ssh channel (server side) and a TCP socket in both directions, with backpressure both
 * ways and both half-closes kept apart (RFC 4254 §5.3):
 *
 * - channel EOF -> socket `end()` (FIN), once everything received before it is written;
 * - socket FIN -> channel EOF, once everything read before it is handed to ssh2;
 * - both directions done, or the socket fails -> channel CLOSE;
 * - channel CLOSE -> socket destroyed (after flushing what the client had sent, if it had
 *   half-closed first).
 *
 * ssh2's server-side `Channel.end()` sends EOF *and* CLOSE, which would cut the other direction
 * short; so the channel's writable side is never `end()`ed here: EOF is sent with `eof()` after an
 * empty write whose callback proves that every earlier write reached the protocol layer.
 */
export function spliceChannel(channel: ServerChannel, socket: Socket, onDone: (result: SpliceResult) => void): void {
  let error: Error | undefined;
  let channelEnded = false; // the client sent EOF
  let channelClosed = false;
  let eofSent = false;
  let socketClosed = false;
  let reported = false;

  const report = (): void => {
    if (reported) return;
    reported = true;
    onDone({ bytesUp: socket.bytesWritten, bytesDown: socket.bytesRead, error });
  };

  // target -> client
  socket.on('data', (chunk: Buffer) => {
    if (channelClosed) return; // nobody to give it to; keep reading so the socket can finish
    if (!channel.write(chunk)) socket.pause();
  });
  channel.on('drain', () => socket.resume());
  socket.on('end', () => {
    if (channelClosed) return;
    channel.write(EMPTY, () => {
      eofSent = true;
      channel.eof();
      if (socketClosed) channel.close();
    });
  });

  // client -> target
  channel.on('data', (chunk: Buffer) => {
    if (!socket.write(chunk)) channel.pause();
  });
  socket.on('drain', () => channel.resume());
  channel.on('end', () => {
    channelEnded = true;
    socket.end();
  });

  socket.on('error', (err) => {
    error = err;
  });
  socket.on('close', () => {
    socketClosed = true;
    // Both directions are done, or the socket failed. After a clean FIN the EOF may still be on
    // its way through the channel's write queue; the callback above closes then.
    if (error !== undefined || eofSent || channelClosed) channel.close();
    else if (!socket.readableEnded) channel.close(); // destroyed without a FIN (by us)
    if (channelClosed) report();
  });

  channel.on('close', () => {
    channelClosed = true;
    if (socketClosed) {
      report();
      return;
    }
    if (channelEnded && socket.writableLength > 0 && error === undefined) {
      // The client half-closed and then closed: let the target get what was sent before.
      socket.resume();
      const linger = setTimeout(() => socket.destroy(), LINGER_MS);
      linger.unref();
      socket.once('finish', () => socket.destroy());
      socket.once('close', () => clearTimeout(linger));
    } else {
      socket.destroy();
    }
  });
}
