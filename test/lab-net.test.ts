/**
 * The lab's data plane (test/lab/net), driven directly through LabNet, without the API server.
 *
 * The real lab's names and host link are fixed and the suite's own lab may be running, so the
 * integration tests here run an *isolated* lab: createLabNet({ prefix }) makes the same topology
 * and addresses inside namespaces named PREFIX*, with no link to the host; it is reached through
 * connect(), exec() and a laptop. The pieces (echo program, DNS servers, the nft table) are also
 * tested alone on loopback / in a test namespace.
 */
import test from 'ava';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import WebSocket from 'ws';
import { createEchoServer, echoPatternSha256 } from './lab/images/echo.js';
import { ClusterZone, clusterHandler, queryTcp, queryUdp, startDnsServer, upstreamHandler, type DnsServer } from './lab/net/dns.js';
import { renderServiceTable } from './lab/net/services.js';
import { nftCheck, run } from './lab/net/run.js';
import { createLabNet, LAB, type LabDataPlane, type LabNetEvents, type PodRuntimeSpec, type ContainerRuntimeSpec } from './lab/net/index.js';
import { createNetns } from './helpers/netns.js';
import { inNodeNetns } from './lab/net/dial.js';
import { DEFAULT_SHADOW_IMAGE } from '../src/kube/names.js';

// ---------------------------------------------------------------------------------------------
// helpers

function listen(server: http.Server | net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : 0);
    });
  });
}

function httpGet(port: number, urlPath: string, agent?: http.Agent): Promise<{ status: number; body: Buffer; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), socket: res.socket }));
    });
    req.on('error', reject);
  });
}

function dnsQuery(name: string, type: 'A' | 'AAAA' = 'A'): Buffer {
  return dnsPacket.encode({ type: 'query', id: randomBytes(2).readUInt16BE(0), flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
}

interface Answer {
  rcode: string;
  ips: string[];
}

function decodeAnswer(b: Buffer): Answer {
  const p = dnsPacket.decode(b);
  const rcode = (p as dnsPacket.Packet & { rcode?: string }).rcode ?? '';
  const ips = (p.answers ?? []).flatMap((a) => (a.type === 'A' ? [a.data] : []));
  return { rcode, ips };
}

// ---------------------------------------------------------------------------------------------
// the echo program (loopback)

test('echo: JSON identity, /bytes/N pattern, /sink digest, keep-alive and WebSocket echo', async (t) => {
  const server = createEchoServer({ pod: 'echo-1', namespace: 'ns1', ip: '' });
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = await listen(server);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const first = await httpGet(port, '/hello?x=1', agent);
  const info = JSON.parse(first.body.toString()) as { pod: string; namespace: string; ip: string; method: string; path: string; headers: Record<string, string> };
  t.is(info.pod, 'echo-1');
  t.is(info.namespace, 'ns1');
  t.is(info.ip, '127.0.0.1');
  t.is(info.method, 'GET');
  t.is(info.path, '/hello?x=1');
  t.is(info.headers.host, `127.0.0.1:${port}`);
  const second = await httpGet(port, '/again', agent);
  t.is(second.socket, first.socket, 'keep-alive: the second request reuses the connection');

  const n = 1_000_003;
  const bytes = await httpGet(port, `/bytes/${n}`);
  t.is(bytes.status, 200);
  t.is(bytes.body.length, n);
  t.is(bytes.body[0], 0);
  t.is(bytes.body[251], 0);
  t.is(bytes.body[252], 1);
  t.is(createHash('sha256').update(bytes.body).digest('hex'), echoPatternSha256(n));

  const payload = randomBytes(3 * 1024 * 1024 + 7);
  const sink = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/sink', method: 'POST' }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => resolve(JSON.parse(text) as { bytes: number; sha256: string }));
    });
    req.on('error', reject);
    req.end(payload);
  });
  t.deepEqual(sink, { bytes: payload.length, sha256: createHash('sha256').update(payload).digest('hex') });

  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const echoed = await new Promise<{ data: Buffer; binary: boolean }>((resolve) => {
    ws.once('message', (data, binary) => resolve({ data: Buffer.from(data as Buffer), binary }));
    ws.send(Buffer.from([1, 2, 3, 250]));
  });
  t.true(echoed.binary);
  t.deepEqual([...echoed.data], [1, 2, 3, 250]);
  const text = await new Promise<string>((resolve) => {
    ws.once('message', (data) => resolve(String(data)));
    ws.send('hello ws');
  });
  t.is(text, 'hello ws');

  const notWs = await new Promise<number>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/other', headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    req.on('response', (res) => resolve(res.statusCode ?? 0));
    req.on('upgrade', () => resolve(101));
    req.on('error', () => resolve(-1));
  });
  t.is(notWs, 404, 'upgrade anywhere but /ws is refused');
});

