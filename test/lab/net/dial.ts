/**
 * TCP connections "from the node": pod and service addresses are routed only inside the node
 * namespace. A process that runs there (the lab daemon) connects directly; any other process
 * goes through the node agent's relay (a unix socket, so it crosses namespaces).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LAB } from './types.js';

export const RELAY_SOCKET = 'node-relay.sock';

/** true when this process's network namespace is the lab's node namespace */
export function inNodeNetns(nodeNetns: string = LAB.nodeNetns): boolean {
  try {
    const self = fs.statSync('/proc/self/ns/net');
    const node = fs.statSync(`/run/netns/${nodeNetns}`);
    return self.ino === node.ino && self.dev === node.dev;
  } catch {
    return false;
  }
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(message);
  e.code = code;
  return e;
}

/** net.connect, resolved once connected; rejects with the socket's error (ECONNREFUSED, ...). */
export function connectDirect(host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(errnoError('ETIMEDOUT', `connect ETIMEDOUT ${host}:${port}`));
    }, timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}

/** Through the node agent's relay: "CONNECT ip port\n", then "OK\n" or "ERR CODE message\n". */
export function connectViaRelay(netDir: string, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path.join(netDir, RELAY_SOCKET));
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => fail(errnoError('ETIMEDOUT', `connect ETIMEDOUT ${host}:${port}`)), timeoutMs);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    const onReadable = (): void => {
      for (;;) {
        const chunk = sock.read(1) as Buffer | null;
        if (chunk === null) return;
        head = Buffer.concat([head, chunk]);
        if (chunk[0] !== 10) {
          if (head.length > 512) fail(errnoError('EPROTO', 'relay: reply too long'));
          continue;
        }
        sock.removeListener('readable', onReadable);
        sock.removeListener('error', fail);
        sock.removeListener('end', onEnd);
        clearTimeout(timer);
        const line = head.toString('utf8').trim();
        if (line === 'OK') {
          resolve(sock);
          return;
        }
        const m = /^ERR (\S+) ?(.*)$/.exec(line);
        sock.destroy();
        reject(errnoError(m?.[1] ?? 'EPROTO', m?.[2] || `connect failed ${host}:${port}`));
        return;
      }
    };
    const onEnd = (): void => fail(errnoError('ECONNRESET', 'relay closed the connection'));
    sock.once('connect', () => sock.write(`CONNECT ${host} ${port}\n`));
    sock.on('readable', onReadable);
    sock.on('error', fail);
    sock.on('end', onEnd);
  });
}

/** A connection from the node to host:port, whichever namespace this process is in. */
export function connectFromNode(nodeNetns: string, netDir: string, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return inNodeNetns(nodeNetns) ? connectDirect(host, port, timeoutMs) : connectViaRelay(netDir, host, port, timeoutMs);
}
