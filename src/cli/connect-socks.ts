import { isIP } from 'node:net';
import type { Writable } from 'node:stream';
import type { CipherAlgorithm } from 'ssh2';
import { UsageError } from '../errors.js';
import { ProxyServer } from '../proxy/index.js';
import { ReconnectingTunnel } from '../ssh/reconnect.js';
import { SshTunnel } from '../ssh/tunnel.js';
import { Undo, untilSignal } from './lifecycle.js';
import type { ViaTarget } from './via.js';

export interface SocksViaOptions {
  target: ViaTarget;
  identity: { path: string; key: Buffer };
  knownHostsFile: string;
  proxyHost: string;
  proxyPort: number;
  dnsServer: string | undefined;
  ciphers: CipherAlgorithm[] | undefined;
  stdout: Writable;
  log: (line: string) => void;
  debug: (line: string) => void;
}

function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/**
 * `ktctl connect --mode socks --via user@host[:port]`: the proxy first (a taken port fails before
 * any network traffic), then the ssh connection, then serve until a signal. Everything is undone
 * on the way out, whichever way that is.
 */
export async function runSocksVia(o: SocksViaOptions): Promise<number> {
  if (o.dnsServer !== undefined && isIP(o.dnsServer) === 0) {
    throw new UsageError(`--dnsServer must be an IP address on the far side (got "${o.dnsServer}")`);
  }
  const { target } = o;
  const label = `${target.user}@${urlHost(target.host)}:${target.port}`;
  const undo = new Undo();
  const stop = untilSignal(o.log);
  try {
    const tunnel = new ReconnectingTunnel({
      label,
      connect: async () => {
        const t = new SshTunnel({
          host: target.host,
          port: target.port,
          username: target.user,
          privateKey: o.identity.key,
          privateKeyFile: o.identity.path,
          hostKey: { knownHostsFile: o.knownHostsFile, hostLabel: target.knownHostsLabel },
          dnsServer: o.dnsServer,
          ciphers: o.ciphers,
        });
        t.on('event', (e) => o.debug(`ssh: ${e.type}: ${e.message}`));
        try {
          await t.connect();
        } catch (error) {
          await t.close();
          throw error;
        }
        return t;
      },
    });
    tunnel.on('log', o.log);
    undo.add(`the ssh connection to ${label}`, () => tunnel.close());

    const proxy = new ProxyServer({
      dialer: tunnel,
      host: o.proxyHost,
      port: o.proxyPort,
      onEvent: (e) => {
        if (e.type === 'dial-failed') o.debug(`proxy: ${e.protocol} ${e.client} -> ${e.target}: ${e.reason}`);
        else if (e.type === 'tunnel') o.debug(`proxy: ${e.protocol} ${e.client} -> ${e.target}`);
      },
    });
    const address = await proxy.listen();
    undo.add(`the proxy on ${urlHost(address.address)}:${address.port}`, () => proxy.close());

    const started = await Promise.race([tunnel.start().then((t) => ({ tunnel: t })), stop.signal.then((signal) => ({ signal }))]);
    if ('signal' in started) {
      o.log(`got ${started.signal} while connecting; stopping`);
      await undo.run(o.log);
      return 0;
    }
    o.log(`connected to ${label} (cipher ${started.tunnel.cipher || 'negotiated'}); proxy on ${urlHost(address.address)}:${address.port}`);
    const where = `${urlHost(address.address)}:${address.port}`;
    o.stdout.write(`export ALL_PROXY=socks5h://${where} HTTP_PROXY=http://${where} HTTPS_PROXY=http://${where}\n`);

    const fatal = new Promise<Error>((resolve) => tunnel.once('fatal', resolve));
    const outcome = await Promise.race([stop.signal.then((signal) => ({ signal })), fatal.then((error) => ({ error }))]);
    if ('signal' in outcome) o.log(`got ${outcome.signal}; stopping`);
    await undo.run(o.log);
    if ('error' in outcome) throw outcome.error;
    return 0;
  } catch (error) {
    await undo.run(o.log);
    throw error;
  } finally {
    stop.release();
  }
}
