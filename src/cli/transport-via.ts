import { isIP } from 'node:net';
import type { CipherAlgorithm } from 'ssh2';
import { UsageError } from '../errors.js';
import { ReconnectingTunnel } from '../ssh/reconnect.js';
import { SshTunnel } from '../ssh/tunnel.js';
import type { Transport, TransportContext } from './connect-transport.js';
import type { ViaTarget } from './via.js';

export interface ViaOptions {
  target: ViaTarget;
  identity: { path: string; key: Buffer };
  knownHostsFile: string;
  dnsServer: string | undefined;
  ciphers: CipherAlgorithm[] | undefined;
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
    network: async () => ({ routes: [], avoid: isIP(target.host) ? [target.host] : [] }),
  };
}
