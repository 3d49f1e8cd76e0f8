/**
 * `ktctl forward` as a user runs it (the built CLI as a process):
 * - against the lab, from the host namespace: a service by name (port number and port name) and a
 *   pod by name answer curl on the local port from the echo pod; a far side that refuses resets
 *   that connection and the forward goes on; SIGINT exits 0 and leaves no ktctl object;
 * - bad input (unknown service, port not on the service, several ports and none named, local port
 *   in use, a service with --via, a read-only context) exits 1 with one sentence and makes nothing in the cluster;
 * - with `--via` to an OpenSSH sshd and to ktctl's shadow in a namespace of the test's own: host:port
 *   targets only that namespace has, refused ports reset, the forward keeps serving.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { UsageError } from '../src/errors.js';
import { parseForwardTarget, parsePortMapping } from '../src/cli/common/forward-args.js';
import { describePorts } from '../src/kube/target.js';
import { fileNamespace, lab } from './lab/fixture.js';
import { errorSentence, ktctlObjects, labKtctl, type CliRun } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { createNetns, linkNetns, type Netns } from './helpers/netns.js';
import { PORTS, startSshServers, startTargets, TeardownList } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-fwd');
const lk = labKtctl(test, 'kt-fwd');
const isRoot = process.getuid?.() === 0;

/** ktctl in the host namespace (the lab's API server is reachable from it), or in `netns`. */
function ktctl(t: ExecutionContext, args: string[], netns?: Netns): CliRun {
  return lk.start(t, args, { netns: netns?.name });
}

/** Waits for the "forwarding ADDR:PORT -> ..." line and returns the local port. */
async function forwarding(run: CliRun): Promise<number> {
  return Number((await run.waitFor(/^forwarding 127\.0\.0\.1:(\d+) -> /m))[1]);
}

function curl(url: string): Promise<{ code: number; body: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-m', '10', url], (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, body: String(stdout), stderr: String(stderr) });
    });
  });
}

let echoPod = '';

test.before(async () => {
  const pod = await deployEcho(ns, {
    echo: [{ port: 80, targetPort: 8080, name: 'http' }],
    multi: [{ port: 80, targetPort: 8080, name: 'http' }, { port: 81, targetPort: 8080, name: 'alt' }],
  });
  echoPod = pod.metadata!.name!;
});

test('target and port forms', (t) => {
  t.deepEqual(parseForwardTarget('web'), { kind: 'service', name: 'web' });
  t.deepEqual(parseForwardTarget('svc/web'), { kind: 'service', name: 'web' });
  t.deepEqual(parseForwardTarget('service/web'), { kind: 'service', name: 'web' });
  t.deepEqual(parseForwardTarget('pod/web-1'), { kind: 'pod', name: 'web-1' });
  t.deepEqual(parseForwardTarget('po/web-1'), { kind: 'pod', name: 'web-1' });
  t.deepEqual(parseForwardTarget('198.18.0.9:5432'), { kind: 'host', host: '198.18.0.9', port: 5432 });
  t.deepEqual(parseForwardTarget('db.example.test:5432'), { kind: 'host', host: 'db.example.test', port: 5432 });
  t.deepEqual(parseForwardTarget('[2001:2::1]:80'), { kind: 'host', host: '2001:2::1', port: 80 });
  t.deepEqual(parseForwardTarget('2001:2::1'), { kind: 'host', host: '2001:2::1' });
  t.deepEqual(parseForwardTarget('db.example.test'), { kind: 'host', host: 'db.example.test' });
  t.throws(() => parseForwardTarget('pod/Web'), { instanceOf: UsageError });
  t.throws(() => parseForwardTarget('Web_1'), { instanceOf: UsageError, message: /cannot tell what "Web_1" is/ });
  t.throws(() => parseForwardTarget('host:0'), { instanceOf: UsageError });

  t.deepEqual(parsePortMapping(undefined), {});
  t.deepEqual(parsePortMapping('8080'), { local: 8080, remote: '8080' });
  t.deepEqual(parsePortMapping('0'), { local: 0 });
  t.deepEqual(parsePortMapping('8080:80'), { local: 8080, remote: '80' });
  t.deepEqual(parsePortMapping('0:http'), { local: 0, remote: 'http' });
  for (const bad of ['8080:0', '1:2:3', 'x', '8080:Http', '65536:80', ':80']) t.throws(() => parsePortMapping(bad), { instanceOf: UsageError }, bad);

  // The one port list of every error message (forward, exchange, mesh): name and targetPort when they say something.
  t.is(describePorts([{ port: 80, name: 'http' }, { port: 81 }]), '80 (http), 81');
  t.is(describePorts([{ port: 80, targetPort: 8080 }, { port: 81, name: 'alt', targetPort: 'web' }, { port: 82, targetPort: 82 }]), '80 (targetPort 8080), 81 (alt, targetPort web), 82');
});

