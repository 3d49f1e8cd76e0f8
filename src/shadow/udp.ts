/**
 * The shadow's side of UDP_SUBSYSTEM (framing: src/protocol/udp.ts): each flow the client opens
 * gets a `dgram` socket of its own, connected (connect(2)) to the flow's destination, so that
 *  - the kernel passes up only the destination's datagrams (address and port-dependent filtering,
 *    RFC 4787 §5, as conntrack does for a pod's masqueraded UDP), and
 *  - ICMP errors for the flow surface on that socket (Linux reports them on connected UDP sockets
 *    only: ECONNREFUSED for port unreachable, EHOSTUNREACH, ENETUNREACH, EMSGSIZE) and go back to
 *    the client as ERROR frames, which ktctl turns into ICMP for the local sender.
 *
 * Timeouts, like a NAT's:
 *  - IDLE_MS = 120 s without a datagram either way ends a flow: RFC 4787 REQ-5, "A NAT UDP mapping
 *    timer MUST NOT expire in less than two minutes", and conntrack's nf_conntrack_udp_timeout_stream
 *    (120 s). Traffic either way refreshes it (REQ-6 asks for outbound refresh; inbound refresh is
 *    allowed, and without it a pure receiver such as a syslog relay's listener would be cut).
 *  - DNS_IDLE_MS = 30 s for flows to port 53: REQ-5a allows shorter timers for a well-known port's
 *    application, and a DNS exchange is one query and its answer (conntrack's unreplied
 *    nf_conntrack_udp_timeout is 30 s too). A client that asks again later opens a new flow.
 *
 * Bounds, so a flood drops datagrams and never grows memory (each drop is counted; a `udp-drops`
 * line at most every DROP_LOG_MS says how many):
 *  - MAX_FLOWS flows per channel, and one channel per ssh connection (server.ts): a new flow beyond
 *    evicts the least recently used one (the client gets CLOSE for it), as conntrack's early drop;
 *  - towards the client: a datagram is dropped while the channel holds more than MAX_QUEUED_BYTES
 *    written but not yet sent (the ssh window is full);
 *  - towards the destination: a datagram is dropped while its socket's send queue holds more than
 *    MAX_SEND_QUEUE_BYTES; while flows wait for their socket (the name lookup, the connect), at most
 *    MAX_PENDING_BYTES of their datagrams wait with them.
 * Worst case held in the process: MAX_QUEUED_BYTES + MAX_PENDING_BYTES + MAX_FLOWS x
 * (MAX_SEND_QUEUE_BYTES + one datagram), 4 + 1 + 1024 x (16 + 64) KiB = 85 MiB, reached only when
 * every flow's socket is refused by the kernel at once (a send queue grows only on EAGAIN);
 * in the kernel, each flow's socket buffers (RECV_BUFFER_BYTES below, capped by rmem_max).
 * Everything is freed when the channel or the ssh connection closes.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  UdpErrorKind,
  UdpFrame,
  UdpFrameDecoder,
  decodeUdpOpen,
  encodeUdpClose,
  encodeUdpData,
  encodeUdpError,
  type UdpDestination,
  type UdpErrorKindCode,
  type UdpFrameType,
} from '../protocol/udp.js';
import type { ShadowLogger } from './log.js';

export const UDP_BOUNDS = {
  IDLE_MS: 120_000,
  DNS_IDLE_MS: 30_000,
  MAX_FLOWS: 1024,
  MAX_QUEUED_BYTES: 4 << 20,
  MAX_SEND_QUEUE_BYTES: 16 << 10,
  /** bytes of datagrams of all flows together that wait for their socket (name lookup, connect) */
  MAX_PENDING_BYTES: 1 << 20,
  /**
   * SO_RCVBUF asked for each flow's socket: a burst of replies (1000 small datagrams) waits in the
   * kernel while the event loop writes the ssh channel. The kernel caps it at net.core.rmem_max
   * (212,992 bytes by default: then the kernel's default stays, and a larger burst is dropped there).
   */
  RECV_BUFFER_BYTES: 2 << 20,
} as const;
const DROP_LOG_MS = 10_000;
const DNS_PORT = 53;

export interface UdpRelayOptions {
  log: ShadowLogger;
  client: number;
  idleMs?: number;
  dnsIdleMs?: number;
  maxFlows?: number;
  maxQueuedBytes?: number;
}

interface RelayFlow {
  id: number;
  dest: UdpDestination;
  socket: DgramSocket | undefined;
  /** datagrams that wait for the name to resolve and the socket to connect */
  pending: Buffer[] | undefined;
  lastActive: number;
  idleMs: number;
  closed: boolean;
}

export interface UdpRelayCounters {
  flowsOpened: number;
  flowsEvicted: number;
  flowsExpired: number;
  datagramsUp: number;
  datagramsDown: number;
  bytesUp: number;
  bytesDown: number;
  /** datagrams to the destination dropped: send queue full, waiting queue full, unknown flow */
  droppedUp: number;
  /** datagrams to the client dropped: the channel's queue was full */
  droppedDown: number;
  errors: number;
}

