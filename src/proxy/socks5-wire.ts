/**
 * SOCKS5 wire format (RFC 1928): the method-selection greeting, the request, and the reply.
 *
 * Why not socksv5's parser (`socksv5/lib/server.parser.js`, 0.0.6): it is usable on Node 20 and can
 * be fed a socket we have `unshift`ed the sniffed byte back into, but
 *  - it formats IPv6 addresses without zero padding (`addr[b].toString(16)` per byte), so
 *    2001:db8::100 comes out as "201:db8:00:00:00:00:00:10": a different, wrong address;
 *  - an unknown CMD or ATYP only emits 'error', so RFC 1928 §6 replies 7 (command not supported)
 *    and 8 (address type not supported) cannot be sent;
 *  - it owns the socket's flow (on('data') + pause/resume) and allocates with the deprecated
 *    `new Buffer()`.
 * The two messages are small and fixed-layout, so they are parsed here as views over the bytes
 * received so far: each parse either needs more bytes, fails with the reply code to send, or
 * returns the message and how many bytes it took.
 */
import { isIPv4, isIPv6 } from 'node:net';

export const SOCKS_VERSION = 0x05;

/** RFC 1928 §3: authentication methods. */
export const Method = {
  noAuth: 0x00,
  noAcceptable: 0xff,
} as const;

/** RFC 1928 §4: request commands. */
export const Command = {
  connect: 0x01,
  bind: 0x02,
  udpAssociate: 0x03,
} as const;

/** RFC 1928 §4/§5: address types. */
export const AddressType = {
  ipv4: 0x01,
  domain: 0x03,
  ipv6: 0x04,
} as const;

/** RFC 1928 §6: reply field values. */
export const Reply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;
export type ReplyCode = (typeof Reply)[keyof typeof Reply];

/** The longest greeting (2 + 255 methods) and request (4 + 1 + 255 + 2) a client may send. */
export const MAX_GREETING = 2 + 255;
export const MAX_REQUEST = 4 + 1 + 255 + 2;

export type Parse<T> =
  | { kind: 'incomplete' }
  | { kind: 'invalid'; reason: string; reply?: ReplyCode }
  | { kind: 'ok'; value: T; length: number };

const INCOMPLETE = { kind: 'incomplete' } as const;

/**
 * RFC 1928 §3:
 * +----+----------+----------+
 * |VER | NMETHODS | METHODS  |
 * | 1  |    1     | 1 to 255 |
 */
export function parseGreeting(buf: Uint8Array): Parse<{ methods: Uint8Array }> {
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== SOCKS_VERSION) return { kind: 'invalid', reason: `not SOCKS5 (version byte ${buf[0]})` };
  if (buf.length < 2) return INCOMPLETE;
  const n = buf[1]!;
  if (n === 0) return { kind: 'invalid', reason: 'empty method list' };
  if (buf.length < 2 + n) return INCOMPLETE;
  return { kind: 'ok', value: { methods: buf.subarray(2, 2 + n) }, length: 2 + n };
}

export interface SocksRequest {
  command: number;
  addressType: number;
  /** Dotted IPv4, RFC 5952 IPv6 text, or the domain name exactly as sent (not resolved). */
  host: string;
  port: number;
}

/**
 * RFC 1928 §4:
 * +----+-----+-------+------+----------+----------+
 * |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
 * | 1  |  1  | X'00' |  1   | Variable |    2     |
 * An unknown CMD is still parsed (the reply is the caller's: 7); an unknown ATYP has no length,
 * so it fails here with reply 8.
 */
export function parseRequest(buf: Uint8Array): Parse<SocksRequest> {
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== SOCKS_VERSION) return { kind: 'invalid', reason: `request version byte ${buf[0]}` };
  if (buf.length < 4) return INCOMPLETE;
  const command = buf[1]!;
  const a = parseAddress(buf);
  if (a.kind !== 'ok') return a;
  return { kind: 'ok', value: { command, ...a.value }, length: a.length };
}

/**
 * ATYP at offset 3, then DST.ADDR and DST.PORT: the same place in a request (§4) and in a UDP
 * datagram's header (§7). `length` is the offset just past DST.PORT.
 */
