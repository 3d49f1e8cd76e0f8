/**
 * The client's side of UDP_SUBSYSTEM (src/protocol/udp.ts): `UdpChannel` speaks the framing on one
 * ssh channel; `TunnelUdpSession` is the `UdpSession` (src/dialer.ts) the front ends get, whose
 * flows outlive channels: when the channel they were opened on is gone (the tunnel dropped and came
 * back, the shadow restarted), the next datagram opens the flow again on the channel in use now.
 *
 * Bounds: a channel holds at most `maxQueuedBytes` written but not yet sent (the ssh window is
 * full): beyond, datagrams are dropped and counted, never queued. While no channel is up, at most
 * PENDING_MAX_BYTES of datagrams wait for one; the rest is dropped.
 */
import type { Duplex } from 'node:stream';
import type { UdpFailure, UdpFlow, UdpFlowHandler, UdpSession, UdpSessionStats } from '../dialer.js';
import {
  UdpErrorKind,
  UdpFrame,
  UdpFrameDecoder,
  UDP_MAX_PAYLOAD,
  decodeUdpError,
  encodeUdpClose,
  encodeUdpData,
  encodeUdpOpen,
  type UdpErrorKindCode,
  type UdpFrameType,
} from '../protocol/udp.js';

/** Bytes a channel may hold queued (written, not yet sent) before datagrams are dropped. */
export const UDP_MAX_QUEUED_BYTES = 4 << 20;
/** Bytes of datagrams that wait for a channel while none is up (after a drop, before the next). */
const PENDING_MAX_BYTES = 256 << 10;

const FAILURE: Record<UdpErrorKindCode, UdpFailure> = {
  [UdpErrorKind.PORT_UNREACHABLE]: 'portUnreachable',
  [UdpErrorKind.HOST_UNREACHABLE]: 'hostUnreachable',
  [UdpErrorKind.NET_UNREACHABLE]: 'netUnreachable',
  [UdpErrorKind.FRAG_NEEDED]: 'fragNeeded',
  [UdpErrorKind.PROHIBITED]: 'prohibited',
};

/** What a channel tells the owner of a flow id. */
interface ChannelFlow {
  message(payload: Buffer): void;
  error(failure: UdpFailure, mtu: number): void;
  /** the shadow closed the flow (idle timeout): the next datagram opens it again */
  closed(): void;
}

/**
 * One UDP_SUBSYSTEM channel: writes OPEN/DATA/CLOSE, reads DATA/ERROR/CLOSE and hands them to the
 * flow they name. A channel that breaks the framing is closed.
 */
export class UdpChannel {
  readonly #stream: Duplex;
  readonly #maxQueued: number;
  readonly #decoder = new UdpFrameDecoder();
  readonly #flows = new Map<number, ChannelFlow>();
  #open = true;

  constructor(stream: Duplex, options: { maxQueuedBytes?: number } = {}) {
    this.#stream = stream;
    this.#maxQueued = options.maxQueuedBytes ?? UDP_MAX_QUEUED_BYTES;
    stream.on('data', (chunk: Buffer) => {
      const broken = this.#decoder.push(chunk, this.#onFrame);
      if (broken !== undefined) this.close();
    });
    const down = (): void => {
      this.#open = false;
      this.#flows.clear();
    };
    stream.once('end', down);
    stream.once('close', down);
    stream.on('error', down);
  }

  get open(): boolean {
    return this.#open;
  }

  /** Bytes written and not yet sent. */
  get queuedBytes(): number {
    return this.#stream.writableLength;
  }

