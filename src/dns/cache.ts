/**
 * A small LRU cache of whole answers keyed by (qname lowercased, qtype, qclass). An entry lives for
 * the TTL it was stored with; an answer served from it has every record's TTL decreased by the
 * time it spent in the cache (RFC 1035 §7.4, RFC 2181 §8) and the asker's id and question bytes
 * (case as asked, RFC 4343) put back in.
 */
import { ownerRanges, readQuestion, ttlOffsets } from './message.js';

interface Entry {
  answer: Buffer;
  storedAt: number;
  expiresAt: number;
  ttlOffsets: number[];
  owners: Array<[number, number]>;
}

export function cacheKey(name: string, type: number, klass: number): string {
  return `${name.toLowerCase()}|${type}|${klass}`;
}

/**
 * `answer` (made for another asker of the same name, type and class) made this asker's: its id,
 * its question bytes (the name's case as it wrote it, RFC 4343) and that case for owner names
 * written out in full. Works in place and returns `answer`. `owners` as from `ownerRanges`.
 */
export function personalize(answer: Buffer, query: Buffer, owners: Array<[number, number]> | undefined = ownerRanges(answer)): Buffer {
  if (answer.length < 2 || query.length < 2) return answer;
  query.copy(answer, 0, 0, 2);
  // Same name up to case, hence the same length.
  const q = readQuestion(query);
  const a = readQuestion(answer);
  if (q && a && q.end - q.start === a.end - a.start) {
    query.copy(answer, a.start, q.start, q.end);
    const qname = query.subarray(q.start, q.end - 4);
    const lower = qname.toString('latin1').toLowerCase();
    for (const [from, to] of owners ?? []) {
      if (to - from === qname.length && answer.subarray(from, to).toString('latin1').toLowerCase() === lower) qname.copy(answer, from);
    }
  }
  return answer;
}

export class AnswerCache {
  readonly #max: number;
  readonly #entries = new Map<string, Entry>();

  constructor(maxEntries: number) {
    this.#max = Math.max(0, maxEntries);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Stores `answer` for `ttlSeconds` (nothing when 0 or less, or when the answer is malformed). */
  set(key: string, answer: Buffer, ttlSeconds: number, now: number): void {
    if (this.#max === 0 || !(ttlSeconds > 0)) return;
    const offs = ttlOffsets(answer);
    const owners = ownerRanges(answer);
    if (offs === undefined || owners === undefined) return;
    this.#entries.delete(key);
    this.#entries.set(key, { answer: Buffer.from(answer), storedAt: now, expiresAt: now + ttlSeconds * 1000, ttlOffsets: offs, owners });
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
  }

  /** The answer to `query` when a live entry holds it, ready to send; undefined otherwise. */
  get(key: string, query: Buffer, now: number): Buffer | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (now >= e.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    // Most recently used goes last.
    this.#entries.delete(key);
    this.#entries.set(key, e);
    const out = Buffer.from(e.answer);
    const elapsed = Math.floor((now - e.storedAt) / 1000);
    for (const o of e.ttlOffsets) out.writeUInt32BE(Math.max(0, out.readUInt32BE(o) - elapsed), o);
    return personalize(out, query, e.owners);
  }

  clear(): void {
    this.#entries.clear();
  }
}
