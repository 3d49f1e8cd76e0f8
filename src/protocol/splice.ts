import type { Duplex } from 'node:stream';

/**
 * Joins two byte streams (the shadow's far sockets and resumable streams, `exchange`'s local ports and their channels) both ways until both directions are done.
 *
 * - Backpressure: `pipe()` pauses the source while the destination's `write()` returns false, so
 *   at most a highWaterMark (plus one chunk) waits in each direction.
 * - Half-close: a source's end (FIN, channel EOF) becomes `end()` on the other side; the reverse
 *   direction keeps flowing until it ends too.
 * - Abort: an error or an early close on either side destroys the other.
 *
 * `done` is called once, when both streams are closed.
 */
export function splice(a: Duplex, b: Duplex, done?: (error?: Error) => void): void {
  let firstError: Error | undefined;
  let closed = 0;
  const onError = (other: Duplex) => (err: Error) => {
    firstError ??= err;
    other.destroy();
  };
  const onClose = (self: Duplex, other: Duplex) => () => {
    // A stream that closed before both of its directions finished was aborted: abort the other.
    if (!(self.readableEnded && self.writableFinished)) other.destroy();
    if (++closed === 2) done?.(firstError);
  };
  a.on('error', onError(b));
  b.on('error', onError(a));
  a.once('close', onClose(a, b));
  b.once('close', onClose(b, a));
  a.pipe(b);
  b.pipe(a);
}
