import type { Duplex } from 'node:stream';

/**
 * The one interface between the front ends (SOCKS/HTTP proxy, TUN netstack, DNS resolver,
 * `forward`) and the transports (ssh2 tunnel to a shadow or bastion, or a plain socket dialer in
 * tests). Nothing above it knows about ssh2 or Kubernetes; nothing below it knows who asked.
 *
 * Backpressure is the stream's: a returned Duplex's `write()` returns false when the far side's
 * window is full, and `'drain'` says when to go on. Closing: `end()` is a half-close (FIN, or
 * channel EOF), `destroy()` an abort (RST, or channel close).
 */
export interface Dialer {
  /**
   * Opens a byte stream to host:port as seen from the far side. A host name is resolved on the far
   * side. Rejects with a `DialError` whose `reason` says why (refused, unresolvable, ...).
   */
  dial(host: string, port: number, options?: DialOptions): Promise<Duplex>;

  /**
   * Exchanges one DNS message (wire format, without a length prefix) with the far side's resolver
   * and resolves with the answer message. Absent when the far side offers no resolver.
   */
  dnsQuery?(message: Buffer, options?: { signal?: AbortSignal }): Promise<Buffer>;
}

export interface DialOptions {
  signal?: AbortSignal;
  /** Who asked, for the far side's log line (the local client's address and port). */
  originHost?: string;
  originPort?: number;
}