  /** Names a flow's destination; replies and errors for `id` go to `flow`. False when the channel is down. */
  openFlow(id: number, host: string, port: number, flow: ChannelFlow): boolean {
    if (!this.#open) return false;
    this.#flows.set(id, flow);
    this.#stream.write(encodeUdpOpen(id, { host, port }));
    return true;
  }

  /** One datagram; false (dropped) when the channel is down or its queue is full. */
  send(id: number, payload: Uint8Array): boolean {
    if (!this.#open || this.#stream.writableLength > this.#maxQueued) return false;
    this.#stream.write(encodeUdpData(id, payload));
    return true;
  }

  closeFlow(id: number): void {
    if (!this.#flows.delete(id) || !this.#open) return;
    this.#stream.write(encodeUdpClose(id));
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#flows.clear();
    this.#stream.end();
  }

  readonly #onFrame = (type: UdpFrameType, id: number, body: Buffer): void => {
    const flow = this.#flows.get(id);
    if (flow === undefined) return; // closed on our side meanwhile
    switch (type) {
      case UdpFrame.DATA:
        flow.message(Buffer.from(body));
        return;
      case UdpFrame.ERROR: {
        const e = decodeUdpError(body);
        if (e !== undefined) flow.error(FAILURE[e.kind], e.mtu);
        return;
      }
      case UdpFrame.CLOSE:
        this.#flows.delete(id);
        flow.closed();
        return;
      default:
        return; // OPEN goes the other way only
    }
  };
}

interface SessionFlow {
  id: number;
  host: string;
  port: number;
  handler: UdpFlowHandler;
  /** the channel the flow was opened on (undefined: open it with the next datagram) */
  channel: UdpChannel | undefined;
  closed: boolean;
  /** the channel's view of this flow, made once */
  readonly events: ChannelFlow;
}

/**
 * The `UdpSession` over a tunnel's channels. `acquire` returns the channel to use now (opening one
 * if needed), or undefined while the tunnel is down.
 */
export class TunnelUdpSession implements UdpSession {
  readonly #acquire: () => Promise<UdpChannel | undefined>;
  #channel: UdpChannel | undefined;
  #acquiring: Promise<void> | undefined;
  readonly #flows = new Map<number, SessionFlow>();
  #nextId = 1;
  #pending: Array<{ flow: SessionFlow; payload: Buffer }> = [];
  #pendingBytes = 0;
  readonly #stats: UdpSessionStats = { flows: 0, datagramsOut: 0, datagramsIn: 0, bytesOut: 0, bytesIn: 0, dropped: 0, errors: 0 };

  constructor(acquire: () => Promise<UdpChannel | undefined>, first?: UdpChannel) {
    this.#acquire = acquire;
    this.#channel = first;
  }

  get stats(): UdpSessionStats {
    return { ...this.#stats, flows: this.#flows.size };
  }

  open(host: string, port: number, handler: UdpFlowHandler): UdpFlow {
    const id = this.#allocateId();
    const stats = this.#stats;
    const flow: SessionFlow = {
      id,
      host,
      port,
      handler,
      channel: undefined,
      closed: false,
      events: {
        message: (payload) => {
          stats.datagramsIn++;
          stats.bytesIn += payload.length;
          handler.message(payload);
        },
        error: (failure, mtu) => {
          stats.errors++;
          handler.error(failure, mtu);
        },
        closed: () => {
          flow.channel = undefined;
        },
      },
    };
    this.#flows.set(id, flow);
    return {
      send: (payload) => this.#send(flow, payload),
      close: () => this.#close(flow),
    };
  }

  #allocateId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = this.#nextId === 0xffffffff ? 1 : this.#nextId + 1;
      if (!this.#flows.has(id)) return id;
    }
  }

  #send(flow: SessionFlow, payload: Uint8Array): boolean {
    if (flow.closed || payload.length > UDP_MAX_PAYLOAD) {
      this.#stats.dropped++;
      return false;
    }
    const ch = this.#channel;
    if (ch !== undefined && ch.open) return this.#sendOn(ch, flow, payload);
    // No channel now: wait for one, within a bound.
    if (this.#pendingBytes + payload.length > PENDING_MAX_BYTES) {
      this.#stats.dropped++;
      return false;
    }
    this.#pending.push({ flow, payload: Buffer.from(payload) });
    this.#pendingBytes += payload.length;
    this.#reacquire();
    return true;
  }

  #sendOn(ch: UdpChannel, flow: SessionFlow, payload: Uint8Array): boolean {
    if (flow.channel !== ch) {
      if (!ch.openFlow(flow.id, flow.host, flow.port, flow.events)) {
        this.#stats.dropped++;
        return false;
      }
      flow.channel = ch;
    }
    if (!ch.send(flow.id, payload)) {
      this.#stats.dropped++;
      return false;
    }
    this.#stats.datagramsOut++;
    this.#stats.bytesOut += payload.length;
    return true;
  }

  #reacquire(): void {
    this.#acquiring ??= this.#acquire()
      .catch(() => undefined)
      .then((ch) => {
        this.#acquiring = undefined;
        if (ch !== undefined && ch.open) this.#channel = ch;
        const pending = this.#pending;
        this.#pending = [];
        this.#pendingBytes = 0;
        for (const p of pending) {
          if (p.flow.closed) continue;
          if (ch === undefined || !ch.open) this.#stats.dropped++;
          else this.#sendOn(ch, p.flow, p.payload);
        }
      });
  }

  #close(flow: SessionFlow): void {
    if (flow.closed) return;
    flow.closed = true;
    this.#flows.delete(flow.id);
    flow.channel?.closeFlow(flow.id);
    flow.channel = undefined;
  }

  /** Closes every flow and the channel in use (the tunnel closes). */
  close(): void {
    for (const flow of [...this.#flows.values()]) this.#close(flow);
    this.#channel?.close();
    this.#channel = undefined;
  }
}
