/**
 * A UDP client program for tests and benchmarks that runs with plain `node` wherever it is put (a
 * laptop namespace, a pod's namespace) and prints one JSON line (test/helpers/udp-lab.ts has the
 * servers it talks to).
 */

/**
 * The client: `node -e CLIENT_SCRIPT HOST PORT MODE N SIZE`, one JSON line on stdout.
 * - `echo` N=0, SIZE a comma list: one datagram per size (the first sent again every 200 ms until
 *   its answer, up to 10 s: the servers may still be binding), `{ ok: [true, ...] }` per size.
 * - `burst` N datagrams of SIZE bytes at once, numbered; `{ got, inOrder, missing }` after 5 s quiet.
 * - `flood` N datagrams of SIZE bytes as fast as the socket takes them; `{ sent, got }` after 3 s.
 * - `refused` one datagram every 100 ms until an ICMP error: `{ error: 'ECONNREFUSED' }` (null after 5 s).
 * - `rtt` N round trips one after another; `{ samples: [ms...], lost }`, then `rate`: `{ perSecond }`
 *   from a window of 64 in flight for 3 s.
 */
export const CLIENT_SCRIPT = String.raw`
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const [host, portText, mode, nText, sizeText] = process.argv.slice(1);
const port = Number(portText), n = Number(nText);
const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
let done = false;
const out = (o) => { if (done) return; done = true; process.stdout.write(JSON.stringify(o) + '\n'); s.close(); setImmediate(() => process.exit(0)); };
let onMsg = () => {};
s.on('message', (m) => onMsg(m));
// ICMP errors for a connected socket (ECONNREFUSED for port unreachable) end any mode with { error }.
s.on('error', (e) => out({ error: e.code }));
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
  if (mode === 'refused') {
    // One datagram every 100 ms until the ICMP error comes back (the 'error' handler prints it).
    const timer = setInterval(() => { if (!done) s.send(Buffer.from('anyone?')); }, 100);
    s.send(Buffer.from('anyone?'));
    await wait(5000);
    clearInterval(timer);
    return out({ error: null });
  }
  out({ error: 'unknown mode ' + mode });
});
`;
