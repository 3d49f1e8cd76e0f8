import { BlockList, connect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DialOptions, Dialer } from '../../src/dialer.js';
import { DialError, type DialFailure } from '../../src/errors.js';

export interface DirectDialerOptions {
  /**
   * Host names this dialer knows (`{ 'web.test': '127.0.0.1' }`). Any other name is
   * 'unresolvable' at once: this dialer never asks DNS, so tests send no query anywhere.
   */
  names?: Record<string, string>;
  /** Waits this long before each connect (a slow far side). */
  dialDelayMs?: number;
  /**
   * Receive buffer of each dialed socket: the stream's highWaterMark (default Node's 16 KiB).
   * A small one makes backpressure show sooner.
   */
  highWaterMark?: number;
}

/**
 * Addresses a test may reach (the network rules): loopback, and the 198.18.0.0/15 range inside
 * namespaces the tests create. Anything else is refused as 'prohibited' before any packet is sent.
 */
const ALLOWED = new BlockList();
ALLOWED.addSubnet('127.0.0.0', 8, 'ipv4');
ALLOWED.addSubnet('198.18.0.0', 15, 'ipv4');
ALLOWED.addAddress('::1', 'ipv6');

/**
 * A `Dialer` made of plain TCP sockets from this process: the stand-in for the ssh tunnel in tests
 * of the layers above it (proxy, netstack, forward). Errors map as the shadow's do:
 * ECONNREFUSED -> refused, ENOTFOUND/EAI_AGAIN -> unresolvable,
 * EHOSTUNREACH/ENETUNREACH/ETIMEDOUT -> unreachable.
 */
export class DirectDialer implements Dialer {
  readonly #names: Map<string, string>;
  readonly #delayMs: number;
  readonly #highWaterMark: number | undefined;
  /** Every socket this dialer opened (for tests that look at the far side's buffers). */
  readonly dialed: Socket[] = [];
  /** host:port of every dial asked for, in order (what the front end passed on, unresolved). */
  readonly requests: string[] = [];

  constructor(options: DirectDialerOptions = {}) {
    this.#names = new Map(Object.entries(options.names ?? {}));
    this.#delayMs = options.dialDelayMs ?? 0;
    this.#highWaterMark = options.highWaterMark;
  }

  async dial(host: string, port: number, options: DialOptions = {}): Promise<Duplex> {
    this.requests.push(`${host}:${port}`);
    if (this.#delayMs > 0) {
      try {
        await sleep(this.#delayMs, undefined, { signal: options.signal });
      } catch (err) {
        throw new DialError('tunnel', host, port, 'dial aborted', { cause: err });
      }
    }
    const address = this.#names.get(host) ?? (isIP(host) !== 0 ? host : undefined);
    if (address === undefined) {
      const cause = Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      throw new DialError('unresolvable', host, port, 'Name or service not known', { cause });
    }
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (!ALLOWED.check(address, family)) {
      throw new DialError('prohibited', host, port, `${address} is outside what tests may reach`);
    }
    return new Promise<Duplex>((resolve, reject) => {
      const socket = connect({
        host: address,
        port,
        allowHalfOpen: true,
        noDelay: true,
        ...(this.#highWaterMark !== undefined ? { highWaterMark: this.#highWaterMark } : {}),
      });
      const onAbort = (): void => {
        socket.destroy();
        reject(new DialError('tunnel', host, port, 'dial aborted'));
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => {
        options.signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        this.dialed.push(socket);
        resolve(socket);
      });
      const onError = (err: NodeJS.ErrnoException): void => {
        options.signal?.removeEventListener('abort', onAbort);
        reject(new DialError(failureOf(err.code), host, port, err.message, { cause: err }));
      };
      socket.once('error', onError);
    });
  }
}

function failureOf(code: string | undefined): DialFailure {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'unresolvable';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
      return 'unreachable';
    default:
      return 'tunnel';
  }
}
