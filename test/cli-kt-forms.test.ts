/**
 * KT Connect's spellings (issue 16 part 4; README "Coming from KT Connect"): each accepted and mapped
 * to ktctl's behaviour, or refused in one sentence that says what to use instead.
 *
 * - parsed in-process through the real clipanion Cli (makeCli, as main.ts runs it): what each
 *   accepted form becomes, and the refusals made by the flags' validators (nothing runs);
 * - refusals made before a command runs (`checkFlags`), and `clean --localOnly`: the built CLI as a
 *   process in a network namespace of its own (`unshare --net`, only loopback), so that a refusal
 *   that regressed could reach no cluster and change no route of this machine;
 * - what the mapped forms do below the CLI: `--includeDomains` in the resolver, `hosts:NS` in the
 *   hosts block's services, `--disablePodIp` in the network discovery against the lab's API server
 *   run in this process (test/helpers/inproc-lab.ts: no shared lab).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import * as dnsPacket from 'dns-packet';
import type { BaseContext, Command } from 'clipanion';
import { makeCli } from '../src/cli/commands.js';
import { servicesIn } from '../src/connect/tun/hosts.js';
import { ClusterResolver } from '../src/dns/index.js';
import { openKube } from '../src/kube/session.js';
import { discoverNetwork } from '../src/kube/network.js';
import { containsCidr, makeCidr, parseIp, tryParseCidr } from '../src/tun/cidr.js';
import { CLI, errorSentence } from './helpers/cli-process.js';
import { startInProcessLab } from './helpers/inproc-lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';

const isRoot = process.getuid?.() === 0;

function scratch(t: ExecutionContext): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), 'ktctl-ktforms-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: dir, KUBECONFIG: join(dir, 'no-kubeconfig'), KTCTL_STATE_DIR: join(dir, 'state') } };
}

function parse(t: ExecutionContext, argv: string[]): Command<BaseContext> & Record<string, unknown> {
  return makeCli().process(argv, { env: scratch(t).env } as Partial<BaseContext>) as Command<BaseContext> & Record<string, unknown>;
}

/** A refusal by a flag's validator: clipanion makes no command, ktctl prints the sentence (in-process, nothing runs). */
async function parseRefusal(t: ExecutionContext, argv: string[]): Promise<string> {
  const cli = makeCli();
  const command = cli.process(argv, { env: scratch(t).env } as Partial<BaseContext>);
  t.is(command.constructor.name, 'FlagErrorCommand', `${argv.join(' ')} should be refused while parsing`);
  const stderr = new PassThrough();
  let text = '';
  stderr.on('data', (d: Buffer) => (text += d.toString()));
  command.context = { stdout: new PassThrough(), stderr, stdin: process.stdin, env: {}, colorDepth: 1 } as BaseContext;
  t.is(await command.execute(), 1);
  return errorSentence(t, text);
}

/** The built CLI with only loopback (unshare --net). */
function isolated(t: ExecutionContext, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { env } = scratch(t);
  return new Promise((resolve) => {
    execFile('unshare', ['--net', process.execPath, CLI, ...args], { env, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
    });
  });
}

// --- accepted forms and what they become

test('--mode tun2socks and sshuttle are ktctl\'s tun; socks stays socks', (t) => {
  t.is(parse(t, ['connect', '--mode', 'tun2socks']).mode, 'tun');
  t.is(parse(t, ['connect', '--mode', 'sshuttle']).mode, 'tun');
  t.is(parse(t, ['connect', '-m', 'socks']).mode, 'socks');
});

test('-l is --withLabel on every command that makes objects', (t) => {
  t.deepEqual(parse(t, ['connect', '-l', 'team=a,env=dev']).withLabel, { team: 'a', env: 'dev' });
  t.deepEqual(parse(t, ['exchange', 'web', '--expose', '8080', '-l', 'team=b']).withLabel, { team: 'b' });
});

test('--dnsMode hosts:NS1,NS2 and localDNS:cluster,upstream (either order)', (t) => {
  t.deepEqual({ ...(parse(t, ['connect', '--dnsMode', 'hosts:dev,qa,dev']).dnsMode as object) }, { mode: 'hosts', hostsNamespaces: ['dev', 'qa'] });
  t.deepEqual({ ...(parse(t, ['connect', '--dnsMode', 'localDNS:cluster,upstream']).dnsMode as object) }, { mode: 'localDNS' });
  t.deepEqual({ ...(parse(t, ['connect', '--dnsMode', 'localdns:upstream,cluster']).dnsMode as object) }, { mode: 'localDNS' });
  t.deepEqual({ ...(parse(t, ['connect', '--dnsMode', 'podDNS']).dnsMode as object) }, { mode: 'podDNS' });
});

