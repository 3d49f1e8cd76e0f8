/**
 * `ktctl dashboard`'s server (issue 14): one page on 127.0.0.1 that shows birdseye's rows
 * (src/kube/birdseye.ts) and this machine's sessions with their live figures (src/control), kept
 * current over server-sent events, and offers two actions, `recover` and `clean`, each the same
 * function its command runs, with the same sentences.
 *
 * It listens on loopback only, and it is still reachable by every local user and by any web page
 * the user's browser opens. So:
 * - every request needs the token printed with the URL (a random 192-bit value); without it, 403;
 * - the Host header must be 127.0.0.1:PORT or localhost:PORT, else 403: a DNS-rebinding page
 *   (evil.example resolving to 127.0.0.1) sends its own name;
 * - no CORS headers, ever: a preflight (OPTIONS) gets 403, so a cross-origin script cannot send
 *   the token header; actions are POSTs that need the token in `X-Ktctl-Token` (a header a form or
 *   an `<img>` cannot send), an `Origin`, when present, of the dashboard itself, and a JSON body;
 * - the page is sent with a Content-Security-Policy that allows only its own inline script and
 *   style (by nonce) and connections to itself, `frame-ancestors 'none'`, and
 *   `Referrer-Policy: no-referrer` (the token is in the page's URL).
 *
 * The cluster is read once a second while a page listens (and on demand); the sessions' sockets
 * likewise. A change appears on the page within that second and the event's trip.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { listSessions, type SessionAnswer } from '../control/socket.js';
import type { Kube } from '../kube/api.js';
import { review } from '../kube/access.js';
import { birdseye, type Birdseye } from '../kube/birdseye.js';
import { cleanStale } from '../kube/clean.js';
import { KubeForbiddenError } from '../kube/errors.js';
import { STALE_AFTER_MINUTES } from '../kube/names.js';
import { needsOf } from '../kube/permissions.js';
import { recoverService } from '../kube/recover.js';
import { dashboardPage } from './page.js';

export interface DashboardOptions {
  kube: Kube;
  /** undefined: every namespace (-A) */
  namespace: string | undefined;
  /** 0: a free one */
  port: number;
  /** the token (default: 24 random bytes, base64url) */
  token?: string;
  /** how often the cluster and the sessions are read while a page listens (default 1000 ms) */
  refreshMs?: number;
  /** the state directory whose sessions are shown (default: this user's) */
  stateDir?: string;
  debug?: (line: string) => void;
}

/** What the page shows; sent whole on every change. */
export interface DashboardState {
  birdseye: Birdseye | null;
  /** the sentence when the cluster could not be read */
  clusterError: string | null;
  sessions: SessionAnswer[];
  /** per action: null when RBAC allows it, else the sentence for the first permission it lacks */
  actions: { recover: string | null; clean: string | null };
  at: string;
}

export interface Dashboard {
  readonly url: string;
  readonly port: number;
  readonly token: string;
  close(): Promise<void>;
}

/** The largest request body an action accepts. */
const MAX_BODY = 16 * 1024;
/** At most this many pages listen at once (each is one open response). */
const MAX_LISTENERS = 32;

