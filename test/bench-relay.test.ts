/**
 * bench/relay.ts, the delay relay of the WAN bench rows: it must not be what the rows measure. Bytes
 * pass in order and complete in both directions, also while the delay changes; a FIN is passed on
 * after the data before it; a destination that stops reading makes the relay stop reading at its
 * cap (bounded memory), and everything arrives once it reads again. Loopback only; no timings.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { DelayRelay } from '../bench/relay.js';

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function sha(chunks: Buffer[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

/** Writes `chunks` with backpressure, then ends the socket. */
async function writeAll(sock: net.Socket, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) if (!sock.write(c)) await new Promise((r) => sock.once('drain', r));
  sock.end();
}

/** Everything the socket receives until its FIN. */
function readAll(sock: net.Socket): Promise<Buffer[]> {
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  return new Promise((resolve, reject) => {
    sock.once('end', () => resolve(got));
    sock.once('error', reject);
  });
}

/** A server on loopback whose connections are handed to `onConnection`; the first one is returned. */
async function server(t: { teardown(fn: () => void): void }, onConnection: (c: net.Socket) => void): Promise<{ port: number; first: Promise<net.Socket> }> {
  let first!: (c: net.Socket) => void;
  const firstP = new Promise<net.Socket>((r) => (first = r));
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    onConnection(c);
    first(c);
  });
  const port = await listen(srv);
  t.teardown(() => srv.close());
  return { port, first: firstP };
}

async function relayTo(t: { teardown(fn: () => void): void }, port: number, options: { rttMs?: number; cap?: number }): Promise<{ relay: DelayRelay; port: number }> {
  const relay = new DelayRelay({ host: '127.0.0.1', port }, options);
  t.teardown(() => void relay.close());
  return { relay, port: await relay.listen(0, '127.0.0.1') };
}

test('relay_bothDirections_inOrderWhileTheDelayChanges_finAfterData', async (t) => {
  const up = Array.from({ length: 24 }, () => randomBytes(256 * 1024));
  const down = Array.from({ length: 24 }, () => randomBytes(256 * 1024));
  const toServer: Array<Promise<Buffer[]>> = [];
  const srv = await server(t, (c) => {
    toServer.push(readAll(c));
    void writeAll(c, down);
  });
  const { relay, port } = await relayTo(t, srv.port, { rttMs: 20 });
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.teardown(() => c.destroy());
  const fromServer = readAll(c);
  // Lower and raise the delay while chunks are held: a chunk never overtakes an earlier one.
  let flips = 0;
  const flipper = setInterval(() => relay.setRtt(++flips % 2 ? 0 : 30), 3);
  t.teardown(() => clearInterval(flipper));
  await writeAll(c, up);
  await srv.first;
  const [down2, up2] = await Promise.all([fromServer, toServer[0]!]);
  clearInterval(flipper);
  t.is(sha(down2), sha(down), 'server -> client, then its FIN');
  t.is(sha(up2), sha(up), 'client -> server, then its FIN');
  t.true(flips > 0);
  t.is(relay.takeStats().fullLine, 0);
});

test('relay_farSideClosesFirst_heldDataAndFinStillArrive', async (t) => {
  // The client's FIN reaches the server first; the server answers and closes: the relay's upstream
  // socket is fully closed while its answer still waits out the delay, and must still arrive.
  const answer = randomBytes(1024 * 1024);
  const srv = await server(t, (c) => {
    c.resume();
    c.once('end', () => c.end(answer));
  });
  const { port } = await relayTo(t, srv.port, { rttMs: 60 });
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.teardown(() => c.destroy());
  const got = readAll(c);
  c.end();
  t.is(sha(await got), sha([answer]));
});

test('relay_destinationStopsReading_relayStopsAtItsCap_thenDeliversEverything', async (t) => {
  const cap = 1024 * 1024;
  // 64 MiB: more than the kernel buffers on the way (both sockets' send and receive buffers) and
  // the cap together, so the sender ends up stuck.
  const chunks = Array.from({ length: 256 }, () => randomBytes(256 * 1024));
  const srv = await server(t, (s) => s.pause());
  const { relay, port } = await relayTo(t, srv.port, { rttMs: 2, cap });
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.teardown(() => c.destroy());
  const sending = writeAll(c, chunks);
  const sink = await srv.first;
  // Wait until the sender is stuck: its own buffer holds data and the relay reads no more.
  let last = -1;
  const deadline = Date.now() + 30_000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    const held = relay.stats.peakBytes;
    if (held === last && c.writableLength > 0) break;
    if (Date.now() > deadline) return t.fail(`the sender never got stuck: ${JSON.stringify(relay.stats)}, client buffer ${c.writableLength}`);
    last = held;
  }
  const stats = relay.takeStats();
  t.true(stats.capHits >= 1, JSON.stringify(stats));
  // The cap was reached because the destination stopped, not because the delay line was full.
  t.true(stats.capHits > stats.fullLine, JSON.stringify(stats));
  // The relay holds at most the cap plus one read (a socket read is at most 64 KiB).
  t.true(stats.peakBytes <= cap + 64 * 1024, JSON.stringify(stats));
  const got = readAll(sink);
  sink.resume();
  await sending;
  t.is(sha(await got), sha(chunks));
});

test('relay_badRtt_isRefusedWithASentence', (t) => {
  const relay = new DelayRelay({ host: '127.0.0.1', port: 9 });
  t.throws(() => relay.setRtt(-1), { message: /rtt must be a number of milliseconds >= 0/ });
  t.throws(() => relay.setRtt(Number.NaN), { message: /rtt must be/ });
});
