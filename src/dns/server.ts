/**
 * A DNS listener on UDP and TCP at one address and port (RFC 1035 §4.2, RFC 7766), answering with
 * a `ClusterResolver`. Used by `--dnsMode localDNS` when the netstack is not the one answering,
 * and by tests. UDP answers larger than the client can take (512 bytes, or its EDNS payload
 * size) are sent truncated with TC so the client retries over TCP. TCP connections may pipeline
 * queries; answers go back as they complete.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { ListenError } from '../errors.js';
import { DnsFrameDecoder, frameDnsMessage } from '../protocol/index.js';
import { truncateTo, udpPayloadLimit } from './message.js';

export interface DnsAnswerer {
  answer(query: Buffer): Promise<Buffer | undefined>;
}

export interface DnsServerOptions {
  host: string;
  /** 0 picks a port free for both UDP and TCP */
  port: number;
  /** a TCP connection idle this long is closed (RFC 7766 §6.2.3; default 10 s) */
  tcpIdleMs?: number;
  /** most TCP connections at once (default 64) */
  maxTcpConnections?: number;
  /** most UDP queries being answered at once; more are dropped (default 1024) */
  maxUdpInFlight?: number;
  /** most queries being answered per TCP connection; the connection is not read meanwhile (default 32) */
  maxTcpInFlight?: number;
}

export class DnsServer {
  readonly #resolver: DnsAnswerer;
  #udp: dgram.Socket | undefined;
  #tcp: net.Server | undefined;
  readonly #conns = new Set<net.Socket>();
  #address: { host: string; port: number } | undefined;
  #closing: Promise<void> | undefined;
  #udpInFlight = 0;
  #maxUdpInFlight = 1024;
  /** UDP queries dropped because too many were in flight */
  udpDropped = 0;

  constructor(resolver: DnsAnswerer) {
    this.#resolver = resolver;
  }

  get address(): { host: string; port: number } {
    if (this.#address === undefined) throw new Error('the DNS server is not listening');
    return this.#address;
  }

  /** Binds UDP and TCP; rejects with ListenError when the address or port cannot be had. */
  async listen(options: DnsServerOptions): Promise<{ host: string; port: number }> {
    const tries = options.port === 0 ? 8 : 1;
    let last: unknown;
    for (let i = 0; i < tries; i++) {
      const udp = dgram.createSocket({ type: net.isIPv6(options.host) ? 'udp6' : 'udp4' });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(options.port, options.host, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        udp.close();
        throw new ListenError(`cannot listen for DNS on UDP ${options.host}:${options.port}: ${(e as Error).message}`, { cause: e });
      }
      const port = udp.address().port;
      const tcp = net.createServer((sock) => this.#onTcp(sock, options));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ host: options.host, port, exclusive: true }, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        udp.close();
        last = e;
        continue; // the UDP port's TCP twin is taken: try another port
      }
      tcp.maxConnections = options.maxTcpConnections ?? 64;
      this.#maxUdpInFlight = options.maxUdpInFlight ?? 1024;
      udp.on('message', (msg, rinfo) => this.#onUdp(udp, msg, rinfo));
      udp.on('error', () => {
        /* ICMP errors from clients that went away: nothing to do */
      });
      this.#udp = udp;
      this.#tcp = tcp;
      this.#address = { host: options.host, port };
      return this.#address;
    }
    throw new ListenError(`cannot listen for DNS on TCP ${options.host}:${options.port}: ${(last as Error).message}`, { cause: last });
  }

  #onUdp(udp: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#udpInFlight >= this.#maxUdpInFlight) {
      this.udpDropped++;
      return;
    }
    this.#udpInFlight++;
    this.#resolver
      .answer(msg)
      .then(
        (answer) => {
          if (answer === undefined || this.#closing) return;
          udp.send(truncateTo(answer, udpPayloadLimit(msg)), rinfo.port, rinfo.address);
        },
        () => undefined,
      )
      .finally(() => this.#udpInFlight--);
  }

  #onTcp(sock: net.Socket, options: DnsServerOptions): void {
    this.#conns.add(sock);
    const decoder = new DnsFrameDecoder();
    const max = options.maxTcpInFlight ?? 32;
    let inFlight = 0;
    sock.setTimeout(options.tcpIdleMs ?? 10_000, () => sock.destroy());
    sock.on('close', () => this.#conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: Buffer) => {
      for (const msg of decoder.push(chunk)) {
        inFlight++;
        // RFC 7766 §6.2.1.1: pipelined queries are answered as they complete; a client that sends
        // faster than we answer is not read until some are done.
        if (inFlight >= max) sock.pause();
        this.#resolver
          .answer(msg)
          .then(
            (answer) => {
              if (answer !== undefined && !sock.destroyed) sock.write(frameDnsMessage(answer));
            },
            () => undefined,
          )
          .finally(() => {
            inFlight--;
            if (inFlight < max && sock.isPaused() && !sock.destroyed) sock.resume();
          });
      }
    });
  }

  /** Stops listening and closes open TCP connections. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const c of this.#conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => (this.#udp ? this.#udp.close(() => r()) : r())),
        new Promise<void>((r) => (this.#tcp ? this.#tcp.close(() => r()) : r())),
      ]);
    })();
    return this.#closing;
  }
}