/** The sentence a command prints for `error` (src/cli/common/command.ts describeError, without a stack). */
function sentence(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const token = o.token ?? randomBytes(24).toString('base64url');
  const tokenBytes = Buffer.from(token);
  const refreshMs = o.refreshMs ?? 1000;
  const debug = o.debug ?? (() => undefined);
  const listeners = new Set<ServerResponse>();
  let port = 0;
  let state: DashboardState | undefined;
  let stateJson = '';
  let refreshing: Promise<DashboardState> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const actions = await actionPermissions(o.kube);

  const read = async (): Promise<DashboardState> => {
    let b: Birdseye | null = null;
    let clusterError: string | null = null;
    try {
      b = await birdseye(o.kube, { namespace: o.namespace, sortBy: 'status' });
    } catch (error) {
      clusterError = sentence(error);
    }
    const sessions = await listSessions(o.stateDir);
    return { birdseye: b, clusterError, sessions, actions, at: new Date().toISOString() };
  };

  /** Reads everything once (one read at a time) and sends it to every page when it changed. */
  const refresh = (): Promise<DashboardState> => {
    refreshing ??= read()
      .then((s) => {
        state = s;
        const { at: _at, ...content } = s;
        const json = JSON.stringify(content);
        if (json !== stateJson) {
          stateJson = json;
          const frame = `event: state\ndata: ${JSON.stringify(s)}\n\n`;
          for (const res of listeners) res.write(frame);
        }
        return s;
      })
      .finally(() => (refreshing = undefined));
    return refreshing;
  };

  const schedule = (): void => {
    if (timer || listeners.size === 0) return;
    timer = setTimeout(() => {
      timer = undefined;
      void refresh().finally(schedule);
    }, refreshMs);
  };

  const allowedHosts = (): string[] => [`127.0.0.1:${port}`, `localhost:${port}`];
  const origins = (): string[] => allowedHosts().map((h) => `http://${h}`);

  const tokenOf = (req: IncomingMessage, url: URL): string | undefined => {
    const header = req.headers['x-ktctl-token'];
    return typeof header === 'string' ? header : (url.searchParams.get('token') ?? undefined);
  };
  const tokenOk = (given: string | undefined): boolean => {
    if (given === undefined) return false;
    const b = Buffer.from(given);
    return b.length === tokenBytes.length && timingSafeEqual(b, tokenBytes);
  };

  const send = (res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8', extra: Record<string, string> = {}): void => {
    res.writeHead(status, {
      'Content-Type': type,
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      ...extra,
    });
    res.end(body);
  };
  const json = (res: ServerResponse, status: number, v: unknown): void => send(res, status, `${JSON.stringify(v)}\n`, 'application/json');

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!allowedHosts().includes(req.headers.host ?? '')) {
      send(res, 403, 'forbidden: the Host header must be 127.0.0.1 or localhost with the dashboard\'s port\n');
      return;
    }
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
    if (!tokenOk(tokenOf(req, url))) {
      send(res, 403, 'forbidden: open the URL ktctl dashboard printed (with its token)\n');
      return;
    }
    const method = req.method ?? 'GET';
    if (method === 'GET' && url.pathname === '/') {
      const nonce = randomBytes(16).toString('base64');
      send(res, 200, dashboardPage(nonce), 'text/html; charset=utf-8', {
        'Content-Security-Policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        'X-Frame-Options': 'DENY',
      });
      return;
    }
    if (method === 'GET' && url.pathname === '/api/state') {
      json(res, 200, state && listeners.size > 0 ? state : await refresh());
      return;
    }
    if (method === 'GET' && url.pathname === '/events') {
      if (listeners.size >= MAX_LISTENERS) {
        send(res, 503, `too many pages listen (${MAX_LISTENERS}); close one\n`);
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer' });
      res.write(`retry: 1000\n\n`);
      debug('dashboard: GET /events 200');
      listeners.add(res);
      req.on('close', () => listeners.delete(res));
      const s = state ?? (await refresh());
      if (!res.writableEnded) res.write(`event: state\ndata: ${JSON.stringify(s)}\n\n`);
      schedule();
      return;
    }
    if (method === 'POST' && (url.pathname === '/api/recover' || url.pathname === '/api/clean')) {
      const origin = req.headers.origin;
      const fetchSite = req.headers['sec-fetch-site'];
      if ((origin !== undefined && !origins().includes(origin)) || fetchSite === 'cross-site' || (typeof req.headers['x-ktctl-token'] !== 'string')) {
        send(res, 403, 'forbidden: actions come only from the dashboard\'s own page\n');
        return;
      }
      if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
        json(res, 415, { error: 'an action takes a JSON body' });
        return;
      }
      let body: Record<string, unknown>;
      try {
        body = await readJson(req);
      } catch (error) {
        json(res, 400, { error: sentence(error) });
        return;
      }
      const lines: string[] = [];
      const log = (l: string): void => {
        lines.push(l);
      };
      try {
        if (url.pathname === '/api/recover') {
          const namespace = typeof body.namespace === 'string' ? body.namespace : o.kube.namespace;
          const service = typeof body.service === 'string' ? body.service : '';
          if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(service) || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace)) {
            json(res, 400, { error: `"${service}" in namespace "${namespace}" is not a service name` });
            return;
          }
          if (actions.recover) {
            json(res, 403, { ok: false, error: actions.recover, lines });
            return;
          }
          await recoverService(o.kube, namespace, service, { force: false, log });
        } else {
          if (actions.clean) {
            json(res, 403, { ok: false, error: actions.clean, lines });
            return;
          }
          const done = await cleanStale(o.kube, { thresholdMinutes: STALE_AFTER_MINUTES, dryRun: false, namespace: o.namespace, log });
          if (done.length === 0) log(`nothing to clean (no ktctl object older than ${STALE_AFTER_MINUTES} min)`);
        }
        json(res, 200, { ok: true, lines });
      } catch (error) {
        json(res, error instanceof KubeForbiddenError ? 403 : 409, { ok: false, error: sentence(error), lines });
      }
      void refresh();
      return;
    }
    if (method === 'OPTIONS') {
      send(res, 403, 'forbidden: no cross-origin requests\n');
      return;
    }
    send(res, 404, 'not found\n');
  };

  const server: Server = createServer((req, res) => {
    // the path without the query: the token never goes into a log
    const path = (req.url ?? '').split('?')[0];
    res.once('finish', () => debug(`dashboard: ${req.method} ${path} ${res.statusCode}${res.getHeader('content-type') === 'text/event-stream' ? ' (closed)' : ''}`));
    handle(req, res).catch((error: unknown) => {
      debug(`dashboard: ${req.method} ${req.url}: ${sentence(error)}`);
      if (!res.headersSent) json(res, 500, { error: sentence(error) });
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}/?token=${token}`,
    port,
    token,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        clearTimeout(timer);
        for (const res of listeners) res.end();
        listeners.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/** For each action, the sentence for the first permission RBAC does not allow (SelfSubjectAccessReview), or null. */
async function actionPermissions(kube: Kube): Promise<DashboardState['actions']> {
  const first = async (command: 'recover' | 'clean'): Promise<string | null> => {
    // clean without -n may fall back to the namespace: only what it cannot work without counts
    const needs = needsOf({ command, flags: {} }).filter((n) => n.lost === undefined);
    try {
      const missing = (await review(kube, needs)).find((a) => !a.allowed);
      return missing ? KubeForbiddenError.of(missing.need, kube.namespace).message : null;
    } catch (error) {
      return sentence(error);
    }
  };
  const [recover, clean] = await Promise.all([first('recover'), first('clean')]);
  return { recover, clean };
}

function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`the request body is larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('the request body is not a JSON object');
        resolve(v as Record<string, unknown>);
      } catch (error) {
        reject(error instanceof SyntaxError ? new Error('the request body is not JSON') : error);
      }
    });
    req.on('error', reject);
  });
}
