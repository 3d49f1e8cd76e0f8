/**
 * One port-forward stream to a pod through the API server, as a Duplex: the WebSocket
 * `v4.channel.k8s.io` protocol of pods/portforward driven directly (client-node's `PortForward`
 * takes one port, ignores backpressure and does not end the local stream when the server closes,
 * see DESIGN.md). Authentication and TLS come from the kubeconfig through client-node
 * (`KubeConfig.applyToHTTPSOptions`), so every auth method it supports works here.
 *
 * Framing: every WebSocket message is a channel byte followed by data. For the one port asked
 * for, channel 0 carries data and channel 1 errors; the first message the server sends on each of
 * them is the port number as 2 bytes little-endian. Text on channel 1 is the kubelet's error
 * ("failed to connect to localhost:2222 ..."), which ends the stream with a PortForwardError.
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

export interface PortForwardOptions {
  kc: KubeConfig;
  namespace: string;
  pod: string;
  port: number;
  /** The WebSocket must be open within this (--portForwardTimeout). */
  timeoutMs: number;
}

export class PortForwardStream extends Duplex {
  readonly #ws: WebSocket;
  readonly #label: string;
  #dataPrefix = true;
  #errorPrefix = true;
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
        this.destroy(new PortForwardError(`the API server closed the port-forward to ${label} (WebSocket code ${code}${reason.length ? `: ${reason.toString('utf8')}` : ''})`));
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
      if (this.#dataPrefix) {
        this.#dataPrefix = false;
        payload = payload.subarray(2);
      }
      if (payload.length > 0 && !this.push(payload)) this.#ws.pause();
    } else if (channel === 1) {
      if (this.#errorPrefix) {
        this.#errorPrefix = false;
        payload = payload.subarray(2);
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

/** Opens a port-forward WebSocket to `pod:port`; rejects with a KubeError saying why not. */
export async function openPortForward(o: PortForwardOptions): Promise<PortForwardStream> {
  const cluster = o.kc.getCurrentCluster();
  if (!cluster) throw new PortForwardError('the kubeconfig has no current cluster');
  const base = cluster.server.replace(/^http/, 'ws').replace(/\/+$/, '');
  const url = `${base}/api/v1/namespaces/${encodeURIComponent(o.namespace)}/pods/${encodeURIComponent(o.pod)}/portforward?ports=${o.port}`;
  const opts: WebSocket.ClientOptions & { headers?: Record<string, string> } = {};
  await o.kc.applyToHTTPSOptions(opts);
  // a WebSocket upgrade is a GET: RBAC checks get (and, from Kubernetes 1.35, create) on pods/portforward
  noteRequest(o.kc, 'GET', url);
  const label = `pod ${o.namespace}/${o.pod} port ${o.port}`;
  const op = { verb: 'create', resource: 'pods/portforward', namespace: o.namespace, name: o.pod, server: cluster.server };
  const ws = new WebSocket(url, [PROTOCOL], { ...opts, perMessageDeflate: false, handshakeTimeout: o.timeoutMs });
  return new Promise<PortForwardStream>((resolve, reject) => {
    let settled = false;
    const fail = (e: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new PortForwardError(`the port-forward to ${label} did not open within ${o.timeoutMs / 1000} s (--portForwardTimeout)`)),
      o.timeoutMs,
    );
    ws.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let message = text;
        try {
          const status = JSON.parse(text) as { message?: string };
          if (typeof status.message === 'string') message = status.message;
        } catch {
          /* not a Status */
        }
        const code = res.statusCode ?? 0;
        if (code === 403) fail(new KubeForbiddenError('create', 'pods/portforward', o.namespace));
        else if (code === 401) fail(new KubeUnauthorizedError(`the API server ${cluster.server} does not accept the credentials of this context (401 Unauthorized): log in again or pick another --context`));
        else if (code === 404) fail(new KubeNotFoundError(`the pod ${o.namespace}/${o.pod} does not exist (any more): ${message}`));
        else fail(new PortForwardError(`the API server refused the port-forward to ${label} (${code}): ${message.trim()}`));
      });
      res.on('error', (e: Error) => fail(toKubeError(e, op)));
    });
    ws.once('error', (e: Error) => fail(toKubeError(e, op)));
    ws.once('open', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (ws.protocol !== PROTOCOL) {
        ws.terminate();
        reject(new PortForwardError(`the API server answered the port-forward with protocol "${ws.protocol}", not ${PROTOCOL}`));
        return;
      }
      resolve(new PortForwardStream(ws, label));
    });
  });
}