test.serial('a service by name: curl on the local port answers from the echo pod, by port number and by port name; SIGINT leaves nothing', async (t) => {
  const run = ktctl(t, ['forward', 'echo', '0:80', '-n', ns]);
  const port = await forwarding(run);
  t.regex(run.stdout(), new RegExp(`-> echo\\.${ns}\\.svc\\.cluster\\.local:80 \\(service ${ns}/echo, port http\\) through shadow pod ${ns}/ktctl-`));
  for (const path of ['/anything/a', '/anything/b']) {
    const r = await curl(`http://127.0.0.1:${port}${path}`);
    t.is(r.code, 0, r.stderr);
    const body = JSON.parse(r.body) as { pod: string; path: string };
    t.is(body.pod, echoPod);
    t.is(body.path, path);
  }
  await run.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);

  // `multi` has two ports: the name picks one.
  const named = ktctl(t, ['forward', 'svc/multi', '0:alt', '-n', ns]);
  const port2 = await forwarding(named);
  t.regex(named.stdout(), /\.svc\.cluster\.local:81 \(service \S+\/multi, port alt\)/);
  const r = await curl(`http://127.0.0.1:${port2}/anything/alt`);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.body) as { path: string }).path, '/anything/alt');
  await named.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('pod/NAME: the pod\'s declared port when none is given; a refused port resets the connection and the forward goes on', async (t) => {
  // `0`: any free local port; no remote port given: the one the pod declares (8080).
  const run = ktctl(t, ['forward', `pod/${echoPod}`, '0', '--address', '127.0.0.1', '-n', ns]);
  const local = await forwarding(run);
  t.regex(run.stdout(), new RegExp(`-> [0-9.]+:8080 \\(pod ${ns}/${echoPod}, port web\\) through shadow pod`));
  const ok = await curl(`http://127.0.0.1:${local}/anything/pod`);
  t.is(ok.code, 0, ok.stderr);
  t.is((JSON.parse(ok.body) as { pod: string }).pod, echoPod);
  await run.stop(t);

  // Nothing listens on port 9 in the pod: each connection is reset, the listener stays.
  const refused = ktctl(t, ['forward', `pod/${echoPod}`, '0:9', '-n', ns]);
  const port = await forwarding(refused);
  for (let i = 0; i < 2; i++) {
    const r = await curl(`http://127.0.0.1:${port}/`);
    // 56: connection reset while receiving; 52: closed with no reply; 7: reset at connect
    t.true([7, 52, 56].includes(r.code), `curl exit ${r.code}: ${r.stderr}`);
  }
  t.regex(refused.log(), /connection refused by .*:9; connection reset/);
  t.is(refused.child.exitCode, null, 'the forward keeps running');
  await refused.stop(t);
  t.deepEqual(await ktctlObjects(ns), []);
});

test.serial('bad input: one sentence, exit 1, nothing made in the cluster', async (t) => {
  const busy: Server = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  const busyPort = (busy.address() as { port: number }).port;
  const cases: [string[], RegExp][] = [
    [['forward', 'nope', '8080:80', '-n', ns], new RegExp(`^ktctl: the service nope does not exist in namespace ${ns} \\(kubectl get services -n ${ns} lists them; pod/NAME forwards to a pod\\)\n$`)],
    [['forward', 'echo', '8080:81', '-n', ns], /^ktctl: service echo in namespace \S+ has no port 81: its ports are 80 \(http\)\n$/],
    [['forward', 'echo', '8080:grpc', '-n', ns], /^ktctl: service echo in namespace \S+ has no port named grpc: its ports are 80 \(http\)\n$/],
    [['forward', 'multi', '-n', ns], /^ktctl: service multi in namespace \S+ has several ports \(80 \(http\), 81 \(alt\)\): name one/],
    [['forward', 'pod/nope', '0:80', '-n', ns], /^ktctl: there is no pod nope in namespace /],
    [['forward', 'echo', `${busyPort}:80`, '-n', ns], new RegExp(`^ktctl: 127\\.0\\.0\\.1:${busyPort} is already in use; pick another local port`)],
    [['forward', 'echo', '8080:80', '--via', 'root@127.0.0.1'], /^ktctl: with --via there is no cluster to find service echo in: forward host:port instead\n$/],
    [['forward', '198.18.0.1', '-n', ns], /^ktctl: 198\.18\.0\.1 names no port: give one/],
    [['forward', 'echo', '70000', '-n', ns], /^ktctl: the port must be a port number between 0 and 65535/],
    [['forward', 'echo', '0:80', '-n', ns, '--context', lab().contexts.readonly], new RegExp(`^ktctl: you may not create \\S+ in namespace ${ns} \\(RBAC`)],
  ];
  const runs = cases.map(([args]) => ktctl(t, args));
  for (const [i, [args, re]] of cases.entries()) {
    const run = runs[i]!;
    t.is(await run.exited, 1, `${args.join(' ')}: ${run.log()}`);
    // One error line (what ktctl undid before it may be logged above it).
    t.regex(`${errorSentence(t, run.log())}\n`, re, args.join(' '));
  }
  t.deepEqual(await ktctlObjects(ns), []);
});

