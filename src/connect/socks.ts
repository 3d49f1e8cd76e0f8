/**
 * `connect --mode socks`'s front end: the SOCKS5/HTTP proxy (src/proxy) on one local port.
 */
import type { Writable } from 'node:stream';
import { ProxyServer } from '../proxy/index.js';
import type { Dialer } from '../dialer.js';
import type { TransportBuilder } from '../transport.js';
import type { Undo } from '../undo.js';
import { serveTransport, type CommandIo } from './serve.js';
import { urlHost } from '../ssh/via.js';

export interface SocksFrontEndOptions {
  host: string;
  port: number;
  stdout: Writable;
  log: (line: string) => void;
  debug: (line: string) => void;
  undo: Undo;
}

/**
 * The proxy, listening before the transport exists (a taken port fails before any network
 * traffic; `dialer` holds what it accepts until the tunnel is up); `announce()` prints the line a
 * person pastes once the transport is up.
 */
export async function listenSocks(o: SocksFrontEndOptions, dialer: Dialer): Promise<{ announce(): void }> {
  const proxy = new ProxyServer({
    dialer,
    host: o.host,
    port: o.port,
    onEvent: (e) => {
      if (e.type === 'dial-failed') o.debug(`proxy: ${e.protocol} ${e.client} -> ${e.target}: ${e.reason}`);
      else if (e.type === 'tunnel') o.debug(`proxy: ${e.protocol} ${e.client} -> ${e.target}`);
    },
  });
  const address = await proxy.listen();
  const where = `${urlHost(address.address)}:${address.port}`;
  o.undo.add(`the proxy on ${where}`, () => proxy.close());
  return {
    announce() {
      o.log(`proxy on ${where}`);
      o.stdout.write(`export ALL_PROXY=socks5h://${where} HTTP_PROXY=http://${where} HTTPS_PROXY=http://${where}\n`);
    },
  };
}

/**
 * `ktctl connect --mode socks`: the proxy listens before the transport exists (a taken port fails
 * before any network traffic, and what it accepts meanwhile waits for the tunnel); the line to
 * paste is printed once the transport is up.
 */
export async function connectSocks(o: CommandIo & { host: string; port: number; buildTransport: TransportBuilder; via: boolean }): Promise<number> {
  let socks: { announce(): void } | undefined;
  return serveTransport(o, {
    session: { command: 'connect', mode: 'socks', target: '', via: o.via },
    buildTransport: o.buildTransport,
    prepare: async (ctx, dialer) => {
      socks = await listenSocks({ host: o.host, port: o.port, stdout: o.stdout, log: ctx.log, debug: ctx.debug, undo: ctx.undo }, dialer);
    },
    start: async () => {
      socks?.announce();
    },
  });
}
