/**
 * The framing of UDP_SUBSYSTEM (`ktctl-udp@ktctl.dev`, exported from ./index.ts): every UDP flow of
 * one ssh connection travels over one session channel, as frames. It lives in src/protocol because
 * both ends read it: the shadow (src/shadow/udp.ts) and the client (src/ssh/udp.ts). It is a leaf: it
 * imports nothing.
 *
 * A frame, in both directions:
 *
 *     +---------+------+---------+-------------------------+
 *     | length  | type | flow id | body                    |
 *     | u32 BE  |  u8  | u32 BE  | length - 5 bytes        |
 *     +---------+------+---------+-------------------------+
 *
 * `length` counts type, flow id and body (at least 5, at most MAX_FRAME_LENGTH); a frame longer
 * than that, or of an unknown type, is a protocol error and the reader closes the channel. A u32
 * because a DATA frame carries up to 65,507 bytes (the largest UDP payload over IPv4, RFC 768 with
 * RFC 791's 65,535-byte packets) plus its header, which a u16 cannot count.
 *
 * Types:
 * - OPEN (client -> shadow), body `atyp u8, address, port u16` with SOCKS5's address types
 *   (RFC 1928 §5): 1 = 4-byte IPv4, 4 = 16-byte IPv6, 3 = a length byte and a domain name that the
 *   shadow resolves (getaddrinfo, so the pod's search list applies). Names the flow's destination,
 *   once. The destination is sent once per flow rather than with every datagram: a datagram costs
 *   9 bytes of framing instead of up to 269, and the shadow keeps one connected socket per flow
 *   anyway (below), so it would only compare the address again. A client that reconnects (a new
 *   channel) sends OPEN again before the flow's next DATA.
 * - DATA (both ways), body = the datagram's payload, 0 to UDP_MAX_PAYLOAD bytes. One frame is one
 *   datagram: boundaries are kept, and frames of a flow arrive in the order they were sent.
 * - ERROR (shadow -> client), body `kind u8, mtu u16`: the far side reported an ICMP error for the
 *   flow (UdpErrorKind; `mtu` is the next-hop MTU for FRAG_NEEDED, else 0), or the flow could not be
 *   made (the name does not resolve, the shadow's flow limit).
 * - CLOSE (both ways), empty body: the flow is gone (the shadow's idle timeout, or the client let
 *   go of it). A DATA for a flow id the shadow does not know is dropped; the client reopens with OPEN.
 *
 * Flow ids are the client's, unique among its open flows on one channel. Replies carry only the flow
 * id: the shadow's socket per flow is connected (connect(2)) to the destination, so the kernel hands
 * it only datagrams from exactly that address and port, and reports ICMP errors for it
 * (ECONNREFUSED, EHOSTUNREACH, ...). In RFC 4787's terms the shadow is an "address and port-dependent
 * mapping" with "address and port-dependent filtering" (§4.1, §5), what Linux conntrack does for a
 * pod's masqueraded UDP: a server that answers from another port (TFTP, some STUN) is not reached,
 * through ktctl or through a node's SNAT alike. The source of a reply is thus always the flow's
 * destination and is not repeated.
 */

/** Frame types. */
export const UdpFrame = {
  OPEN: 1,
  DATA: 2,
  ERROR: 3,
  CLOSE: 4,
} as const;
export type UdpFrameType = (typeof UdpFrame)[keyof typeof UdpFrame];

/** SOCKS5's address types (RFC 1928 §5), used by OPEN. */
export const UdpAddressType = { IPV4: 1, DOMAIN: 3, IPV6: 4 } as const;

