/**
 * Pod subresources that stream: log (plain HTTP), exec and portforward (WebSocket channel
 * protocol: every message is one channel byte followed by data).
 */
import type http from 'node:http';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { badRequest } from './status.js';
import type { ContainerStatus, JsonObject, Pod } from './json.js';
import type { LabNet } from '../net/types.js';

const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

function asPod(o: JsonObject): Pod {
  return o as unknown as Pod;
}

function pickContainer(pod: Pod, q: URLSearchParams, verb: string): string {
  const names = pod.spec.containers.map((c) => c.name);
  const c = q.get('container');
  if (c) {
    if (!names.includes(c)) throw badRequest(`container ${c} is not valid for pod ${pod.metadata.name}`);
    return c;
  }
  if (names.length === 1) return names[0];
  throw badRequest(`a container name must be specified for pod ${pod.metadata.name}, choose one of: [${names.join(' ')}]${verb === 'log' ? '' : ''}`);
}

function containerStatus(pod: Pod, name: string): ContainerStatus | undefined {
  return pod.status?.containerStatuses?.find((s) => s.name === name);
}

function everStarted(cs: ContainerStatus | undefined): boolean {
  if (!cs) return false;
  return cs.state.running !== undefined || cs.state.terminated !== undefined || cs.lastState.terminated !== undefined || cs.restartCount > 0;
}

export async function handleLog(net: LabNet, obj: JsonObject, q: URLSearchParams, res: http.ServerResponse): Promise<void> {
  const pod = asPod(obj);
  const container = pickContainer(pod, q, 'log');
  const cs = containerStatus(pod, container);
  const previous = q.get('previous') === 'true';
  if (!everStarted(cs)) {
    const reason = cs?.state.waiting?.reason ?? 'ContainerCreating';
    throw badRequest(`container "${container}" in pod "${pod.metadata.name}" is waiting to start: ${reason}`);
  }
  if (previous && (cs?.restartCount ?? 0) === 0) {
    throw badRequest(`previous terminated container "${container}" in pod "${pod.metadata.name}" not found`);
  }
  const tail = q.get('tailLines');
  const follow = q.get('follow') === 'true';
  let stream: ReturnType<LabNet['logs']>;
  try {
    stream = net.logs(pod.metadata.uid, container, {
      follow,
      previous,
      tailLines: tail !== null && tail !== '' ? Number(tail) : undefined,
    });
  } catch (e) {
    throw badRequest(e instanceof Error ? e.message : String(e));
  }
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
  res.flushHeaders();
  stream.on('error', () => res.end());
  stream.pipe(res);
  res.on('close', () => stream.destroy());
}

function frame(channel: number, data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length + 1);
  out[0] = channel;
  data.copy(out, 1);
  return out;
}

/** Sends channel data, pausing `source` while the WebSocket's send buffer is above the high-water mark. */
function pump(ws: WebSocket, channel: number, source: NodeJS.ReadableStream & { pause(): unknown; resume(): unknown }): void {
  source.on('data', (d: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(frame(channel, d), { binary: true }, () => {
      if (ws.bufferedAmount < LOW_WATER) source.resume();
    });
    if (ws.bufferedAmount > HIGH_WATER) source.pause();
  });
}

interface Prepared {
  run(ws: WebSocket, protocol?: string): void;
}

