/**
 * DNS messages in wire format (RFC 1035 §4.1): the header, the question, the walk over the
 * resource records, and what a server sends back over UDP when the answer does not fit.
 *
 * It lives in src/protocol, beside the DNS framing, because two layers that may not import each
 * other both answer DNS over UDP: the resolver (src/dns, its DnsServer) and the packet engine
 * (src/netstack, which answers queries sent to the TUN's DNS address). Both must truncate the same
 * way (RFC 2181 §9), so there is one `truncateTo` and one `udpPayloadLimit`, here. The module is a
 * leaf: it imports nothing.
 *
 * Nothing here throws on hostile bytes: the walkers return `undefined` when a length or a pointer
 * leads outside the message, and callers answer FORMERR/SERVFAIL or drop.
 */

export const HEADER_LENGTH = 12;

/** Header flag bits (RFC 1035 §4.1.1), as in the 16-bit word at offset 2. */
export const Flag = {
  QR: 0x8000,
  AA: 0x0400,
  TC: 0x0200,
  RD: 0x0100,
  RA: 0x0080,
} as const;

export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export const Type = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, AAAA: 28, OPT: 41 } as const;

/** RFC 1035 §4.2.1: "Messages carried by UDP are restricted to 512 bytes (not counting the IP or UDP headers)". */
export const UDP_CLASSIC_LIMIT = 512;

const field = {
  id: 0,
  flags: 2,
  qdcount: 4,
  ancount: 6,
  nscount: 8,
  arcount: 10,
} as const;

export function readId(msg: Buffer): number {
  return msg.readUInt16BE(field.id);
}

export function flags(msg: Buffer): number {
  return msg.readUInt16BE(field.flags);
}

export function count(msg: Buffer, section: 'qdcount' | 'ancount' | 'nscount' | 'arcount'): number {
  return msg.readUInt16BE(field[section]);
}

/**
 * Offset just past the (possibly compressed, RFC 1035 §4.1.4) name at `off`, or undefined when
 * the name runs past the end of the message or uses a label type other than 00/11.
 */
export function skipName(msg: Buffer, off: number): number | undefined {
  for (let labels = 0; labels < 128; labels++) {
    if (off >= msg.length) return undefined;
    const len = msg[off]!;
    if (len === 0) return off + 1;
    const kind = len & 0xc0;
    if (kind === 0xc0) return off + 2 <= msg.length ? off + 2 : undefined;
    if (kind !== 0) return undefined;
    off += 1 + len;
  }
  return undefined;
}

export interface Question {
  /** the name as asked, without the trailing dot, case kept ("" for the root) */
  name: string;
  type: number;
  class: number;
  /** byte range of the question (name, type, class) in the message */
  start: number;
  end: number;
}

/**
 * The first question of a query, uncompressed as a query's question always is (a compression
 * pointer there is refused). Labels may hold any byte; dots and backslashes inside a label are
 * escaped as in RFC 4343 §2.1 so that `name` splits back into the same labels.
 */
export function readQuestion(msg: Buffer): Question | undefined {
  if (msg.length < HEADER_LENGTH || count(msg, 'qdcount') < 1) return undefined;
  let off = HEADER_LENGTH;
  const labels: string[] = [];
  let total = 0;
  for (;;) {
    if (off >= msg.length) return undefined;
    const len = msg[off]!;
    if (len === 0) {
      off += 1;
      break;
    }
    if ((len & 0xc0) !== 0 || off + 1 + len > msg.length) return undefined;
    total += len + 1;
    if (total > 254) return undefined; // RFC 1035 §2.3.4: 255 octets with the root label
    labels.push(escapeLabel(msg.subarray(off + 1, off + 1 + len)));
    off += 1 + len;
  }
  if (off + 4 > msg.length) return undefined;
  return { name: labels.join('.'), type: msg.readUInt16BE(off), class: msg.readUInt16BE(off + 2), start: HEADER_LENGTH, end: off + 4 };
}

function escapeLabel(bytes: Buffer): string {
  let s = '';
  for (const b of bytes) {
    if (b === 0x2e || b === 0x5c) s += `\\${String.fromCharCode(b)}`;
    else if (b < 0x21 || b > 0x7e) s += `\\${b.toString().padStart(3, '0')}`;
    else s += String.fromCharCode(b);
  }
  return s;
}

/** Where one resource record sits: its owner name [owner, fields), then type, class, TTL, rdata. */
export interface RecordSpan {
  owner: number;
  /** the byte after the owner name: TYPE is here, the TTL at +4, RDLENGTH at +8 */
  fields: number;
  type: number;
}