/** One UDP_SUBSYSTEM channel and its flows. */
export class UdpRelay {
  readonly #channel: Duplex;
  readonly #log: ShadowLogger;
  readonly #clientId: number;
  readonly #idleMs: number;
  readonly #dnsIdleMs: number;
  readonly #maxFlows: number;
  readonly #maxQueued: number;
  readonly #decoder = new UdpFrameDecoder();
  readonly #flows = new Map<number, RelayFlow>();
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;
  #pendingBytes = 0;
  #droppedLogged = 0;
  #dropLogAt = 0;
  readonly counters: UdpRelayCounters = {
    flowsOpened: 0, flowsEvicted: 0, flowsExpired: 0, datagramsUp: 0, datagramsDown: 0, bytesUp: 0, bytesDown: 0, droppedUp: 0, droppedDown: 0, errors: 0,
  };

  constructor(channel: Duplex, options: UdpRelayOptions) {
    this.#channel = channel;
    this.#log = options.log;
    this.#clientId = options.client;
    this.#idleMs = options.idleMs ?? UDP_BOUNDS.IDLE_MS;
    this.#dnsIdleMs = options.dnsIdleMs ?? UDP_BOUNDS.DNS_IDLE_MS;
    this.#maxFlows = options.maxFlows ?? UDP_BOUNDS.MAX_FLOWS;
    this.#maxQueued = options.maxQueuedBytes ?? UDP_BOUNDS.MAX_QUEUED_BYTES;
    // One sweep for every flow: a quarter of the shorter timeout late at most.
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.min(this.#idleMs, this.#dnsIdleMs) / 4));
    this.#sweeper.unref();
    channel.on('data', (chunk: Buffer) => {
      const broken = this.#decoder.push(chunk, this.#onFrame);
      if (broken !== undefined) {
        this.#log('udp-error', { client: this.#clientId, message: `closing the UDP channel: ${broken}` });
        this.close();
        channel.destroy();
      }
    });
    channel.once('close', () => this.close());
    channel.on('error', () => this.close());
    this.#log('udp-open', { client: this.#clientId });
  }

  get flows(): number {
    return this.#flows.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Frees every flow's socket; says what the channel carried. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const flow of this.#flows.values()) this.#free(flow);
    this.#flows.clear();
    this.#log('udp-close', { client: this.#clientId, ...this.counters });
  }

  readonly #onFrame = (type: UdpFrameType, id: number, body: Buffer): void => {
    if (this.#closed) return;
    switch (type) {
      case UdpFrame.OPEN: {
        const dest = decodeUdpOpen(body);
        if (dest === undefined) {
          this.#write(encodeUdpError(id, UdpErrorKind.PROHIBITED));
          return;
        }
        this.#open(id, dest);
        return;
      }
      case UdpFrame.DATA:
        this.#send(id, body);
        return;
      case UdpFrame.CLOSE: {
        const flow = this.#flows.get(id);
        if (flow !== undefined) this.#remove(flow);
        return;
      }
      default:
        return; // ERROR goes the other way only
    }
  };

  #open(id: number, dest: UdpDestination): void {
    const old = this.#flows.get(id);
    if (old !== undefined) this.#remove(old);
    if (this.#flows.size >= this.#maxFlows) this.#evictOldest();
    const flow: RelayFlow = {
      id, dest, socket: undefined, pending: [], lastActive: Date.now(), idleMs: dest.port === DNS_PORT ? this.#dnsIdleMs : this.#idleMs, closed: false,
    };
    this.#flows.set(id, flow);
    this.counters.flowsOpened++;
    if (isIP(dest.host) !== 0) {
      this.#connect(flow, dest.host);
      return;
    }
    // A name: getaddrinfo, so resolv.conf's search list and ndots apply as for any program in the pod.
    lookup(dest.host).then(
      (r) => {
        if (!flow.closed) this.#connect(flow, r.address);
      },
      () => {
        if (flow.closed) return;
        this.#error(flow, UdpErrorKind.HOST_UNREACHABLE);
        this.#remove(flow, true);
      },
    );
  }

  #connect(flow: RelayFlow, address: string): void {
    const socket = createSocket({ type: isIP(address) === 6 ? 'udp6' : 'udp4', recvBufferSize: UDP_BOUNDS.RECV_BUFFER_BYTES });
    flow.socket = socket;
    socket.on('message', (msg: Buffer) => this.#fromDestination(flow, msg));
    socket.on('error', (err: NodeJS.ErrnoException) => this.#socketError(flow, err));
    socket.connect(flow.dest.port, address, () => {
      if (flow.closed) return;
      const pending = flow.pending ?? [];
      flow.pending = undefined;
      for (const p of pending) {
        this.#pendingBytes -= p.length;
        this.#sendNow(socket, p);
      }
    });
  }

  #send(id: number, payload: Buffer): void {
    const flow = this.#flows.get(id);
    if (flow === undefined) {
      this.#dropUp();
      return;
    }
    flow.lastActive = Date.now();
    if (flow.pending !== undefined) {
      if (this.#pendingBytes + payload.length > UDP_BOUNDS.MAX_PENDING_BYTES) this.#dropUp();
      else {
        flow.pending.push(payload);
        this.#pendingBytes += payload.length;
      }
      return;
    }
    this.#sendNow(flow.socket!, payload);
  }

  #sendNow(socket: DgramSocket, payload: Buffer): void {
    // libuv sends at once when it can and queues only on EAGAIN; a queue that grows is a flood.
    if (socket.getSendQueueSize() > UDP_BOUNDS.MAX_SEND_QUEUE_BYTES) {
      this.#dropUp();
      return;
    }
    this.counters.datagramsUp++;
    this.counters.bytesUp += payload.length;
    // Without a callback a send error is an 'error' event (#socketError).
    socket.send(payload);
  }

  #fromDestination(flow: RelayFlow, msg: Buffer): void {
    if (flow.closed) return;
    flow.lastActive = Date.now();
    if (this.#channel.writableLength > this.#maxQueued) {
      this.counters.droppedDown++;
      this.#maybeLogDrops();
      return;
    }
    this.counters.datagramsDown++;
    this.counters.bytesDown += msg.length;
    this.#write(encodeUdpData(flow.id, msg));
  }