// ---------------------------------------------------------------------------------------------
// the DNS servers (loopback)

test('dns: cluster zone answers services and pods, NXDOMAIN for unknown cluster names, forwards the rest to the upstream (UDP and TCP)', async (t) => {
  const servers: DnsServer[] = [];
  t.teardown(() => Promise.all(servers.map((s) => s.close())));
  const upstream = await startDnsServer('127.0.0.1', 0, upstreamHandler());
  servers.push(upstream);
  const zone = new ClusterZone();
  zone.set({
    services: [
      { namespace: 'default', name: 'web', clusterIP: '198.19.0.20' },
      { namespace: 'kube-system', name: 'kube-dns', clusterIP: '198.19.0.10' },
    ],
    pods: [{ namespace: 'default', ip: '198.18.0.7' }],
  });
  const cluster = await startDnsServer('127.0.0.1', 0, clusterHandler(zone, { host: '127.0.0.1', port: upstream.port }));
  servers.push(cluster);
  const server = { host: '127.0.0.1', port: cluster.port };

  for (const ask of [queryUdp, queryTcp]) {
    const q = async (name: string, type: 'A' | 'AAAA' = 'A'): Promise<Answer> => decodeAnswer(await ask(dnsQuery(name, type), server));
    t.deepEqual(await q('web.default.svc.cluster.local'), { rcode: 'NOERROR', ips: ['198.19.0.20'] }, ask.name);
    t.deepEqual(await q('WEB.Default.svc.cluster.local.'), { rcode: 'NOERROR', ips: ['198.19.0.20'] }, 'case-insensitive');
    t.deepEqual(await q('kube-dns.kube-system.svc.cluster.local'), { rcode: 'NOERROR', ips: ['198.19.0.10'] });
    t.deepEqual(await q('web.other.svc.cluster.local'), { rcode: 'NXDOMAIN', ips: [] });
    t.deepEqual(await q('198-18-0-7.default.pod.cluster.local'), { rcode: 'NOERROR', ips: ['198.18.0.7'] });
    t.deepEqual(await q('198-18-0-8.default.pod.cluster.local'), { rcode: 'NXDOMAIN', ips: [] });
    t.deepEqual(await q('web.default.svc.cluster.local', 'AAAA'), { rcode: 'NOERROR', ips: [] }, 'NODATA for AAAA');
    t.deepEqual(await q('nothing.cluster.local'), { rcode: 'NXDOMAIN', ips: [] });
    // forwarded: the upstream knows example.test and nothing else
    t.deepEqual(await q('www.example.test'), { rcode: 'NOERROR', ips: [LAB.wwwIp] });
    t.deepEqual(await q('nope.example.test'), { rcode: 'NXDOMAIN', ips: [] });
    t.deepEqual(await q('kubernetes.io'), { rcode: 'NXDOMAIN', ips: [] });
  }

  const reply = dnsPacket.decode(await queryUdp(dnsQuery('web.default.svc.cluster.local'), server));
  t.is((reply.answers?.[0] as { ttl?: number } | undefined)?.ttl, 5);

  // a full sync replaces the content
  zone.set({ services: [{ namespace: 'default', name: 'api', clusterIP: '198.19.0.30' }], pods: [] });
  t.deepEqual(decodeAnswer(await queryUdp(dnsQuery('web.default.svc.cluster.local'), server)), { rcode: 'NXDOMAIN', ips: [] });
  t.deepEqual(decodeAnswer(await queryUdp(dnsQuery('api.default.svc.cluster.local'), server)), { rcode: 'NOERROR', ips: ['198.19.0.30'] });

  // garbage gets FORMERR (or nothing), and the server keeps serving
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  sock.send(Buffer.from([0x12, 0x34, 0xff]), cluster.port, '127.0.0.1');
  const bad = await new Promise<Buffer>((resolve) => sock.once('message', (m) => resolve(m)));
  t.is(bad.readUInt16BE(0), 0x1234);
  t.is(bad.readUInt16BE(2) & 0xf, 1, 'FORMERR');
  t.deepEqual(decodeAnswer(await queryUdp(dnsQuery('api.default.svc.cluster.local'), server)), { rcode: 'NOERROR', ips: ['198.19.0.30'] });
});

