/**
 * `--via user@host[:port]`: any SSH server that allows TCP forwarding (an OpenSSH bastion) as the
 * transport, instead of a shadow pod. The target's syntax, the client key and known_hosts defaults
 * (as ssh has them), and the transport itself.
 */
import { isIP } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { CipherAlgorithm } from 'ssh2';
import { InputFileError, UsageError } from '../errors.js';
import type { ResumeLimits } from '../protocol/index.js';
import type { Transport, TransportContext } from '../transport.js';
import { ReconnectingTunnel } from './reconnect.js';
import { SshTunnel } from './tunnel.js';

export interface ViaOptions {
  target: ViaTarget;
  identity: { path: string; key: Buffer };
  knownHostsFile: string;
  dnsServer: string | undefined;
  ciphers: CipherAlgorithm[] | undefined;
  /** The resume layer's limits: an OpenSSH server has no resume layer, which is said once at start. */
  resume?: ResumeLimits;
}

export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/** `--via user@host[:port]`: any SSH server that allows TCP forwarding, reconnecting on drops. */
export async function viaTransport(o: ViaOptions, ctx: TransportContext): Promise<Transport> {
  if (o.dnsServer !== undefined && isIP(o.dnsServer) === 0) {
    throw new UsageError(`--dnsServer must be an IP address on the far side (got "${o.dnsServer}")`);
  }
  const { target } = o;
  const label = `${target.user}@${urlHost(target.host)}:${target.port}`;
  const tunnel = new ReconnectingTunnel({
    label,
    resume: o.resume,
    debug: ctx.debug,
    connect: (signal) =>
      SshTunnel.open(
        {
          host: target.host,
          port: target.port,
          username: target.user,
          privateKey: o.identity.key,
          privateKeyFile: o.identity.path,
          hostKey: { knownHostsFile: o.knownHostsFile, hostLabel: target.knownHostsLabel },
          dnsServer: o.dnsServer,
          ciphers: o.ciphers,
          signal,
        },
        (e) => ctx.debug(`ssh: ${e.type}: ${e.message}`),
      ),
  });
  tunnel.on('log', ctx.log);
  ctx.undo.add(`the ssh connection to ${label}`, () => tunnel.close());
  const fatal = new Promise<Error>((resolve) => tunnel.once('fatal', resolve));
  const first = await tunnel.startUnlessAborted(ctx.signal);
  if (first) ctx.log(`connected to ${label} (cipher ${first.cipher || 'negotiated'})`);
  return {
    tunnel,
    label,
    fatal,
    network: async () => ({ routes: [], avoid: [{ host: target.host, what: 'the ssh server' }] }),
  };
}

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
