import type { Duplex } from 'node:stream';
import { DnsQueryError } from '../errors.js';
import { DnsFrameDecoder, frameDnsMessage } from '../protocol/index.js';

interface Pending {
  originalId: number;
  resolve(answer: Buffer): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * Many DNS queries over one length-prefixed stream (the DNS_SUBSYSTEM channel, or DNS over TCP,
 * RFC 7766 §6.2.1.1 pipelining): each query gets an id unique on this stream, the answer is
 * matched by it and handed back with the caller's id restored. A query that gets no answer in
 * time fails alone; when the stream ends, every outstanding query fails.
 */
export class DnsMultiplexer {
  readonly #stream: Duplex;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #decoder = new DnsFrameDecoder();
  #nextId = Math.floor(Math.random() * 0x10000);
  #closed = false;

  constructor(stream: Duplex, timeoutMs: number) {
    this.#stream = stream;
    this.#timeoutMs = timeoutMs;
    stream.on('data', (chunk: Buffer) => {
      for (const answer of this.#decoder.push(chunk)) this.#onAnswer(answer);
    });
    const down = (): void => this.#shutdown(new DnsQueryError('tunnel', 'the DNS channel through the ssh tunnel closed before the answer came'));
    stream.on('end', down);
    stream.on('close', down);
    stream.on('error', down);
  }

  /** False once the stream has ended; a new multiplexer is needed then. */
  get open(): boolean {
    return !this.#closed;
  }

  /** Outstanding queries. */
  get inFlight(): number {
    return this.#pending.size;
  }

  query(message: Buffer, signal?: AbortSignal): Promise<Buffer> {
    if (this.#closed) return Promise.reject(new DnsQueryError('tunnel', 'the DNS channel through the ssh tunnel is closed'));
    if (message.length < 12) return Promise.reject(new RangeError('a DNS message is at least 12 bytes long'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#allocateId();
    if (id === undefined) return Promise.reject(new DnsQueryError('timeout', 'too many DNS queries in flight through the ssh tunnel'));
    return new Promise<Buffer>((resolve, reject) => {
      const entry: Pending = {
        originalId: message.readUInt16BE(0),
        resolve,
        reject,
        signal,
        onAbort: undefined,
        timer: setTimeout(() => {
          this.#settle(id)?.reject(new DnsQueryError('timeout', `no DNS answer through the ssh tunnel within ${this.#timeoutMs / 1000} s`));
        }, this.#timeoutMs),
      };
      if (signal) {
        entry.onAbort = () => this.#settle(id)?.reject(signal.reason);
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#pending.set(id, entry);
      const copy = Buffer.from(message);
      copy.writeUInt16BE(id, 0);
      this.#stream.write(frameDnsMessage(copy));
    });
  }

  /** Ends the stream; outstanding queries fail. */
  close(): void {
    this.#shutdown(new DnsQueryError('tunnel', 'the DNS channel through the ssh tunnel was closed'));
    this.#stream.end();
  }

  #allocateId(): number | undefined {
    // Sequential from a random start: an id comes back into use only after 65536 queries, so a
    // late answer to a timed-out query cannot be taken for a newer one's.
    for (let i = 0; i < 0x10000; i++) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) & 0xffff;
      if (!this.#pending.has(id)) return id;
    }
    return undefined;
  }

  #settle(id: number): Pending | undefined {
    const entry = this.#pending.get(id);
    if (entry === undefined) return undefined;
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    if (entry.onAbort) entry.signal?.removeEventListener('abort', entry.onAbort);
    return entry;
  }

  #onAnswer(answer: Buffer): void {
    if (answer.length < 12) return;
    const entry = this.#settle(answer.readUInt16BE(0));
    if (entry === undefined) return; // timed out or aborted already
    answer.writeUInt16BE(entry.originalId, 0);
    entry.resolve(answer);
  }

  #shutdown(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const id of [...this.#pending.keys()]) this.#settle(id)?.reject(err);
  }
}
