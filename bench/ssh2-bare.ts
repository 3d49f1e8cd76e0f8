/**
 * The ceiling ktctl is measured against: a bare ssh2 client that opens `direct-tcpip` channels
 * (forwardOut) and moves bytes as fast as ssh2 allows, with nothing of ktctl in between.
 * Prints one JSON line.
 *   node --import tsx bench/ssh2-bare.ts HOST PORT USER KEYFILE HOSTPUBFILE CIPHER TARGET download|upload BYTES
 *   node --import tsx bench/ssh2-bare.ts HOST PORT USER KEYFILE HOSTPUBFILE CIPHER TARGET latency COUNT
 *   node --import tsx bench/ssh2-bare.ts HOST PORT USER KEYFILE HOSTPUBFILE CIPHER TARGET connrate SECONDS
 * HOSTPUBFILE is the server's host public key: the only key accepted.
 */
import { readFileSync } from 'node:fs';
import ssh2, { Client, type ClientChannel } from 'ssh2';

const { utils } = ssh2;

const [host, port, username, keyFile, hostPubFile, cipher, target, what, amount] = process.argv.slice(2) as [string, string, string, string, string, string, string, string, string];
const pinned = utils.parseKey(readFileSync(hostPubFile, 'utf8'));
if (pinned instanceof Error) throw pinned;
const pinnedBlob = pinned.getPublicSSH();

const client = new Client();
await new Promise<void>((resolve, reject) => {
  client.once('ready', resolve);
  client.once('error', reject);
  client.connect({
    host,
    port: Number(port),
    username,
    privateKey: readFileSync(keyFile),
    algorithms: { cipher: [cipher as 'aes128-gcm@openssh.com'] },
    hostVerifier: (blob: Buffer) => blob.equals(pinnedBlob),
  });
});

function channel(dstPort: number): Promise<ClientChannel> {
  return new Promise((resolve, reject) => client.forwardOut('127.0.0.1', 0, target, dstPort, (err, ch) => (err ? reject(err) : resolve(ch))));
}

if (what === 'download') {
  const bytes = Number(amount);
  const ch = await channel(8080);
  const t0 = process.hrtime.bigint();
  let got = 0;
  ch.write(`GET /bytes/${bytes} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`);
  await new Promise<void>((resolve) => {
    ch.on('data', (d: Buffer) => (got += d.length));
    ch.on('end', () => {
      ch.end();
      resolve();
    });
  });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ bytes: got, seconds: s, mbit: (got * 8) / s / 1e6 }) + '\n');
} else if (what === 'upload') {
  const bytes = Number(amount);
  const ch = await channel(8080);
  const chunk = Buffer.alloc(256 * 1024, 0x62);
  const t0 = process.hrtime.bigint();
  ch.write(`PUT /sink HTTP/1.1\r\nHost: t\r\nContent-Length: ${bytes}\r\nConnection: close\r\n\r\n`);
  let left = bytes;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!ch.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          ch.once('drain', pump);
          return;
        }
      }
    };
    // The target answers once it has counted the whole body; that answer ends the measurement.
    ch.once('data', () => {
      ch.destroy();
      resolve();
    });
    pump();
  });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ bytes, seconds: s, mbit: (bytes * 8) / s / 1e6 }) + '\n');
} else if (what === 'latency') {
  const count = Number(amount);
  const ch = await channel(7007);
  const msg = Buffer.alloc(64, 0x42);
  const samples: number[] = [];
  let pending: (() => void) | undefined;
  let buffered = 0;
  ch.on('data', (d: Buffer) => {
    buffered += d.length;
    if (buffered >= msg.length && pending) {
      buffered -= msg.length;
      const p = pending;
      pending = undefined;
      p();
    }
  });
  for (let i = 0; i < count + 50; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      pending = resolve;
      ch.write(msg);
    });
    if (i >= 50) samples.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  samples.sort((a, b) => a - b);
  const pct = (p: number): number => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))]!;
  process.stdout.write(JSON.stringify({ p50_us: pct(50), p99_us: pct(99), count }) + '\n');
}
else if (what === 'connrate') {
  const deadline = Date.now() + Number(amount) * 1000;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const ch = await channel(7007);
      await new Promise<void>((resolve) => {
        ch.once('data', () => resolve());
        ch.write('x');
      });
      ch.destroy();
      done++;
    }
  };
  const t0 = Date.now();
  await Promise.all([worker(), worker(), worker(), worker()]);
  process.stdout.write(JSON.stringify({ per_second: done / ((Date.now() - t0) / 1000), done }) + '\n');
}
client.end();