/** What an ERROR frame reports. */
export const UdpErrorKind = {
  /** ICMP port unreachable (ECONNREFUSED on the connected socket) */
  PORT_UNREACHABLE: 1,
  /** ICMP host unreachable (EHOSTUNREACH), or the name did not resolve */
  HOST_UNREACHABLE: 2,
  /** ICMP net unreachable (ENETUNREACH) */
  NET_UNREACHABLE: 3,
  /** ICMP fragmentation needed / packet too big (EMSGSIZE); `mtu` says the next-hop MTU */
  FRAG_NEEDED: 4,
  /** the shadow refused the flow (its flow limit, or a destination it does not serve) */
  PROHIBITED: 5,
} as const;
export type UdpErrorKindCode = (typeof UdpErrorKind)[keyof typeof UdpErrorKind];

/** The largest UDP payload over IPv4: 65,535 - 20 (IP) - 8 (UDP). */
export const UDP_MAX_PAYLOAD = 65_507;
/** Bytes before the body: length, type, flow id. */
export const UDP_FRAME_HEADER = 9;
/** The largest `length` field: type + flow id + the largest body (a DATA frame). */
export const MAX_FRAME_LENGTH = 5 + UDP_MAX_PAYLOAD;

export interface UdpDestination {
  /** an IPv4 or IPv6 address in text, or a domain name */
  host: string;
  port: number;
}

function header(type: UdpFrameType, flow: number, bodyLength: number): Buffer {
  const frame = Buffer.allocUnsafe(UDP_FRAME_HEADER + bodyLength);
  frame.writeUInt32BE(5 + bodyLength, 0);
  frame[4] = type;
  frame.writeUInt32BE(flow >>> 0, 5);
  return frame;
}

/** A DATA frame carrying `payload` (at most UDP_MAX_PAYLOAD bytes: RangeError otherwise). */
export function encodeUdpData(flow: number, payload: Uint8Array): Buffer {
  if (payload.length > UDP_MAX_PAYLOAD) throw new RangeError(`a UDP payload of ${payload.length} bytes is over ${UDP_MAX_PAYLOAD}`);
  const frame = header(UdpFrame.DATA, flow, payload.length);
  frame.set(payload, UDP_FRAME_HEADER);
  return frame;
}

/**
 * An OPEN frame for host:port. `host` is IPv4 dotted text, IPv6 text, or a domain name of 1 to 255
 * bytes (RangeError otherwise, or for a port outside 1..65535).
 */
export function encodeUdpOpen(flow: number, dest: UdpDestination): Buffer {
  if (!Number.isInteger(dest.port) || dest.port < 1 || dest.port > 65535) throw new RangeError(`UDP port ${dest.port} is not in 1..65535`);
  const v4 = ipv4Bytes(dest.host);
  const v6 = v4 === undefined ? ipv6Bytes(dest.host) : undefined;
  let addr: Buffer;
  let atyp: number;
  if (v4 !== undefined) {
    atyp = UdpAddressType.IPV4;
    addr = v4;
  } else if (v6 !== undefined) {
    atyp = UdpAddressType.IPV6;
    addr = v6;
  } else {
    const name = Buffer.from(dest.host, 'latin1');
    if (name.length < 1 || name.length > 255) throw new RangeError(`"${dest.host}" is not a host name of 1 to 255 bytes`);
    atyp = UdpAddressType.DOMAIN;
    addr = Buffer.concat([Buffer.from([name.length]), name]);
  }
  const frame = header(UdpFrame.OPEN, flow, 1 + addr.length + 2);
  frame[UDP_FRAME_HEADER] = atyp;
  addr.copy(frame, UDP_FRAME_HEADER + 1);
  frame.writeUInt16BE(dest.port, UDP_FRAME_HEADER + 1 + addr.length);
  return frame;
}

export function encodeUdpError(flow: number, kind: UdpErrorKindCode, mtu = 0): Buffer {
  const frame = header(UdpFrame.ERROR, flow, 3);
  frame[UDP_FRAME_HEADER] = kind;
  frame.writeUInt16BE(mtu & 0xffff, UDP_FRAME_HEADER + 1);
  return frame;
}

export function encodeUdpClose(flow: number): Buffer {
  return header(UdpFrame.CLOSE, flow, 0);
}

