/**
 * The TUN device: the typed face of the native addon in native/ (see native/src/tun.cc).
 *
 * Reads are batched: on every readable event the addon reads until EAGAIN (at most 64 packets
 * or about 1 MiB) and calls the handler ONCE with a reused arena Buffer, a reused index
 * (`meta[2i]` = offset, `meta[2i+1]` = length of packet i) and the count. The arena and the index
 * are overwritten by the next batch: a handler must consume or copy what it keeps before it
 * returns (`TunDevice.packet()` gives a view, not a copy).
 *
 * With `vnetHdr` every packet (read and written) starts with a 10-byte `struct virtio_net_hdr`
 * (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; little endian). With `offload`
 * the kernel may hand over TCP super-segments up to 64 KiB with a partial checksum
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM) and accepts the same on writes.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { PermissionError, TunAddonError, TunError } from '../errors.js';

/** Length of `struct virtio_net_hdr` in front of each packet when `vnetHdr` is on. */
export const VNET_HDR_LEN = 10;
/** virtio_net_hdr.flags */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** virtio_net_hdr.gso_type */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export interface OffloadFlags {
  csum: boolean;
  tso4: boolean;
  tso6: boolean;
  /** why the kernel refused offloads, when it did */
  refused?: string;
}

/** What the addon exports (native/src/tun.cc). */
interface NativeTun {
  readonly name: string;
  readonly fd: number;
  readonly vnetHdr: boolean;
  readonly offload: boolean;
  readonly offloadFlags: OffloadFlags;
  readonly mtu: number;
  readonly closed: boolean;
  start(onBatch: (arena: Buffer, meta: Uint32Array, count: number) => void, onError: (err: Error) => void): void;
  stop(): void;
  write(packet: Uint8Array): number;
  writeBatch(packets: readonly Uint8Array[]): number;
  writev(head: Uint8Array, payload: Uint8Array): number;
  ref(): void;
  unref(): void;
  close(): void;
}

interface NativeAddon {
  open(name: string, options: { vnetHdr: boolean; offload: boolean; mtu?: number }): NativeTun;
  readonly MAX_BATCH: number;
  readonly ARENA_SIZE: number;
}

/** Where the addon is built by `npm ci` (relative to this file in src/tun and in dist/tun). */
export function defaultAddonPath(): string {
  const override = process.env.KTCTL_TUN_ADDON;
  if (override) return override;
  return fileURLToPath(new URL('../../native/build/Release/ktctl_tun.node', import.meta.url));
}

const NOT_BUILT = 'the TUN addon is not built: run npm ci (needs python3, make and g++)';
const loaded = new Map<string, NativeAddon>();

/** Loads the native addon, or throws a `TunAddonError` that says how to build it. */
export function loadTunAddon(path: string = defaultAddonPath()): NativeAddon {
  const cached = loaded.get(path);
  if (cached) return cached;
  if (!existsSync(path)) throw new TunAddonError(`${NOT_BUILT} (missing ${path})`);
  let mod: unknown;
  try {
    mod = createRequire(import.meta.url)(path);
  } catch (cause) {
    throw new TunAddonError(`${NOT_BUILT} (cannot load ${path}: ${(cause as Error).message})`, { cause });
  }
  if (typeof mod !== 'object' || mod === null || typeof (mod as { open?: unknown }).open !== 'function') {
    throw new TunAddonError(`${NOT_BUILT} (${path} is not the ktctl TUN addon)`);
  }
  const addon = mod as NativeAddon;
  loaded.set(path, addon);
  return addon;
}

export interface TunOpenOptions {
  /** Interface name; `%d` lets the kernel pick the first free number. Default `kt%d`. */
  name?: string;
  /** Prefix every packet with a virtio_net_hdr. Default true. */
  vnetHdr?: boolean;
  /** Ask for TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 (needs vnetHdr). Default = vnetHdr. */
  offload?: boolean;
  /** MTU to set on the interface right away. */
  mtu?: number;
  /** Path of the addon (tests); default `defaultAddonPath()`. */
  addonPath?: string;
}

/** Called once per readable event; see the module comment for the arena contract. */
export type PacketBatchHandler = (arena: Buffer, meta: Uint32Array, count: number) => void;

export interface TunStats {
  /** readable events that delivered at least one packet */
  readBatches: number;
  readPackets: number;
  readBytes: number;
  writePackets: number;
  writeBytes: number;
  /** packets not written because the device queue was full (EAGAIN): dropped, TCP will resend */
  writeDropped: number;
}

function convertOpenError(e: unknown, name: string): Error {
  const err = e as Error & { code?: unknown };
  const code = typeof err.code === 'string' ? err.code : undefined;
  const message = err instanceof Error ? err.message : String(e);
  if (code === 'EPERM' || code === 'EACCES') {
    return new PermissionError(`${message} (run ktctl as root, or use --mode socks)`, { cause: e });
  }
  if (code === undefined && err instanceof TypeError) return new TunError(message, 'EINVAL', { cause: e });
  return new TunError(message || `cannot open TUN device ${name}`, code, { cause: e });
}

