/**
 * N parallel bulk downloads for a fixed time, for bench/wan.ts: each flow is one TCP connection
 * (straight, or through a SOCKS5 proxy with the name resolved on the far side) that sends
 * `GET /bytes/<huge>` to an HTTP bulk source (bench/targets.ts, the lab's ktlab/echo) and counts
 * what arrives. Bytes are counted only after WARMUP seconds (so the window and the tunnels have
 * reached their steady state), for MEASURE seconds; then every flow is closed. Prints one JSON
 * line: {flows, seconds, bytes, mbytesPerSec, perFlowMBps: [min, max]}.
 *
 *   node --import tsx bench/flows.ts N WARMUP MEASURE tcp HOST PORT
 *   node --import tsx bench/flows.ts N WARMUP MEASURE socks PROXYHOST PROXYPORT HOST PORT
 *   node --import tsx bench/flows.ts N WARMUP MEASURE ssh2 SSHHOST SSHPORT USER KEYFILE HOSTPUBFILE CIPHER HOST PORT
 * `ssh2`: every flow is a `direct-tcpip` channel (forwardOut) of one bare ssh2 client: ssh2 without
 * ktctl, the ceiling of anything built on it (as bench/ssh2-bare.ts).
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';

const HUGE = 2 ** 50;

async function socksConnect(sock: net.Socket, host: string, port: number): Promise<void> {
  let buf = Buffer.alloc(0);
  const need = (n: number): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (buf.length < n) return;
        sock.off('data', onData);
        sock.off('error', reject);
        const out = buf.subarray(0, n);
        buf = buf.subarray(n);
        resolve(out);
      };
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        check();
      };
      sock.on('data', onData);
      sock.once('error', reject);
      check();
    });
  sock.write(Buffer.from([5, 1, 0]));
  if ((await need(2))[1] !== 0) throw new Error('SOCKS method refused');
  const name = Buffer.from(host);
  sock.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 255])]));
  const head = await need(4);
  if (head[1] !== 0) throw new Error(`SOCKS reply ${head[1]}`);
  await need(head[3] === 1 ? 6 : head[3] === 4 ? 18 : (await need(1))[0]! + 2);
  if (buf.length) sock.unshift(buf);
}

let sshClient: Promise<ssh2.Client> | undefined;

/** One bare ssh2 connection for all flows; HOSTPUBFILE is the only host key accepted. */
function ssh2Client(args: string[]): Promise<ssh2.Client> {
  const [, host, port, username, keyFile, hostPubFile, cipher] = args as [string, string, string, string, string, string, string];
  const pinned = ssh2.utils.parseKey(readFileSync(hostPubFile, 'utf8'));
  if (pinned instanceof Error) throw pinned;
  const blob = pinned.getPublicSSH();
  const client = new ssh2.Client();
  return new Promise((resolve, reject) => {
    client.once('ready', () => {
      client.setNoDelay(true);
      if (process.env.WAN_DEBUG) {
        const proto = (client as unknown as { _protocol: { channelWindowAdjust(id: number, amt: number): unknown } })._protocol;
        const orig = proto.channelWindowAdjust.bind(proto);
        const t0 = performance.now();
        proto.channelWindowAdjust = (id, amt) => {
          process.stderr.write(`adjust ${(performance.now() - t0).toFixed(1)} ${amt}\n`);
          return orig(id, amt);
        };
      }
      resolve(client);
    });
    client.once('error', reject);
    client.connect({ host, port: Number(port), username, privateKey: readFileSync(keyFile), algorithms: { cipher: [cipher as 'aes128-gcm@openssh.com'] }, hostVerifier: (key: Buffer) => key.equals(blob) });
  });
}

async function flow(args: string[]): Promise<Duplex> {
  if (args[0] === 'ssh2') {
    sshClient ??= ssh2Client(args);
    const client = await sshClient;
    const [host, port] = [args[7]!, Number(args[8])];
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.forwardOut('127.0.0.1', 0, host, port, (err, c) => (err ? reject(err) : resolve(c))));
    ch.write(`GET /bytes/${HUGE} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`);
    return ch;
  }
  const socks = args[0] === 'socks';
  const sock = net.connect({ host: args[1]!, port: Number(args[2]) });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const host = socks ? args[3]! : args[1]!;
  const port = socks ? Number(args[4]) : Number(args[2]);
  if (socks) await socksConnect(sock, host, port);
  sock.write(`GET /bytes/${HUGE} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`);
  return sock;
}

const [n, warmup, measure] = process.argv.slice(2, 5).map(Number) as [number, number, number];
const target = process.argv.slice(5);
const socks = await Promise.all(Array.from({ length: n }, () => flow(target)));
const counts = new Array<number>(n).fill(0);
let counting = false;
let finished = false;
socks.forEach((s, i) => {
  s.on('data', (d: Buffer) => {
    if (counting) counts[i]! += d.length;
  });
  s.on('error', (e) => {
    if (finished) return;
    process.stderr.write(`flow ${i}: ${e.message}\n`);
    process.exit(1);
  });
  s.on('end', () => {
    if (finished) return;
    process.stderr.write(`flow ${i} ended early\n`);
    process.exit(1);
  });
});
await new Promise((r) => setTimeout(r, warmup * 1000));
counting = true;
const t0 = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, measure * 1000));
counting = false;
finished = true;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
for (const s of socks) s.destroy();
if (sshClient) (await sshClient).end();
const bytes = counts.reduce((a, b) => a + b, 0);
const per = counts.map((c) => c / seconds / 1e6);
process.stdout.write(JSON.stringify({ flows: n, seconds, bytes, mbytesPerSec: bytes / seconds / 1e6, perFlowMBps: [Math.min(...per), Math.max(...per)] }) + '\n');
process.exit(0);
