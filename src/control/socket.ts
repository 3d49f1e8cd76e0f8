/**
 * The control socket of a running session (issue 14): a unix socket in the state directory,
 * `ctl-<pid>.sock`, mode 0600, that answers every connection with one JSON line of the session's
 * figures (meter.ts) and closes. `ktctl status` and `ktctl dashboard` read it.
 *
 * Only its owner may connect: the socket is made under a umask of 0177 (so it is never, not even
 * for an instant, open to others) and then set to 0600; connect(2) on a unix socket needs write
 * permission on it (unix(7)), so another user's client gets EACCES. (root passes any mode, as it
 * does for every file.)
 *
 * A socket left behind by a crash (kill -9 unlinks nothing) is recognised and removed: by its pid
 * being gone, at the start of every session (its own pid's leftover too, else listen() fails with
 * EADDRINUSE) and by every listing; and by a refused connection (the pid was reused by a process
 * that does not listen) when a listing asks it.
 */
import { chmodSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { defaultStateDir, processStartTime } from '../state-records.js';
import type { SessionFigures } from './meter.js';

const PREFIX = 'ctl-';
const SUFFIX = '.sock';
/** sun_path holds 108 bytes with the terminating NUL (unix(7)). */
const MAX_SOCKET_PATH = 107;
/** How long a reader waits for a session's answer. */
export const READ_TIMEOUT_MS = 1500;
/** The largest answer a reader accepts (a session's figures are a few KiB). */
const MAX_ANSWER_BYTES = 1 << 20;

export function controlSocketPath(pid: number = process.pid, dir: string = defaultStateDir()): string {
  return join(dir, `${PREFIX}${pid}${SUFFIX}`);
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Listens on this process's control socket in `dir` (made 0700 when missing), answering each
 * connection with `figures()`. Removes stale sockets of other sessions first.
 */
export async function listenControl(figures: () => SessionFigures, dir: string = defaultStateDir()): Promise<ControlServer> {
  const path = controlSocketPath(process.pid, dir);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new Error(`the control socket path ${path} is longer than a unix socket allows (${MAX_SOCKET_PATH} bytes): set KTCTL_STATE_DIR to a shorter directory`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  removeStaleSockets(dir);
  // our own pid's leftover: a process of an earlier boot, or one whose pid we inherited
  rmSync(path, { force: true });
  const server: Server = createServer({ allowHalfOpen: false }, (sock) => {
    sock.on('error', () => undefined);
    let text: string;
    try {
      text = `${JSON.stringify(figures())}\n`;
    } catch (error) {
      text = `${JSON.stringify({ error: error instanceof Error ? error.message : String(error) })}\n`;
    }
    sock.end(text);
  });
  server.maxConnections = 16;
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  server.unref();
  let closing: Promise<void> | undefined;
  return {
    path,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Node unlinks the socket when the server closes; a crash leaves it for removeStaleSockets
      });
      return closing;
    },
  };
}

/** A control socket found in the state directory, with its session's figures or why there are none. */
export type SessionAnswer = { path: string; pid: number; figures: SessionFigures } | { path: string; pid: number; error: string };

/** The pids of the control sockets in `dir`. */
function socketsIn(dir: string): Array<{ path: string; pid: number }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: Array<{ path: string; pid: number }> = [];
  for (const n of names) {
    const m = /^ctl-(\d+)\.sock$/.exec(n);
    if (m) out.push({ path: join(dir, n), pid: Number(m[1]) });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** Removes the sockets of sessions that are gone; returns their paths. */
export function removeStaleSockets(dir: string = defaultStateDir()): string[] {
  const removed: string[] = [];
  for (const s of socketsIn(dir)) {
    if (s.pid === process.pid) continue;
    if (processStartTime(s.pid) !== null) continue;
    rmSync(s.path, { force: true });
    removed.push(s.path);
  }
  return removed;
}

/** One session's figures, read from its socket; rejects with a sentence when it does not answer. */
export function readControl(path: string, timeoutMs: number = READ_TIMEOUT_MS): Promise<SessionFigures> {
  return new Promise<SessionFigures>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const sock = createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the session on ${path} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_ANSWER_BYTES) {
        sock.destroy();
        clearTimeout(timer);
        reject(new Error(`the session on ${path} sent more than ${MAX_ANSWER_BYTES} bytes`));
        return;
      }
      chunks.push(b);
    });
    sock.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        error.code === 'EACCES'
          ? `the control socket ${path} belongs to another user`
          : error.code === 'ECONNREFUSED' || error.code === 'ENOENT'
            ? `nothing answers on ${path} (the session ended)`
            : `cannot read ${path}: ${error.message}`;
      reject(Object.assign(new Error(why), { code: error.code }));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SessionFigures | { error: string };
        if ('error' in v) reject(new Error(`the session on ${path} could not report: ${v.error}`));
        else resolve(v);
      } catch {
        reject(new Error(`the session on ${path} answered something that is not JSON`));
      }
    });
  });
}

/**
 * Every session of this machine (this user's state directory): stale sockets are removed first,
 * then each remaining one is asked for its figures.
 */
export async function listSessions(dir: string = defaultStateDir()): Promise<SessionAnswer[]> {
  removeStaleSockets(dir);
  return Promise.all(
    socketsIn(dir).map(async ({ path, pid }): Promise<SessionAnswer | undefined> => {
      try {
        return { path, pid, figures: await readControl(path) };
      } catch (error) {
        const code = (error as { code?: string }).code;
        // gone meanwhile (it ended, or was killed while we asked), or refused: nobody listens
        // although the pid lives (the pid was reused): a leftover, not a session
        if (processStartTime(pid) === null || code === 'ECONNREFUSED') {
          rmSync(path, { force: true });
          return undefined;
        }
        return { path, pid, error: (error as Error).message };
      }
    }),
  ).then((all) => all.filter((s): s is SessionAnswer => s !== undefined));
}