  #socketError(flow: RelayFlow, err: NodeJS.ErrnoException): void {
    if (flow.closed) return;
    const kind = errorKind(err.code);
    if (kind === undefined) {
      this.#log('udp-error', { client: this.#clientId, flow: flow.id, host: flow.dest.host, port: flow.dest.port, message: err.message });
      return;
    }
    // EMSGSIZE: Node does not expose the socket's IP_MTU, so the MTU goes as 0 ("unknown", as the
    // routers before RFC 1191 said it); the client fills in what it knows.
    this.#error(flow, kind);
  }

  #error(flow: RelayFlow, kind: UdpErrorKindCode, mtu = 0): void {
    this.counters.errors++;
    this.#write(encodeUdpError(flow.id, kind, mtu));
  }

  #write(frame: Buffer): void {
    if (!this.#closed && this.#channel.writable) this.#channel.write(frame);
  }

  #dropUp(): void {
    this.counters.droppedUp++;
    this.#maybeLogDrops();
  }

  #maybeLogDrops(): void {
    const now = Date.now();
    if (now - this.#dropLogAt < DROP_LOG_MS) return;
    this.#dropLogAt = now;
    const total = this.counters.droppedUp + this.counters.droppedDown;
    this.#log('udp-drops', { client: this.#clientId, droppedUp: this.counters.droppedUp, droppedDown: this.counters.droppedDown, since: total - this.#droppedLogged });
    this.#droppedLogged = total;
  }

  #evictOldest(): void {
    let oldest: RelayFlow | undefined;
    for (const f of this.#flows.values()) if (oldest === undefined || f.lastActive < oldest.lastActive) oldest = f;
    if (oldest === undefined) return;
    this.counters.flowsEvicted++;
    this.#remove(oldest, true);
  }

  #sweep(): void {
    const now = Date.now();
    for (const f of this.#flows.values()) {
      if (now - f.lastActive >= f.idleMs) {
        this.counters.flowsExpired++;
        this.#remove(f, true);
      }
    }
  }

  /** Ends a flow; `tell`: the client did not ask for it, so it hears CLOSE. */
  #remove(flow: RelayFlow, tell = false): void {
    this.#flows.delete(flow.id);
    this.#free(flow);
    if (tell) this.#write(encodeUdpClose(flow.id));
  }

  #free(flow: RelayFlow): void {
    flow.closed = true;
    for (const p of flow.pending ?? []) this.#pendingBytes -= p.length;
    flow.pending = undefined;
    try {
      flow.socket?.close();
    } catch {
      /* closed already */
    }
    flow.socket = undefined;
  }
}

/** What an error on a connected UDP socket reports, as an ERROR kind (undefined: not an ICMP error). */
export function errorKind(code: string | undefined): UdpErrorKindCode | undefined {
  switch (code) {
    case 'ECONNREFUSED':
      return UdpErrorKind.PORT_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
      return UdpErrorKind.HOST_UNREACHABLE;
    case 'ENETUNREACH':
    case 'ENETDOWN':
      return UdpErrorKind.NET_UNREACHABLE;
    case 'EMSGSIZE':
      return UdpErrorKind.FRAG_NEEDED;
    case 'EACCES':
    case 'EPERM':
      return UdpErrorKind.PROHIBITED;
    default:
      return undefined;
  }
}
