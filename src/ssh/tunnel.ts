import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { CipherAlgorithm, ClientChannel, ServerHostKeyAlgorithm, ConnectConfig, TcpConnectionDetails } from 'ssh2';
import type { DialOptions, Dialer, UdpSession } from '../dialer.js';
import {
  AuthError,
  ConnectError,
  DialError,
  DnsQueryError,
  HostKeyError,
  InputFileError,
  ListenError,
  TunnelClosedError,
  type DialFailure,
} from '../errors.js';
import { DNS_SUBSYSTEM, OPEN_FAILURE_TEXT, UDP_SUBSYSTEM } from '../protocol/index.js';
import { DnsMultiplexer } from './dns.js';
import { TunnelUdpSession, UdpChannel } from './udp.js';
import { checkKnownHosts, fingerprint, hostKeyAlgorithmsFor, knownKeyTypes, parsePublicKeyLine, blobType } from './hostkey.js';

const { Client, utils } = ssh2;

/** How the server's host key is checked. */
export type HostKeyCheck =
  /** exactly this key (an OpenSSH public key line): the shadow, whose key ktctl made */
  | { pinned: string }
  /** an OpenSSH known_hosts file, looked up under `hostLabel` ("host" or "[host]:port") */
  | { knownHostsFile: string; hostLabel: string };

export interface SshTunnelOptions {
  /** An already connected stream to the ssh server (a port-forward stream, a socket)... */
  sock?: Duplex;
  /** ...or where to connect. */
  host?: string;
  port?: number;
  username: string;
  privateKey: Buffer | string;
  /** Where the private key came from, for error messages. */
  privateKeyFile?: string;
  hostKey: HostKeyCheck;
  /** How messages name the server (default host:port, or the known_hosts label). */
  serverLabel?: string;
  /** ssh-level keepalive: a probe every `keepaliveInterval` ms (default 10 s, 0 = off); the peer
   * counts as dead after `keepaliveCountMax` intervals without any answer (default 3: 30 s). */
  keepaliveInterval?: number;
  keepaliveCountMax?: number;
  /** Handshake and authentication must be done within this (default 20 s). */
  readyTimeout?: number;
  /** A DNS server on the far side, used over `direct-tcpip` when the server has no DNS_SUBSYSTEM. */
  dnsServer?: string;
  /** Per-query timeout of `dnsQuery` (default 5 s). */
  dnsTimeoutMs?: number;
  /** Cipher preference (default CIPHERS). */
  ciphers?: CipherAlgorithm[];
  /**
   * `open()` only: aborting it while the tunnel connects closes it (the user stopped ktctl), so no
   * half-made connection keeps the process alive until `readyTimeout`.
   */
  signal?: AbortSignal;
}

/**
 * Cipher order offered by the client. Measured on this machine kind, ssh2 <-> ssh2 over loopback,
 * one channel (bench/ and the foundation issue's note): aes128-gcm is the faster where
 * the CPU has AES-NI, chacha20-poly1305 the fallback where it has not; OpenSSH bastions accept both.
 */
export const CIPHERS: CipherAlgorithm[] = ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr'];

/** What the tunnel reports through its `'event'` event (nothing is printed by the library). */
export interface TunnelEvent {
  type: 'connected' | 'dial-failed' | 'forward' | 'unforward' | 'dns' | 'udp' | 'keepalive-timeout' | 'closed' | 'debug';
  message: string;
}

/** A remote forward (`tcpip-forward`): the port the server bound and how to stop it. */
export interface RemoteForward {
  bindAddr: string;
  port: number;
  cancel(): Promise<void>;
}

/** Handler of connections made to a remote forward; `stream` is the `forwarded-tcpip` channel. */
export type ForwardHandler = (stream: Duplex, info: TcpConnectionDetails) => void;

type SshClient = InstanceType<typeof Client>;
type State = 'idle' | 'connecting' | 'ready' | 'closed';

