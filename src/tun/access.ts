/**
 * What TUN mode needs of this machine before anything is made: CAP_NET_ADMIN (creating a TUN
 * device and routes) and the native addon. `ktctl check` reads the same capability.
 */
import { readFileSync } from 'node:fs';
import { PermissionError } from '../errors.js';
import { loadTunAddon } from './device.js';

/** CAP_NET_ADMIN (bit 12) in this process's effective set; undefined when /proc does not say (not Linux). */
export function netAdminCapability(): boolean | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n;
  } catch {
    /* not Linux: fall through */
  }
  return undefined;
}

/**
 * What TUN mode needs before anything is made (called before the transport is built): root or
 * CAP_NET_ADMIN, and the native addon.
 */
export function checkTunAccess(): void {
  if (!(netAdminCapability() ?? process.getuid?.() === 0)) {
    throw new PermissionError('--mode tun needs root (or CAP_NET_ADMIN) to create a TUN device and routes: run ktctl with sudo, or use --mode socks (a local SOCKS5/HTTP proxy that needs no root)');
  }
  loadTunAddon();
}
