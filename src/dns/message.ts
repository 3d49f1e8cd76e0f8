/**
 * The resolver's views over DNS messages in wire format (RFC 1035 §4.1), enough for a forwarder:
 * the header fields, the one question, the TTL fields of every resource record. The parts the
 * packet engine needs too (header, question, record walk, UDP truncation) live in
 * src/protocol/dns.ts and are re-exported here. Nothing here throws on hostile bytes: the walkers
 * return `undefined` when a length or a pointer leads outside the message, and callers answer
 * FORMERR or drop.
 */
import { flags, Flag, recordSpans, Type } from '../protocol/dns.js';

export {
  count, errorResponse, Flag, flags, HEADER_LENGTH, isWellFormed, Rcode, readId, readQuestion, recordSpans, skipName,
  truncateTo, Type, udpPayloadLimit, type Question, type RecordSpan,
} from '../protocol/dns.js';

export const OPCODE_QUERY = 0;

export function opcode(msg: Buffer): number {
  return (flags(msg) >> 11) & 0xf;
}

export function rcode(msg: Buffer): number {
  return flags(msg) & 0xf;
}

export function isTruncated(msg: Buffer): boolean {
  return (flags(msg) & Flag.TC) !== 0;
}

/** A copy of `msg` with its id replaced. */
export function withId(msg: Buffer, id: number): Buffer {
  const out = Buffer.from(msg);
  out.writeUInt16BE(id, 0);
  return out;
}

/** Splits a name made by `readQuestion` into its labels (escapes kept). */
export function splitLabels(name: string): string[] {
  if (name === '') return [];
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    if (c === '\\' && i + 1 < name.length) {
      cur += c + name[i + 1]!;
      i++;
    } else if (c === '.') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** Offsets of the TTL fields of every record (all sections) but OPT, or undefined if malformed. */
export function ttlOffsets(msg: Buffer): number[] | undefined {
  // RFC 6891 §6.1.3: the TTL field of OPT holds the extended rcode and flags, not a TTL.
  return recordSpans(msg)?.filter((r) => r.type !== Type.OPT).map((r) => r.fields + 4);
}

/** Byte ranges of the owner names of every record, as they are in the message (maybe pointers). */
export function ownerRanges(msg: Buffer): Array<[number, number]> | undefined {
  return recordSpans(msg)?.map((r): [number, number] => [r.owner, r.fields]);
}

/** Smallest TTL of the message's records (OPT excluded); undefined when it has none or is malformed. */
export function minTtl(msg: Buffer): number | undefined {
  const offs = ttlOffsets(msg);
  if (offs === undefined || offs.length === 0) return undefined;
  let min = Infinity;
  for (const o of offs) min = Math.min(min, msg.readUInt32BE(o));
  return min;
}
