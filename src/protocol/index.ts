/**
 * What ktctl and its shadow agree on. The shadow imports nothing else from the CLI side.
 */

/** Bumped when the shadow's behaviour changes in a way the client must know about. */
export const PROTOCOL_VERSION = 2;

export * from './resume.js';
export { splice } from './splice.js';

/** Server identification sent by the shadow (`SSH-2.0-<ident>`). */
export const SHADOW_IDENT = `ktctl-shadow_${PROTOCOL_VERSION}`;

/** Default port of the shadow's ssh server inside the pod. */
export const SHADOW_PORT = 2222;

/**
 * SSH subsystem (RFC 4254 §6.5, on a session channel) that answers DNS queries with the pod's own
 * resolver. Framing on the channel is that of DNS over TCP (RFC 1035 §4.2.2): every message is
 * preceded by its length as a 2-byte big-endian number, in both directions. Several queries may be
 * in flight at once; answers come back in any order and are matched by the DNS message id, so
 * a client must keep ids unique among its outstanding queries on one channel.
 */
export const DNS_SUBSYSTEM = 'ktctl-dns@ktctl.dev';

/**
 * SSH subsystem (RFC 4254 §6.5, on a session channel) that carries UDP: one channel per ssh
 * connection, every flow of it as frames (src/protocol/udp.ts: OPEN names a flow's destination,
 * DATA is one datagram either way, ERROR an ICMP error for the flow, CLOSE its end). The shadow
 * sends each flow from a socket of its own, connected to the destination. A server without it
 * (OpenSSH, a shadow older than this subsystem) refuses the request: the client then knows there is
 * no UDP beyond DNS.
 */
export const UDP_SUBSYSTEM = 'ktctl-udp@ktctl.dev';

/** Environment variables and files through which the shadow gets its keys. */
export const SHADOW_ENV = {
  /** ssh host private key (OpenSSH or PEM text). */
  hostKey: 'KTCTL_HOST_KEY',
  hostKeyFile: 'KTCTL_HOST_KEY_FILE',
  /** the one authorized public key (an authorized_keys line: "ssh-ed25519 AAAA... comment"). */
  authorizedKey: 'KTCTL_AUTHORIZED_KEY',
  authorizedKeyFile: 'KTCTL_AUTHORIZED_KEY_FILE',
  /** listening port (default SHADOW_PORT) and address (default 0.0.0.0). */
  port: 'KTCTL_PORT',
  listenAddress: 'KTCTL_LISTEN_ADDRESS',
  /** the role this shadow plays: connect, exchange, mesh, preview, router. */
  role: 'KTCTL_ROLE',
} as const;

/** Where a Kubernetes shadow pod finds the Secret with its keys (mounted read-only). */
export const SHADOW_SECRET_MOUNT = '/etc/ktctl/keys';
export const SHADOW_SECRET_KEYS = { hostKey: 'host_key', authorizedKey: 'authorized_key' } as const;

/**
 * Description texts in SSH_MSG_CHANNEL_OPEN_FAILURE (RFC 4254 §5.1) for a failed `direct-tcpip`,
 * as OpenSSH words them (strerror / gai_strerror), so one client mapping serves the shadow and
 * any OpenSSH bastion. Matched case-insensitively by substring.
 */
export const OPEN_FAILURE_TEXT = {
  refused: 'Connection refused',
  unresolvable: 'Name or service not known',
  unreachable: 'No route to host',
  timeout: 'Connection timed out',
} as const;

/** Largest DNS message the 2-byte length prefix of DNS_SUBSYSTEM framing can carry. */
export const DNS_MAX_MESSAGE = 0xffff;

/** One DNS message as it goes on a DNS_SUBSYSTEM channel (or DNS over TCP): length prefix + bytes. */
export function frameDnsMessage(message: Uint8Array): Buffer {
  if (message.length > DNS_MAX_MESSAGE) throw new RangeError(`DNS message of ${message.length} bytes is too long to frame`);
  const frame = Buffer.allocUnsafe(2 + message.length);
  frame.writeUInt16BE(message.length, 0);
  frame.set(message, 2);
  return frame;
}

/**
 * Cuts a byte stream framed as in RFC 1035 §4.2.2 (2-byte big-endian length, then the message)
 * back into messages, however the stream was chunked.
 */
export class DnsFrameDecoder {
  #pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the messages completed by them (possibly none). */
  push(chunk: Buffer): Buffer[] {
    let buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const out: Buffer[] = [];
    while (buf.length >= 2) {
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) break;
      out.push(Buffer.from(buf.subarray(2, 2 + len)));
      buf = buf.subarray(2 + len);
    }
    this.#pending = Buffer.from(buf);
    return out;
  }

  /** Bytes of an unfinished message held back. */
  get pendingBytes(): number {
    return this.#pending.length;
  }
}