export interface SshTunnel {
  /** The tunnel is gone: `error` says why when it was not `close()` that ended it. */
  on(event: 'close', listener: (error: TunnelClosedError | undefined) => void): this;
  on(event: 'event', listener: (event: TunnelEvent) => void): this;
  once(event: 'close', listener: (error: TunnelClosedError | undefined) => void): this;
  once(event: 'event', listener: (event: TunnelEvent) => void): this;
}

/**
 * The tunnel client: one ssh2 connection over any duplex stream (or TCP), with the `Dialer`
 * interface on top: `dial` opens `direct-tcpip` channels, `dnsQuery` asks the far side's resolver,
 * `forwardIn` asks the server to listen and hands the connections back. Works against the shadow
 * and against any OpenSSH server that allows TCP forwarding.
 *
 * Channels returned by `dial` and given to forward handlers are ssh2 channels: `end()` sends EOF
 * (a half-close), `destroy()` sends CLOSE. When the tunnel dies, each open channel that has an
 * `'error'` listener gets a `TunnelClosedError` before its `'end'`/`'close'`.
 */
export class SshTunnel extends EventEmitter implements Dialer {
  readonly #options: SshTunnelOptions;
  readonly #label: string;
  #client: SshClient | undefined;
  #state: State = 'idle';
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #userClosed = false;
  #lastError: Error | undefined;
  readonly #channels = new Set<ClientChannel>();
  readonly #forwards = new Map<string, ForwardHandler>();
  #dns: Promise<DnsMultiplexer> | undefined;
  #noDnsSubsystem = false;
  #udp: Promise<UdpChannel | undefined> | undefined;
  #udpSession: TunnelUdpSession | undefined;
  #noUdpSubsystem = false;
  #closeEmitted = false;
  #cipher = '';

  constructor(options: SshTunnelOptions) {
    super();
    if (options.sock === undefined && options.host === undefined) throw new TypeError('SshTunnel needs sock or host');
    this.#options = options;
    this.#label =
      options.serverLabel ??
      ('hostLabel' in options.hostKey ? options.hostKey.hostLabel : options.host !== undefined ? `${options.host}:${options.port ?? 22}` : 'the ssh server');
  }

