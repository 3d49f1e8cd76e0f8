/**
 * Pod subresources that stream: log (plain HTTP), exec and portforward (WebSocket channel
 * protocol: every message is one channel byte followed by data).
 */
import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { ApiError, badRequest } from './status.js';
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

/** The port-forward streams open now, for the lab's faults (`npm run lab -- fault cut-portforward`). */
const openPortForwards = new Set<{ ws: WebSocket; socket: Duplex }>();

/**
 * Ends every open port-forward stream: `close` with a close frame (1001, going away, as an API
 * server that shuts down sends), `abrupt` by destroying the TCP connection with no close frame
 * (the client sees 1006, as when a load balancer or NAT drops it). Returns how many it cut.
 */
export function cutPortForwards(how: 'close' | 'abrupt'): number {
  const all = [...openPortForwards];
  openPortForwards.clear();
  for (const pf of all) {
    if (how === 'abrupt') pf.socket.destroy();
    else pf.ws.close(1001, 'the lab cut this port-forward (fault cut-portforward)');
  }
  return all.length;
}

export const handlePortForward = {
  prepare(net: LabNet, obj: JsonObject, q: URLSearchParams): { run(ws: WebSocket, socket: Duplex): void } {
    const pod = asPod(obj);
    const phase = pod.status?.phase;
    if (pod.metadata.deletionTimestamp || phase !== 'Running') {
      throw new ApiError(400, 'BadRequest', `pod ${pod.metadata.name} is not running; current phase is ${phase ?? 'Pending'}`);
    }
    const raw = q.getAll('ports').flatMap((p) => p.split(','));
    if (raw.length === 0) throw badRequest('at least 1 port must be specified');
    const ports = raw.map((p) => {
      const n = Number(p.trim());
      if (!Number.isInteger(n) || n < 1 || n > 65535) throw badRequest(`invalid port "${p}"`);
      return n;
    });
    return {
      run(ws: WebSocket, socket: Duplex): void {
        const entry = { ws, socket };
        openPortForwards.add(entry);
        ws.once('close', () => openPortForwards.delete(entry));
        const sockets: Socket[] = [];
        let closed = false;
        const closeAll = (): void => {
          if (closed) return;
          closed = true;
          for (const s of sockets) {
            s.end();
            s.setTimeout(10_000, () => s.destroy());
          }
          if (ws.readyState === ws.OPEN) ws.close(1000);
        };
        ws.on('error', () => undefined);
        const queues: Buffer[][] = ports.map(() => []);
        const ready: Array<Socket | undefined> = ports.map(() => undefined);
        ws.on('message', (data: Buffer) => {
          if (data.length === 0) return;
          const ch = data[0];
          if (ch % 2 !== 0) return;
          const i = ch / 2;
          if (i >= ports.length) return;
          const payload = data.subarray(1);
          const s = ready[i];
          if (!s) {
            queues[i].push(payload);
            return;
          }
          if (!s.write(payload)) {
            ws.pause();
            s.once('drain', () => ws.resume());
          }
        });
        ws.on('close', () => closeAll());
        ports.forEach((port, i) => {
          const prefix = Buffer.from([port & 0xff, port >> 8]);
          ws.send(Buffer.concat([Buffer.from([2 * i]), prefix]));
          ws.send(Buffer.concat([Buffer.from([2 * i + 1]), prefix]));
          net.connect(pod.metadata.uid, port).then(
            (s) => {
              if (closed) {
                s.destroy();
                return;
              }
              sockets.push(s);
              s.setNoDelay(true);
              for (const b of queues[i]) s.write(b);
              queues[i] = [];
              ready[i] = s;
              pump(ws, 2 * i, s);
              s.on('error', () => undefined);
              s.on('close', () => closeAll());
              s.on('end', () => closeAll());
            },
            (e: unknown) => {
              const detail = e instanceof Error ? e.message : String(e);
              const msg = `an error occurred forwarding ${port} -> ${port}: error forwarding port ${port} to pod ${pod.metadata.uid}, uid : failed to connect to localhost:${port} inside namespace "${pod.metadata.namespace}/${pod.metadata.name}", IPv4: dial tcp4 127.0.0.1:${port}: ${/ECONNREFUSED/.test(detail) ? 'connect: connection refused' : detail}`;
              if (ws.readyState === ws.OPEN) ws.send(frame(2 * i + 1, Buffer.from(msg)), () => closeAll());
              else closeAll();
            },
          );
        });
      },
    };
  },
};
