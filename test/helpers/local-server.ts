/**
 * A server of a test on 127.0.0.1 (port 0): listening, and closed with every connection it still
 * has when the test ends.
 */
import { once } from 'node:events';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Teardown } from './netns.js';

/** Starts `server` on 127.0.0.1, any free port; returns the port. */
export async function listenLocal(t: Teardown, server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  });
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as AddressInfo).port;
}
