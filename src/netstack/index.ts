/** The packet engine's public face. */
export { NetStack, DEFAULT_LIMITS, netstackBounds, type NetStackOptions, type NetStackLimits, type NetStackStats, type NetStackBounds, type NetStackTimers } from './stack.js';
export { TcpSocket, DEFAULT_TCP_CONFIG, type TcpState, type TcpTimer, type TcpConfig } from './tcp/socket.js';
export { VIRTIO_NET_HDR_LEN } from './wire/virtio.js';
export type { DropReason } from './wire/error.js';
export { dialProbe, type DialProbeOptions } from './probe.js';
export { PacketBuilder, type TxOffload } from './emit.js';
