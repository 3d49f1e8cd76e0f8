/**
 * UDP in the lab (test/kube-udp.test.ts, bench/udp-rtt.ts): a pod of the Node.js image that runs a
 * UDP echo server and a small DNS server on its pod IP, and a client program that runs with plain
 * `node` wherever the test puts it (a laptop namespace, another pod's namespace) and prints one
 * JSON line. Both are scripts in strings: a pod reads only its image, never the checkout.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { DEFAULT_SHADOW_IMAGE } from '../../src/kube/names.js';
import { kubeConfig, waitForReadyPods } from '../lab/fixture.js';

export const UDP_ECHO_PORT = 7007;
/** What the pod's DNS server answers for every A question. */
export const UDP_DNS_ANSWER = '198.18.7.7';

/**
 * The pod's servers: echo on UDP_ECHO_PORT (every datagram back to its sender, as it came), and DNS
 * on 53 answering every A question with UDP_DNS_ANSWER (TTL 60), other types with no records, and
 * RFC 1035 §4.1.1's header rules (id, opcode and RD copied; QR, AA set).
 */
const SERVER_SCRIPT = String.raw`
const dgram = require('node:dgram');
const echo = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
echo.on('message', (m, r) => echo.send(m, r.port, r.address));
echo.bind(${UDP_ECHO_PORT});
const dns = dgram.createSocket('udp4');
dns.on('message', (q, r) => {
  if (q.length < 12) return;
  let off = 12;
  while (off < q.length && q[off] !== 0) off += q[off] + 1;
  if (off + 5 > q.length) return;
  const qend = off + 5;
  const qtype = q.readUInt16BE(off + 1);
  const a = qtype === 1;
  const out = Buffer.alloc(qend + (a ? 16 : 0));
  q.copy(out, 0, 0, qend);
  out.writeUInt16BE(0x8000 | 0x0400 | (q.readUInt16BE(2) & 0x7900), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(a ? 1 : 0, 6);
  out.writeUInt32BE(0, 8);
  if (a) {
    out.writeUInt16BE(0xc00c, qend);
    out.writeUInt16BE(1, qend + 2);
    out.writeUInt16BE(1, qend + 4);
    out.writeUInt32BE(60, qend + 6);
    out.writeUInt16BE(4, qend + 10);
    Buffer.from([${UDP_DNS_ANSWER.split('.').join(', ')}]).copy(out, qend + 12);
  }
  dns.send(out, r.port, r.address);
});
dns.bind(53);
setInterval(() => {}, 1 << 30);
`;

/** Creates the pod `name` in `namespace` and returns its IP once it is ready. */
export async function deployUdpTarget(namespace: string, name = 'udp-target'): Promise<string> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({
    namespace,
    body: { metadata: { name, labels: { app: name } }, spec: { containers: [{ name: 'udp', image: DEFAULT_SHADOW_IMAGE, command: ['node', '-e', SERVER_SCRIPT] }] } },
  });
  const [pod] = await waitForReadyPods(namespace, `app=${name}`, 1);
  return pod!.status!.podIP!;
}

/**
 * The client: `node -e CLIENT_SCRIPT HOST PORT MODE N SIZE`, one JSON line on stdout.
 * - `echo` N=0, SIZE a comma list: one datagram per size (the first sent again every 200 ms until
 *   its answer, up to 10 s: the servers may still be binding), `{ ok: [true, ...] }` per size.
 * - `burst` N datagrams of SIZE bytes at once, numbered; `{ got, inOrder, missing }` after 5 s quiet.
 * - `flood` N datagrams of SIZE bytes as fast as the socket takes them; `{ sent, got }` after 3 s.
 * - `rtt` N round trips one after another; `{ samples: [ms...], lost }`, then `rate`: `{ perSecond }`
 *   from a window of 64 in flight for 3 s.
 */
export const CLIENT_SCRIPT = String.raw`
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const [host, portText, mode, nText, sizeText] = process.argv.slice(1);
const port = Number(portText), n = Number(nText);
const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\n'); s.close(); };
let onMsg = () => {};
s.on('message', (m) => onMsg(m));
s.connect(port, host, async () => {
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  if (mode === 'echo') {
    const ok = [];
    for (const [i, size] of sizeText.split(',').map(Number).entries()) {
      const p = crypto.randomBytes(size);
      let back;
      onMsg = (m) => { back = m; };
      const deadline = Date.now() + (i === 0 ? 10000 : 5000);
      while (!back && Date.now() < deadline) {
        s.send(p);
        for (let k = 0; k < 20 && !back; k++) await wait(10);
      }
      ok.push(back !== undefined && back.equals(p));
    }
    return out({ ok });
  }
  if (mode === 'burst') {
    const seen = [];
    let last = Date.now();
    onMsg = (m) => { seen.push(m.readUInt32BE(0)); last = Date.now(); };
    for (let i = 0; i < n; i++) { const p = Buffer.alloc(Number(sizeText)); p.writeUInt32BE(i, 0); s.send(p); }
    while (seen.length < n && Date.now() - last < 5000) await wait(20);
    let inOrder = true;
    for (let i = 1; i < seen.length; i++) if (seen[i] <= seen[i - 1]) inOrder = false;
    return out({ got: seen.length, inOrder, missing: n - seen.length });
  }
  if (mode === 'flood') {
    let got = 0;
    onMsg = () => { got++; };
    const p = Buffer.alloc(Number(sizeText));
    let sent = 0;
    for (let i = 0; i < n; i++) { s.send(p); sent++; if (i % 1000 === 999) await new Promise((r) => setImmediate(r)); }
    await wait(3000);
    return out({ sent, got });
  }
  if (mode === 'rtt') {
    const samples = [];
    let lost = 0;
    for (let i = 0; i < n; i++) {
      const p = Buffer.alloc(Number(sizeText));
      p.writeUInt32BE(i, 0);
      const t0 = process.hrtime.bigint();
      const back = await new Promise((r) => { const timer = setTimeout(() => r(false), 1000); onMsg = (m) => { if (m.readUInt32BE(0) === i) { clearTimeout(timer); r(true); } }; s.send(p); });
      if (back) samples.push(Number(process.hrtime.bigint() - t0) / 1e6); else lost++;
    }
    // Datagrams per second: a window of 64 in flight for 3 s.
    let done = 0, inFlight = 0, progress = Date.now();
    const p = Buffer.alloc(Number(sizeText));
    const end = Date.now() + 3000;
    await new Promise((resolve) => {
      const pump = () => { while (inFlight < 64 && Date.now() < end) { inFlight++; s.send(p); } if (Date.now() >= end) resolve(); };
      onMsg = () => { done++; inFlight--; progress = Date.now(); pump(); };
      // Datagrams lost on the way would shrink the window for good: after 100 ms without an answer, start it again.
      const timer = setInterval(() => { if (Date.now() - progress > 100) { inFlight = 0; progress = Date.now(); pump(); } }, 50);
      pump();
      setTimeout(() => { clearInterval(timer); resolve(); }, 3100);
    });
    return out({ samples, lost, perSecond: done / 3 });
  }
  out({ error: 'unknown mode ' + mode });
});
`;