export class TunDevice {
  readonly #tun: NativeTun;
  readonly name: string;
  readonly vnetHdr: boolean;
  /** true when the kernel accepted checksum and TSO offloads */
  readonly offload: boolean;
  readonly offloadFlags: OffloadFlags;
  readonly stats: TunStats = { readBatches: 0, readPackets: 0, readBytes: 0, writePackets: 0, writeBytes: 0, writeDropped: 0 };
  #handler: PacketBatchHandler | undefined;
  #errorHandler: ((err: Error) => void) | undefined;
  #closed = false;
  #polling = false;
  readonly #onBatch: (arena: Buffer, meta: Uint32Array, count: number) => void;
  readonly #onError: (err: Error) => void;

  private constructor(tun: NativeTun) {
    this.#tun = tun;
    this.name = tun.name;
    this.vnetHdr = tun.vnetHdr;
    this.offload = tun.offload;
    this.offloadFlags = tun.offloadFlags;
    this.#onBatch = (arena, meta, count) => {
      const s = this.stats;
      s.readBatches++;
      s.readPackets += count;
      for (let i = 0; i < count; i++) s.readBytes += meta[2 * i + 1]!;
      this.#handler?.(arena, meta, count);
    };
    this.#onError = (err) => {
      this.#polling = false;
      const code = (err as { code?: unknown }).code;
      const wrapped = new TunError(err.message, typeof code === 'string' ? code : undefined, { cause: err });
      if (this.#errorHandler) this.#errorHandler(wrapped);
      else throw wrapped;
    };
  }

  /** Opens (creates) a TUN device. Needs root or CAP_NET_ADMIN. */
  static open(options: TunOpenOptions = {}): TunDevice {
    const addon = loadTunAddon(options.addonPath);
    const name = options.name ?? 'kt%d';
    const vnetHdr = options.vnetHdr ?? true;
    const offload = options.offload ?? vnetHdr;
    let tun: NativeTun;
    try {
      tun = addon.open(name, { vnetHdr, offload, ...(options.mtu !== undefined ? { mtu: options.mtu } : {}) });
    } catch (e) {
      throw convertOpenError(e, name);
    }
    return new TunDevice(tun);
  }

  /** The packet `i` of a batch, as a view into the arena (valid only during the handler). */
  static packet(arena: Buffer, meta: Uint32Array, i: number): Buffer {
    const off = meta[2 * i]!;
    return arena.subarray(off, off + meta[2 * i + 1]!);
  }

  get closed(): boolean {
    return this.#closed;
  }

  get mtu(): number {
    return this.#tun.mtu;
  }

  /** Sets the batch handler and starts reading. */
  onPackets(handler: PacketBatchHandler): this {
    this.#handler = handler;
    this.resume();
    return this;
  }

  /** Called when reading fails for good (the device is then no longer polled). Default: throw. */
  onError(handler: (err: Error) => void): this {
    this.#errorHandler = handler;
    return this;
  }

  /** Stops reading (packets queue in the kernel, then drop); `resume()` starts again. */
  pause(): void {
    if (this.#closed || !this.#polling) return;
    this.#tun.stop();
    this.#polling = false;
  }

  resume(): void {
    if (this.#closed) throw new TunError(`the TUN device ${this.name} is closed`);
    if (this.#polling) return;
    this.#tun.start(this.#onBatch, this.#onError);
    this.#polling = true;
  }

  /**
   * Writes one packet (with its virtio_net_hdr when `vnetHdr`). Returns the bytes written, or 0
   * when the device's queue is full: the packet is then dropped and counted in `stats.writeDropped`.
   */
  write(packet: Uint8Array): number {
    if (this.#closed) throw new TunError(`the TUN device ${this.name} is closed`);
    let n: number;
    try {
      n = this.#tun.write(packet);
    } catch (e) {
      throw this.#ioError(e);
    }
    return this.#counted(n);
  }

  /**
   * Writes one packet given as two pieces, its headers and its payload (one writev(2): the kernel
   * gathers them). Returns and counts like `write`.
   */
  writev(head: Uint8Array, payload: Uint8Array): number {
    if (this.#closed) throw new TunError(`the TUN device ${this.name} is closed`);
    let n: number;
    try {
      n = this.#tun.writev(head, payload);
    } catch (e) {
      throw this.#ioError(e);
    }
    return this.#counted(n);
  }

  #counted(n: number): number {
    if (n === 0) this.stats.writeDropped++;
    else {
      this.stats.writePackets++;
      this.stats.writeBytes += n;
    }
    return n;
  }

  /** Writes several packets; returns how many were written (the rest hit a full queue and are dropped). */
  writeBatch(packets: readonly Uint8Array[]): number {
    if (this.#closed) throw new TunError(`the TUN device ${this.name} is closed`);
    let n: number;
    try {
      n = this.#tun.writeBatch(packets);
    } catch (e) {
      throw this.#ioError(e);
    }
    this.stats.writePackets += n;
    for (let i = 0; i < n; i++) this.stats.writeBytes += packets[i]!.byteLength;
    this.stats.writeDropped += packets.length - n;
    return n;
  }

  /** Keep the process alive while reading (default). */
  ref(): this {
    if (!this.#closed) this.#tun.ref();
    return this;
  }

  /** Do not keep the process alive just for this device. */
  unref(): this {
    if (!this.#closed) this.#tun.unref();
    return this;
  }

  /** Stops reading and closes the fd: the interface (not persistent) disappears. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#polling = false;
    this.#tun.close();
  }

  #ioError(e: unknown): TunError {
    const err = e as Error & { code?: unknown };
    const code = typeof err.code === 'string' ? err.code : undefined;
    return new TunError(err instanceof Error ? err.message : String(e), code, { cause: e });
  }
}
