import type { Dialer } from '../dialer.js';
import { DialError } from '../errors.js';

export interface DialProbeOptions {
  /** Port to try (any: a refusal proves the address answers just as well as an accept). */
  port?: number;
  /** Give up (unreachable) after this long. */
  timeoutMs?: number;
}

/**
 * A reachability probe for ICMP echo (NetStack's `probe` option) made of one TCP dial through the
 * tunnel: the address counts as reachable when the far side connected or refused (something
 * answered with a RST), and as unreachable when the dial failed otherwise or timed out. A stream
 * that opened is closed at once.
 */
export function dialProbe(dialer: Dialer, options: DialProbeOptions = {}): (ip: string) => Promise<boolean> {
  const port = options.port ?? 7;
  const timeoutMs = options.timeoutMs ?? 2000;
  return async (ip) => {
    try {
      const s = await dialer.dial(ip, port, { signal: AbortSignal.timeout(timeoutMs) });
      s.on('error', () => {});
      s.destroy();
      return true;
    } catch (err) {
      return err instanceof DialError && err.reason === 'refused';
    }
  };
}
