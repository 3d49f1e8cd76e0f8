import { readFileSync, existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { InputFileError, UsageError } from '../errors.js';

export interface ViaTarget {
  user: string;
  host: string;
  port: number;
  /** how known_hosts names this server: `host` for port 22, else `[host]:port` */
  knownHostsLabel: string;
}

/**
 * Parses `--via user@host[:port]` (IPv6 as `user@[::1]:2222`). The user is required: ktctl does
 * not guess a login name for a jump host.
 */
export function parseVia(value: string): ViaTarget {
  const m = /^([^@\s]+)@(\[[0-9a-fA-F:.]+\]|[^:@\s\[\]]+)(?::(\d{1,5}))?$/.exec(value);
  if (!m) {
    throw new UsageError(`--via must look like user@host or user@host:port (got "${value}")`);
  }
  const user = m[1]!;
  const host = m[2]!.startsWith('[') ? m[2]!.slice(1, -1) : m[2]!;
  const port = m[3] === undefined ? 22 : Number(m[3]);
  if (port < 1 || port > 65535) throw new UsageError(`the port in --via must be between 1 and 65535 (got ${m[3]})`);
  return { user, host, port, knownHostsLabel: port === 22 ? host : `[${host}]:${port}` };
}

const DEFAULT_IDENTITIES = ['id_ed25519', 'id_ecdsa', 'id_rsa'];

/** Reads `--identity FILE`, or the first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa, like ssh does. */
export function loadIdentity(path: string | undefined): { path: string; key: Buffer } {
  if (path !== undefined) {
    try {
      return { path, key: readFileSync(path) };
    } catch (error) {
      throw new InputFileError(`cannot read the private key ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
    }
  }
  for (const name of DEFAULT_IDENTITIES) {
    const candidate = join(homedir(), '.ssh', name);
    if (existsSync(candidate)) return { path: candidate, key: readFileSync(candidate) };
  }
  throw new InputFileError(`no private key found (looked for ${DEFAULT_IDENTITIES.map((n) => `~/.ssh/${n}`).join(', ')}); name one with --identity FILE`);
}

export function defaultKnownHosts(): string {
  return join(homedir(), '.ssh', 'known_hosts');
}

export function parsePort(value: string, flag: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new UsageError(`${flag} must be a port number between 0 and 65535 (got "${value}")`);
  }
  return Number(value);
}