function parseAddress(buf: Uint8Array): Parse<{ addressType: number; host: string; port: number }> {
  const addressType = buf[3]!;
  let host: string;
  let end: number;
  switch (addressType) {
    case AddressType.ipv4:
      end = 4 + 4;
      if (buf.length < end + 2) return INCOMPLETE;
      host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
      break;
    case AddressType.ipv6:
      end = 4 + 16;
      if (buf.length < end + 2) return INCOMPLETE;
      host = formatIPv6(buf.subarray(4, end));
      break;
    case AddressType.domain: {
      if (buf.length < 5) return INCOMPLETE;
      const n = buf[4]!;
      end = 5 + n;
      if (buf.length < end + 2) return INCOMPLETE;
      if (n === 0) return { kind: 'invalid', reason: 'empty domain name', reply: Reply.hostUnreachable };
      host = Buffer.from(buf.buffer, buf.byteOffset + 5, n).toString('latin1');
      break;
    }
    default:
      return {
        kind: 'invalid',
        reason: `address type ${addressType} not supported`,
        reply: Reply.addressTypeNotSupported,
      };
  }
  const port = (buf[end]! << 8) | buf[end + 1]!;
  return { kind: 'ok', value: { addressType, host, port }, length: end + 2 };
}

/** A UDP datagram through the relay: where it goes (or came from) and its data. */
export interface SocksUdpDatagram {
  frag: number;
  addressType: number;
  host: string;
  port: number;
  data: Buffer;
}

/**
 * RFC 1928 §7, a UDP request header and its data:
 * +----+------+------+----------+----------+----------+
 * |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
 * | 2  |  1   |  1   | Variable |    2     | Variable |
 * Undefined when the header is cut short or names an unknown address type (the datagram is dropped:
 * UDP has nobody to send a reply code to).
 */
export function parseUdpDatagram(buf: Buffer): SocksUdpDatagram | undefined {
  if (buf.length < 4) return undefined;
  const a = parseAddress(buf);
  if (a.kind !== 'ok') return undefined;
  return { frag: buf[2]!, ...a.value, data: buf.subarray(a.length) };
}

/** The header of a datagram from `host`:`port` to the client (§7), FRAG 0; a name goes as a name. */
export function encodeUdpHeader(host: string, port: number): Buffer {
  const { atyp, addr } = encodeAddress(host);
  const out = Buffer.alloc(4 + addr.length + 2);
  out[3] = atyp;
  addr.copy(out, 4);
  out.writeUInt16BE(port, 4 + addr.length);
  return out;
}

/** RFC 5952 text of 16 address bytes (zero runs compressed by the URL parser's rules). */
function formatIPv6(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // new URL() normalises an IPv6 host to the canonical compressed form.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/** RFC 1928 §3: the server's method selection message. */
export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/**
 * RFC 1928 §6:
 * +----+-----+-------+------+----------+----------+
 * |VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
 * | 1  |  1  | X'00' |  1   | Variable |    2     |
 * A full reply every time (also for failures), so clients read a complete message, never a
 * truncated one. BND defaults to 0.0.0.0:0: the bound address is on the far side and means nothing
 * to the client.
 */
export function encodeReply(code: ReplyCode, bindHost = '0.0.0.0', bindPort = 0): Buffer {
  const { atyp, addr } = encodeAddress(bindHost);
  const out = Buffer.alloc(4 + addr.length + 2);
  out[0] = SOCKS_VERSION;
  out[1] = code;
  out[2] = 0x00;
  out[3] = atyp;
  addr.copy(out, 4);
  out.writeUInt16BE(bindPort, 4 + addr.length);
  return out;
}

function encodeAddress(host: string): { atyp: number; addr: Buffer } {
  if (isIPv4(host)) return { atyp: AddressType.ipv4, addr: Buffer.from(host.split('.').map(Number)) };
  if (isIPv6(host)) return { atyp: AddressType.ipv6, addr: ipv6Bytes(host) };
  const name = Buffer.from(host, 'latin1');
  return { atyp: AddressType.domain, addr: Buffer.concat([Buffer.from([name.length]), name]) };
}

function ipv6Bytes(text: string): Buffer {
  const [head = '', tail] = text.split('::');
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  const groups = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
