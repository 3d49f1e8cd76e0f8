/**
 * One port-forward stream to a pod through the API server, as a Duplex: the WebSocket
 * `v4.channel.k8s.io` protocol of pods/portforward driven directly (client-node's `PortForward`
 * takes one port, ignores backpressure and does not end the local stream when the server closes,
 * see DESIGN.md). Authentication and TLS come from the kubeconfig through client-node
 * (`KubeConfig.applyToHTTPSOptions`), so every auth method it supports works here.
 *
 * Framing: every WebSocket message is one channel frame, a channel byte followed by data. For the
 * one port asked for, channel 0 carries data and channel 1 errors; the first 2 bytes the server
 * sends on each of them are the port number, little-endian (in their own message on every known
 * server; counted across messages here all the same). Text on channel 1 is the runtime's error
 * ("error forwarding port 2222 to pod ...: failed to connect to localhost:2222 ..."), which ends
 * the stream with a PortForwardError.
 *
 * Subprotocol: `v4.channel.k8s.io` first. A 403 with an empty body during the upgrade is not RBAC
 * (kube-apiserver's refusals carry a Status): it is the container runtime's WebSocket handshake
 * refusing the subprotocol (wsstream's `handshake` fails, x/net/websocket answers a bare 403).
 * Asking for no subprotocol selects the same binary framing there (the "" entry of the
 * portforward handler's protocol map), so the upgrade is tried again without one, and that choice
 * is kept for every later stream to the same API server (reconnects).
 *
 * A close on either side ends the other: the server closing the WebSocket ends the readable side
 * (and the stream), `end()`/`destroy()` here closes the WebSocket. `write()` waits while more
 * than HIGH_WATER bytes are queued in the WebSocket (`bufferedAmount`).
 */
import { Duplex } from 'node:stream';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import WebSocket from 'ws';
import { noteRequest } from './requests.js';
import { KubeForbiddenError, KubeNotFoundError, KubeUnauthorizedError, PortForwardError, toKubeError } from './errors.js';

const HIGH_WATER = 1024 * 1024;
const PROTOCOL = 'v4.channel.k8s.io';
const PREFIX_BYTES = 2;

/**
 * API servers (by URL) whose runtime refused PROTOCOL: streams to them ask for no subprotocol. One
 * entry per server a process talks to; never cleared (the cluster does not change its runtime).
 */
const withoutSubprotocol = new Set<string>();

export interface PortForwardOptions {
  kc: KubeConfig;
  namespace: string;
  pod: string;
  port: number;
  /** The WebSocket must be open within this (--portForwardTimeout). */
  timeoutMs: number;
  /** Lines for --debug (the subprotocol retry). */
  debug?: (line: string) => void;
}

export class PortForwardStream extends Duplex {
  readonly #ws: WebSocket;
  readonly #label: string;
  /** bytes of the port prefix still to come on the data and the error channel */
  #dataPrefix = PREFIX_BYTES;
  #errorPrefix = PREFIX_BYTES;
  #ended = false;