test('dns: the cluster DNS answers SERVFAIL when the upstream is unreachable', async (t) => {
  const dead = net.createServer();
  const deadPort = await listen(dead); // a TCP port nobody answers DNS on, closed at once
  await new Promise<void>((r) => dead.close(() => r()));
  const cluster = await startDnsServer('127.0.0.1', 0, clusterHandler(new ClusterZone(), { host: '127.0.0.1', port: deadPort }));
  t.teardown(() => cluster.close());
  const a = decodeAnswer(await queryTcp(dnsQuery('www.example.test'), { host: '127.0.0.1', port: cluster.port }, 5000));
  t.is(a.rcode, 'SERVFAIL');
});

// ---------------------------------------------------------------------------------------------
// the services table (nft -c inside a test namespace)

test('services: the rendered table is valid nft, DNATs ready endpoints at random, rejects the rest, leaves cluster DNS alone', async (t) => {
  const script = renderServiceTable([
    {
      namespace: 'default',
      name: 'web',
      clusterIP: '198.19.0.20',
      ports: [
        { port: 80, protocol: 'TCP', endpoints: [{ ip: '198.18.0.2', port: 8080 }, { ip: '198.18.0.3', port: 8080 }] },
        { port: 53, protocol: 'UDP', endpoints: [{ ip: '198.18.0.2', port: 5353 }] },
        { port: 81, protocol: 'TCP', endpoints: [] },
      ],
    },
    { namespace: 'kube-system', name: 'kube-dns', clusterIP: LAB.clusterDnsIp, ports: [{ port: 53, protocol: 'UDP', endpoints: [] }] },
    { namespace: 'default', name: 'headless', clusterIP: 'None', ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: '198.18.0.2', port: 80 }] }] },
  ]);
  t.regex(script, /ip daddr 198\.19\.0\.20 tcp dport 80 goto/);
  t.regex(script, /numgen random mod 2 vmap/);
  t.regex(script, /meta l4proto tcp dnat to 198\.18\.0\.3:8080/);
  t.regex(script, /ip daddr 198\.19\.0\.20 udp dport 53 goto/);
  t.notRegex(script, /dport 81/, 'a port without endpoints has no DNAT: it falls to the reject rules');
  t.notRegex(script, /ip daddr 198\.19\.0\.10 (tcp|udp) dport/, 'kube-dns is answered by the node, never DNATed');
  t.regex(script, /reject with tcp reset/);
  t.is(renderServiceTable([]), renderServiceTable([]), 'deterministic');

  const ns = await createNetns(t);
  const check = await nftCheck(script, ns.name);
  t.is(check.code, 0, check.stderr);
  const empty = await nftCheck(renderServiceTable([]), ns.name);
  t.is(empty.code, 0, empty.stderr);
});

// ---------------------------------------------------------------------------------------------
// an isolated lab: the whole data plane, in namespaces of its own

const PREFIX = `ktln${process.pid.toString(36)}-`;
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-net-test-'));
let lab: LabDataPlane;
const laptopName = `ktln-lt-${process.pid.toString(36)}`;
const received: Array<[keyof LabNetEvents, unknown[]]> = [];