export const handleExec = {
  prepare(net: LabNet, obj: JsonObject, q: URLSearchParams): Prepared {
    const pod = asPod(obj);
    const container = pickContainer(pod, q, 'exec');
    const command = q.getAll('command');
    if (command.length === 0) throw badRequest('you must specify at least 1 command');
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') {
      throw badRequest(`cannot exec into a container in a completed pod; current phase is ${phase}`);
    }
    const cs = containerStatus(pod, container);
    if (!cs?.state.running) {
      throw badRequest(`container ${container} is not running${cs?.state.waiting ? ` (${cs.state.waiting.reason})` : ''}`);
    }
    const wantStdin = q.get('stdin') === 'true' || q.get('stdin') === '1';
    const tty = q.get('tty') === 'true' || q.get('tty') === '1';
    return {
      run(ws: WebSocket, protocol?: string): void {
        const v5 = protocol === 'v5.channel.k8s.io';
        let child: ReturnType<LabNet['exec']>;
        const sendStatus = (status: JsonObject): void => {
          if (ws.readyState !== ws.OPEN) return;
          ws.send(frame(3, Buffer.from(JSON.stringify(status))), () => ws.close(1000));
        };
        try {
          child = net.exec(pod.metadata.uid, container, command, { tty });
        } catch (e) {
          sendStatus({ metadata: {}, status: 'Failure', message: `Internal error occurred: error executing command in container: ${e instanceof Error ? e.message : String(e)}`, reason: 'InternalError', code: 500 });
          return;
        }
        let pending = 2;
        let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
        let spawnError: Error | undefined;
        const finish = (): void => {
          if (pending > 0 || (!exit && !spawnError)) return;
          if (spawnError) {
            const msg = (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? `exec: "${command[0]}": executable file not found in $PATH` : spawnError.message;
            sendStatus({
              metadata: {},
              status: 'Failure',
              message: `Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: ${msg}: unknown`,
              reason: 'InternalError',
              details: { causes: [{ message: msg }] },
              code: 500,
            });
            return;
          }
          const code = exit!.code ?? 128 + 9;
          if (code === 0) sendStatus({ metadata: {}, status: 'Success' });
          else
            sendStatus({
              metadata: {},
              status: 'Failure',
              message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${code}`,
              reason: 'NonZeroExitCode',
              details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
            });
        };
        child.stdout.on('end', () => {
          pending--;
          finish();
        });
        child.stderr.on('end', () => {
          pending--;
          finish();
        });
        child.on('error', (e) => {
          spawnError = e;
          pending = 0;
          finish();
        });
        child.on('exit', (code, signal) => {
          exit = { code, signal };
          finish();
        });
        pump(ws, 1, child.stdout);
        pump(ws, 2, child.stderr);
        child.stdin.on('error', () => undefined);
        if (!wantStdin) child.stdin.end();
        ws.on('message', (data: Buffer) => {
          if (data.length === 0) return;
          const ch = data[0];
          if (ch === 0 && wantStdin && !child.stdin.writableEnded) {
            if (!child.stdin.write(data.subarray(1))) {
              ws.pause();
              child.stdin.once('drain', () => ws.resume());
            }
          } else if (ch === 255 && v5 && data[1] === 0) {
            child.stdin.end();
          }
          // channel 4 (resize) is accepted and ignored
        });
        ws.on('close', () => {
          if (!child.stdin.writableEnded) child.stdin.end();
          if (!exit && !spawnError) {
            child.kill('SIGKILL');
          }
        });
        ws.on('error', () => undefined);
      },
    };
  },
};

// ---- pods/portforward ----
//
// What the client meets on a real cluster, hop by hop: kube-apiserver authorises the upgrade and
// finds the pod's node (server.ts), then proxies the connection through the kubelet to the
// runtime's streaming server, which speaks the WebSocket protocol itself: containerd's vendored
// k8s.io/cri-streaming portforward/websocket.go `handleWebSocketStreams` (the same code as the
// kubelet's pkg/kubelet/cri/streaming/portforward/websocket.go) over wsstream.Conn
// (k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go), and containerd's
// internal/cri/server/sandbox_portforward_linux.go `portForward` dials the port inside the pod.
// The lab plays all three here.

/** The subprotocols of the portforward handler's wsstream.NewConn map: "" (none asked for) and the two v4 ones. */
export const PORT_FORWARD_PROTOCOLS: readonly string[] = ['', 'v4.channel.k8s.io', 'v4.base64.channel.k8s.io'];

/** The kubelet's --streaming-connection-idle-timeout and containerd's stream_idle_timeout default: 4 h. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 4 * 60 * 60 * 1000;

/**
 * containerd's portForward: once one direction has stopped, "give a chance to terminate gracefully
 * or timeout after 1s" (`const timeout = time.Second` in sandbox_portforward_linux.go).
 */
export const PORT_FORWARD_LINGER_MS = 1000;

/** What the lab's runtime does with port-forward streams; changed by PUT /lab/v1/portforward (admin). */
export interface PortForwardSettings {
  /** idle timeout in ms (0 = none): no message either way for this long ends the stream; pings do not count */
  idleTimeoutMs: number;
  /** subprotocols the runtime refuses, as one that does not speak them (for client retry tests) */
  refuseProtocols: string[];
}

export function defaultPortForwardSettings(): PortForwardSettings {
  return { idleTimeoutMs: DEFAULT_STREAM_IDLE_TIMEOUT_MS, refuseProtocols: [] };
}

/**
 * wsstream's `handshake`: the first protocol the client asked for (in its order) that the handler
 * knows, and "" when it asked for none; undefined when none fits. x/net/websocket then answers
 * `403 Forbidden` with an empty body (websocket/server.go `newServerConn`).
 */
export function negotiatePortForwardProtocol(requested: readonly string[], refuse: readonly string[] = []): string | undefined {
  const asked = requested.length === 0 ? [''] : requested;
  return asked.find((p) => PORT_FORWARD_PROTOCOLS.includes(p) && !refuse.includes(p));
}

/**
 * One channel frame per WebSocket message, both ways (wsstream `Conn.write` sends one message per
 * write, `Conn.handle` takes each received message as one frame). Binary: the channel byte, then the
 * data. Base64 (`v4.base64.channel.k8s.io`): a text message, the channel as the digit '0'+n, then
 * the data in standard base64; a received frame that is not valid base64 is dropped (wsstream logs
 * "Unable to write frame" and goes on).
 */
export interface ChannelCodec {
  readonly binary: boolean;
  encode(channel: number, data: Buffer): Buffer | string;
  /** undefined: not a valid frame (dropped) */
  decode(message: Buffer): { channel: number; data: Buffer } | undefined;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function channelCodec(protocol: string): ChannelCodec {
  if (protocol === 'v4.base64.channel.k8s.io') {
    return {
      binary: false,
      encode: (channel, data) => String.fromCharCode(48 + channel) + data.toString('base64'),
      decode: (message) => {
        if (message.length === 0) return undefined;
        // Go's base64.StdEncoding ignores \r and \n, and refuses anything else outside the alphabet
        const text = message.subarray(1).toString('latin1').replace(/[\r\n]/g, '');
        if (text.length % 4 !== 0 || !BASE64.test(text)) return undefined;
        return { channel: (message[0] - 48) & 0xff, data: Buffer.from(text, 'base64') };
      },
    };
  }
  return {
    binary: true,
    encode: (channel, data) => frame(channel, data),
    decode: (message) => (message.length === 0 ? undefined : { channel: message[0], data: message.subarray(1) }),
  };
}

/** A refusal by the kubelet, not the API server: a plain-text body (restful `WriteError`), not a Status. */
export class KubeletRefusal extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The port-forward streams open now, for the lab's faults (`npm run lab -- fault cut-portforward`). */
const openPortForwards = new Set<{ ws: WebSocket; socket: Duplex; namespace: string }>();

/**
 * Ends every open port-forward stream: `close` with a close frame (1001, going away, as an API
 * server that shuts down sends), `abrupt` by destroying the TCP connection with no close frame
 * (the client sees 1006, as when a load balancer or NAT drops it). Only those to pods of
 * `namespace` when given (tests run side by side). Returns how many it cut.
 */
export function cutPortForwards(how: 'close' | 'abrupt', namespace?: string): number {
  const all = [...openPortForwards].filter((pf) => namespace === undefined || pf.namespace === namespace);
  for (const pf of all) {
    openPortForwards.delete(pf);
    if (how === 'abrupt') pf.socket.destroy();
    else pf.ws.close(1001, 'the lab cut this port-forward (fault cut-portforward)');
  }
  return all.length;
}

/** containerd names the pod by its sandbox id (64 hex digits); the lab derives one from the pod's uid. */
function sandboxId(uid: string): string {
  return createHash('sha256').update(`sandbox:${uid}`).digest('hex');
}

/** What `net.Dial` says for an error of the lab's connect (ECONNREFUSED and friends). */
function dialError(family: 'tcp4' | 'tcp6', port: number, e: unknown): string {
  const addr = family === 'tcp4' ? `127.0.0.1:${port}` : `[::1]:${port}`;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const why = code === 'ECONNREFUSED' ? 'connect: connection refused' : code === 'ETIMEDOUT' ? 'connect: connection timed out' : code === 'EHOSTUNREACH' ? 'connect: no route to host' : e instanceof Error ? e.message : String(e);
  return `dial ${family} ${addr}: ${why}`;
}

export const handlePortForward = {
  /**
   * Checks before the upgrade. kube-apiserver refuses only a pod without a node
   * (pkg/registry/core/pod/strategy.go `PortForwardLocation`: "pod NAME does not have a host
   * assigned"); a pod on a node upgrades whatever its phase, and a port nobody listens on is
   * reported on the error channel.
   */
  requireNode(obj: JsonObject): void {
    const pod = asPod(obj);
    if (!pod.spec.nodeName) throw badRequest(`pod ${pod.metadata.name} does not have a host assigned`);
  },

  /**
   * The kubelet's `getPortForward` (pkg/kubelet/server/server.go) parses the ports of a WebSocket
   * request with `portforward.NewV4Options` and answers a bad one with restful's
   * `WriteError(400, err)`: the error's text as a plain body, which kube-apiserver's upgrade-aware
   * proxy hands back unchanged. (kubectl's WebSocket tunnel carries its ports inside and has none
   * in the query, so a cluster without the API server's tunnel refuses it here; kubectl falls back.)
   */
  prepare(net: LabNet, obj: JsonObject, q: URLSearchParams, settings: PortForwardSettings): { run(ws: WebSocket, socket: Duplex, protocol: string): void } {
    handlePortForward.requireNode(obj);
    const pod = asPod(obj);
    const raw = q.getAll('ports');
    if (raw.length === 0) throw new KubeletRefusal(400, 'query parameter "ports" is required');
    const ports: number[] = [];
    for (const p of raw) {
      if (p === '') throw new KubeletRefusal(400, 'query parameter "ports" cannot be empty');
      for (const one of p.split(',')) {
        const n = /^\d+$/.test(one) ? Number(one) : NaN;
        if (!Number.isInteger(n) || n > 65535) throw new KubeletRefusal(400, `unable to parse "${p}" as a port: strconv.ParseUint: parsing "${one}": ${Number.isNaN(n) ? 'invalid syntax' : 'value out of range'}`);
        if (n < 1) throw new KubeletRefusal(400, `port "${p}" must be > 0`);
        ports.push(n);
      }
    }
    const sandbox = sandboxId(pod.metadata.uid);
    return {
      run(ws: WebSocket, socket: Duplex, protocol: string): void {
        runPortForward({ net, ws, socket, codec: channelCodec(protocol), ports, uid: pod.metadata.uid, namespace: pod.metadata.namespace ?? '', sandbox, idleTimeoutMs: settings.idleTimeoutMs });
      },
    };
  },
};

interface PortForwardRun {
  net: LabNet;
  ws: WebSocket;
  socket: Duplex;
  codec: ChannelCodec;
  ports: number[];
  uid: string;
  namespace: string;
  sandbox: string;
  idleTimeoutMs: number;
}

/** One port of a stream: containerd's portForward for it (one dial, two copies, the 1 s linger). */
interface PortState {
  port: number;
  target: Socket | undefined;
  /** frames that came before the dial finished */
  queue: Buffer[];
  /** one direction has stopped: the other gets PORT_FORWARD_LINGER_MS */
  linger: NodeJS.Timeout | undefined;
  done: boolean;
  /** the first copy's error (errFwd), reported on the error channel as the kubelet does */
  error: string | undefined;
}

function runPortForward(o: PortForwardRun): void {
  const { ws, socket, codec } = o;
  const entry = { ws, socket, namespace: o.namespace };
  openPortForwards.add(entry);
  let wsClosed = false;
  ws.on('error', () => undefined);

  // wsstream `Conn.resetTimeout`: every message received and every message sent pushes the
  // connection's deadline (SetDeadline) by the idle timeout. Ping and pong frames are answered
  // inside x/net/websocket's frame reader and push nothing, so pings do not keep a stream alive.
  // When the deadline passes the read fails, `Conn.Close` tries to send a close frame through the
  // same expired deadline (it fails) and closes the TCP connection: the client sees 1006.
  let idle: NodeJS.Timeout | undefined;
  if (o.idleTimeoutMs > 0) {
    idle = setTimeout(() => {
      openPortForwards.delete(entry);
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    }, o.idleTimeoutMs);
  }
  const touch = (): void => {
    idle?.refresh();
  };

  const send = (channel: number, data: Buffer, cb?: (err?: Error) => void): void => {
    if (ws.readyState !== ws.OPEN) {
      cb?.(new Error('closed'));
      return;
    }
    touch();
    ws.send(codec.encode(channel, data), { binary: codec.binary }, cb);
  };

  let remaining = o.ports.length;
  /** handleWebSocketStreams returns once every port's forward has, and its deferred Conn.Close sends 1000. */
  const portDone = (): void => {
    remaining--;
    if (remaining === 0 && ws.readyState === ws.OPEN) ws.close(1000);
  };

  const states: PortState[] = o.ports.map((port) => ({ port, target: undefined, queue: [], linger: undefined, done: false, error: undefined }));

  const finish = (st: PortState, i: number): void => {
    if (st.done) return;
    st.done = true;
    if (st.linger) clearTimeout(st.linger);
    st.target?.destroy();
    if (st.error !== undefined) {
      // websocketStreamHandler.portForward: "error forwarding port %d to pod %s, uid %v: %v"
      // (containerd's stream server passes the sandbox id as the pod and no uid)
      send(2 * i + 1, Buffer.from(`error forwarding port ${st.port} to pod ${o.sandbox}, uid : ${st.error}`), () => portDone());
    } else portDone();
  };
  /** One of the two copies stopped: wait up to 1 s for the other, as containerd does. */
  const oneDirectionStopped = (st: PortState, i: number): void => {
    if (st.done) return;
    if (st.linger) finish(st, i);
    else st.linger = setTimeout(() => finish(st, i), PORT_FORWARD_LINGER_MS);
  };

  ws.on('message', (data: Buffer) => {
    touch();
    const f = codec.decode(data);
    if (!f) return;
    // channel 2i is read-write (data), 2i+1 write-only (error): frames to it or past the end are dropped
    if (f.channel % 2 !== 0 || f.channel / 2 >= states.length) return;
    const i = f.channel / 2;
    const st = states[i];
    if (st.done || f.data.length === 0) return;
    if (!st.target) {
      st.queue.push(f.data);
      return;
    }
    if (st.target.destroyed) {
      // io.Copy(conn, stream) fails writing to the closed target: the second copy is over
      oneDirectionStopped(st, i);
      return;
    }
    if (!st.target.write(f.data)) {
      ws.pause();
      st.target.once('drain', () => ws.resume());
    }
  });
  ws.on('close', () => {
    wsClosed = true;
    openPortForwards.delete(entry);
    if (idle) clearTimeout(idle);
    // The channels' readers see EOF: copy(conn, stream) stops, the other copy gets its linger.
    states.forEach((st, i) => {
      if (st.target) oneDirectionStopped(st, i);
    });
    // (a port still dialling finishes when its dial returns)
  });

  states.forEach((st, i) => {
    // handleWebSocketStreams writes the port, 2 bytes little-endian, first on both channels of each port
    const prefix = Buffer.from([st.port & 0xff, st.port >> 8]);
    send(2 * i, prefix);
    send(2 * i + 1, prefix);
    o.net.connect(o.uid, st.port).then(
      (s) => {
        if (wsClosed || st.done) {
          s.destroy();
          finish(st, i);
          return;
        }
        st.target = s;
        s.setNoDelay(true);
        for (const b of st.queue) s.write(b);
        st.queue = [];
        s.on('data', (d: Buffer) => {
          if (wsClosed) {
            // io.Copy(stream, conn) fails on the closed stream: the second copy is over too
            oneDirectionStopped(st, i);
            return;
          }
          send(2 * i, d, () => {
            if (ws.bufferedAmount < LOW_WATER) s.resume();
          });
          if (ws.bufferedAmount > HIGH_WATER) s.pause();
        });
        s.on('error', (e: NodeJS.ErrnoException) => {
          // errFwd: the first copy's error, else the second's
          if (st.error !== undefined || st.done) return;
          const why = e.code === 'ECONNRESET' ? 'read: connection reset by peer' : e.code === 'EPIPE' ? 'write: broken pipe' : e.message;
          st.error = `failed to execute portforward in network namespace "/var/run/netns/cni-${o.uid}": read tcp4 127.0.0.1:${s.localPort ?? 0}->127.0.0.1:${st.port}: ${why}`;
        });
        // io.Copy(stream, conn) returns at the target's EOF (no error) or at its error: the first
        // copy to stop gets the other up to 1 s; if the stream had already ended, both are over.
        const targetStopped = (): void => {
          if (wsClosed) finish(st, i);
          else if (!st.linger) oneDirectionStopped(st, i);
        };
        s.on('end', targetStopped);
        s.on('close', targetStopped);
      },
      (e: unknown) => {
        // portForward dials localhost:P inside the pod, IPv4 then IPv6 (sandbox_portforward_linux.go)
        st.error = `failed to execute portforward in network namespace "/var/run/netns/cni-${o.uid}": failed to connect to localhost:${st.port} inside namespace "${o.sandbox}", IPv4: ${dialError('tcp4', st.port, e)} IPv6 ${dialError('tcp6', st.port, e)} `;
        finish(st, i);
      },
    );
  });
}