  constructor(ws: WebSocket, label: string) {
    super({ allowHalfOpen: false });
    this.#ws = ws;
    this.#label = label;
    ws.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(isBinary ? data : Buffer.from(data)));
    ws.on('close', (code: number, reason: Buffer) => {
      if (this.destroyed) return;
      if (!this.#ended && code !== 1000 && code !== 1005) {
        this.#ended = true;
        // 1006: the TCP connection ended with no close frame: a proxy, load balancer or NAT cut it,
        // or the runtime's stream idle timeout (its close frame cannot pass the expired deadline)
        const why =
          code === 1006
            ? `the port-forward to ${label} was cut with no close frame (WebSocket code 1006: by the network, a proxy, or the runtime's stream idle timeout)`
            : `the API server closed the port-forward to ${label} (WebSocket code ${code}${reason.length ? `: ${reason.toString('utf8')}` : ''})`;
        this.destroy(new PortForwardError(why));
        return;
      }
      this.#ended = true;
      // No more data comes: end the readable side; with allowHalfOpen false the writable side
      // ends too and the stream closes once what was read is consumed.
      this.push(null);
    });
    ws.on('error', (err: Error) => {
      if (!this.destroyed) this.destroy(new PortForwardError(`the port-forward to ${label} failed: ${err.message}`, { cause: err }));
    });
  }

  #onMessage(data: Buffer): void {
    if (data.length === 0) return;
    const channel = data[0];
    let payload = data.subarray(1);
    if (channel === 0) {
      if (this.#dataPrefix > 0) {
        const n = Math.min(this.#dataPrefix, payload.length);
        this.#dataPrefix -= n;
        payload = payload.subarray(n);
      }
      if (payload.length > 0 && !this.push(payload)) this.#ws.pause();
    } else if (channel === 1) {
      if (this.#errorPrefix > 0) {
        const n = Math.min(this.#errorPrefix, payload.length);
        this.#errorPrefix -= n;
        payload = payload.subarray(n);
      }
      if (payload.length > 0) this.destroy(new PortForwardError(`the port-forward to ${this.#label} failed: ${payload.toString('utf8')}`));
    }
  }

  override _read(): void {
    if (this.#ws.isPaused) this.#ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#ws.readyState !== WebSocket.OPEN) {
      callback(new PortForwardError(`the port-forward to ${this.#label} is closed`));
      return;
    }
    const frame = Buffer.allocUnsafe(chunk.length + 1);
    frame[0] = 0;
    chunk.copy(frame, 1);
    const wait = this.#ws.bufferedAmount + frame.length > HIGH_WATER;
    this.#ws.send(frame, { binary: true }, (err) => {
      if (wait) callback(err ?? null);
    });
    if (!wait) callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#ended = true;
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) this.#ws.close(1000);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#ended = true;
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
    else if (this.#ws.readyState === WebSocket.CONNECTING) this.#ws.terminate();
    // A server that does not answer the close handshake: do not keep its socket forever.
    setTimeout(() => this.#ws.terminate(), 2000).unref();
    callback(error);
  }
}

/** How one upgrade attempt ended. */
type Attempt = { ws: WebSocket } | { refusedSubprotocol: true } | { error: Error };

/**
 * The verb a 403 of the upgrade refused, from the API server's message: the authorization
 * filter's names it ("User "u" cannot get resource "pods/portforward" ..."); the second check of
 * Kubernetes 1.35+ (ensureAuthorizedForVerb with `create`) names none: `pods "x" is forbidden: `
 * followed by the authorizer's reason, empty for RBAC.
 */
export function refusedVerb(message: string): { verb: string; namedByServer: boolean } {
  const m = / cannot (\S+) resource "/.exec(message);
  return m ? { verb: m[1]!, namedByServer: true } : { verb: 'create', namedByServer: false };
}

/** Opens a port-forward WebSocket to `pod:port`; rejects with a KubeError saying why not. */
export async function openPortForward(o: PortForwardOptions): Promise<PortForwardStream> {
  const cluster = o.kc.getCurrentCluster();
  if (!cluster) throw new PortForwardError('the kubeconfig has no current cluster');
  const base = cluster.server.replace(/^http/, 'ws').replace(/\/+$/, '');
  const url = `${base}/api/v1/namespaces/${encodeURIComponent(o.namespace)}/pods/${encodeURIComponent(o.pod)}/portforward?ports=${o.port}`;
  const label = `pod ${o.namespace}/${o.pod} port ${o.port}`;
  const deadline = Date.now() + o.timeoutMs;
  const attempt = async (protocols: string[]): Promise<Attempt> => {
    // Credentials per attempt: an exec plugin's token may have been renewed meanwhile.
    const opts: WebSocket.ClientOptions & { headers?: Record<string, string> } = {};
    await o.kc.applyToHTTPSOptions(opts);
    // a WebSocket upgrade is a GET: RBAC checks get (and, from Kubernetes 1.35, create) on pods/portforward
    noteRequest(o.kc, 'GET', url);
    return upgrade(o, url, label, protocols, opts, Math.max(1, deadline - Date.now()), cluster.server);
  };
  let protocols = withoutSubprotocol.has(cluster.server) ? [] : [PROTOCOL];
  let result = await attempt(protocols);
  if ('refusedSubprotocol' in result && protocols.length > 0) {
    o.debug?.(
      `port-forward to ${label}: 403 with an empty body: the container runtime refused the subprotocol ${PROTOCOL} (not RBAC, whose refusals carry a Status); trying again without a subprotocol (the same framing), and so for every later stream to ${cluster.server}`,
    );
    withoutSubprotocol.add(cluster.server);
    protocols = [];
    result = await attempt(protocols);
  }
  if ('refusedSubprotocol' in result) {
    throw new PortForwardError(
      `the container runtime on the node of pod ${o.namespace}/${o.pod} refused the port-forward WebSocket (403 with an empty body) with ${PROTOCOL} and without a subprotocol: it does not speak the port-forward WebSocket protocol`,
    );
  }
  if ('error' in result) throw result.error;
  return new PortForwardStream(result.ws, label);
}

