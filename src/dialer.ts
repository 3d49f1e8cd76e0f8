import type { Duplex } from 'node:stream';
import { DialError, DnsQueryError } from './errors.js';

/**
 * The one interface between the front ends (SOCKS/HTTP proxy, TUN netstack, DNS resolver,
 * `forward`) and the transports (ssh2 tunnel to a shadow or bastion, or a plain socket dialer in
 * tests). Nothing above it knows about ssh2 or Kubernetes; nothing below it knows who asked.
 *
 * Backpressure is the stream's: a returned Duplex's `write()` returns false when the far side's
 * window is full, and `'drain'` says when to go on. Closing: `end()` is a half-close (FIN, or
 * channel EOF), `destroy()` an abort (RST, or channel close).
 *
 * A stream whose `retainsWrites` is true (the resume layer's, src/protocol/resume.ts) keeps the
 * chunks written to it after their callbacks, until the far end confirms them: a writer must not
 * reuse such a chunk's memory.
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

  /**
   * UDP to the far side: resolves with a session that carries datagrams, or undefined when the far
   * side carries none (an OpenSSH server, an older shadow). Absent: no UDP either.
   */
  udp?(): Promise<UdpSession | undefined>;
}

/** Why the far side could not deliver a flow's datagrams (an ICMP error there, or a refusal). */
export type UdpFailure = 'portUnreachable' | 'hostUnreachable' | 'netUnreachable' | 'fragNeeded' | 'prohibited';

/** What a UDP flow's owner is told. Called from the session's event handlers: must not throw. */
export interface UdpFlowHandler {
  /** One datagram from the flow's destination (the buffer is the handler's to keep). */
  message(payload: Buffer): void;
  /** The far side reported `failure` for this flow; `mtu` is the next-hop MTU for 'fragNeeded', else 0. */
  error(failure: UdpFailure, mtu: number): void;
}

/** One flow: datagrams from one local endpoint to one destination, and their replies. */
export interface UdpFlow {
  /**
   * Sends one datagram (at most 65,507 bytes). False when it was dropped (the session's queue is
   * full, or the flow is closed): UDP may lose datagrams, and a flood must not grow memory.
   */
  send(payload: Uint8Array): boolean;
  /** Ends the flow (the far side frees its socket). Idempotent. */
  close(): void;
}

/**
 * Datagrams to the far side, as flows. A flow's destination is fixed (replies come only from it,
 * see src/protocol/udp.ts); a host name is resolved on the far side. Survives the tunnel's drops:
 * a flow whose channel went away is opened again on the next one with its next datagram.
 */
export interface UdpSession {
  open(host: string, port: number, handler: UdpFlowHandler): UdpFlow;
  /** Counters of the session (datagrams each way, drops). */
  readonly stats: UdpSessionStats;
}

export interface UdpSessionStats {
  flows: number;
  datagramsOut: number;
  datagramsIn: number;
  bytesOut: number;
  bytesIn: number;
  /** datagrams dropped on the way out: the channel's queue was full, or the tunnel was down */
  dropped: number;
  errors: number;
}

export interface DialOptions {
  signal?: AbortSignal;
  /** Who asked, for the far side's log line (the local client's address and port). */
  originHost?: string;
  originPort?: number;
}

/**
 * How long a dial waits for a tunnel that is not up, not yet (start-up) or not again (reconnect),
 * before it fails with reason 'tunnel'. One budget for both, so a client sees the same wait.
 */
export const DIAL_WAIT_MS = 10_000;

/**
 * A Dialer for the time before the real one exists: a front end listens from the start (a taken
 * port fails before anything is made) while the transport is still being built, and what it
 * accepts meanwhile waits here. `ready(dialer)` lets the waiting dials through; `fail(reason)`
 * ends them at once (start-up failed, the user stopped ktctl), as does a dial's own signal; after
 * `waitMs` a dial gives up. Once ready, every call goes straight to the real dialer (one field
 * read, nothing made per call); `fail` after `ready` changes nothing.
 */
export class PendingDialer implements Dialer {
  readonly #waitMs: number;
  #dialer: Dialer | undefined;
  #failure: string | undefined;
  /** Settles with the dialer, or with the reason there will be none; one promise all waits share. */
  readonly #settled: Promise<Dialer | string>;
  #settle!: (outcome: Dialer | string) => void;

  constructor(options: { waitMs?: number } = {}) {
    this.#waitMs = options.waitMs ?? DIAL_WAIT_MS;
    this.#settled = new Promise((resolve) => (this.#settle = resolve));
  }

  ready(dialer: Dialer): void {
    if (this.#dialer !== undefined || this.#failure !== undefined) return;
    this.#dialer = dialer;
    this.#settle(dialer);
  }

  /** Ends every waiting and later dial with `reason` ("ktctl is stopping"), unless ready already. */
  fail(reason: string): void {
    if (this.#dialer !== undefined || this.#failure !== undefined) return;
    this.#failure = reason;
    this.#settle(reason);
  }

  dial(host: string, port: number, options?: DialOptions): Promise<Duplex> {
    const dialer = this.#dialer;
    if (dialer !== undefined) return dialer.dial(host, port, options);
    return this.#wait(options?.signal).then((d) => {
      if (typeof d === 'string') throw new DialError('tunnel', host, port, d);
      return d.dial(host, port, options);
    });
  }

  dnsQuery(message: Buffer, options?: { signal?: AbortSignal }): Promise<Buffer> {
    const dialer = this.#dialer;
    if (dialer?.dnsQuery !== undefined) return dialer.dnsQuery(message, options);
    if (dialer !== undefined) return Promise.reject(new DnsQueryError('unsupported', 'the far side offers no resolver'));
    return this.#wait(options?.signal).then((d) => {
      if (typeof d === 'string') throw new DnsQueryError('tunnel', d);
      if (d.dnsQuery === undefined) throw new DnsQueryError('unsupported', 'the far side offers no resolver');
      return d.dnsQuery(message, options);
    });
  }

  udp(): Promise<UdpSession | undefined> {
    const dialer = this.#dialer;
    if (dialer !== undefined) return dialer.udp?.() ?? Promise.resolve(undefined);
    return this.#wait(undefined).then((d) => (typeof d === 'string' ? undefined : (d.udp?.() ?? undefined)));
  }

  /** The dialer, or why there is none: failed, gave up after `waitMs`, or the caller's signal aborted. */
  async #wait(signal: AbortSignal | undefined): Promise<Dialer | string> {
    if (this.#failure !== undefined) return this.#failure;
    if (signal?.aborted) return 'the client went away';
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const given = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`the tunnel is not up yet (waited ${this.#waitMs / 1000} s)`), this.#waitMs);
      onAbort = () => resolve('the client went away');
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([this.#settled, given]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }
}