/** Stale isolated labs of test processes that died: namespaces ktln<pid36>-* whose pid is gone. */
async function sweepStaleLabs(): Promise<void> {
  const list = await run('ip', ['netns', 'list']);
  const prefixes = new Set<string>();
  for (const line of list.stdout.split('\n')) {
    const m = /^(ktln([0-9a-z]+)-)/.exec(line.trim());
    if (!m) continue;
    const pid = parseInt(m[2]!, 36);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive) prefixes.add(m[1]!);
  }
  for (const prefix of prefixes) await createLabNet({ stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-sweep-')), prefix }).down();
}

function spec(uid: string, name: string, containers: ContainerRuntimeSpec[], restartPolicy: PodRuntimeSpec['restartPolicy'] = 'Always'): PodRuntimeSpec {
  return { uid: `${uid}-${randomBytes(4).toString('hex')}`, namespace: 'default', name, containers, restartPolicy, terminationGracePeriodSeconds: 2 };
}

function echoContainer(extra: Partial<ContainerRuntimeSpec> = {}): ContainerRuntimeSpec {
  return { name: 'echo', image: 'ktlab/echo:1.0', env: [], ports: [{ containerPort: 8080, protocol: 'TCP' }], volumeMounts: [], ...extra };
}

function waitFor<K extends keyof LabNetEvents>(
  event: K,
  match: (...args: LabNetEvents[K]) => boolean,
  timeoutMs = 15_000,
): Promise<LabNetEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      lab.events.removeListener(event, on as never);
      reject(new Error(`no ${event} within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (...args: LabNetEvents[K]): void => {
      if (!match(...args)) return;
      clearTimeout(timer);
      lab.events.removeListener(event, on as never);
      resolve(args);
    };
    lab.events.on(event, on as never);
  });
}

async function execIn(uid: string, container: string, command: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = lab.exec(uid, container, command, { tty: false });
  child.stdin.end();
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function httpVia(sock: net.Socket, urlPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ createConnection: () => sock, path: urlPath, headers: { connection: 'close' } }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    req.end();
  });
}

let podA: { uid: string; ip: string };
let podB: { uid: string; ip: string };

test.before(async () => {
  await sweepStaleLabs();
  lab = createLabNet({ stateDir, prefix: PREFIX });
  for (const e of ['containerStarted', 'containerReady', 'containerExited', 'imagePullFailed', 'containerWaiting'] as const) {
    lab.events.on(e, (...args: unknown[]) => received.push([e, args]));
  }
});

test.after.always(async () => {
  if (lab) await lab.down();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test.serial('isolated lab: up, two echo pods Running and Ready, reachable from the node by pod IP', async (t) => {
  const t0 = Date.now();
  await lab.up();
  const a = spec('a', 'web-a', [echoContainer()]);
  const b = spec('b', 'web-b', [echoContainer()]);
  const readyA = waitFor('containerReady', (uid, _c, ready) => uid === a.uid && ready);
  const readyB = waitFor('containerReady', (uid, _c, ready) => uid === b.uid && ready);
  const [ra, rb] = await Promise.all([lab.createPod(a), lab.createPod(b)]);
  t.regex(ra.podIP, /^198\.18\.([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7])\.\d+$/);
  t.not(ra.podIP, rb.podIP);
  await Promise.all([readyA, readyB]);
  t.log(`up + two echo pods ready in ${Date.now() - t0} ms`);
  podA = { uid: a.uid, ip: ra.podIP };
  podB = { uid: b.uid, ip: rb.podIP };
  const started = received.filter(([e, args]) => e === 'containerStarted' && args[0] === a.uid);
  t.is(started.length, 1);
  t.is(started[0]![1][3], 0, 'restartCount 0');

  const reply = JSON.parse(await httpVia(await lab.connect(podA.uid, 8080), '/who')) as { pod: string; ip: string; namespace: string };
  t.deepEqual([reply.pod, reply.ip, reply.namespace], ['web-a', podA.ip, 'default']);
  const err = await lab.connect(podA.uid, 8081).then(
    () => '',
    (e: NodeJS.ErrnoException) => e.code ?? '',
  );
  t.is(err, 'ECONNREFUSED');

  // inside the node namespace (where the daemon runs) connect() is a direct net.connect
  t.false(inNodeNetns(lab.nodeNetns));
  const dialUrl = new URL('./lab/net/dial.ts', import.meta.url).href;
  const inside = await run('nsenter', [
    `--net=/run/netns/${lab.nodeNetns}`, '--', process.execPath, '--import', import.meta.resolve('tsx'), '--input-type=module', '-e',
    `const d = await import(${JSON.stringify(dialUrl)}); const s = await d.connectFromNode(${JSON.stringify(lab.nodeNetns)}, '/nonexistent', ${JSON.stringify(podB.ip)}, 8080); ` +
      `s.end('GET /direct HTTP/1.0\\r\\n\\r\\n'); let o = ''; s.on('data', (b) => o += b); s.on('close', () => console.log(d.inNodeNetns(${JSON.stringify(lab.nodeNetns)}), o.split('\\r\\n\\r\\n')[1]));`,
  ]);
  const [flag, body] = inside.stdout.split(' ');
  t.is(flag, 'true', inside.stderr);
  t.is((JSON.parse(body ?? '{}') as { pod?: string }).pod, 'web-b', 'no relay there (its socket path does not exist)');

  // the namespaces are the isolated lab's; the host has no route to pods
  const netnsList = (await run('ip', ['netns', 'list'])).stdout;
  t.true(netnsList.includes(`${PREFIX}node`));
  const route = await run('ip', ['route', 'get', podA.ip]);
  t.false(route.stdout.includes(`${PREFIX}`), route.stdout);
});

test.serial('isolated lab: services DNAT to every endpoint, reset without endpoints, hairpin, updated by a full sync', async (t) => {
  t.truthy(podA, 'needs the pods of the first test');
  lab.setServices([
    { namespace: 'default', name: 'web', clusterIP: '198.19.0.20', ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: podA.ip, port: 8080 }, { ip: podB.ip, port: 8080 }] }] },
    { namespace: 'default', name: 'empty', clusterIP: '198.19.0.21', ports: [{ port: 80, protocol: 'TCP', endpoints: [] }] },
    { namespace: 'default', name: 'self', clusterIP: '198.19.0.22', ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: podA.ip, port: 8080 }] }] },
  ]);
  await lab.servicesSettled();
  const seen = new Set<string>();
  for (let i = 0; i < 12 && seen.size < 2; i++) {
    const r = await execIn(podA.uid, 'echo', ['sh', '-c', 'for i in 1 2 3 4 5; do curl -sS -m 3 http://198.19.0.20/; echo; done']);
    t.is(r.code, 0, r.stderr);
    for (const line of r.stdout.split('\n').filter(Boolean)) seen.add((JSON.parse(line) as { pod: string }).pod);
  }
  t.deepEqual([...seen].sort(), ['web-a', 'web-b'], 'random choice reaches both endpoints');

  const empty = await execIn(podB.uid, 'echo', ['curl', '-sS', '-m', '3', 'http://198.19.0.21/']);
  t.is(empty.code, 7, `no endpoints: connection refused (reset), not a timeout: ${empty.stderr}`);
  const unknownPort = await execIn(podB.uid, 'echo', ['curl', '-sS', '-m', '3', 'http://198.19.0.20:81/']);
  t.is(unknownPort.code, 7, unknownPort.stderr);

  const hairpin = await execIn(podA.uid, 'echo', ['curl', '-sS', '-m', '3', 'http://198.19.0.22/']);
  t.is(hairpin.code, 0, hairpin.stderr);
  t.is((JSON.parse(hairpin.stdout) as { pod: string }).pod, 'web-a', 'a pod reaches itself through its service');

  // the node itself (where the daemon runs) reaches services too (nat output)
  const fromNode = await run('ip', ['netns', 'exec', `${PREFIX}node`, 'curl', '-sS', '-m', '3', 'http://198.19.0.22/']);
  t.is((JSON.parse(fromNode.stdout) as { pod: string }).pod, 'web-a', fromNode.stderr);

  // a full sync: only web-b behind web now
  lab.setServices([{ namespace: 'default', name: 'web', clusterIP: '198.19.0.20', ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: podB.ip, port: 8080 }] }] }]);
  await lab.servicesSettled();
  const after = await execIn(podA.uid, 'echo', ['sh', '-c', 'for i in 1 2 3 4 5 6; do curl -sS -m 3 http://198.19.0.20/; echo; done']);
  const pods = new Set(after.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { pod: string }).pod));
  t.deepEqual([...pods], ['web-b']);
  const gone = await execIn(podA.uid, 'echo', ['curl', '-sS', '-m', '3', 'http://198.19.0.22/']);
  t.is(gone.code, 7, 'a removed service rejects');
});

test.serial('isolated lab: DNS from a pod: search domains, pod names, NXDOMAIN, upstream names and www.example.test', async (t) => {
  t.truthy(podA);
  lab.setDnsRecords({
    services: [{ namespace: 'default', name: 'web', clusterIP: '198.19.0.20' }],
    pods: [{ namespace: 'default', ip: podB.ip }],
  });
  const script = [
    'cat /etc/resolv.conf',
    'echo ---',
    'for n in web web.default web.default.svc.cluster.local ' + `${podB.ip.replaceAll('.', '-')}.default.pod.cluster.local` + ' www.example.test; do getent ahostsv4 $n | head -1; done',
    'echo ---',
    'getent hosts nothere.default.svc.cluster.local; echo "nx=$?"',
    'getent hosts nothere.invalid; echo "ext=$?"',
    'curl -sS -m 3 http://www.example.test/from-pod',
  ].join('\n');
  let r = await execIn(podA.uid, 'echo', ['sh', '-c', script]);
  for (let i = 0; i < 20 && !r.stdout.includes('198.19.0.20'); i++) {
    // the records file is picked up by the node agent within half a second
    await new Promise((res) => setTimeout(res, 200));
    r = await execIn(podA.uid, 'echo', ['sh', '-c', script]);
  }
  const [resolv, names, rest] = r.stdout.split('---\n');
  t.is(resolv, `nameserver ${LAB.clusterDnsIp}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`);
  const ips = names!.split('\n').filter(Boolean).map((l) => l.split(/\s+/)[0]);
  t.deepEqual(ips, ['198.19.0.20', '198.19.0.20', '198.19.0.20', podB.ip, LAB.wwwIp]);
  t.regex(rest!, /nx=2/);
  t.regex(rest!, /ext=2/);
  const www = JSON.parse(rest!.slice(rest!.indexOf('{'))) as { pod: string; path: string };
  t.deepEqual([www.pod, www.path], ['www.example.test', '/from-pod']);
});

test.serial('isolated lab: a laptop reaches the outside segment and its DNS, never pod or service addresses', async (t) => {
  t.truthy(podA);
  await lab.createLaptop(laptopName);
  t.teardown(() => lab.deleteLaptop(laptopName));
  t.is(fs.readFileSync(`/etc/netns/${laptopName}/resolv.conf`, 'utf8'), `nameserver ${LAB.upstreamDnsIp}\n`);
  const r = await run('ip', [
    'netns', 'exec', laptopName, 'sh', '-c',
    [
      'ip -4 route',
      'echo ---',
      'getent ahostsv4 www.example.test | head -1',
      'curl -sS -m 3 http://www.example.test/laptop; echo',
      `curl -sS -m 2 http://${podA.ip}:8080/ ; echo "pod=$?"`,
      'curl -sS -m 2 http://198.19.0.20/ ; echo "svc=$?"',
      'getent hosts web.default.svc.cluster.local; echo "cluster=$?"',
    ].join('\n'),
  ]);
  const [routes, rest] = r.stdout.split('---\n');
  t.deepEqual(routes!.trim().split('\n').map((l) => l.split(' ')[0]), [LAB.outsideCidr], 'the only route: the outside segment');
  t.regex(rest!, new RegExp(`^${LAB.wwwIp.replaceAll('.', '\\.')}`));
  t.regex(rest!, /"path":"\/laptop"/);
  t.regex(rest!, /pod=7/);
  t.regex(rest!, /svc=7/);
  t.regex(rest!, /cluster=2/);
  await lab.deleteLaptop(laptopName);
  t.false((await run('ip', ['netns', 'list'])).stdout.includes(laptopName));
  t.false(fs.existsSync(`/etc/netns/${laptopName}`));
});