/** One upgrade: the open WebSocket, the runtime's bare 403, or the error that says why not. */
function upgrade(o: PortForwardOptions, url: string, label: string, protocols: string[], opts: WebSocket.ClientOptions, timeoutMs: number, server: string): Promise<Attempt> {
  const op = { verb: 'get', resource: 'pods/portforward', namespace: o.namespace, name: o.pod, server };
  const ws = new WebSocket(url, protocols, { ...opts, perMessageDeflate: false, handshakeTimeout: timeoutMs });
  if (protocols.length === 0) {
    // Asked for none, the runtime's x/net/websocket still answers `Sec-WebSocket-Protocol: ` (empty:
    // wsstream chose the "" protocol and AcceptHandshake writes it), which ws would refuse.
    ws.on('upgrade', (res: IncomingMessage) => {
      if (res.headers['sec-websocket-protocol'] === '') delete res.headers['sec-websocket-protocol'];
    });
  }
  return new Promise<Attempt>((resolve) => {
    let settled = false;
    const settle = (a: Attempt): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!('ws' in a)) ws.terminate();
      resolve(a);
    };
    const fail = (e: Error): void => settle({ error: e });
    const timer = setTimeout(
      () => fail(new PortForwardError(`the port-forward to ${label} did not open within ${o.timeoutMs / 1000} s (--portForwardTimeout)`)),
      timeoutMs,
    );
    ws.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let message = text;
        let isStatus = false;
        try {
          const status = JSON.parse(text) as { message?: string };
          if (typeof status.message === 'string') {
            message = status.message;
            isStatus = true;
          }
        } catch {
          /* not a Status */
        }
        const code = res.statusCode ?? 0;
        if (code === 403 && text.trim() === '') settle({ refusedSubprotocol: true });
        else if (code === 403) {
          const { verb, namedByServer } = refusedVerb(message);
          const reason = isStatus
            ? `"${message}"${namedByServer ? '' : ' (no verb named: Kubernetes 1.35 and later ask for create as well as get on pods/portforward to open the WebSocket)'}`
            : `"${message.trim()}"`;
          fail(new KubeForbiddenError(verb, 'pods/portforward', o.namespace, { reason }));
        } else if (code === 401) fail(new KubeUnauthorizedError(`the API server ${server} does not accept the credentials of this context (401 Unauthorized): log in again or pick another --context`));
        else if (code === 404) fail(new KubeNotFoundError(`the pod ${o.namespace}/${o.pod} does not exist (any more): ${message}`));
        else fail(new PortForwardError(`the API server refused the port-forward to ${label} (${code}): ${message.trim()}`));
      });
      res.on('error', (e: Error) => fail(toKubeError(e, op)));
    });
    ws.once('error', (e: Error) => fail(toKubeError(e, op)));
    ws.once('open', () => {
      if (settled) {
        ws.terminate();
        return;
      }
      const want = protocols[0] ?? '';
      if (ws.protocol !== want) {
        fail(new PortForwardError(`the API server answered the port-forward with protocol "${ws.protocol}", not ${want === '' ? 'none' : want}`));
        return;
      }
      settle({ ws });
    });
  });
}
