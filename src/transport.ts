/**
 * The contract between a command's front ends (SOCKS/HTTP proxy, TUN engine, `forward`, the remote
 * forwards of exchange/mesh/preview) and where their streams come from: a `Transport`. Two exist,
 * `kubeTransport` (src/kube/transport.ts: a shadow pod reached through the API server) and
 * `viaTransport` (src/ssh/via.ts: any SSH server). It sits beside `Dialer` (src/dialer.ts), which
 * it extends with what a command needs beyond dialing: remote forwards, the far side as a network,
 * a fatal error. Every change a transport makes is registered on the `Undo` it was given before it
 * is made.
 */
import type { Duplex } from 'node:stream';
import type { Dialer, UdpSession } from './dialer.js';
import type { Undo } from './undo.js';

/** Who connected to a remote forward (ssh's `forwarded-tcpip` details). */
export interface RemoteConnection {
  srcIP: string;
  srcPort: number;
  destIP: string;
  destPort: number;
}

/** A Dialer that also resolves on the far side and serves remote forwards (src/ssh/reconnect.ts's ReconnectingTunnel). */
export interface Tunnel extends Dialer {
  dnsQuery(message: Buffer, options?: { signal?: AbortSignal }): Promise<Buffer>;
  /** The far side listens on bindAddr:bindPort; each connection made there comes to `handler`. */
  forwardIn(bindAddr: string, bindPort: number, handler: (stream: Duplex, info: RemoteConnection) => void): Promise<{ port: number; cancel(): Promise<void> }>;
  /** How often the tunnel came back after a drop (absent: it never reconnects). */
  readonly reconnects?: number;
  /** Streams carried over a reconnect and streams lost (absent: no resume layer, src/protocol/resume.ts). */
  readonly resumeCounts?: { resumed: number; lost: number };
  /** One round trip to the far side, in ms (absent: it cannot tell). */
  ping?(timeoutMs?: number): Promise<number>;
  /** UDP to the far side (Dialer's `udp`), undefined when it carries none (an OpenSSH server). */
  udp?(): Promise<UdpSession | undefined>;
}

export interface Transport {
  /** The Dialer (and remote forwards) the front ends use. */
  readonly tunnel: Tunnel;
  /** What the tunnel leads to, for messages ("root@198.18.0.9:22", "shadow pod default/ktctl-ab12"). */
  readonly label: string;
  /** Settles when the transport cannot go on (host key changed, shadow cannot be recreated). */
  readonly fatal: Promise<Error>;
  /** The far side as a network, for the TUN mode: what to route there and what never to. */
  network(): Promise<TransportNetwork>;
  /**
   * The cluster's Services, kept current (Kubernetes only; `--dnsMode hosts`): `onChange` gets the
   * whole list after the first listing (before the promise resolves) and again after each change,
   * until `stop()`.
   */
  services?(onChange: (services: ClusterService[]) => void): Promise<ServiceWatch>;
}

/** A Service as `--dnsMode hosts` needs it. */
export interface ClusterService {
  namespace: string;
  name: string;
  /** its cluster IPs (none for headless and ExternalName services) */
  ips: string[];
}

export interface ServiceWatch {
  /** `cluster`: every namespace's Services; `namespace`: the connected one's (listing all was not allowed) */
  readonly scope: 'cluster' | 'namespace';
  stop(): Promise<void>;
}

export interface TransportNetwork {
  /** CIDRs reachable through the tunnel (Kubernetes: pod and service ranges discovered; --via: none). */
  routes: string[];
  /**
   * Hosts ktctl itself talks to (the API server, the ssh server), by name or address: every address
   * they resolve to at the start keeps its normal route, and their names are never asked of the
   * cluster's DNS (src/connect/tun/own-hosts.ts).
   */
  avoid: OwnHost[];
  /** Cluster DNS naming, when there is a cluster. */
  cluster?: { domain: string; namespace: string; dnsServiceIp?: string };
}

/** A host the transport itself connects to. */
export interface OwnHost {
  /** as the kubeconfig or `--via` names it: a host name or an IP address */
  host: string;
  /** what it is, for messages ("the API server", "the ssh server") */
  what: string;
}

/** What every transport builder gets. */
export interface TransportContext {
  undo: Undo;
  log: (line: string) => void;
  debug: (line: string) => void;
  /** Aborted when the user asked to stop (SIGINT/SIGTERM) while the transport is being built. */
  signal: AbortSignal;
}

/** How a command builds its transport once the flags are checked. */
export type TransportBuilder = (ctx: TransportContext) => Promise<Transport>;
