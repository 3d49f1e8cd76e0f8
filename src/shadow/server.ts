import { lookup } from 'node:dns/promises';
import { createServer, connect, isIP, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import type {
  AcceptConnection,
  AuthContext,
  ClientInfo,
  Connection,
  ParsedKey,
  RejectConnection,
  ServerChannel,
  Session,
  TcpipBindInfo,
  TcpipRequestInfo,
} from 'ssh2';
import {
  ATTACH_REFUSED,
  DNS_SUBSYSTEM,
  DnsFrameDecoder,
  OPEN_FAILURE_TEXT,
  RESUME_SUBSYSTEM,
  SHADOW_IDENT,
  SHADOW_PORT,
  UDP_SUBSYSTEM,
  frameDnsMessage,
  parseAttachOrigin,
  parseMeshBindAddress,
  parseStreamOrigin,
  splice,
  streamOrigin,
  type MeshMark,
} from '../protocol/index.js';
import { silentLogger, type ShadowLogger } from './log.js';
import { UpstreamResolver, type UpstreamResolverOptions } from './resolver.js';
import { ShadowResume } from './resume.js';
import type { MeshRouter, RouteStream } from './router.js';
import { spliceChannel } from './splice.js';
import { UdpRelay } from './udp.js';

const { Server: SshServer, utils } = ssh2;

/** RFC 4254 §5.1 reason codes of SSH_MSG_CHANNEL_OPEN_FAILURE. */
const OPEN_ADMINISTRATIVELY_PROHIBITED = 1;
const OPEN_CONNECT_FAILED = 2;
/**
 * What OpenSSH's sshd says with reason 1 when forwarding is not allowed (AllowTcpForwarding no,
 * permitopen): serverloop.c leaves the error message empty and sends its default, "open failed".
 */
const PROHIBITED_TEXT = 'open failed';
/** Queries answered at once on one DNS channel before its reading pauses. */
const DNS_MAX_IN_FLIGHT = 256;
/** Grace period between asking clients to disconnect and cutting their sockets on close(). */
const CLOSE_GRACE_MS = 1000;

export interface ShadowServerOptions {
  /** Host private key (OpenSSH or PEM text); ed25519 in practice. */
  hostKey: string | Buffer;
  /** The one public key allowed in, as an authorized_keys line ("ssh-ed25519 AAAA... comment"). */
  authorizedKey: string;
  /** Listening port (default SHADOW_PORT; 0 picks one) and address (default 0.0.0.0). */
  port?: number;
  host?: string;
  /** Timeout of the TCP connect for a `direct-tcpip` channel (default 10 s). */
  connectTimeoutMs?: number;
  /** Where DNS_SUBSYSTEM queries go (default: the first nameserver of /etc/resolv.conf). */
  dns?: UpstreamResolverOptions;
  /** ssh-level keepalive towards clients (ssh2's defaults: 15 s, 3). */
  keepaliveInterval?: number;
  keepaliveCountMax?: number;
  log?: ShadowLogger;
  /**
   * Role `router`: a `tcpip-forward` whose bind address is a mesh mark (src/protocol
   * meshBindAddress) registers the mark with this router instead of listening. Nothing else is
   * served then: the router's client key is shared by every developer of the Service (it is in
   * the router's Secret), so `direct-tcpip`, other `tcpip-forward`s and session channels (the DNS
   * subsystem) are refused, the way sshd refuses them with AllowTcpForwarding no.
   */
  router?: MeshRouter;
}

export class KeyError extends Error {}

/** Per ssh connection: everything it made, so that all of it goes when the connection goes. */
interface ClientState {
  id: number;
  remote: string;
  conn: Connection;
  openedAt: number;
  closed: boolean;
  sockets: Set<Socket>;
  listeners: Map<string, NetServer>;
  /** mesh marks registered with the router, by bind key: their unregister functions */
  marks: Map<string, () => void>;
  channels: number;
  /** bytes of finished connections, and of those cut at disconnect (counted then) */
  bytesUp: number;
  bytesDown: number;
  counted: WeakSet<Socket>;
}

/**
 * The in-cluster end of the tunnel: an ssh2 server that lets exactly one public key in and then
 * opens TCP connections (`direct-tcpip`), listens for the client (`tcpip-forward`) and answers
 * DNS queries (DNS_SUBSYSTEM) with the pod's view of the network.
 */
export class ShadowServer {
  readonly #options: ShadowServerOptions;
  readonly #log: ShadowLogger;
  readonly #authorized: ParsedKey;
  readonly #authorizedBlob: Buffer;
  readonly #ssh: InstanceType<typeof SshServer>;
  readonly #tcp: NetServer;
  readonly #resolver: UpstreamResolver;
  readonly #rawSockets = new Set<Socket>();
  readonly #clients = new Set<ClientState>();
  readonly #resume: ShadowResume;
  /** UDP_SUBSYSTEM: one channel per ssh connection carries all its flows (src/shadow/udp.ts). */
  readonly #udp = new WeakMap<ClientState, UdpRelay>();
  #nextClientId = 1;
  #closing: Promise<void> | undefined;

  constructor(options: ShadowServerOptions) {
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    const hostKey = utils.parseKey(options.hostKey);
    if (hostKey instanceof Error || !hostKey.isPrivateKey()) {
      throw new KeyError(`the host key is not a private key ssh2 can read${hostKey instanceof Error ? `: ${hostKey.message}` : ''}`);
    }
    const authorized = utils.parseKey(options.authorizedKey.trim());
    if (authorized instanceof Error) {
      throw new KeyError(`the authorized key is not an OpenSSH public key line: ${authorized.message}`);
    }
    this.#authorized = authorized;
    this.#authorizedBlob = authorized.getPublicSSH();
    this.#resolver = new UpstreamResolver(options.dns);
    this.#resume = new ShadowResume(this.#log);
    this.#ssh = new SshServer(
      {
        hostKeys: [options.hostKey],
        ident: SHADOW_IDENT,
        keepaliveInterval: options.keepaliveInterval,
        keepaliveCountMax: options.keepaliveCountMax,
      },
      (conn, info) => this.#onConnection(conn, info),
    );
    // ssh2's error events of single connections are handled per connection; keep the server alive.
    this.#ssh.on('error', (err: Error) => this.#log('error', { message: err.message }));
    // Our own listener, so that close() can reach every raw socket (ssh2 keeps them private).
    this.#tcp = createServer({ noDelay: true }, (socket) => {
      this.#rawSockets.add(socket);
      socket.once('close', () => this.#rawSockets.delete(socket));
      this.#ssh.injectSocket(socket);
    });
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#tcp.once('error', onError);
      this.#tcp.listen({ port: this.#options.port ?? SHADOW_PORT, host: this.#options.host ?? '0.0.0.0' }, () => {
        this.#tcp.off('error', onError);
        // Later errors (e.g. EMFILE on accept) are logged; the server keeps going.
        this.#tcp.on('error', (err) => this.#log('error', { message: err.message }));
        const address = this.#tcp.address() as AddressInfo;
        this.#log('listen', { address: address.address, port: address.port });
        resolve(address);
      });
    });
  }

  /** The bound address while listening. */
  address(): AddressInfo | undefined {
    const a = this.#tcp.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  /** Stops listening, disconnects every client and frees all they had. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#tcp.close(() => resolve());
      this.#resume.close();
      for (const client of this.#clients) {
        try {
          client.conn.end();
        } catch {
          /* already gone */
        }
        this.#release(client);
      }
      const grace = setTimeout(() => {
        for (const s of this.#rawSockets) s.destroy();
      }, CLOSE_GRACE_MS);
      grace.unref();
      if (this.#rawSockets.size === 0) clearTimeout(grace);
    }).then(() => this.#log('shutdown'));
    return this.#closing;
  }

  #onConnection(conn: Connection, info: ClientInfo): void {
    const client: ClientState = {
      id: this.#nextClientId++,
      remote: `${info.ip}:${info.port}`,
      conn,
      openedAt: Date.now(),
      closed: false,
      sockets: new Set(),
      listeners: new Map(),
      marks: new Map(),
      channels: 0,
      bytesUp: 0,
      bytesDown: 0,
      counted: new WeakSet(),
    };
    this.#clients.add(client);
    this.#log('connect', { client: client.id, remote: client.remote, software: info.header.versions.software });

    conn.on('authentication', (ctx) => this.#authenticate(client, ctx));
    conn.on('ready', () => this.#log('ready', { client: client.id }));
    conn.on('tcpip', (accept, reject, req) => {
      void this.#directTcpip(client, accept, reject, req);
    });
    conn.on('request', (accept, reject, name, req) => {
      if (name === 'tcpip-forward') this.#forward(client, accept, reject, req);
      else if (name === 'cancel-tcpip-forward') this.#unforward(client, accept, reject, req);
      else reject?.();
    });
    conn.on('session', (accept, reject) => {
      if (this.#options.router !== undefined) {
        this.#log('open-failed', { client: client.id, kind: 'session', reason: 'prohibited', detail: 'a mesh router offers no sessions' });
        rejectWithDescription(conn, reject, PROHIBITED_TEXT, OPEN_ADMINISTRATIVELY_PROHIBITED);
        return;
      }
      this.#session(client, accept());
    });
    conn.on('error', (err: Error) => {
      this.#log('error', { client: client.id, message: err.message });
    });
    conn.on('close', () => {
      // Before ssh2 closes the channels: resumable streams are kept, not ended.
      this.#resume.detach(client);
      this.#release(client);
      this.#clients.delete(client);
      this.#log('disconnect', {
        client: client.id,
        channels: client.channels,
        bytesUp: client.bytesUp,
        bytesDown: client.bytesDown,
        durationMs: Date.now() - client.openedAt,
      });
    });
  }

  /** Frees everything a client had: its listeners, its sockets (so nothing lingers in CLOSE_WAIT). */
  #release(client: ClientState): void {
    if (client.closed) return;
    client.closed = true;
    for (const [key, server] of client.listeners) {
      server.close();
      this.#log('unforward', { client: client.id, bind: key, why: 'disconnect' });
    }
    client.listeners.clear();
    for (const [key, unregister] of client.marks) {
      unregister();
      this.#log('unforward', { client: client.id, bind: key, why: 'disconnect' });
    }
    client.marks.clear();
    for (const s of client.sockets) {
      this.#count(client, s, s.bytesWritten, s.bytesRead);
      s.destroy();
    }
    client.sockets.clear();
  }

  /** Adds a socket's bytes to its client's totals, once. */
  #count(client: ClientState, socket: Socket, up: number, down: number): void {
    if (client.counted.has(socket)) return;
    client.counted.add(socket);
    client.bytesUp += up;
    client.bytesDown += down;
  }

  #authenticate(client: ClientState, ctx: AuthContext): void {
    if (ctx.method !== 'publickey') {
      if (ctx.method !== 'none') this.#log('auth', { client: client.id, user: ctx.username, method: ctx.method, ok: false });
      ctx.reject(['publickey']);
      return;
    }
    // RFC 4252 §7: the key must be the authorized one (type and blob), and the signature, when
    // present, must verify over the session data with that key.
    // The blob starts with the key type, so comparing blobs compares type and key data.
    if (!ctx.key.data.equals(this.#authorizedBlob)) {
      this.#log('auth', { client: client.id, user: ctx.username, method: 'publickey', ok: false, why: 'key not authorized' });
      ctx.reject(['publickey']);
      return;
    }
    if (ctx.signature === undefined) {
      ctx.accept(); // SSH_MSG_USERAUTH_PK_OK: "this key would do", no login yet
      return;
    }
    if (ctx.blob === undefined || this.#authorized.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
      this.#log('auth', { client: client.id, user: ctx.username, method: 'publickey', ok: false, why: 'bad signature' });
      ctx.reject(['publickey']);
      return;
    }
    this.#log('auth', { client: client.id, user: ctx.username, method: 'publickey', ok: true });
    ctx.accept();
  }

  async #directTcpip(
    client: ClientState,
    accept: AcceptConnection<ServerChannel>,
    reject: RejectConnection,
    req: TcpipRequestInfo,
  ): Promise<void> {
    const { destIP: host, destPort: port } = req;
    const origin = `${req.srcIP}:${req.srcPort}`;
    if (this.#options.router !== undefined) {
      this.#log('open-failed', { client: client.id, host, port, origin, reason: 'prohibited', detail: 'a mesh router opens no connections for its clients' });
      rejectWithDescription(client.conn, reject, PROHIBITED_TEXT, OPEN_ADMINISTRATIVELY_PROHIBITED);
      return;
    }
    const fail = (kind: keyof typeof OPEN_FAILURE_TEXT, detail: string): void => {
      this.#log('open-failed', { client: client.id, host, port, origin, reason: kind, detail });
      if (!client.closed) rejectWithDescription(client.conn, reject, OPEN_FAILURE_TEXT[kind]);
    };
    const attach = parseAttachOrigin(req.srcIP);
    if (attach !== undefined) {
      const why = this.#resume.attach(client, attach.session, attach.id, attach.received, attach.fin, () => accept());
      if (why !== undefined) {
        this.#log('open-failed', { client: client.id, kind: 'attach', stream: attach.id, detail: why });
        rejectWithDescription(client.conn, reject, `${ATTACH_REFUSED}${why}`);
      }
      return;
    }
    const named = parseStreamOrigin(req.srcIP);

    let address = host;
    if (isIP(host) === 0) {
      // getaddrinfo, so that resolv.conf's search list and ndots apply as for any program in the pod.
      try {
        address = (await lookup(host)).address;
      } catch (err) {
        fail('unresolvable', errorText(err));
        return;
      }
      if (client.closed) return;
    }

    const socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true });
    client.sockets.add(socket);
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), this.#options.connectTimeoutMs ?? 10_000);
    const onConnectError = (err: Error): void => {
      clearTimeout(timer);
      client.sockets.delete(socket);
      fail(failureKind(err), errorText(err));
    };
    socket.once('error', onConnectError);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onConnectError);
      if (client.closed) {
        socket.destroy();
        return;
      }
      const channel = accept();
      if (channel === undefined) {
        socket.destroy();
        return;
      }
      client.channels++;
      this.#log('open', { client: client.id, kind: 'direct-tcpip', host, address, port, origin, stream: named?.id });
      if (named !== undefined) {
        client.sockets.delete(socket);
        this.#joinResumable(client, named.session, named.id, channel, socket, { kind: 'direct-tcpip', host, port });
        return;
      }
      spliceChannel(channel, socket, (r) => {
        client.sockets.delete(socket);
        this.#count(client, socket, r.bytesUp, r.bytesDown);
        this.#log('close', { client: client.id, kind: 'direct-tcpip', host, port, bytesUp: r.bytesUp, bytesDown: r.bytesDown, error: r.error?.message });
      });
    });
  }

  /** A resumable stream on `channel` joined to `socket`; both closed when the session is not this connection's. */
  #joinResumable(client: ClientState, session: string, id: number, channel: ServerChannel, socket: Socket, what: Record<string, string | number>): void {
    const label = 'host' in what ? `${what.host}:${what.port}` : `${what.bind}:${what.port}`;
    const stream = this.#resume.open(client, session, id, channel, label);
    if (stream === undefined) {
      this.#log('open-failed', { client: client.id, ...what, stream: id, detail: 'a stream name this connection did not say HELLO for, or in use' });
      channel.close();
      socket.destroy();
      return;
    }
    splice(stream, socket, (error) => {
      this.#log('close', { client: client.id, ...what, stream: id, bytesUp: socket.bytesWritten, bytesDown: socket.bytesRead, error: error?.message });
    });
  }

  #forward(
    client: ClientState,
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    req: TcpipBindInfo,
  ): void {
    const { bindAddr, bindPort } = req;
    const mark = parseMeshBindAddress(bindAddr);
    if (mark !== undefined) {
      this.#forwardMark(client, accept, reject, bindAddr, bindPort, mark);
      return;
    }
    if (this.#options.router !== undefined) {
      this.#log('forward', { client: client.id, bind: bindAddr, port: bindPort, ok: false, detail: 'a mesh router only takes mesh marks (ktctl-mesh:<header>=<value>)' });
      reject?.();
      return;
    }
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    let boundPort = bindPort;
    server.once('error', (err) => {
      this.#log('forward', { client: client.id, bind: bindAddr, port: bindPort, ok: false, detail: errorText(err) });
      reject?.();
    });
    server.listen({ host: listenHost(bindAddr), port: bindPort }, () => {
      boundPort = (server.address() as AddressInfo).port;
      if (client.closed) {
        server.close();
        reject?.();
        return;
      }
      const key = `${bindAddr}:${boundPort}`;
      client.listeners.set(key, server);
      server.on('error', (err) => this.#log('error', { client: client.id, bind: key, message: err.message }));
      this.#log('forward', { client: client.id, bind: bindAddr, port: boundPort, ok: true });
      accept?.(boundPort);
    });
    server.on('connection', (socket) => {
      if (client.closed) {
        socket.destroy();
        return;
      }
      client.sockets.add(socket);
      const remoteAddr = socket.remoteAddress ?? '';
      const remotePort = socket.remotePort ?? 0;
      socket.once('error', () => {}); // until spliced; a reset here just ends it
      const session = this.#resume.sessionOf(client);
      const streamId = session?.nextId();
      // RFC 4254 §7.2: the channel names the address and port that were bound, exactly as the
      // client asked (ssh2 clients match on that string). The originator names the resumable stream.
      const originator = session !== undefined && streamId !== undefined ? streamOrigin(session.id, streamId, remoteAddr) : remoteAddr;
      client.conn.forwardOut(bindAddr, boundPort, originator, remotePort, (err, channel) => {
        if (err !== undefined && err !== null) {
          client.sockets.delete(socket);
          socket.destroy();
          this.#log('open-failed', { client: client.id, kind: 'forwarded-tcpip', bind: bindAddr, port: boundPort, origin: `${remoteAddr}:${remotePort}`, detail: err.message });
          return;
        }
        if (client.closed) {
          channel.close();
          socket.destroy();
          return;
        }
        client.channels++;
        this.#log('open', { client: client.id, kind: 'forwarded-tcpip', bind: bindAddr, port: boundPort, origin: `${remoteAddr}:${remotePort}`, stream: streamId });
        if (session !== undefined && streamId !== undefined) {
          client.sockets.delete(socket);
          this.#joinResumable(client, session.id, streamId, channel, socket, { kind: 'forwarded-tcpip', bind: bindAddr, port: boundPort });
          socket.resume();
          return;
        }
        spliceChannel(channel, socket, (r) => {
          client.sockets.delete(socket);
          this.#count(client, socket, r.bytesUp, r.bytesDown);
          this.#log('close', { client: client.id, kind: 'forwarded-tcpip', bind: bindAddr, port: boundPort, bytesUp: r.bytesUp, bytesDown: r.bytesDown, error: r.error?.message });
        });
        socket.resume();
      });
    });
  }

  /** Role `router`: registers a mesh mark; the router opens `forwarded-tcpip` channels for its requests. */
  #forwardMark(
    client: ClientState,
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    bindAddr: string,
    bindPort: number,
    mark: MeshMark,
  ): void {
    const key = `${bindAddr}:${bindPort}`;
    const router = this.#options.router;
    const refuse = (detail: string): void => {
      this.#log('forward', { client: client.id, bind: bindAddr, port: bindPort, ok: false, detail });
      reject?.();
    };
    if (router === undefined) return refuse('this shadow is not a mesh router');
    if (client.closed) return refuse('disconnected');
    if (client.marks.has(key)) return refuse('already registered on this connection');
    let unregister: () => void;
    try {
      unregister = router.register(bindPort, mark, {
        label: `ssh client ${client.id} (${client.remote})`,
        open: (origin) => this.#openForwarded(client, bindAddr, bindPort, origin),
      });
    } catch (err) {
      return refuse(errorText(err));
    }
    client.marks.set(key, unregister);
    this.#log('forward', { client: client.id, bind: bindAddr, port: bindPort, ok: true });
    accept?.(bindPort);
  }

  /** A `forwarded-tcpip` channel for the router, to a mark's owner. */
  #openForwarded(client: ClientState, bindAddr: string, bindPort: number, origin: { address: string; port: number }): Promise<RouteStream> {
    return new Promise((resolve, reject) => {
      if (client.closed) {
        reject(new Error('the developer disconnected'));
        return;
      }
      const session = this.#resume.sessionOf(client);
      const streamId = session?.nextId();
      const originator = session !== undefined && streamId !== undefined ? streamOrigin(session.id, streamId, origin.address) : origin.address;
      client.conn.forwardOut(bindAddr, bindPort, originator, origin.port, (err, channel) => {
        if (err !== undefined && err !== null) {
          this.#log('open-failed', { client: client.id, kind: 'forwarded-tcpip', bind: bindAddr, port: bindPort, detail: err.message });
          reject(err);
          return;
        }
        client.channels++;
        const stream = session !== undefined && streamId !== undefined ? this.#resume.open(client, session.id, streamId, channel, `mark ${bindAddr}:${bindPort}`) : undefined;
        if (stream !== undefined) {
          resolve({
            stream,
            join: (socket) => {
              splice(stream, socket, (error) => this.#log('close', { client: client.id, kind: 'forwarded-tcpip', bind: bindAddr, port: bindPort, stream: streamId, bytesUp: socket.bytesWritten, bytesDown: socket.bytesRead, error: error?.message }));
              socket.resume();
            },
          });
          return;
        }
        resolve({
          stream: channel,
          join: (socket) => {
            client.sockets.add(socket);
            spliceChannel(channel, socket, (r) => {
              client.sockets.delete(socket);
              this.#count(client, socket, r.bytesUp, r.bytesDown);
            });
            socket.resume();
          },
        });
      });
    });
  }

  #unforward(client: ClientState, accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, req: TcpipBindInfo): void {
    const key = `${req.bindAddr}:${req.bindPort}`;
    const unregister = client.marks.get(key);
    if (unregister !== undefined) {
      client.marks.delete(key);
      unregister();
      this.#log('unforward', { client: client.id, bind: key, why: 'cancel' });
      accept?.();
      return;
    }
    const server = client.listeners.get(key);
    if (server === undefined) {
      reject?.();
      return;
    }
    client.listeners.delete(key);
    server.close();
    this.#log('unforward', { client: client.id, bind: key, why: 'cancel' });
    accept?.();
  }

  #session(client: ClientState, session: Session): void {
    session.on('subsystem', (accept, reject, info) => {
      if (info.name === RESUME_SUBSYSTEM) {
        const channel = accept();
        if (channel !== undefined) this.#resume.control(client, channel);
        return;
      }
      if (info.name === UDP_SUBSYSTEM) {
        const open = this.#udp.get(client);
        if (client.closed || (open !== undefined && !open.closed)) return reject();
        const channel = accept();
        if (channel === undefined) return;
        const relay = new UdpRelay(channel, { log: this.#log, client: client.id });
        this.#udp.set(client, relay);
        client.conn.once('close', () => relay.close());
        return;
      }
      if (info.name !== DNS_SUBSYSTEM) {
        reject();
        return;
      }
      const channel = accept();
      if (channel === undefined) return;
      this.#log('dns-open', { client: client.id });
      this.#serveDns(client, channel);
    });
  }

  /** DNS_SUBSYSTEM: length-prefixed queries in, answers out in any order (src/protocol). */
  #serveDns(client: ClientState, channel: ServerChannel): void {
    const decoder = new DnsFrameDecoder();
    let inFlight = 0;
    let ended = false;
    let closed = false;
    let queries = 0;
    const maybeEnd = (): void => {
      if (ended && inFlight === 0 && !closed) channel.end();
    };
    channel.on('data', (chunk: Buffer) => {
      for (const query of decoder.push(chunk)) {
        queries++;
        inFlight++;
        if (inFlight >= DNS_MAX_IN_FLIGHT) channel.pause();
        void this.#resolver.query(query).then((answer) => {
          inFlight--;
          if (!closed) {
            channel.write(frameDnsMessage(answer));
            if (inFlight < DNS_MAX_IN_FLIGHT && channel.isPaused()) channel.resume();
          }
          maybeEnd();
        });
      }
    });
    channel.on('end', () => {
      ended = true;
      maybeEnd();
    });
    channel.on('close', () => {
      closed = true;
      this.#log('dns-close', { client: client.id, queries });
    });
  }
}