// --- --via: no cluster; an sshd and the shadow in a namespace of the test's own

const SSHD_PORT = 2022;
const SHADOW_PORT = 2222;
const hooks = new TeardownList();
let via: { server: Netns; target: string; dir: string; sshdHostPub: string; shadowHostPub: string } | undefined;

test.before(async () => {
  if (!isRoot) return;
  const server = await createNetns(hooks, 'ktfwd');
  const target = await server.addTargetAddress();
  await startTargets(server, target);
  const s = await startSshServers(hooks, server, { sshdPort: SSHD_PORT, shadowPort: SHADOW_PORT, prefix: 'ktt-fwd-' });
  via = { server, target, dir: s.dir, sshdHostPub: s.sshdHost.public, shadowHostPub: s.shadowHost.public };
});
test.after.always(() => hooks.run());

/** Sends `payload` to 127.0.0.1:port inside `netns`, half-closes, and prints what came back. */
const ECHO_CLIENT = String.raw`
const s = require('node:net').connect({ host: '127.0.0.1', port: Number(process.argv[1]), allowHalfOpen: true });
const got = [];
s.on('data', (c) => got.push(c));
s.on('end', () => { process.stdout.write(Buffer.concat(got)); s.end(); });
s.on('error', (e) => { process.stdout.write('error ' + (e.code || e.message)); process.exitCode = 3; });
s.end(process.argv[2]);
`;

const maybe = isRoot ? test : test.skip;
for (const server of ['sshd', 'shadow'] as const) {
  maybe(`--via ${server}: host:port only the server namespace has; a refused port resets, the forward goes on`, async (t) => {
    const v = via!;
    const laptop = await createNetns(t, 'ktfwdl');
    const { bIp } = await linkNetns(t, laptop, v.server);
    const port = server === 'sshd' ? SSHD_PORT : SHADOW_PORT;
    const knownHosts = join(v.dir, `known_hosts_${laptop.name}`);
    writeFileSync(knownHosts, `[${bIp}]:${port} ${server === 'sshd' ? v.sshdHostPub : v.shadowHostPub}\n`);
    t.teardown(() => rmSync(knownHosts, { force: true }));
    const common = ['--via', `root@${bIp}:${port}`, '--identity', join(v.dir, 'id_ed25519'), '--knownHosts', knownHosts];

    const run = ktctl(t, ['forward', `${v.target}:${PORTS.echo}`, '0', ...common], laptop);
    const local = await forwarding(run);
    t.regex(run.stdout(), new RegExp(`-> ${v.target.replace(/\./g, '\\.')}:7 through root@${bIp.replace(/\./g, '\\.')}:${port}`));
    const echoed = await laptop.exec('node', ['-e', ECHO_CLIENT, String(local), `hello through ${server}`]);
    t.is(echoed.stdout, `hello through ${server}`, echoed.stderr);

    const refused = ktctl(t, ['forward', `${v.target}:1`, '0', ...common], laptop);
    const rport = await forwarding(refused);
    for (let i = 0; i < 2; i++) {
      const r = await laptop.exec('node', ['-e', ECHO_CLIENT, String(rport), 'x']);
      t.regex(r.stdout, /^error (ECONNRESET|EPIPE)$|^$/, `attempt ${i}: ${r.stdout}`);
    }
    t.regex(refused.log(), /connection refused by .*:1; connection reset|cannot reach .*:1/);
    t.is(refused.child.exitCode, null, 'the forward keeps running');
    // and the first forward still serves
    const again = await laptop.exec('node', ['-e', ECHO_CLIENT, String(local), 'again']);
    t.is(again.stdout, 'again');
    await refused.stop(t);
    await run.stop(t);
  });
}
