/**
 * Why a packet was dropped. The engine counts each reason; the wire views return one of these
 * from `checkLen()` instead of throwing, so hostile input costs no exception on the hot path.
 */
export type DropReason =
  | 'truncated' // shorter than a header or than its own length fields say
  | 'malformed' // a field holds an impossible value (bad version, header length, option)
  | 'checksum' // the checksum does not verify
  | 'fragment' // an IPv6 fragment (only IPv4 is reassembled, src/netstack/fragment.ts)
  | 'fragLimit' // an IPv4 fragment beyond the reassembly bounds (the datagram is discarded)
  | 'unsupported' // a protocol or extension header we do not handle
  | 'badFlags' // an illegal TCP flag combination
  | 'noFlow' // a segment for no known flow (answered with RST where RFC 9293 says so)
  | 'outOfWindow' // a sequence or acknowledgment number outside the window
  | 'synFlood' // too many dials pending: the SYN was not answered
  | 'flowLimit' // the flow table is full
  | 'memoryLimit' // the global buffer budget is exhausted
  | 'oooFull' // the out-of-order queue is full
  | 'dnsLimit' // too many DNS queries pending
  | 'probeLimit' // too many reachability probes pending
  | 'icmpRateLimit' // an ICMP error suppressed by the rate limit
  | 'unreachable' // an ICMP echo to an address the probe says is unreachable
  | 'emitFailed' // the device refused a packet we wanted to send
  | 'tooBig' // a reply that would not fit in the link MTU and may not be shortened (we never fragment)
  | 'dnsMalformed' // a resolver's answer whose sections run past its end: SERVFAIL sent instead
  | 'udpDropped' // a datagram the tunnel's UDP session did not take (its queue full, the tunnel down)
  | 'internal'; // a bug: an exception caught at the boundary of input()

export const DROP_REASONS: readonly DropReason[] = [
  'truncated', 'malformed', 'checksum', 'fragment', 'fragLimit', 'unsupported', 'badFlags', 'noFlow', 'outOfWindow',
  'synFlood', 'flowLimit', 'memoryLimit', 'oooFull', 'dnsLimit', 'probeLimit', 'icmpRateLimit',
  'unreachable', 'emitFailed', 'tooBig', 'dnsMalformed', 'udpDropped', 'internal',
];

/** Thrown only by the checked constructors (`newChecked`) and `Repr.parse` helpers for callers that prefer exceptions. */
export class WireError extends Error {
  readonly reason: DropReason;
  constructor(reason: DropReason, message?: string) {
    super(message ?? reason);
    this.reason = reason;
    this.name = 'WireError';
  }
}