/**
 * Sends SSH_MSG_CHANNEL_OPEN_FAILURE with `reason` (default 2, connect failed) and `description`,
 * like OpenSSH does.
 *
 * Why the detour: ssh2 1.17's server-side `reject()` (lib/server.js, CHANNEL_OPEN handler) always
 * passes an empty description to `Protocol#channelOpenFail(recipient, reason, description)`, and
 * the recipient channel id it needs is not exposed to us. So for the duration of this one
 * synchronous `reject()` call, the connection's protocol object gets an own `channelOpenFail`
 * that fills in the description and forwards to the real method; then the own property is
 * removed again. If ssh2 changes so that this no longer applies (no such method, or `reject()`
 * stops calling it), the plain `reject()` still goes out, without the text; the test
 * 'refused port: DialError "refused", with OpenSSH's description on the wire' in
 * test/shadow-tunnel.test.ts then fails.
 */
export function rejectWithDescription(conn: Connection, reject: RejectConnection, description: string, reason = OPEN_CONNECT_FAILED): boolean {
  const proto: unknown = Reflect.get(conn, '_protocol');
  if (!isOpenFailSender(proto) || Object.hasOwn(proto, 'channelOpenFail')) {
    reject();
    return false;
  }
  const original = proto.channelOpenFail;
  let used = false;
  proto.channelOpenFail = function (this: OpenFailSender, recipient: number, ssh2Reason: number): unknown {
    used = true;
    // ssh2 picks connect failed (2), or resource shortage (4) when it had no channel number to spare.
    return original.call(this, recipient, ssh2Reason === OPEN_CONNECT_FAILED || ssh2Reason === 0 ? reason : ssh2Reason, description);
  };
  try {
    reject();
  } finally {
    Reflect.deleteProperty(proto, 'channelOpenFail');
  }
  return used;
}

interface OpenFailSender {
  channelOpenFail(recipient: number, reason: number, description: string): unknown;
}

function isOpenFailSender(value: unknown): value is OpenFailSender {
  return typeof value === 'object' && value !== null && typeof Reflect.get(value, 'channelOpenFail') === 'function';
}

/** RFC 4254 §7.1 bind addresses: "" all families, "localhost" loopback, else as given. */
function listenHost(bindAddr: string): string {
  switch (bindAddr) {
    case '':
    case '*':
    case '0.0.0.0':
      return '0.0.0.0';
    case 'localhost':
      return '127.0.0.1';
    default:
      return bindAddr;
  }
}

function errnoOf(err: unknown): string {
  const code: unknown = typeof err === 'object' && err !== null ? Reflect.get(err, 'code') : undefined;
  return typeof code === 'string' ? code : '';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Which OpenSSH-worded failure a connect error is. */
function failureKind(err: unknown): keyof typeof OPEN_FAILURE_TEXT {
  switch (errnoOf(err)) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ENOTFOUND':
    case 'EAI_NONAME':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NODATA':
      return 'unresolvable';
    default:
      return 'unreachable';
  }
}
