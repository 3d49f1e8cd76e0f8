import type { ReconnectingTunnel } from '../ssh/reconnect.js';
import type { Undo } from './lifecycle.js';

/**
 * Where `connect` gets its streams from: an ssh connection that survives drops, plus what the
 * front ends need to know about the far side. Made by `transport-via.ts` (any SSH server) or
 * `transport-kube.ts` (a shadow pod reached through the API server). Every change a transport makes
 * is registered on the `Undo` it was given before it is made.
 */
export interface Transport {
  /** The Dialer (and remote forwards) the front ends use. */
  readonly tunnel: ReconnectingTunnel;
  /** What the tunnel leads to, for messages ("root@198.18.0.9:22", "shadow pod default/ktctl-ab12"). */
  readonly label: string;
  /** Settles when the transport cannot go on (host key changed, shadow cannot be recreated). */
  readonly fatal: Promise<Error>;
  /** The far side as a network, for the TUN mode: what to route there and what never to. */
  network(): Promise<TransportNetwork>;
}

export interface TransportNetwork {
  /** CIDRs reachable through the tunnel (Kubernetes: pod and service ranges discovered; --via: none). */
  routes: string[];
  /** Addresses that must keep their normal route (the API server, the ssh server itself). */
  avoid: string[];
  /** Cluster DNS naming, when there is a cluster. */
  cluster?: { domain: string; namespace: string; dnsServiceIp?: string };
}

/** What every transport builder gets. */
export interface TransportContext {
  undo: Undo;
  log: (line: string) => void;
  debug: (line: string) => void;
  /** Aborted when the user asked to stop (SIGINT/SIGTERM) while the transport is being built. */
  signal: AbortSignal;
}