const mountPath = `/etc/ktln-test-${process.pid}/keys`;

test.serial('isolated lab: containers see volumes at their mountPath (read-only), run as their user, get env and hostname', async (t) => {
  const pod = spec('vol', 'vol-pod', [
    {
      name: 'main',
      image: DEFAULT_SHADOW_IMAGE,
      command: ['sleep', '600'],
      env: [
        { name: 'PLAIN', value: 'v1' },
        { name: 'MY_IP', fieldPath: 'status.podIP' },
        { name: 'MY_NAME', fieldPath: 'metadata.name' },
      ],
      ports: [],
      runAsUser: 1000,
      volumeMounts: [{ mountPath, readOnly: true, files: { host_key: Buffer.from('KEY'), 'authorized_keys': Buffer.from('ssh-ed25519 AAAA') } }],
    },
  ]);
  const ready = waitFor('containerReady', (uid, _c, r) => uid === pod.uid && r);
  const { podIP } = await lab.createPod(pod);
  await ready;
  t.teardown(() => lab.deletePod(pod.uid));
  const r = await execIn(pod.uid, 'main', ['sh', '-c', `id -u; cat ${mountPath}/host_key; echo; stat -c %a ${mountPath}/host_key; echo "$PLAIN $MY_IP $MY_NAME $HOSTNAME"; hostname; touch ${mountPath}/x 2>/dev/null; echo "write=$?"`]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['1000', 'KEY', '644', `v1 ${podIP} vol-pod vol-pod`, 'vol-pod', 'write=1']);
  t.deepEqual(fs.readdirSync(mountPath), [], 'the files are bind-mounted inside the pod only');

  // exec with a terminal: stdout is a pty, the exit status comes through
  const tty = lab.exec(pod.uid, 'main', ['sh', '-c', 'tty; exit 4'], { tty: true });
  tty.stdin.end();
  let ttyOut = '';
  tty.stdout.on('data', (b: Buffer) => (ttyOut += b.toString()));
  const ttyCode = await new Promise<number | null>((r) => tty.on('close', (c) => r(c)));
  t.is(ttyCode, 4);
  t.regex(ttyOut, /^\/dev\/pts\/\d+\r?\n/);

  // a second instance (the CLI beside the daemon) sees, enters and deletes the pod
  const other = createLabNet({ stateDir, prefix: PREFIX });
  const listed = other.listPods().find((p) => p.uid === pod.uid);
  t.deepEqual([listed?.ip, listed?.name, listed?.namespace], [podIP, 'vol-pod', 'default']);
  const child = other.exec(pod.uid, 'main', ['sh', '-c', `id -u; cat ${mountPath}/host_key`], { tty: false });
  child.stdin.end();
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise((r) => child.on('close', r));
  t.is(out, '1000\nKEY');
  await other.deletePod(pod.uid);
  t.false(lab.listPods().some((p) => p.uid === pod.uid));
  t.false(fs.existsSync(`/run/netns/${listed!.netns}`), 'the pod namespace is gone');
  t.false(fs.existsSync(`/etc/netns/${listed!.netns}`));
});

