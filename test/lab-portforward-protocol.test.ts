/**
 * pods/portforward of the lab's API server as a real 1.35 cluster with containerd serves it, with
 * no shared lab: an in-process control plane on 127.0.0.1:0 with the fake data plane, its pods'
 * ports being local servers. The upgrade's authorization (get, then create), the subprotocols
 * (none, v4.channel.k8s.io, v4.base64.channel.k8s.io; others a bare 403), the refusal of a pod
 * without a node, a not-running pod's error channel, containerd's 1 s linger, the idle timeout that
 * pings do not reset, one channel frame per message; and kubectl against it.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import { FakeLabNet } from './lab/api/fake-net.js';
import type { JsonObject } from './lab/api/json.js';
import { channelCodec, negotiatePortForwardProtocol } from './lab/api/streams.js';
import { eventually } from './helpers/poll.js';
import { grantPortForward, startInProcessLab, type InProcessLab } from './helpers/inproc-lab.js';

/** A port whose connections go to a server the test runs (half-open capable, as Go's net.Conn is). */
const HALF_OPEN_PORT = 7001;

/** The fake data plane, plus port 7001 of every pod reaching `halfOpenTarget` (when set). */
class TestNet extends FakeLabNet {
  halfOpenTarget: number | undefined;
  override connect(uid: string, port: number): Promise<net.Socket> {
    if (port !== HALF_OPEN_PORT || this.halfOpenTarget === undefined) return super.connect(uid, port);
    const target = this.halfOpenTarget;
    return new Promise((resolve, reject) => {
      const s = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  }
}

let lab: InProcessLab<TestNet> | undefined;
const ns = `pfp-${randomBytes(3).toString('hex')}`;
const L = (): InProcessLab<TestNet> => lab!;

test.before(async () => {
  lab = await startInProcessLab(new TestNet(), 'ktlab-pfp');
  const pod = (name: string, image: string, extra: JsonObject = {}): JsonObject => ({
    metadata: { name },
    spec: { containers: [{ name: 'main', image, ports: [{ containerPort: 8080 }] }], ...extra },
  });
  await lab.pods(ns, [pod('echo', 'ktlab/echo'), pod('broken', 'example.invalid/nope:1'), pod('nowhere', 'ktlab/echo', { nodeSelector: { 'no-such-label': 'x' } })]);
  // lab-dev may only get pods/portforward; the service account pf-create may only create it
  createOnlyToken = await grantPortForward(lab, ns);
});

let createOnlyToken = '';


test.after.always(async () => {
  await lab?.stop();
});

/** Port-forward settings are per API server: the tests that change them run serially and restore them. */
async function settings(t: ExecutionContext, body: { idleTimeoutMs?: number; refuseProtocols?: string[] }): Promise<void> {
  const before = (await request('GET', '/lab/v1/portforward')).json;
  const r = await request('PUT', '/lab/v1/portforward', body);
  t.is(r.status, 200, JSON.stringify(r.json));
  t.teardown(async () => {
    await request('PUT', '/lab/v1/portforward', before);
  });
}

const request = (method: string, urlPath: string, body?: unknown, token?: string): Promise<{ status: number; json: JsonObject }> => L().request(method, urlPath, body, token);

interface Opened {
  ws: WebSocket;
  protocol: string;
  /** the raw value of the 101's Sec-WebSocket-Protocol header, undefined when absent */
  protocolHeader: string | undefined;
  /** every message, decoded into (channel, data) with the negotiated framing */
  frames: Array<{ channel: number; data: Buffer; text: boolean }>;
  closed: Promise<{ code: number }>;
}

type Refused = { refused: true; status: number; body: string };

/** Opens pods/NAME/portforward with the given subprotocols; a refused upgrade comes back as its status and raw body. */
function openRaw(t: ExecutionContext, pod: string, ports: string, protocols: string[], token = L().tokens.admin): Promise<Opened | Refused> {
  const url = `${L().server.replace('https', 'wss')}/api/v1/namespaces/${ns}/pods/${pod}/portforward?ports=${ports}`;
  // ws allows only RFC 7230 tokens; kubectl's `SPDY/3.1+portforward.k8s.io` is not one: send such a header as it is
  const tokens = protocols.every((p) => /^[!#$%&'*+\-.0-9A-Z^_`|a-z~]+$/.test(p));
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (!tokens) headers['Sec-WebSocket-Protocol'] = protocols.join(', ');
  const ws = new WebSocket(url, tokens ? protocols : [], { ca: L().ca, headers, perMessageDeflate: false });
  t.teardown(() => ws.terminate());
  let protocolHeader: string | undefined;
  // The runtime answers an empty `Sec-WebSocket-Protocol:` when none was asked for; ws would refuse that.
  ws.on('upgrade', (res) => {
    protocolHeader = res.headers['sec-websocket-protocol'] as string | undefined;
    if (protocols.length === 0 && protocolHeader === '') delete res.headers['sec-websocket-protocol'];
  });
  const frames: Opened['frames'] = [];
  const closed = new Promise<{ code: number }>((resolve) => ws.on('close', (code) => resolve({ code })));
  return new Promise((resolve, reject) => {
    ws.on('unexpected-response', (_req, res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ refused: true, status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    ws.on('error', reject);
    ws.on('open', () => {
      const codec = channelCodec(ws.protocol);
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        const f = codec.decode(data);
        if (f) frames.push({ ...f, text: !isBinary });
      });
      resolve({ ws, protocol: ws.protocol, protocolHeader, frames, closed });
    });
  });
}

async function open(t: ExecutionContext, pod: string, ports: string, protocols: string[]): Promise<Opened> {
  const r = await openRaw(t, pod, ports, protocols);
  if ('refused' in r) throw new Error(`the upgrade was refused: ${r.status} ${r.body}`);
  return r;
}

function dataOf(o: Opened, channel: number): Buffer {
  return Buffer.concat(o.frames.filter((f) => f.channel === channel).map((f) => f.data));
}

const GET = (p: string): string => `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;

// ---- pure pieces ----

test('negotiatePortForwardProtocol: wsstream handshake order, "" when none asked, undefined when none fits', (t) => {
  t.is(negotiatePortForwardProtocol([]), '');
  t.is(negotiatePortForwardProtocol(['v4.channel.k8s.io']), 'v4.channel.k8s.io');
  t.is(negotiatePortForwardProtocol(['foo', 'v4.base64.channel.k8s.io', 'v4.channel.k8s.io']), 'v4.base64.channel.k8s.io');
  t.is(negotiatePortForwardProtocol(['SPDY/3.1+portforward.k8s.io']), undefined);
  t.is(negotiatePortForwardProtocol(['channel.k8s.io']), undefined, 'portforward knows only the v4 names');
  t.is(negotiatePortForwardProtocol(['v4.channel.k8s.io'], ['v4.channel.k8s.io']), undefined);
  t.is(negotiatePortForwardProtocol([], ['v4.channel.k8s.io']), '');
});

test('channelCodec base64: "0"+base64 per frame as wsstream writes it; invalid base64 is dropped', (t) => {
  const c = channelCodec('v4.base64.channel.k8s.io');
  t.is(c.encode(1, Buffer.from('foo\n')), '1Zm9vCg==');
  t.deepEqual(c.decode(Buffer.from('0Zm9vCg==')), { channel: 0, data: Buffer.from('foo\n') });
  t.is(c.decode(Buffer.from('0Zm9v!g==')), undefined);
  t.is(c.decode(Buffer.from('0Zm9')), undefined, 'StdEncoding wants the padding');
});

// ---- authorization and refusals before the upgrade ----

test('1.35: /version and the node say v1.35', async (t) => {
  const v = await request('GET', '/version');
  t.is(v.json.minor, '35');
  t.is(v.json.gitVersion, 'v1.35.0-ktlab');
  const nodes = (await request('GET', '/api/v1/nodes')).json.items as Array<{ status: { nodeInfo: { kubeletVersion: string } } }>;
  t.deepEqual(nodes.map((n) => n.status.nodeInfo.kubeletVersion), ['v1.35.0-ktlab']);
});

test('get without create (lab-dev): passes the filter, refused by 1.35\'s create check with its bare message', async (t) => {
  const r = await openRaw(t, 'echo', '8080', ['v4.channel.k8s.io'], L().tokens.dev);
  if (!('refused' in r)) return t.fail('the upgrade was accepted');
  t.is(r.status, 403);
  const status = JSON.parse(r.body) as { message: string; reason: string; details: { name: string; kind: string } };
  // ensureAuthorizedForVerb: NewForbidden(pods, name, errors.New(reason)) with RBAC's empty reason
  t.is(status.message, 'pods "echo" is forbidden: ');
  t.is(status.reason, 'Forbidden');
  t.deepEqual(status.details, { name: 'echo', kind: 'pods' });
});

test('create without get (a service account): refused by the filter, the message names get', async (t) => {
  const r = await openRaw(t, 'echo', '8080', ['v4.channel.k8s.io'], createOnlyToken);
  if (!('refused' in r)) return t.fail('the upgrade was accepted');
  t.is(r.status, 403);
  t.is((JSON.parse(r.body) as { message: string }).message, `pods "echo" is forbidden: User "system:serviceaccount:${ns}:pf-create" cannot get resource "pods/portforward" in API group "" in the namespace "${ns}"`);
});

test('a pod without a node: 400 "pod NAME does not have a host assigned" (PortForwardLocation)', async (t) => {
  const r = await openRaw(t, 'nowhere', '8080', ['v4.channel.k8s.io']);
  if (!('refused' in r)) return t.fail('the upgrade was accepted');
  t.is(r.status, 400);
  t.is((JSON.parse(r.body) as { message: string }).message, 'pod nowhere does not have a host assigned');
});

test('a pod that does not exist: 404', async (t) => {
  const r = await openRaw(t, 'nosuchpod', '8080', ['v4.channel.k8s.io']);
  if (!('refused' in r)) return t.fail('the upgrade was accepted');
  t.is(r.status, 404);
});

test('an unknown subprotocol (kubectl\'s SPDY tunnel too): a bare 403 with an empty body', async (t) => {
  for (const protocols of [['foo.k8s.io'], ['SPDY/3.1+portforward.k8s.io'], ['channel.k8s.io']]) {
    const r = await openRaw(t, 'echo', '8080', protocols);
    if (!('refused' in r)) return t.fail(`${protocols[0]} was accepted`);
    t.is(r.status, 403, protocols[0]);
    t.is(r.body, '', protocols[0]);
  }
});

// ---- the three subprotocols ----

for (const protocols of [[], ['v4.channel.k8s.io'], ['v4.base64.channel.k8s.io']]) {
  const name = protocols[0] ?? 'no subprotocol';
  test(`${name}: port prefix first on both channels, then bytes both ways round-trip`, async (t) => {
    const o = await open(t, 'echo', '8080', protocols);
    t.is(o.protocol, protocols[0] ?? '');
    if (protocols.length === 0) t.is(o.protocolHeader, '', 'x/net/websocket sends an empty Sec-WebSocket-Protocol header');
    const codec = channelCodec(o.protocol);
    await eventually(async () => (o.frames.length >= 2 ? true : undefined), 'the two port prefixes');
    // each prefix is its own message: exactly the 2 bytes of 8080, little-endian
    t.deepEqual(o.frames.slice(0, 2).map((f) => [f.channel, [...f.data]]), [
      [0, [0x90, 0x1f]],
      [1, [0x90, 0x1f]],
    ]);
    t.true(o.frames.every((f) => f.text === (name === 'v4.base64.channel.k8s.io')));
    o.ws.send(codec.encode(0, Buffer.from(GET('/round/trip'))), { binary: codec.binary });
    const { code } = await o.closed;
    const data = dataOf(o, 0).subarray(2).toString('utf8');
    t.regex(data, /^HTTP\/1\.1 200/);
    t.regex(data, /"path":"\/round\/trip"/);
    t.is(dataOf(o, 1).length, 2, 'nothing on the error channel but the prefix');
    t.is(code, 1000);
  });
}

test('each message is one channel frame: a message in two WebSocket fragments is one frame; two messages are two', async (t) => {
  const o = await open(t, 'echo', '8080', ['v4.channel.k8s.io']);
  const req = Buffer.from(GET('/frag'));
  // one message, two fragments: the second fragment starts with request bytes, not a channel byte
  o.ws.send(Buffer.concat([Buffer.from([0]), req.subarray(0, 5)]), { binary: true, fin: false });
  o.ws.send(req.subarray(5, 20), { binary: true, fin: true });
  // then two messages, each a frame of its own
  o.ws.send(Buffer.concat([Buffer.from([0]), req.subarray(20, 22)]), { binary: true });
  o.ws.send(Buffer.concat([Buffer.from([0]), req.subarray(22)]), { binary: true });
  // an empty frame (channel byte only) and one for the error channel are ignored
  o.ws.send(Buffer.from([0]), { binary: true });
  o.ws.send(Buffer.from([1, 0x41]), { binary: true });
  await o.closed;
  t.regex(dataOf(o, 0).subarray(2).toString('utf8'), /"path":"\/frag"/);
});

test('two ports on one stream: channels 0/1 and 2/3, each with its prefix', async (t) => {
  const o = await open(t, 'echo', '8080,9', ['v4.channel.k8s.io']);
  await eventually(async () => (dataOf(o, 3).length > 2 ? true : undefined), 'the error of port 9');
  t.deepEqual([...dataOf(o, 2).subarray(0, 2)], [9, 0]);
  t.regex(dataOf(o, 3).subarray(2).toString(), /^error forwarding port 9 to pod [0-9a-f]{64}, uid : .*connection refused/);
  // port 8080 still works after port 9 failed
  o.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(GET('/two'))]), { binary: true });
  await o.closed;
  t.regex(dataOf(o, 0).toString(), /"path":"\/two"/);
});

// ---- after the upgrade: errors, linger, idle timeout ----

test('a pod on a node that is not running upgrades and reports on the error channel with the kubelet/containerd words', async (t) => {
  const o = await open(t, 'broken', '8080', ['v4.channel.k8s.io']);
  const { code } = await o.closed;
  const err = dataOf(o, 1).subarray(2).toString('utf8');
  t.regex(
    err,
    /^error forwarding port 8080 to pod [0-9a-f]{64}, uid : failed to execute portforward in network namespace "\/var\/run\/netns\/cni-[^"]+": failed to connect to localhost:8080 inside namespace "[0-9a-f]{64}", IPv4: dial tcp4 127\.0\.0\.1:8080: connect: connection refused IPv6 dial tcp6 \[::1\]:8080: connect: connection refused $/,
  );
  t.is(dataOf(o, 0).length, 2, 'no data');
  t.is(code, 1000);
});

test.serial('after the target ends, the stream stays up to 1 s: bytes sent then still reach the target (containerd\'s linger)', async (t) => {
  const got: Buffer[] = [];
  let afterFin = '';
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.end('bye'); // FIN at once; keep reading
    s.on('data', (d: Buffer) => {
      got.push(d);
      afterFin = Buffer.concat(got).toString();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  L().net.halfOpenTarget = (server.address() as net.AddressInfo).port;
  t.teardown(() => (L().net.halfOpenTarget = undefined));
  const o = await open(t, 'echo', String(HALF_OPEN_PORT), ['v4.channel.k8s.io']);
  o.ws.on('message', (m: Buffer) => {
    if (m[0] === 0 && m.subarray(1).toString() === 'bye') o.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('late')]), { binary: true });
  });
  const { code } = await o.closed;
  t.is(dataOf(o, 0).subarray(2).toString(), 'bye');
  t.is(afterFin, 'late');
  t.is(code, 1000);
});

test.serial('the idle timeout ends a stream that only pings (no close frame: 1006); data before it flows', async (t) => {
  await settings(t, { idleTimeoutMs: 400 });
  const o = await open(t, 'echo', '8080', ['v4.channel.k8s.io']);
  // a request on a kept-alive connection: its answer comes, then nothing but pings
  o.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('GET /before HTTP/1.1\r\nHost: x\r\n\r\n')]), { binary: true });
  await eventually(async () => (/"path":"\/before"/.test(dataOf(o, 0).toString()) ? true : undefined), 'the answer before the idle time');
  const pinger = setInterval(() => o.ws.ping(), 50);
  t.teardown(() => clearInterval(pinger));
  let pongs = 0;
  o.ws.on('pong', () => pongs++);
  const { code } = await o.closed;
  clearInterval(pinger);
  t.true(pongs > 0, 'the server answered pings');
  t.is(code, 1006);
});

test.serial('idle timeout 0 is off; the settings are admin-only and checked', async (t) => {
  await settings(t, { idleTimeoutMs: 0 });
  t.is((await request('GET', '/lab/v1/portforward')).json.idleTimeoutMs, 0);
  const ro = await request('PUT', '/lab/v1/portforward', { idleTimeoutMs: 5 }, L().tokens.readonly);
  t.is(ro.status, 403);
  const bad = await request('PUT', '/lab/v1/portforward', { idleTimeoutMs: -1 });
  t.is(bad.status, 400);
  t.is((await request('GET', '/lab/v1/portforward')).json.idleTimeoutMs, 0);
});

test.serial('a refused subprotocol (admin switch): bare 403 for it, and the same stream works with none', async (t) => {
  await settings(t, { refuseProtocols: ['v4.channel.k8s.io'] });
  const r = await openRaw(t, 'echo', '8080', ['v4.channel.k8s.io']);
  t.true('refused' in r && r.status === 403 && r.body === '');
  const o = await open(t, 'echo', '8080', []);
  o.ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(GET('/none'))]), { binary: true });
  await o.closed;
  t.regex(dataOf(o, 0).toString(), /"path":"\/none"/);
});

// ---- kubectl ----

function kubectl(args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('kubectl', ['--kubeconfig', L().kubeconfig, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('no ports in the query (kubectl\'s WebSocket tunnel has none): the kubelet\'s plain-text 400', async (t) => {
  const r = await openRaw(t, 'echo', '', ['SPDY/3.1+portforward.k8s.io']);
  if (!('refused' in r)) return t.fail('the upgrade was accepted');
  t.is(r.status, 400);
  t.is(r.body, 'query parameter "ports" cannot be empty');
  const bad = await openRaw(t, 'echo', '0', ['v4.channel.k8s.io']);
  t.true('refused' in bad && bad.status === 400 && bad.body === 'port "0" must be > 0');
});

test('kubectl port-forward: its WebSocket tunnel is refused by the kubelet (no ports), its SPDY fallback by the lab: one clear error', async (t) => {
  if (!(await kubectl(['version', '--client'])).stdout) return t.pass('kubectl is not installed');
  const r = await kubectl(['-n', ns, 'port-forward', 'pod/echo', ':8080', '-v=6']);
  t.not(r.code, 0);
  t.regex(r.stderr, /fallback to secondary dialer from primary dialer err: unable to upgrade streaming request: websocket: bad handshake \(400 Bad Request\): query parameter "ports" is required/);
  t.regex(r.stderr, /error: error upgrading connection: unable to upgrade connection: spdy\/3\.1 is not supported by the lab \(use WebSocket\)/);
});

test.serial('settings per namespace: another namespace\'s switch leaves this one alone; this one\'s applies', async (t) => {
  const other = await request('PUT', '/lab/v1/portforward?namespace=some-other-ns', { refuseProtocols: ['v4.channel.k8s.io'] });
  t.is(other.status, 200);
  t.deepEqual((await request('GET', '/lab/v1/portforward')).json.refuseProtocols, []);
  const o = await open(t, 'echo', '8080', ['v4.channel.k8s.io']);
  o.ws.close();
  t.is((await request('PUT', `/lab/v1/portforward?namespace=${ns}`, { refuseProtocols: ['v4.channel.k8s.io'] })).status, 200);
  t.teardown(async () => {
    await request('PUT', `/lab/v1/portforward?namespace=${ns}`, { refuseProtocols: [] });
  });
  const r = await openRaw(t, 'echo', '8080', ['v4.channel.k8s.io']);
  t.true('refused' in r && r.status === 403 && r.body === '');
});