/**
 * The records of every section after the questions, or undefined if the message is malformed:
 * shorter than a header, or a question or record (name, fixed fields, RDATA) that runs past the
 * end, however large the header's counts are. The walk is bounded by the message's length: every
 * step consumes at least one byte or stops.
 */
export function recordSpans(msg: Buffer): RecordSpan[] | undefined {
  if (msg.length < HEADER_LENGTH) return undefined;
  let off = HEADER_LENGTH;
  for (let i = 0; i < count(msg, 'qdcount'); i++) {
    const n = skipName(msg, off);
    if (n === undefined || n + 4 > msg.length) return undefined;
    off = n + 4;
  }
  const rrs = count(msg, 'ancount') + count(msg, 'nscount') + count(msg, 'arcount');
  const out: RecordSpan[] = [];
  for (let i = 0; i < rrs; i++) {
    const n = skipName(msg, off);
    if (n === undefined || n + 10 > msg.length) return undefined;
    const end = n + 10 + msg.readUInt16BE(n + 8);
    if (end > msg.length) return undefined;
    out.push({ owner: off, fields: n, type: msg.readUInt16BE(n) });
    off = end;
  }
  return out;
}

/** True when every question and record the header counts is inside the message (see `recordSpans`). */
export function isWellFormed(msg: Buffer): boolean {
  return recordSpans(msg) !== undefined;
}

/**
 * The UDP payload size the client can take (RFC 6891 §6.2.3: its OPT record's class field), at
 * least 512 and at most `cap`; 512 when the query has no OPT record (RFC 1035 §4.2.1). RFC 6891
 * §6.2.5: "Values lower than 512 MUST be treated as equal to 512."
 */
export function udpPayloadLimit(query: Buffer, cap = 4096): number {
  const q = readQuestion(query);
  if (q === undefined) return UDP_CLASSIC_LIMIT;
  let off = q.end;
  const rest = count(query, 'ancount') + count(query, 'nscount') + count(query, 'arcount');
  for (let i = 0; i < rest; i++) {
    const n = skipName(query, off);
    if (n === undefined || n + 10 > query.length) return UDP_CLASSIC_LIMIT;
    if (query.readUInt16BE(n) === Type.OPT) return Math.min(cap, Math.max(UDP_CLASSIC_LIMIT, query.readUInt16BE(n + 2)));
    off = n + 10 + query.readUInt16BE(n + 8);
  }
  return UDP_CLASSIC_LIMIT;
}

/**
 * A response carrying only a header and, when it can be read, the query's question:
 * used for FORMERR, SERVFAIL, NOTIMP, REFUSED, and for TC answers that do not fit.
 * A query too short to hold an id gets id 0.
 */
export function errorResponse(query: Buffer, code: number, extraFlags = 0): Buffer {
  const q = readQuestion(query);
  const qlen = q ? q.end - q.start : 0;
  const out = Buffer.alloc(HEADER_LENGTH + qlen);
  out.writeUInt16BE(query.length >= 2 ? readId(query) : 0, 0);
  const qflags = query.length >= 4 ? flags(query) : 0;
  // Copy opcode and RD from the query (RFC 1035 §4.1.1); we are recursion-available.
  out.writeUInt16BE(Flag.QR | (qflags & 0x7800) | (qflags & Flag.RD) | Flag.RA | extraFlags | (code & 0xf), 2);
  if (q) {
    out.writeUInt16BE(1, 4);
    query.copy(out, HEADER_LENGTH, q.start, q.end);
  }
  return out;
}

/**
 * `answer` itself when it is at most `limit` bytes long, else a copy cut to header + question
 * with TC set and empty answer, authority and additional sections. RFC 2181 §9: "Where TC is set,
 * the partial RRSet that would not completely fit may be left out" and the client retries over
 * TCP (RFC 1035 §4.2.1, RFC 7766 §5), so no record is ever cut in the middle. `answer` must be well
 * formed (`isWellFormed`); the result is at most 12 + 259 bytes whatever the limit.
 */
export function truncateTo(answer: Buffer, limit: number): Buffer {
  if (answer.length <= limit) return answer;
  const q = readQuestion(answer);
  const qlen = q ? q.end - q.start : 0;
  const out = Buffer.alloc(HEADER_LENGTH + qlen);
  answer.copy(out, 0, 0, 4);
  out.writeUInt16BE(flags(answer) | Flag.TC, 2);
  if (q) {
    out.writeUInt16BE(1, 4);
    answer.copy(out, HEADER_LENGTH, q.start, q.end);
  }
  return out;
}