test.serial('isolated lab: restarts with back-off and restartCount, previous logs, unknown images, deletePod and down leave nothing', async (t) => {
  const crash = spec('crash', 'crash-pod', [echoContainer({ name: 'c', command: ['sh', '-c', 'echo "run at $(date +%s%N)"; exit 3'] })]);
  const secondStart = waitFor('containerStarted', (uid, _c, _at, restarts) => uid === crash.uid && restarts === 1);
  const waiting = waitFor('containerWaiting', (uid) => uid === crash.uid);
  const exited = waitFor('containerExited', (uid) => uid === crash.uid);
  await lab.createPod(crash);
  const [, , code, reason] = await exited;
  t.deepEqual([code, reason], [3, 'Error']);
  t.is((await waiting)[2], 'CrashLoopBackOff');
  await secondStart;
  await waitFor('containerExited', (uid) => uid === crash.uid);
  let previous = '';
  for await (const chunk of lab.logs(crash.uid, 'c', { follow: false, previous: true })) previous += String(chunk);
  t.regex(previous, /^run at \d+\n$/);
  let current = '';
  for await (const chunk of lab.logs(crash.uid, 'c', { follow: false, tailLines: 1 })) current += String(chunk);
  t.regex(current, /^run at \d+\n$/);
  t.not(current, previous);

  const never = spec('once', 'once-pod', [echoContainer({ name: 'o', command: ['sh', '-c', 'exit 0'] })], 'OnFailure');
  const onceExit = waitFor('containerExited', (uid) => uid === never.uid);
  await lab.createPod(never);
  t.deepEqual((await onceExit).slice(2, 4), [0, 'Completed']);

  const bad = spec('bad', 'bad-pod', [{ name: 'x', image: 'nginx:1.25', env: [], ports: [], volumeMounts: [] }]);
  const pull = waitFor('imagePullFailed', (uid) => uid === bad.uid);
  await lab.createPod(bad);
  const [, container, image] = await pull;
  t.deepEqual([container, image], ['x', 'nginx:1.25']);
  t.throws(() => lab.logs(bad.uid, 'x', { follow: false, previous: true }), { message: /previous terminated container/ });

  // readiness probes run from the node: httpGet and tcpSocket
  const probed = spec('probed', 'probed-pod', [
    echoContainer({ name: 'h', env: [{ name: 'PORT', value: '9001' }], readinessProbe: { httpGet: { port: 9001, path: '/healthz' } } }),
    echoContainer({ name: 'tcp', env: [{ name: 'PORT', value: '9002' }], readinessProbe: { tcpSocket: { port: 9002 } } }),
  ]);
  const readyH = waitFor('containerReady', (uid, c, r) => uid === probed.uid && c === 'h' && r);
  const readyT = waitFor('containerReady', (uid, c, r) => uid === probed.uid && c === 'tcp' && r);
  await lab.createPod(probed);
  await Promise.all([readyH, readyT]);
  let probeLog = '';
  for await (const chunk of lab.logs(probed.uid, 'h', { follow: false })) probeLog += String(chunk);
  t.regex(probeLog, /GET \/healthz 200/, 'the httpGet probe reached the container');
  await lab.deletePod(probed.uid);

  // logs(follow) streams new lines and ends when the pod goes away
  const echo = spec('follow', 'follow-pod', [echoContainer()]);
  const ready = waitFor('containerReady', (uid, _c, r) => uid === echo.uid && r);
  const { podIP } = await lab.createPod(echo);
  await ready;
  const follow = lab.logs(echo.uid, 'echo', { follow: true });
  let followed = '';
  follow.on('data', (b: Buffer) => (followed += b.toString()));
  const ended = new Promise<void>((resolve) => follow.on('end', () => resolve()));
  await httpVia(await lab.connect(echo.uid, 8080), '/followed-line');
  for (let i = 0; i < 50 && !followed.includes('/followed-line'); i++) await new Promise((r) => setTimeout(r, 100));
  t.regex(followed, /GET \/followed-line 200/);

  const netnsOf = async (): Promise<string[]> =>
    (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(PREFIX));
  const before = await netnsOf();
  await lab.deletePod(echo.uid);
  await ended;
  const afterDelete = await netnsOf();
  t.is(afterDelete.length, before.length - 1, 'deletePod removes the pod namespace');
  await t.throwsAsync(() => lab.connect(echo.uid, 8080), { message: /no pod/ });
  void podIP;

  await lab.down();
  t.deepEqual(await netnsOf(), [], 'down removes every namespace of the lab');
  t.false(fs.existsSync(path.join(stateDir, 'net')));
  t.false(fs.existsSync(path.dirname(mountPath)), 'down() removes directories made for mountPaths');
  const etc = fs.existsSync('/etc/netns') ? fs.readdirSync('/etc/netns').filter((e) => e.startsWith(PREFIX)) : [];
  t.deepEqual(etc, []);
  const ps = await run('ps', ['-eo', 'args']);
  t.false(ps.stdout.includes(path.join(stateDir, 'net')), 'no agent process left');
});