  /** Makes a tunnel and connects it; when connecting fails, the tunnel is closed before the error is thrown. */
  static async open(options: SshTunnelOptions, onEvent?: (event: TunnelEvent) => void): Promise<SshTunnel> {
    const tunnel = new SshTunnel(options);
    if (onEvent) tunnel.on('event', onEvent);
    const { signal } = options;
    const abort = (): void => void tunnel.close();
    signal?.addEventListener('abort', abort, { once: true });
    try {
      if (signal?.aborted) throw new TunnelClosedError('the ssh tunnel was closed while connecting');
      await tunnel.connect();
    } catch (error) {
      await tunnel.close();
      throw error;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
    return tunnel;
  }

  /** The cipher negotiated (client to server), once connected. */
  get cipher(): string {
    return this.#cipher;
  }

  /** The server's software version (`ktctl-shadow_2`, `OpenSSH_9.2p1 Debian-2`), once connected. */
  get serverSoftware(): string {
    const v: unknown = this.#client === undefined ? undefined : Reflect.get(this.#client, '_remoteVer');
    return typeof v === 'string' ? v : '';
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  /** Connects and authenticates. Rejects with HostKeyError, AuthError, ConnectError or InputFileError. */
  connect(): Promise<void> {
    this.#connecting ??= this.#connect();
    return this.#connecting;
  }

  async #connect(): Promise<void> {
    if (this.#state !== 'idle') throw new TunnelClosedError('this ssh tunnel was closed; make a new one');
    this.#state = 'connecting';
    const opts = this.#options;
    const key = utils.parseKey(opts.privateKey);
    if (key instanceof Error || !key.isPrivateKey()) {
      this.#state = 'closed';
      const what = opts.privateKeyFile ?? 'the private key given';
      throw new InputFileError(`${what} is not a private key ssh can use${key instanceof Error ? ` (${key.message})` : ''}`, {
        cause: key instanceof Error ? key : undefined,
      });
    }

    const check = await this.#hostKeyChecker().catch((err: unknown) => {
      this.#state = 'closed';
      throw err;
    });
    if (this.#userClosed) {
      this.#state = 'closed';
      throw new TunnelClosedError('the ssh tunnel was closed while connecting');
    }
    let hostKeyError: HostKeyError | undefined;
    const client = new Client();
    this.#client = client;

    const config: ConnectConfig = {
      username: opts.username,
      privateKey: opts.privateKey,
      readyTimeout: opts.readyTimeout ?? 20_000,
      ...keepaliveConfig(opts.keepaliveInterval ?? 10_000, opts.keepaliveCountMax ?? 3),
      algorithms: { serverHostKey: check.algorithms, cipher: opts.ciphers ?? CIPHERS },
      hostVerifier: (blob: Buffer): boolean => {
        hostKeyError = check.verify(blob);
        return hostKeyError === undefined;
      },
    };
    if (opts.sock !== undefined) config.sock = opts.sock;
    else {
      config.host = opts.host;
      config.port = opts.port ?? 22;
    }

    await new Promise<void>((resolve, reject) => {
      let settled = false;
      let connected = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        this.#state = 'closed';
        client.end();
        client.destroy();
        reject(err);
      };
      client.on('handshake', (negotiated) => {
        this.#cipher = negotiated.cs.cipher;
      });
      client.on('ready', () => {
        if (settled) return;
        settled = true;
        // Small request/response messages must not wait for Nagle (40 ms with delayed ACKs on the
        // far side); ssh2 leaves its TCP socket as Node made it. A stream given in `sock` is the
        // caller's to tune.
        if (opts.sock === undefined) client.setNoDelay(true);
        if (this.#userClosed) {
          this.#state = 'closed';
          client.end();
          reject(new TunnelClosedError('the ssh tunnel was closed while connecting'));
          return;
        }
        this.#state = 'ready';
        connected = true;
        this.#event('connected', `connected to ${this.#label} (cipher ${this.#cipher})`);
        resolve();
      });
      client.on('error', (err: Error) => {
        if (!settled) {
          fail(this.#userClosed ? new TunnelClosedError('the ssh tunnel was closed while connecting') : this.#connectError(err, hostKeyError));
          return;
        }
        this.#lastError = err;
        if (levelOf(err) === 'client-timeout') this.#event('keepalive-timeout', `${this.#label} stopped answering keepalives`);
      });
      client.on('close', () => {
        if (!settled) {
          fail(
            this.#userClosed
              ? new TunnelClosedError('the ssh tunnel was closed while connecting')
              : (hostKeyError ?? new ConnectError(`${this.#label} closed the connection before ssh was set up: is it an ssh server?`)),
          );
          return;
        }
        if (connected) this.#onClosed();
      });
      client.on('tcp connection', (details, accept, reject) => this.#onForwarded(details, accept, reject));
      try {
        client.connect(config);
      } catch (err) {
        fail(new ConnectError(`cannot start the ssh connection to ${this.#label}: ${errorText(err)}`, { cause: err }));
      }
    });
  }

  async #hostKeyChecker(): Promise<{ algorithms: ServerHostKeyAlgorithm[]; verify(blob: Buffer): HostKeyError | undefined }> {
    const hk = this.#options.hostKey;
    if ('pinned' in hk) {
      const pinned = parsePublicKeyLine(hk.pinned);
      if (pinned === undefined) throw new InputFileError('the pinned host key is not an OpenSSH public key line ("ssh-ed25519 AAAA...")');
      return {
        algorithms: hostKeyAlgorithmsFor([pinned.type]),
        verify: (blob) => {
          if (blob.equals(pinned.blob)) return undefined;
          const fp = fingerprint(blob);
          return new HostKeyError(
            `the ssh server at ${this.#label} presented host key ${fp} (${blobType(blob)}), not the pinned ${fingerprint(pinned.blob)}: ` +
              'something other than the expected server answers there; find out what, then connect again (for a shadow pod: run `ktctl clean` and reconnect)',
            fp,
          );
        },
      };
    }
    const file = hk.knownHostsFile;
    let text = '';
    let missing = false;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw new InputFileError(`cannot read the known_hosts file ${file}: ${errorText(err)}`, { cause: err });
      missing = true;
    }
    return {
      algorithms: hostKeyAlgorithmsFor(knownKeyTypes(text, hk.hostLabel)),
      verify: (blob) => {
        const fp = fingerprint(blob);
        const type = blobType(blob);
        const result = checkKnownHosts(text, hk.hostLabel, blob);
        switch (result.status) {
          case 'match':
            return undefined;
          case 'unknown':
            return new HostKeyError(
              `the host key of ${hk.hostLabel} is not in ${file}${missing ? ' (the file does not exist)' : ''}: it is ${type} ${fp}; ` +
                `check this fingerprint with the server's owner, then add the key to ${file} (e.g. ssh-keyscan${portArg(hk.hostLabel)} ${hostOf(hk.hostLabel)} >> ${file})`,
              fp,
            );
          case 'mismatch':
            return new HostKeyError(
              `the host key of ${hk.hostLabel} (${type} ${fp}) does not match the one in ${file} line ${result.line}: the server changed its key or someone is in between; ` +
                `if the change is expected, remove the old entry with ssh-keygen -R '${hk.hostLabel}' -f ${file} and add the new key`,
              fp,
            );
          case 'revoked':
            return new HostKeyError(`the host key of ${hk.hostLabel} (${type} ${fp}) is marked @revoked in ${file} line ${result.line}; refusing it`, fp);
        }
      },
    };
  }

  #connectError(err: Error, hostKeyError: HostKeyError | undefined): Error {
    if (hostKeyError) return hostKeyError;
    const level = levelOf(err);
    if (level === 'client-authentication') {
      const what = this.#options.privateKeyFile ?? 'the given private key';
      return new AuthError(`the server at ${this.#label} refused the key in ${what} for user ${this.#options.username}; add its public half to that user's authorized_keys`, { cause: err });
    }
    if (level === 'client-timeout') {
      return new ConnectError(`no ssh handshake with ${this.#label} within ${(this.#options.readyTimeout ?? 20_000) / 1000} s: is it reachable, and is it an ssh server?`, { cause: err });
    }
    switch (errnoOf(err)) {
      case 'ECONNREFUSED':
        return new ConnectError(`cannot connect to ${this.#label}: connection refused; is the ssh server running, and is the port right?`, { cause: err });
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
      case 'EAI_NONAME':
        return new ConnectError(`cannot connect to ${this.#label}: the host name does not resolve`, { cause: err });
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
        return new ConnectError(`cannot connect to ${this.#label}: no route to that host`, { cause: err });
      case 'ETIMEDOUT':
        return new ConnectError(`cannot connect to ${this.#label}: the connection timed out`, { cause: err });
      case 'ECONNRESET':
      case 'EPIPE':
        return new ConnectError(`${this.#label} reset the connection during the ssh handshake: is it an ssh server?`, { cause: err });
    }
    return new ConnectError(`the ssh connection to ${this.#label} failed: ${err.message}`, { cause: err });
  }

  /** After a successful connect only: the connection is gone. */
  #onClosed(): void {
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.#state = 'closed';
    let error: TunnelClosedError | undefined;
    if (!this.#userClosed) {
      const why = this.#lastError;
      const text =
        why && levelOf(why) === 'client-timeout'
          ? `${this.#label} stopped answering (no keepalive reply)`
          : why
            ? `the ssh connection to ${this.#label} broke: ${why.message}`
            : `${this.#label} closed the ssh connection`;
      error = new TunnelClosedError(text, { cause: why });
    }
    // ssh2 ends every channel right after this; tell those that listen for errors that it was not
    // a clean end.
    const channelError = error ?? new TunnelClosedError('the ssh tunnel was closed');
    for (const ch of this.#channels) {
      if (ch.listenerCount('error') > 0) ch.emit('error', channelError);
    }
    this.#channels.clear();
    this.#forwards.clear();
    this.#event('closed', error ? error.message : 'closed');
    this.emit('close', error);
  }

  /**
   * One round trip to the server, in ms: a `keepalive@openssh.com` global request with want-reply,
   * the probe ssh2's own keepalive sends (client.js `sendKA`). Every server answers it (success or
   * failure, RFC 4254 §4); replies come in request order, so the callback joins ssh2's queue of
   * global-request callbacks. ssh2 1.17 has no public API for it: this reaches `_protocol.ping()`
   * and `_callbacks` exactly as `sendKA` does. Rejects when not connected or after `timeoutMs`.
   */
  ping(timeoutMs = 2000): Promise<number> {
    const client = this.#client as unknown as { _protocol?: { ping(): void }; _callbacks?: Array<(hadError: boolean) => void> } | undefined;
    if (client?._protocol === undefined || client._callbacks === undefined || this.#state !== 'ready') {
      return Promise.reject(new TunnelClosedError('the ssh tunnel is not connected'));
    }
    const { _protocol: protocol, _callbacks: callbacks } = client;
    return new Promise<number>((resolve, reject) => {
      const sent = performance.now();
      const timer = setTimeout(() => reject(new TunnelClosedError(`${this.#label} did not answer a ping within ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
      callbacks.push(() => {
        clearTimeout(timer);
        resolve(performance.now() - sent);
      });
      try {
        protocol.ping();
      } catch (err) {
        clearTimeout(timer);
        reject(new TunnelClosedError('the ssh tunnel is down', { cause: err }));
      }
    });
  }

  /** Closes the connection (and with it every channel). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#userClosed = true;
      const client = this.#client;
      if (client === undefined || this.#state === 'closed') {
        this.#state = 'closed';
        resolve();
        return;
      }
      client.once('close', () => resolve());
      if (this.#state === 'connecting') {
        // No session to say goodbye to. end() would only half-close the socket, and a peer that
        // never answers (a server slow to accept, a stuck port-forward) would keep it open, and
        // the process alive, until readyTimeout; ssh2's destroy() is a no-op after end().
        client.destroy();
        return;
      }
      client.end();
      // A dead peer never completes the goodbye: cut the transport after a moment.
      const cut = setTimeout(() => client.destroy(), 1000);
      cut.unref();
      client.once('close', () => clearTimeout(cut));
    });
    return this.#closing;
  }

  dial(host: string, port: number, options: DialOptions = {}): Promise<Duplex> {
    const client = this.#client;
    if (client === undefined || this.#state !== 'ready') {
      return Promise.reject(new DialError('tunnel', host, port, 'the ssh tunnel is not connected'));
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Duplex>((resolve, reject) => {
      let done = false;
      const onAbort = (): void => {
        if (done) return;
        done = true;
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        client.forwardOut(options.originHost ?? '127.0.0.1', options.originPort ?? 0, host, port, (err, channel) => {
          signal?.removeEventListener('abort', onAbort);
          if (done) {
            if (err === undefined) channel.destroy();
            return;
          }
          done = true;
          if (err !== undefined) {
            const dialError = this.#dialError(host, port, err);
            this.#event('dial-failed', dialError.message);
            reject(dialError);
            return;
          }
          this.#track(channel);
          resolve(channel);
        });
      } catch (err) {
        done = true;
        reject(new DialError('tunnel', host, port, 'the ssh tunnel is down', { cause: err }));
      }
    });
  }

  #dialError(host: string, port: number, err: Error): DialError {
    const reason: unknown = Reflect.get(err, 'reason');
    const description = err.message.replace(/^\(SSH\) Channel open failure:\s*/, '');
    if (typeof reason !== 'number' || this.#state !== 'ready') {
      return new DialError('tunnel', host, port, 'the ssh tunnel went down while the channel was opening', { cause: err });
    }
    // RFC 4254 §5.1 reason codes.
    switch (reason) {
      case 1:
        return new DialError('prohibited', host, port, `${this.#label} does not allow TCP forwarding (e.g. AllowTcpForwarding no)`, { cause: err });
      case 2: {
        const [kind, detail] = classifyOpenFailure(description);
        return new DialError(kind, host, port, detail, { cause: err });
      }
      case 3:
        return new DialError('prohibited', host, port, `${this.#label} does not offer direct-tcpip channels`, { cause: err });
      default:
        return new DialError('unreachable', host, port, `${this.#label} has no channel to spare (${description || `reason ${reason}`})`, { cause: err });
    }
  }

  #track(channel: ClientChannel): void {
    this.#channels.add(channel);
    channel.once('close', () => this.#channels.delete(channel));
  }

  /**
   * Sends one DNS message to the far side's resolver: over the DNS_SUBSYSTEM channel (one, opened
   * on first use and again after it closes), or, when the server has no such subsystem (OpenSSH),
   * over DNS-over-TCP to `dnsServer` through `direct-tcpip`. Rejects with DnsQueryError.
   */
  async dnsQuery(message: Buffer, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const mux = await this.#dnsChannel();
    return mux.query(message, options.signal);
  }

  #dnsChannel(): Promise<DnsMultiplexer> {
    const current = this.#dns;
    if (current !== undefined) {
      return current.then(
        (mux) => (mux.open ? mux : this.#openDns()),
        () => this.#openDns(),
      );
    }
    return this.#openDns();
  }

  #openDns(): Promise<DnsMultiplexer> {
    const timeout = this.#options.dnsTimeoutMs ?? 5000;
    const attempt = (async (): Promise<DnsMultiplexer> => {
      const client = this.#client;
      if (client === undefined || this.#state !== 'ready') throw new DnsQueryError('tunnel', 'the ssh tunnel is not connected');
      if (!this.#noDnsSubsystem) {
        const channel = await new Promise<ClientChannel | undefined>((resolve, reject) => {
          try {
            client.subsys(DNS_SUBSYSTEM, (err, ch) => {
              if (err === undefined) resolve(ch);
              else if (this.#state !== 'ready') reject(new DnsQueryError('tunnel', 'the ssh tunnel went down', { cause: err }));
              else resolve(undefined); // the server said no: it is not a shadow
            });
          } catch (err) {
            reject(new DnsQueryError('tunnel', 'the ssh tunnel is down', { cause: err }));
          }
        });
        if (channel !== undefined) {
          this.#track(channel);
          this.#event('dns', `DNS through the ${DNS_SUBSYSTEM} subsystem of ${this.#label}`);
          return new DnsMultiplexer(channel, timeout);
        }
        this.#noDnsSubsystem = true;
      }
      const server = this.#options.dnsServer;
      if (server === undefined) {
        throw new DnsQueryError('unsupported', `${this.#label} has no DNS subsystem (not a ktctl shadow) and no DNS server on its side was given (--dns-server)`);
      }
      let stream: Duplex;
      try {
        stream = await this.dial(server, 53);
      } catch (err) {
        throw new DnsQueryError('tunnel', `cannot reach the DNS server ${server}:53 through ${this.#label}: ${errorText(err)}`, { cause: err });
      }
      this.#event('dns', `DNS over TCP to ${server}:53 through ${this.#label}`);
      return new DnsMultiplexer(stream, timeout);
    })();
    this.#dns = attempt;
    return attempt;
  }

  /** A session channel with subsystem `name`, or undefined when the server refuses it. */
  subsystem(name: string): Promise<ClientChannel | undefined> {
    const client = this.#client;
    if (client === undefined || this.#state !== 'ready') return Promise.resolve(undefined);
    return new Promise((resolve) => {
      try {
        client.subsys(name, (err, ch) => {
          if (err !== undefined) {
            resolve(undefined);
            return;
          }
          this.#track(ch);
          resolve(ch);
        });
      } catch {
        resolve(undefined);
      }
    });
  }

  /**
   * UDP through UDP_SUBSYSTEM (src/ssh/udp.ts): one session per tunnel, its flows on one channel
   * (opened again when it closes); undefined when the server has no such subsystem (OpenSSH, an
   * older shadow) or the tunnel is not connected.
   */
  async udp(): Promise<UdpSession | undefined> {
    if (this.#udpSession !== undefined) return this.#udpSession;
    const first = await this.udpChannel();
    if (first === undefined) return undefined;
    this.#udpSession ??= new TunnelUdpSession(() => this.udpChannel(), first);
    return this.#udpSession;
  }

  /** True once the server refused UDP_SUBSYSTEM. */
  get udpUnsupported(): boolean {
    return this.#noUdpSubsystem;
  }

  /** The UDP_SUBSYSTEM channel, opened on first use and again after it closed; undefined when refused or not connected. */
  udpChannel(): Promise<UdpChannel | undefined> {
    const current = this.#udp;
    if (current !== undefined) return current.then((ch) => (ch?.open === true ? ch : this.#udp === current ? this.#openUdp() : this.udpChannel()));
    return this.#openUdp();
  }

  #openUdp(): Promise<UdpChannel | undefined> {
    const client = this.#client;
    const attempt =
      client === undefined || this.#state !== 'ready' || this.#noUdpSubsystem
        ? Promise.resolve(undefined)
        : new Promise<UdpChannel | undefined>((resolve) => {
            try {
              client.subsys(UDP_SUBSYSTEM, (err, ch) => {
                if (err !== undefined) {
                  // Refused while connected: the server has no UDP; refused as the tunnel went down: try again later.
                  if (this.#state === 'ready') {
                    this.#noUdpSubsystem = true;
                    this.#event('udp', `${this.#label} has no ${UDP_SUBSYSTEM} subsystem: no UDP beyond DNS`);
                  }
                  resolve(undefined);
                  return;
                }
                this.#track(ch);
                this.#event('udp', `UDP through the ${UDP_SUBSYSTEM} subsystem of ${this.#label}`);
                resolve(new UdpChannel(ch));
              });
            } catch {
              resolve(undefined);
            }
          });
    this.#udp = attempt;
    return attempt;
  }

  /**
   * Asks the server to listen on bindAddr:bindPort (`tcpip-forward`, RFC 4254 §7.1; port 0 lets
   * it choose) and hands each connection made there to `handler`. Rejects with ListenError when the
   * server refuses (port taken, privileged, forwarding not allowed).
   */
  forwardIn(bindAddr: string, bindPort: number, handler: ForwardHandler): Promise<RemoteForward> {
    const client = this.#client;
    if (client === undefined || this.#state !== 'ready') return Promise.reject(new TunnelClosedError('the ssh tunnel is not connected'));
    return new Promise<RemoteForward>((resolve, reject) => {
      try {
        client.forwardIn(bindAddr, bindPort, (err, port) => {
          if (err !== undefined) {
            reject(
              new ListenError(`${this.#label} refused to listen on ${bindAddr || '*'}:${bindPort} (port in use, privileged, or remote forwarding not allowed)`, {
                cause: err,
              }),
            );
            return;
          }
          // ssh2 matches forwarded channels by the bind address string and the bound port.
          const key = `${bindAddr}:${port}`;
          this.#forwards.set(key, handler);
          this.#event('forward', `${this.#label} listens on ${bindAddr || '*'}:${port} for us`);
          let cancelled: Promise<void> | undefined;
          resolve({
            bindAddr,
            port,
            cancel: () => {
              cancelled ??= this.#cancelForward(bindAddr, port, key);
              return cancelled;
            },
          });
        });
      } catch (err) {
        reject(new TunnelClosedError('the ssh tunnel is down', { cause: err }));
      }
    });
  }

  #cancelForward(bindAddr: string, port: number, key: string): Promise<void> {
    this.#forwards.delete(key);
    const client = this.#client;
    if (client === undefined || this.#state !== 'ready') return Promise.resolve();
    return new Promise<void>((resolve) => {
      try {
        client.unforwardIn(bindAddr, port, () => {
          this.#event('unforward', `${this.#label} stopped listening on ${bindAddr || '*'}:${port}`);
          resolve();
        });
      } catch {
        resolve(); // not connected any more: nothing left to cancel
      }
    });
  }

  #onForwarded(details: TcpConnectionDetails, accept: () => ClientChannel, reject: () => void): void {
    const handler = this.#forwards.get(`${details.destIP}:${details.destPort}`);
    if (handler === undefined) {
      reject();
      return;
    }
    const channel = accept();
    this.#track(channel);
    handler(channel, details);
  }

  #event(type: TunnelEvent['type'], message: string): void {
    if (this.listenerCount('event') > 0) this.emit('event', { type, message } satisfies TunnelEvent);
  }
}

/**
 * ssh2 declares the peer dead when `keepaliveCountMax` probes in a row went unanswered and one more
 * interval passed, i.e. after interval * (countMax + 1). OpenSSH's ServerAliveCountMax counts so
 * that the peer is dead after interval * countMax; this maps the latter onto the former.
 */
export function keepaliveConfig(interval: number, countMax: number): { keepaliveInterval: number; keepaliveCountMax: number } {
  if (interval <= 0) return { keepaliveInterval: 0, keepaliveCountMax: 0 };
  if (countMax <= 1) return { keepaliveInterval: Math.max(1, Math.floor(interval / 2)), keepaliveCountMax: 1 };
  return { keepaliveInterval: interval, keepaliveCountMax: countMax - 1 };
}

/** Reads an SSH_MSG_CHANNEL_OPEN_FAILURE description the way OPEN_FAILURE_TEXT words them. */
export function classifyOpenFailure(description: string): [DialFailure, string] {
  const d = description.toLowerCase();
  const has = (s: string): boolean => d.includes(s.toLowerCase());
  if (has(OPEN_FAILURE_TEXT.refused)) return ['refused', 'connection refused: nothing listens on that port there'];
  if (
    has(OPEN_FAILURE_TEXT.unresolvable) ||
    has('No address associated') ||
    has('Temporary failure in name resolution') ||
    has('nodename nor servname') ||
    has('Name does not resolve')
  ) {
    return ['unresolvable', 'the name does not resolve on the far side'];
  }
  if (has(OPEN_FAILURE_TEXT.timeout) || has('timed out')) return ['unreachable', 'connecting timed out on the far side'];
  if (has(OPEN_FAILURE_TEXT.unreachable) || has('unreachable')) return ['unreachable', 'no route to that address on the far side'];
  return ['unreachable', description ? `the far side could not connect (${description})` : 'the far side could not connect'];
}

function levelOf(err: Error): string {
  const level: unknown = Reflect.get(err, 'level');
  return typeof level === 'string' ? level : '';
}

function errnoOf(err: unknown): string {
  const code: unknown = typeof err === 'object' && err !== null ? Reflect.get(err, 'code') : undefined;
  return typeof code === 'string' ? code : '';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function hostOf(label: string): string {
  const m = /^\[(.+)\]:\d+$/.exec(label);
  return m ? m[1]! : label;
}

function portArg(label: string): string {
  const m = /^\[.+\]:(\d+)$/.exec(label);
  return m ? ` -p ${m[1]}` : '';
}
