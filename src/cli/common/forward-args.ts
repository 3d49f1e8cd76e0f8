/** `ktctl forward`'s two arguments: what to forward to, and `[local:remote]`. */
import { isIP } from 'node:net';
import type { ForwardTarget, PortMapping } from '../../connect/forward.js';
import { UsageError } from '../../errors.js';
import { parsePort } from './validators.js';

export type { ForwardTarget, PortMapping } from '../../connect/forward.js';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * `svc`, `svc/NAME`, `service/NAME`, `pod/NAME`, `host:port`, `[v6]:port`, or an IP address or a
 * host name with a dot (the port then comes from `[local:remote]`).
 */
export function parseForwardTarget(text: string): ForwardTarget {
  const slash = /^(svc|service|services|pod|pods|po)\/(.+)$/.exec(text);
  if (slash) {
    const name = slash[2]!;
    if (!DNS_LABEL.test(name)) throw new UsageError(`"${name}" is not a Kubernetes object name (lower case letters, digits and '-')`);
    return { kind: slash[1]!.startsWith('po') ? 'pod' : 'service', name };
  }
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text);
  if (v6 && isIP(v6[1]!) === 6) return { kind: 'host', host: v6[1]!, port: parsePort(v6[2]!, `the port in ${text}`, 1) };
  if (isIP(text) !== 0) return { kind: 'host', host: text };
  const hostPort = /^([A-Za-z0-9.-]+):(\d+)$/.exec(text);
  if (hostPort) return { kind: 'host', host: hostPort[1]!, port: parsePort(hostPort[2]!, `the port in ${text}`, 1) };
  if (DNS_LABEL.test(text)) return { kind: 'service', name: text };
  if (/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(text)) return { kind: 'host', host: text };
  throw new UsageError(`cannot tell what "${text}" is: give a service (web or svc/web), pod/NAME, or host:port`);
}

/** `8080` (both sides), `8080:80`, `8080:http` (a port name), `0:80` or `0` (any free local port). */
export function parsePortMapping(text: string | undefined): PortMapping {
  if (text === undefined) return {};
  const m = /^([^:]+)(?::([^:]+))?$/.exec(text);
  if (!m) throw new UsageError(`the ports must look like 8080 or local:remote, e.g. 8080:80 (got "${text}")`);
  if (m[2] === undefined) {
    const port = parsePort(m[1]!, 'the port');
    // `0`: any free local port, to the target's only (or given) port.
    return port === 0 ? { local: 0 } : { local: port, remote: String(port) };
  }
  const local = parsePort(m[1]!, 'the local port');
  const remote = /^\d+$/.test(m[2]) ? String(parsePort(m[2], 'the remote port', 1)) : m[2];
  if (!/^\d+$/.test(remote) && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(remote)) throw new UsageError(`the remote port must be a number or a port name (got "${remote}")`);
  return { local, remote };
}