test('--includeDomains, --disablePodIp, --skipCleanup and clean --localOnly are taken', (t) => {
  const c = parse(t, ['connect', '--includeDomains', 'corp.example, .internal.', '--disablePodIp', '--skipCleanup']);
  t.deepEqual(c.includeDomains, ['corp.example', 'internal']);
  t.true(c.disablePodIp);
  t.true(c.skipCleanup);
  t.true(parse(t, ['clean', '--localOnly']).localOnly);
  t.true(parse(t, ['clean', '--local-only']).localOnly);
});

// --- refused while parsing

test('refused by the validators, each with what to use', async (t) => {
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'localDNS:upstream']), /would never ask the cluster.*use --dnsMode localDNS/);
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'localDNS:cluster']), /asks only the cluster's DNS for every name: that is --dnsMode podDNS in ktctl/);
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'localDNS:cluster,10.0.0.10:53']), /ktctl's localDNS asks no server list.*Use --dnsMode localDNS/);
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'hosts:']), /hosts:NAMESPACES takes namespace names/);
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'hosts:Bad_NS']), /hosts:NAMESPACES takes namespace names/);
  t.regex(await parseRefusal(t, ['connect', '--dnsMode', 'podDNS:x']), /podDNS takes nothing after it/);
  t.regex(await parseRefusal(t, ['connect', '--mode', 'vpn']), /--mode must be tun or socks, or KT Connect's tun2socks or sshuttle/);
  t.regex(await parseRefusal(t, ['exchange', 'web', '--mode', 'ephemeral']), /--mode ephemeral .* has no counterpart in ktctl: use --mode selector \(default\) or --mode scale/);
  t.regex(await parseRefusal(t, ['connect', '--includeDomains', 'a..b']), /--includeDomains takes DNS suffixes/);
});

// --- refused before the command runs (the CLI, isolated)

const refusals: Array<[string[], RegExp]> = [
  [['connect', '--disableTunDevice'], /that is --mode socks in ktctl/],
  [['connect', '--disableTunRoute'], /no counterpart in ktctl: route only what you need with --excludeIps\/--includeIps, or use --mode socks/],
  [['connect', '--dnsPort', '10053'], /takes no port/],
  [['connect', '--ingressIp', '10.0.0.1'], /--ingressIp .* has no counterpart in ktctl/],
  [['exchange', 'web', '--expose', '8080', '--useShadowDeployment'], /the shadow is always a bare pod/],
  [['connect', '--useLocalTime'], /heartbeats always use the API server's clock/],
  [['preview', 'demo', '--expose', '8080', '--ipVersion', '6'], /--ipVersion has no counterpart in ktctl/],
  [['connect', '-i', 'registry.example.test/kt-connect-shadow:v0.3.7'], /^ktctl: -i is --identity in ktctl, as in ssh: the private key for --via; for the shadow image \(KT Connect's -i\) use --image$/],
  [['exchange', 'web', '--expose', '8080', '-i', 'registry.example.test/shadow:1'], /-i is --identity in ktctl .*use --image$/],
  [['connect', '--dnsMode', 'podDNS', '--includeDomains', 'corp.example'], /with --dnsMode podDNS every name goes to the cluster's DNS already/],
  [['connect', '--dnsMode', 'hosts', '--includeDomains', 'corp.example'], /with --dnsMode hosts there is no resolver/],
  [['connect', '--disablePodIp', '--via', 'root@127.0.0.1'], /with --via there is no cluster/],
  [['clean', '--localOnly', '--dryRun'], /--localOnly has no dry run/],
];

for (const [args, sentence] of refusals) {
  test(`refused before anything runs: ktctl ${args.join(' ')}`, async (t) => {
    if (!isRoot) return t.pass('unshare --net needs root here');
    const r = await isolated(t, args);
    t.is(r.code, 1, r.stderr);
    t.regex(errorSentence(t, r.stderr), sentence);
    t.is(r.stdout, '');
  });
}

test('clean --localOnly cleans this machine and never asks the cluster (no kubeconfig needed)', async (t) => {
  if (!isRoot) return t.pass('unshare --net needs root here');
  const r = await isolated(t, ['clean', '--localOnly']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'nothing to clean on this machine\n');
  t.is(r.stderr, '');
  const cluster = await isolated(t, ['clean']);
  t.is(cluster.code, 1, 'without --localOnly the missing kubeconfig matters');
});

// --- what the mapped forms do below the CLI

test('--includeDomains: names under those suffixes are asked through the tunnel, the rest as before', async (t) => {
  const asked: string[] = [];
  const dialer = {
    dnsQuery: async (message: Buffer): Promise<Buffer> => {
      const q = dnsPacket.decode(message);
      asked.push(q.questions![0]!.name);
      return dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED, questions: q.questions, answers: [{ type: 'A', name: q.questions![0]!.name, ttl: 30, data: '198.18.0.77' }] });
    },
  };
  const r = new ClusterResolver({ dialer, namespace: 'default', upstream: { servers: ['127.0.0.1:9'] }, tunnelDomains: ['corp.example'] });
  t.is(r.route('api.corp.example').kind, 'cluster');
  t.is(r.route('CORP.example.').kind, 'cluster');
  t.is(r.route('www.notcorp.example').kind, 'upstream');
  t.is(r.route('web.default.svc.cluster.local').kind, 'cluster');
  const answer = dnsPacket.decode((await r.answer(dnsPacket.encode({ id: 7, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'api.corp.example' }] })))!);
  t.deepEqual(answer.answers?.map((a) => (a as { data?: unknown }).data), ['198.18.0.77']);
  t.deepEqual(asked, ['api.corp.example']);
  t.is(new ClusterResolver({ dialer, namespace: 'default', upstream: { servers: ['127.0.0.1:9'] } }).route('api.corp.example').kind, 'upstream', 'without the flag');
});