/**
 * `mesh --mode auto`: the router role. A shadow started with KTCTL_ROLE=router also serves HTTP on
 * ROUTER_ENV.ports (the service's target ports, see formatRouterPorts) and sends every request
 * that carries no registered mark to ROUTER_ENV.upstream (the stuntman Service's address), same port.
 */
export const ROUTER_ENV = {
  ports: 'KTCTL_ROUTER_PORTS',
  upstream: 'KTCTL_ROUTER_UPSTREAM',
} as const;

/**
 * What the router knows of a port's protocol (from the Service port's appProtocol or name):
 * - `http`: HTTP/1.x, h2c or gRPC; the router waits for the client's first bytes to tell which;
 * - `tcp`: declared as something else (tcp, mysql, redis, ...): joined to the upstream at once,
 *   never read, so a protocol where the server speaks first gets its greeting without delay;
 * - `sniff`: unknown; told apart by the first bytes, or by silence (server speaks first).
 */
export type RouterPortProtocol = 'http' | 'tcp' | 'sniff';

export interface RouterPortSpec {
  port: number;
  protocol: RouterPortProtocol;
}

/**
 * ROUTER_ENV.ports: comma separated `<port>[/<protocol>]`, e.g. `8080/http,3306/tcp,9000`; a port
 * without a protocol is `sniff` (all that routers made by earlier versions were told).
 */
export function formatRouterPorts(ports: readonly RouterPortSpec[]): string {
  return ports.map((p) => (p.protocol === 'sniff' ? String(p.port) : `${p.port}/${p.protocol}`)).join(',');
}

/** The ports of ROUTER_ENV.ports; throws a RangeError naming the first entry it cannot read. */
export function parseRouterPorts(text: string): RouterPortSpec[] {
  const out: RouterPortSpec[] = [];
  for (const item of text.split(',')) {
    const entry = item.trim();
    if (entry === '') continue;
    const m = /^(\d{1,5})(?:\/(http|tcp|sniff))?$/.exec(entry);
    const port = m ? Number(m[1]) : NaN;
    if (!m || port < 1 || port > 65535) throw new RangeError(`"${entry}" is not <port>[/http|/tcp|/sniff]`);
    out.push({ port, protocol: m[2] === 'http' ? 'http' : m[2] === 'tcp' ? 'tcp' : 'sniff' });
  }
  return out;
}

/** The default header of a version mark (`--versionMark VERSION:<value>`), as KT Connect's. */
export const DEFAULT_MARK_HEADER = 'VERSION';

/** A version mark: requests whose header `key` (any case) has the value `value` go to its owner. */
export interface MeshMark {
  key: string;
  value: string;
}

/**
 * A developer registers a mark with a `tcpip-forward` (RFC 4254 §7.1) whose bind address is
 * `ktctl-mesh:<key>=<value>` and whose port is the routed (target) port; the router answers with
 * `forwarded-tcpip` channels naming that same bind address and port.
 */
export const MESH_BIND_PREFIX = 'ktctl-mesh:';

/** RFC 9110 §5.6.2 token: what a header name may be. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Visible ASCII without comma (lists) and '=' at the start; what a mark value may be. */
const MARK_VALUE = /^[\x21-\x2b\x2d-\x7e]{1,128}$/;

/** Why a mark is not usable, or undefined when it is. */
export function meshMarkProblem(mark: MeshMark): string | undefined {
  if (!TOKEN.test(mark.key) || mark.key.length > 64) return `the header name "${mark.key}" is not an HTTP token (letters, digits and !#$%&'*+-.^_\`|~, at most 64)`;
  if (!MARK_VALUE.test(mark.value)) return `the value "${mark.value}" must be 1 to 128 visible ASCII characters without commas`;
  return undefined;
}

export function meshBindAddress(mark: MeshMark): string {
  return `${MESH_BIND_PREFIX}${mark.key}=${mark.value}`;
}

/** The mark of a bind address made by meshBindAddress, or undefined for any other address. */
export function parseMeshBindAddress(bindAddr: string): MeshMark | undefined {
  if (!bindAddr.startsWith(MESH_BIND_PREFIX)) return undefined;
  const rest = bindAddr.slice(MESH_BIND_PREFIX.length);
  const eq = rest.indexOf('=');
  if (eq <= 0) return undefined;
  const mark = { key: rest.slice(0, eq), value: rest.slice(eq + 1) };
  return meshMarkProblem(mark) === undefined ? mark : undefined;
}
