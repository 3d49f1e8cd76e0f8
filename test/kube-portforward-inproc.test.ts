/**
 * ktctl's port-forward (src/kube/portforward.ts) and the reconnecting ssh tunnel on top of it, as
 * transport.ts stacks them, against the lab's API server in this process (fake data plane: port
 * 2222 of the pod reaches an ssh2 server of the test, on 127.0.0.1). What a 1.35 cluster answers:
 * the create check's bare refusal, a runtime that refuses the subprotocol (403, empty body), an
 * idle timeout that pings do not reset, and a TCP cut with no close frame (1006).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import ssh2 from 'ssh2';
import { loadKubeConfig } from '../src/kube/config.js';
import { KubeForbiddenError, PortForwardError } from '../src/kube/errors.js';
import { openPortForward, refusedVerb, type PortForwardStream } from '../src/kube/portforward.js';
import { ReconnectingTunnel } from '../src/ssh/reconnect.js';
import { SshTunnel } from '../src/ssh/tunnel.js';
import { FakeLabNet } from './lab/api/fake-net.js';
import { cutPortForwards } from './lab/api/streams.js';
import { ed25519, readAll, type KeyPair } from './helpers/ssh-fixtures.js';
import { eventually } from './helpers/poll.js';
import { grantPortForward, startInProcessLab, type InProcessLab } from './helpers/inproc-lab.js';

const SSH_PORT = 2222;

/** The fake data plane, with port 2222 of every pod reaching the test's ssh server. */
class TestNet extends FakeLabNet {
  sshPort = 0;
  override connect(uid: string, port: number): Promise<net.Socket> {
    if (port !== SSH_PORT) return super.connect(uid, port);
    return new Promise((resolve, reject) => {
      const s = net.connect(this.sshPort, '127.0.0.1');
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  }
}

let lab: InProcessLab<TestNet> | undefined;
const L = (): InProcessLab<TestNet> => lab!;
const ns = `kpf-${randomBytes(3).toString('hex')}`;
let host: KeyPair;
let client: KeyPair;
let sshServer: ssh2.Server | undefined;
let echo: net.Server | undefined;

/** An ssh server like the shadow for what this test needs: the one key, direct-tcpip to a local echo server. */
async function startSsh(echoPort: number): Promise<number> {
  const parsed = ssh2.utils.parseKey(client.public);
  if (parsed instanceof Error) throw parsed;
  const allowed = parsed.getPublicSSH();
  sshServer = new ssh2.Server({ hostKeys: [host.private] }, (conn) => {
    conn.on('error', () => undefined);
    conn.on('authentication', (ctx) => (ctx.method === 'publickey' && ctx.key.data.equals(allowed) ? ctx.accept() : ctx.reject(['publickey'])));
    conn.on('ready', () => {
      conn.on('tcpip', (accept) => {
        const ch = accept();
        const s = net.connect(echoPort, '127.0.0.1');
        s.on('error', () => ch.destroy());
        ch.on('error', () => s.destroy());
        ch.pipe(s).pipe(ch);
      });
    });
  });
  await new Promise<void>((r) => sshServer!.listen(0, '127.0.0.1', r));
  return (sshServer.address() as net.AddressInfo).port;
}

test.before(async () => {
  host = ed25519('host');
  client = ed25519('client');
  echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => echo!.listen(0, '127.0.0.1', r));
  const testNet = new TestNet();
  testNet.sshPort = await startSsh((echo.address() as net.AddressInfo).port);
  lab = await startInProcessLab(testNet, 'ktlab-kpf');
  await lab.pods(ns, [{ metadata: { name: 'shadow' }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } }]);
  await grantPortForward(lab, ns);
});

test.after.always(async () => {
  await lab?.stop();
  sshServer?.close();
  echo?.close();
});

async function settings(t: ExecutionContext, body: { idleTimeoutMs?: number; refuseProtocols?: string[] }): Promise<void> {
  const before = (await L().request('GET', '/lab/v1/portforward')).json;
  t.is((await L().request('PUT', '/lab/v1/portforward', body)).status, 200);
  t.teardown(async () => {
    await L().request('PUT', '/lab/v1/portforward', before);
  });
}

const kc = (context?: string) => loadKubeConfig({ kubeconfig: L().kubeconfig, context }).kc;

function open(o: { context?: string; debug?: (line: string) => void; port?: number } = {}): Promise<PortForwardStream> {
  return openPortForward({ kc: kc(o.context), namespace: ns, pod: 'shadow', port: o.port ?? 8080, timeoutMs: 10_000, debug: o.debug });
}

function exchange(s: PortForwardStream, path: string): Promise<string> {
  s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  return readAll(s).then((b) => b.toString());
}

/** transport.ts's stack: a ReconnectingTunnel whose every connection is ssh over a new port-forward stream. */
function tunnel(t: ExecutionContext, debug: (line: string) => void = () => undefined): { tunnel: ReconnectingTunnel; logs: string[]; fatal: Error[] } {
  const logs: string[] = [];
  const fatal: Error[] = [];
  const tun = new ReconnectingTunnel({
    label: `shadow pod ${ns}/shadow`,
    isFatal: (e) => e instanceof KubeForbiddenError,
    connect: async (signal) => {
      const sock = await open({ port: SSH_PORT, debug });
      try {
        return await SshTunnel.open({ sock, username: 'ktctl', privateKey: client.private, hostKey: { pinned: host.public }, serverLabel: 'the test ssh server', signal });
      } catch (error) {
        sock.destroy();
        throw error;
      }
    },
  });
  tun.on('log', (l) => logs.push(l));
  tun.on('fatal', (e) => fatal.push(e));
  t.teardown(() => tun.close());
  return { tunnel: tun, logs, fatal };
}