test('--dnsMode hosts:NS: the hosts block gets only those namespaces\' services', (t) => {
  const services = [
    { namespace: 'dev', name: 'web', ips: ['198.19.0.1'] },
    { namespace: 'qa', name: 'web', ips: ['198.19.0.2'] },
    { namespace: 'prod', name: 'web', ips: ['198.19.0.3'] },
  ];
  t.deepEqual(servicesIn(services, ['dev', 'qa']).map((s) => s.ips[0]), ['198.19.0.1', '198.19.0.2']);
  t.deepEqual(servicesIn(services, ['none']), []);
});

test('--disablePodIp: the network discovery routes the services\' addresses and no pod\'s', async (t) => {
  const lab = await startInProcessLab(new FakeLabNet(), 'ktlab-ktforms');
  t.teardown(() => lab.stop());
  const ns = 'ktforms';
  await lab.pods(ns, [{ metadata: { name: 'web', labels: { app: 'web' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } }]);
  const svc = await lab.request('POST', `/api/v1/namespaces/${ns}/services`, { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } });
  t.is(svc.status, 201, JSON.stringify(svc.json));
  const serviceIp = (svc.json.spec as { clusterIP: string }).clusterIP;
  const pod = await lab.request('GET', `/api/v1/namespaces/${ns}/pods/web`);
  const podIp = (pod.json.status as { podIP: string }).podIP;
  const kube = openKube({ kubeconfig: lab.kubeconfig, context: 'lab', namespace: ns });
  const covers = (routes: string[], ip: string): boolean => {
    const a = parseIp(ip)!;
    return routes.some((r) => containsCidr(tryParseCidr(r)!, makeCidr(a.family, a.value, 32)));
  };
  const all = await discoverNetwork(kube, { clusterDomain: 'cluster.local', namespace: ns });
  t.true(covers(all.routes, podIp), `pod ${podIp} in ${all.routes.join(', ')}`);
  t.true(covers(all.routes, serviceIp));
  const servicesOnly = await discoverNetwork(kube, { clusterDomain: 'cluster.local', namespace: ns, pods: false });
  t.false(covers(servicesOnly.routes, podIp), `pod ${podIp} not in ${servicesOnly.routes.join(', ')}`);
  t.true(covers(servicesOnly.routes, serviceIp), `service ${serviceIp} in ${servicesOnly.routes.join(', ')}`);
});
