/**
 * A minimal client of the lab's API for the lab's own tools (cli, test runner): JSON requests
 * and pods/exec over WebSocket, with the CA and admin token from the state folder. Tests use
 * @kubernetes/client-node and kubectl instead.
 */
import https from 'node:https';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { FILES, readTokens, SERVER_URL } from './pki.js';

export interface LabEndpoint {
  server: string;
  ca: Buffer;
  token: string;
}

export function endpointFromState(stateDir: string, server = SERVER_URL): LabEndpoint {
  return { server, ca: fs.readFileSync(path.join(stateDir, FILES.caCert)), token: readTokens(stateDir).admin };
}

export function request(ep: LabEndpoint, method: string, urlPath: string, body?: unknown, timeoutMs = 5000): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const url = new URL(urlPath, ep.server);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = https.request(
      url,
      {
        method,
        ca: ep.ca,
        headers: { Authorization: `Bearer ${ep.token}`, Accept: 'application/json', ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}) },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to ${url.href} timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

export interface ExecResult {
  exitCode: number;
  message?: string;
}

/**
 * Runs a command in a pod over pods/exec (v5.channel.k8s.io), piping the given streams.
 * Resolves with the exit code the status channel reports.
 */
export function execInPod(
  ep: LabEndpoint,
  namespace: string,
  pod: string,
  command: string[],
  io: { stdin?: NodeJS.ReadableStream; stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; container?: string },
): Promise<ExecResult> {
  const q = new URLSearchParams();
  for (const c of command) q.append('command', c);
  q.set('stdout', 'true');
  q.set('stderr', 'true');
  if (io.stdin) q.set('stdin', 'true');
  if (io.container) q.set('container', io.container);
  const url = `${ep.server.replace(/^https/, 'wss')}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/exec?${q.toString()}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['v5.channel.k8s.io'], { ca: ep.ca, headers: { Authorization: `Bearer ${ep.token}` } });
    let result: ExecResult | undefined;
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let message = text;
        try {
          message = (JSON.parse(text) as { message?: string }).message ?? text;
        } catch {
          // plain text
        }
        reject(new Error(`exec failed (${res.statusCode}): ${message}`));
      });
    });
    ws.on('open', () => {
      if (!io.stdin) return;
      io.stdin.on('data', (d: Buffer | string) => {
        const b = typeof d === 'string' ? Buffer.from(d) : d;
        ws.send(Buffer.concat([Buffer.from([0]), b]));
      });
      io.stdin.on('end', () => {
        if (ws.readyState === ws.OPEN) ws.send(Buffer.from([255, 0]));
      });
    });
    ws.on('message', (data: Buffer) => {
      const ch = data[0];
      const payload = data.subarray(1);
      if (ch === 1) io.stdout.write(payload);
      else if (ch === 2) io.stderr.write(payload);
      else if (ch === 3) {
        const st = JSON.parse(payload.toString('utf8')) as { status?: string; message?: string; reason?: string; details?: { causes?: Array<{ reason?: string; message?: string }> } };
        if (st.status === 'Success') result = { exitCode: 0 };
        else {
          const code = st.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
          result = { exitCode: code !== undefined ? Number(code) : 1, message: st.reason === 'NonZeroExitCode' ? undefined : st.message };
        }
      }
    });
    ws.on('close', () => {
      if (io.stdin && 'pause' in io.stdin) (io.stdin as NodeJS.ReadStream).pause();
      resolve(result ?? { exitCode: 1, message: 'the connection closed without an exit status' });
    });
    ws.on('error', (e) => {
      if (!result) reject(e);
    });
  });
}
