/**
 * Every failure a user can meet, one class per kind. Each has a stable `code`, a message a
 * person can act on (one sentence, naming the fix where there is one) and the low-level error
 * as `cause`. Low-level errors are converted at the layer boundary that understands them.
 */
export class KtctlError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad flags or arguments: the command line is wrong. */
export class UsageError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_USAGE', message, options);
  }
}

/** Why a stream could not be opened on the far side. */
export type DialFailure =
  | 'refused' // the far side got a RST: nobody listens there
  | 'unresolvable' // the host name does not resolve on the far side
  | 'unreachable' // no route, or the far side timed out connecting
  | 'prohibited' // the server does not allow forwarding
  | 'tunnel'; // the tunnel itself is down or broke while opening

/** A `Dialer` could not open a stream. `reason` drives SOCKS replies, HTTP 502s and TCP RSTs. */
export class DialError extends KtctlError {
  readonly reason: DialFailure;
  readonly host: string;
  readonly port: number;
  constructor(reason: DialFailure, host: string, port: number, detail: string, options?: { cause?: unknown }) {
    super(`KTCTL_DIAL_${reason.toUpperCase()}`, `cannot reach ${host}:${port}: ${detail}`, options);
    this.reason = reason;
    this.host = host;
    this.port = port;
  }
}

/** The server presented a host key that is not the pinned one / not in known_hosts. */
export class HostKeyError extends KtctlError {
  readonly fingerprint: string;
  constructor(message: string, fingerprint: string, options?: { cause?: unknown }) {
    super('KTCTL_HOST_KEY', message, options);
    this.fingerprint = fingerprint;
  }
}

/** The server refused our key (or every method we offered). */
export class AuthError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_AUTH', message, options);
  }
}

/** The ssh server could not be reached or the connection failed before authentication. */
export class ConnectError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_CONNECT', message, options);
  }
}

/** A local port ktctl wants to listen on is taken or not allowed. */
export class ListenError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_LISTEN', message, options);
  }
}

/** The tunnel went down (keepalive timeout, peer closed) while in use. */
export class TunnelClosedError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_TUNNEL_CLOSED', message, options);
  }
}

/** A file the user named (key, known_hosts, kubeconfig) is missing or malformed. */
export class InputFileError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_INPUT_FILE', message, options);
  }
}

/** Something needs root (TUN device, routes, resolv.conf). */
export class PermissionError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_PERMISSION', message, options);
  }
}

/** A Kubernetes API call failed in a way the user can act on (RBAC, missing object, bad image). */
export class KubeError extends KtctlError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Why a DNS query through the tunnel got no answer. */
export type DnsQueryFailure =
  | 'timeout' // no answer in time
  | 'tunnel' // the tunnel is down or the DNS channel broke
  | 'unsupported'; // the far side has no resolver (no DNS subsystem and no DNS server given)

/** A DNS query sent through a `Dialer` got no answer; the caller answers SERVFAIL. */
export class DnsQueryError extends KtctlError {
  readonly reason: DnsQueryFailure;
  constructor(reason: DnsQueryFailure, message: string, options?: { cause?: unknown }) {
    super(`KTCTL_DNS_${reason.toUpperCase()}`, message, options);
    this.reason = reason;
  }
}

/** The native TUN addon is not built or cannot be loaded on this machine. */
export class TunAddonError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_TUN_ADDON', message, options);
  }
}

/** A TUN device could not be opened or used (name taken, no /dev/net/tun, I/O error). */
export class TunError extends KtctlError {
  /** errno name from the kernel (EBUSY, ENOENT, EINVAL, ...), when there was one. */
  readonly errno: string | undefined;
  constructor(message: string, errno?: string, options?: { cause?: unknown }) {
    super(errno ? `KTCTL_TUN_${errno}` : 'KTCTL_TUN', message, options);
    this.errno = errno;
  }
}

/** Setting an address, the MTU or a route on an interface failed (iproute2 said why). */
export class RouteError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_ROUTE', message, options);
  }
}

/** Changing the machine's DNS configuration (resolv.conf, /etc/hosts, systemd-resolved) failed. */
export class DnsConfigError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_DNS_CONFIG', message, options);
  }
}

/** Why a Service (or deployment) named on the command line cannot be exchanged, meshed or previewed. */
export type TargetFailure =
  | 'not-found' // no such service / deployment, or no service selects the deployment
  | 'no-selector' // the service has no selector (its endpoints are managed by hand)
  | 'ambiguous' // several services / deployments match: name the one meant
  | 'port' // an exposed port is not one of the service's ports
  | 'exists'; // preview: a service of that name exists already

/** The target of `exchange`, `mesh`, `preview` or `recover` is not usable as given. */
export class TargetError extends KtctlError {
  readonly reason: TargetFailure;
  constructor(reason: TargetFailure, message: string, options?: { cause?: unknown }) {
    super(`KTCTL_TARGET_${reason.toUpperCase().replace('-', '_')}`, message, options);
    this.reason = reason;
  }
}

/** A Service is locked by another live ktctl process (exchange/mesh), or recover refused a live owner. */
export class LockedError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_LOCKED', message, options);
  }
}

/** A local port given with --expose has no listener on this machine. */
export class LocalPortError extends KtctlError {
  readonly port: number;
  constructor(port: number, message: string, options?: { cause?: unknown }) {
    super('KTCTL_LOCAL_PORT', message, options);
    this.port = port;
  }
}

/** `mesh`: the version mark is registered on the Service's router by another live developer already. */
export class MeshMarkError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_MESH_MARK', message, options);
  }
}

/** exchange/mesh `--envFile`, `--envJson`, `-- command`: the workload's environment cannot be made as the kubelet makes it. */
export class WorkloadEnvError extends KtctlError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_WORKLOAD_ENV', message, options);
  }
}