/** The destination of an OPEN body, or undefined when it is malformed. */
export function decodeUdpOpen(body: Buffer): UdpDestination | undefined {
  if (body.length < 1) return undefined;
  const atyp = body[0]!;
  let end: number;
  let host: string;
  switch (atyp) {
    case UdpAddressType.IPV4:
      end = 5;
      if (body.length !== end + 2) return undefined;
      host = `${body[1]}.${body[2]}.${body[3]}.${body[4]}`;
      break;
    case UdpAddressType.IPV6: {
      end = 17;
      if (body.length !== end + 2) return undefined;
      const groups: string[] = [];
      for (let i = 1; i < 17; i += 2) groups.push(body.readUInt16BE(i).toString(16));
      host = new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
      break;
    }
    case UdpAddressType.DOMAIN: {
      if (body.length < 2) return undefined;
      const n = body[1]!;
      end = 2 + n;
      if (n === 0 || body.length !== end + 2) return undefined;
      host = body.toString('latin1', 2, end);
      break;
    }
    default:
      return undefined;
  }
  const port = body.readUInt16BE(end);
  return port === 0 ? undefined : { host, port };
}

/** The kind and MTU of an ERROR body, or undefined when it is malformed. */
export function decodeUdpError(body: Buffer): { kind: UdpErrorKindCode; mtu: number } | undefined {
  if (body.length !== 3) return undefined;
  const kind = body[0]!;
  if (kind < UdpErrorKind.PORT_UNREACHABLE || kind > UdpErrorKind.PROHIBITED) return undefined;
  return { kind: kind as UdpErrorKindCode, mtu: body.readUInt16BE(1) };
}

/** Called once per complete frame; `body` is a view that is valid during the call only. */
export type UdpFrameHandler = (type: UdpFrameType, flow: number, body: Buffer) => void;

/**
 * Cuts the channel's byte stream back into frames, however it was chunked. Holds at most one
 * unfinished frame (MAX_FRAME_LENGTH + 4 bytes). `push` returns a sentence when the stream breaks
 * the framing (a length out of bounds, an unknown type): the reader must then close the channel,
 * since nothing after that point can be trusted to start a frame.
 */
export class UdpFrameDecoder {
  #pending: Buffer | undefined;
  #broken: string | undefined;

  push(chunk: Buffer, onFrame: UdpFrameHandler): string | undefined {
    if (this.#broken !== undefined) return this.#broken;
    let buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = undefined;
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (len < 5 || len > MAX_FRAME_LENGTH) return (this.#broken = `a UDP frame of length ${len} (allowed 5..${MAX_FRAME_LENGTH})`);
      if (buf.length - off < 4 + len) break;
      const type = buf[off + 4]!;
      if (type < UdpFrame.OPEN || type > UdpFrame.CLOSE) return (this.#broken = `a UDP frame of unknown type ${type}`);
      onFrame(type as UdpFrameType, buf.readUInt32BE(off + 5), buf.subarray(off + UDP_FRAME_HEADER, off + 4 + len));
      off += 4 + len;
    }
    if (off < buf.length) {
      // Copied only when a frame is split across chunks: a whole chunk of whole frames costs no copy.
      this.#pending = Buffer.from(buf.subarray(off));
    }
    return undefined;
  }

  /** Bytes of an unfinished frame held back. */
  get pendingBytes(): number {
    return this.#pending?.length ?? 0;
  }
}

function ipv4Bytes(text: string): Buffer | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return Buffer.from(parts);
}

/** 16 bytes of an IPv6 address in text (with an optional embedded IPv4 tail), or undefined. */
function ipv6Bytes(text: string): Buffer | undefined {
  if (!text.includes(':') || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  let host: string;
  try {
    host = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const [head = '', tail] = host.split('::');
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  if (h.length + t.length > 8 || (tail === undefined && h.length !== 8)) return undefined;
  const groups = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