async function echoThrough(tun: ReconnectingTunnel, text: string): Promise<string> {
  const s = await tun.dial('echo.test', 7);
  s.end(text);
  return (await readAll(s)).toString();
}

test('refusedVerb: the filter names the verb; 1.35\'s create check names none', (t) => {
  t.deepEqual(refusedVerb('pods "x" is forbidden: User "u" cannot get resource "pods/portforward" in API group "" in the namespace "n"'), { verb: 'get', namedByServer: true });
  t.deepEqual(refusedVerb('pods "x" is forbidden: '), { verb: 'create', namedByServer: false });
});

test('a stream: data both ways', async (t) => {
  const s = await open();
  t.regex(await exchange(s, '/plain'), /"path":"\/plain"/);
});

test('get without create (lab-dev, a Role with get only): KubeForbiddenError for create, quoting the server\'s bare reason', async (t) => {
  const e = await t.throwsAsync(open({ context: 'lab-dev' }));
  t.true(e instanceof KubeForbiddenError);
  const f = e as KubeForbiddenError;
  t.is(f.verb, 'create');
  t.is(f.resource, 'pods/portforward');
  t.regex(f.message, new RegExp(`^you may not create pods/portforward in namespace ${ns} \\(RBAC\\); the API server said: "pods "shadow" is forbidden: " \\(no verb named: Kubernetes 1\\.35 and later ask for create as well as get`));
});

test('neither (lab-readonly, view): KubeForbiddenError for get, quoting the filter\'s message', async (t) => {
  const e = await t.throwsAsync(open({ context: 'lab-readonly' }));
  t.true(e instanceof KubeForbiddenError);
  const f = e as KubeForbiddenError;
  t.is(f.verb, 'get');
  t.regex(f.message, new RegExp(`^you may not get pods/portforward in namespace ${ns} \\(RBAC\\); the API server said: "pods "shadow" is forbidden: User "lab-readonly" cannot get resource "pods/portforward" in API group "" in the namespace "${ns}"": `));
});

test.serial('the runtime refuses v4.channel.k8s.io (403, empty body): said in the debug log, the retry without a subprotocol works and is kept', async (t) => {
  await settings(t, { refuseProtocols: ['v4.channel.k8s.io'] });
  const debug: string[] = [];
  const s = await open({ debug: (l) => debug.push(l) });
  t.regex(await exchange(s, '/retry'), /"path":"\/retry"/);
  t.is(debug.length, 1);
  t.regex(debug[0]!, /403 with an empty body: the container runtime refused the subprotocol v4\.channel\.k8s\.io \(not RBAC/);
  // the next stream (a reconnect) asks for none at once: no second refusal
  const again = await open({ debug: (l) => debug.push(l) });
  t.regex(await exchange(again, '/again'), /"path":"\/again"/);
  t.is(debug.length, 1);
});

test.serial('a runtime that refuses every subprotocol, and none: one PortForwardError that says so', async (t) => {
  await settings(t, { refuseProtocols: ['v4.channel.k8s.io', ''] });
  const e = await t.throwsAsync(open());
  t.true(e instanceof PortForwardError);
  t.regex(e?.message ?? '', /refused the port-forward WebSocket \(403 with an empty body\) with v4\.channel\.k8s\.io and without a subprotocol/);
});

test.serial('the idle timeout (pings do not count) drops the stream: the tunnel reconnects, no error', async (t) => {
  await settings(t, { idleTimeoutMs: 1500 });
  const { tunnel: tun, logs, fatal } = tunnel(t);
  await tun.start();
  t.is(await echoThrough(tun, 'before'), 'before');
  // ssh keepalives every 10 s: nothing crosses the stream for 1.5 s, the runtime ends it (1006)
  await eventually(async () => (logs.some((l) => /^reconnected to/.test(l)) ? true : undefined), 'a reconnect after the idle timeout');
  t.log(logs.join('\n'));
  t.true(logs.some((l) => /dropped \(.*WebSocket code 1006.*\); reconnecting$/.test(l)), logs.join('\n'));
  t.is(await echoThrough(tun, 'after'), 'after');
  t.deepEqual(fatal, []);
});

test.serial('a TCP cut with no close frame (1006, fault cut-portforward --abrupt): the tunnel reconnects, no error', async (t) => {
  const { tunnel: tun, logs, fatal } = tunnel(t);
  await tun.start();
  t.is(await echoThrough(tun, 'before'), 'before');
  t.true(cutPortForwards('abrupt', ns) >= 1);
  await eventually(async () => (logs.some((l) => /^reconnected to/.test(l)) ? true : undefined), 'a reconnect after the cut');
  t.true(logs.some((l) => /dropped \(.*WebSocket code 1006.*\); reconnecting$/.test(l)), logs.join('\n'));
  t.is(await echoThrough(tun, 'after'), 'after');
  t.deepEqual(fatal, []);
});
