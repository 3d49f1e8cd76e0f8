/**
 * The workload's environment without a cluster: `$(VAR)` expansion as the kubelet's
 * third_party/forked/golang/expansion does it (the cases of its expand_test.go), the order and
 * overriding of makeEnvironmentVariables, optional references, the downward API, the service links
 * (envvars.go FromServices), and the dotenv quoting read back by an independent reader
 * (python-dotenv without interpolation, which reads docker compose's dialect; the machine has it)
 * and the file mode.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { V1ConfigMap, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';
import { containerEnv, expand, mappingFor, parseQuantity, pickContainer, serviceLinkEnv, type EnvSources } from '../src/kube/env.js';
import { dotenvValue, formatDotenv, formatEnvJson, writeSecretFile } from '../src/connect/workload-env.js';
import { WorkloadEnvError } from '../src/errors.js';

test('expand: the cases of the kubelet expansion package (expand_test.go)', (t) => {
  const vars = new Map([
    ['VAR_A', 'A'],
    ['VAR_B', 'B'],
    ['VAR_C', 'C'],
    ['VAR_REF', '$(VAR_A)'],
    ['VAR_EMPTY', ''],
  ]);
  const m = mappingFor(vars);
  const cases: Array<[string, string]> = [
    ['$(VAR_A)', 'A'],
    ['___$(VAR_B)___', '___B___'],
    ['$(VAR_A)-$(VAR_B)-$(VAR_C)', 'A-B-C'],
    ['$(VAR_A)$(VAR_B)$(VAR_C)', 'ABC'],
    ['$(VAR_REF)', '$(VAR_A)'], // no recursion
    ['$(VAR_DNE)', '$(VAR_DNE)'], // an undefined name stays
    ['$(VAR_EMPTY)x', 'x'],
    ['$$(VAR_A)', '$(VAR_A)'], // $$ escapes
    ['$$$(VAR_A)', '$A'],
    ['$$$$(VAR_A)', '$$(VAR_A)'],
    ['f00$$', 'f00$'],
    ['$(VAR_A', '$(VAR_A'], // unclosed
    ['$VAR_A', '$VAR_A'], // a shell form is not a reference
    ['$', '$'],
    ['foo$', 'foo$'],
    ['$()', '$()'], // the empty name is not declared: mapping gives $() back
    ['$(VAR_A)$(VAR_A', 'A$(VAR_A'],
    ['ünïcode $(VAR_A) ✓', 'ünïcode A ✓'],
  ];
  for (const [input, want] of cases) t.is(expand(input, m), want, input);
});

const ns = 'dev';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

function sources(cms: Record<string, V1ConfigMap['data']>, secrets: Record<string, Record<string, string>>, allocatable: Record<string, string> = {}): EnvSources {
  return {
    configMap: async (name) => (cms[name] ? { data: cms[name] } : undefined),
    secret: async (name): Promise<V1Secret | undefined> => (secrets[name] ? { data: Object.fromEntries(Object.entries(secrets[name]!).map(([k, v]) => [k, b64(v)])) } : undefined),
    nodeAllocatable: async () => allocatable,
  };
}

const basePod = (containers: NonNullable<V1Pod['spec']>['containers'], extra: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod => ({
  metadata: { name: 'web-1', namespace: ns, uid: 'u-1', labels: { app: 'web', tier: 'front' }, annotations: { note: 'a "b"' } },
  spec: { nodeName: 'node-a', serviceAccountName: 'sa', containers, ...extra },
  status: { phase: 'Running', podIP: '10.0.0.7', podIPs: [{ ip: '10.0.0.7' }], hostIP: '192.0.2.1', hostIPs: [{ ip: '192.0.2.1' }] },
});

const svc = (name: string, ip: string, ports: NonNullable<V1Service['spec']>['ports']): V1Service => ({ metadata: { name, namespace: ns }, spec: { clusterIP: ip, ports } });

test('containerEnv: envFrom then env in order, env overrides envFrom, $(VAR) over what came before and the service links', async (t) => {
  const pod = basePod([
    {
      name: 'main',
      image: 'x',
      envFrom: [{ configMapRef: { name: 'cfg' } }, { prefix: 'S_', secretRef: { name: 'sec' } }, { configMapRef: { name: 'gone', optional: true } }],
      env: [
        { name: 'MODE', value: 'from-env' }, // overrides the envFrom value
        { name: 'URL', value: 'http://$(WEB_SERVICE_HOST):$(PORT)/$(LATER)' }, // LATER is declared after: stays
        { name: 'PORT', value: '8080' },
        { name: 'PASS', valueFrom: { secretKeyRef: { name: 'sec', key: 'password' } } },
        { name: 'OPT', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'missing', optional: true } } },
        { name: 'OPT2', valueFrom: { secretKeyRef: { name: 'nosuch', key: 'k', optional: true } } },
        { name: 'LATER', value: '$(PORT)-$$(PORT)' },
        { name: 'EMPTY' },
        { name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
        { name: 'TIER', valueFrom: { fieldRef: { fieldPath: "metadata.labels['tier']" } } },
        { name: 'LABELS', valueFrom: { fieldRef: { fieldPath: 'metadata.labels' } } },
        { name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
        { name: 'HOSTS', valueFrom: { fieldRef: { fieldPath: 'status.hostIPs' } } },
      ],
    },
  ]);
  const env = await containerEnv(pod, pod.spec!.containers[0]!, sources({ cfg: { MODE: 'from-cm', 'dashed-key': 'ok' } }, { sec: { password: 'p@ss\nword' } }), [
    svc('web', '10.96.0.5', [{ port: 80, name: 'http' }]),
    svc('headless', 'None', [{ port: 80 }]),
  ]);
  const vars = Object.fromEntries(env.vars);
  t.is(vars.MODE, 'from-env');
  t.is(vars['dashed-key'], 'ok'); // the 1.35 kubelet keeps it (RelaxedEnvironmentVariableValidation)
  t.is(vars.S_password, 'p@ss\nword');
  t.is(vars.URL, 'http://10.96.0.5:$(PORT)/$(LATER)');
  t.is(vars.LATER, '8080-$(PORT)');
  t.is(vars.PASS, 'p@ss\nword');
  t.false('OPT' in vars);
  t.false('OPT2' in vars);
  t.is(vars.EMPTY, '');
  t.is(vars.POD, 'web-1');
  t.is(vars.IP, '10.0.0.7');
  t.is(vars.TIER, 'front');
  t.is(vars.LABELS, 'app="web"\ntier="front"');
  t.is(vars.NODE, 'node-a');
  t.is(vars.HOSTS, '192.0.2.1');
  t.is(vars.WEB_SERVICE_HOST, '10.96.0.5');
  t.is(vars.WEB_SERVICE_PORT_HTTP, '80');
  t.is(vars.WEB_PORT, 'tcp://10.96.0.5:80');
  t.false(Object.keys(vars).some((k) => k.startsWith('HEADLESS_')));
  t.false(Object.keys(vars).some((k) => k.startsWith('KUBERNETES_')));
  // the order: envFrom's keys, then env (an override moves to its env position), then service links
  const keys = [...env.vars.keys()];
  t.true(keys.indexOf('dashed-key') < keys.indexOf('MODE'));
  t.true(keys.indexOf('MODE') < keys.indexOf('URL'));
  t.true(keys.indexOf('HOSTS') < keys.indexOf('WEB_SERVICE_HOST'));
});

test('containerEnv: enableServiceLinks false leaves the links out; a missing key or object without optional is one sentence', async (t) => {
  const pod = basePod([{ name: 'main', image: 'x', env: [{ name: 'A', value: '$(WEB_SERVICE_HOST)' }] }], { enableServiceLinks: false });
  const env = await containerEnv(pod, pod.spec!.containers[0]!, sources({}, {}), [svc('web', '10.96.0.5', [{ port: 80 }])]);
  t.deepEqual(Object.fromEntries(env.vars), { A: '$(WEB_SERVICE_HOST)' });

  const missingKey = basePod([{ name: 'main', image: 'x', env: [{ name: 'DB', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'db' } } }] }]);
  const e1 = await t.throwsAsync(containerEnv(missingKey, missingKey.spec!.containers[0]!, sources({ cfg: {} }, {}), []), { instanceOf: WorkloadEnvError });
  t.is(e1.message, "couldn't find key db in ConfigMap dev/cfg, which variable DB of container main (pod web-1) takes (mark it optional: true, or add the key)");
  const missingSecret = basePod([{ name: 'main', image: 'x', envFrom: [{ secretRef: { name: 'creds' } }] }]);
  const e2 = await t.throwsAsync(containerEnv(missingSecret, missingSecret.spec!.containers[0]!, sources({}, {}), []), { instanceOf: WorkloadEnvError });
  t.regex(e2.message, /takes its environment from Secret creds, which does not exist in namespace dev/);
});

test('containerEnv: resourceFieldRef with divisors, and the node allocatable for a limit not set', async (t) => {
  const pod = basePod([
    {
      name: 'main',
      image: 'x',
      resources: { limits: { cpu: '1500m', memory: '128Mi' }, requests: { cpu: '250m' } },
      env: [
        { name: 'CPU', valueFrom: { resourceFieldRef: { resource: 'limits.cpu' } } },
        { name: 'CPU_M', valueFrom: { resourceFieldRef: { resource: 'limits.cpu', divisor: '1m' } } },
        { name: 'REQ_CPU', valueFrom: { resourceFieldRef: { resource: 'requests.cpu', divisor: '1m' } } },
        { name: 'MEM_MI', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
        { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory' } } },
        { name: 'EPH', valueFrom: { resourceFieldRef: { resource: 'limits.ephemeral-storage', divisor: '1Gi' } } },
        { name: 'REQ_MEM', valueFrom: { resourceFieldRef: { resource: 'requests.memory' } } },
      ],
    },
  ]);
  const env = Object.fromEntries((await containerEnv(pod, pod.spec!.containers[0]!, sources({}, {}, { 'ephemeral-storage': '10Gi' }), [])).vars);
  t.deepEqual(env, { CPU: '2', CPU_M: '1500', REQ_CPU: '250', MEM_MI: '128', MEM: String(128 * 2 ** 20), EPH: '10', REQ_MEM: '0' });
  t.is(parseQuantity('1e3'), 1000);
  t.is(parseQuantity('0.5'), 0.5);
  t.throws(() => parseQuantity('12XB'), { instanceOf: WorkloadEnvError });
});

test('pickContainer: --container, else the default-container annotation, else the first; an unknown name lists the others', (t) => {
  const pod = basePod([
    { name: 'sidecar', image: 'x' },
    { name: 'app', image: 'x' },
  ]);
  t.is(pickContainer(pod, undefined).name, 'sidecar');
  t.is(pickContainer(pod, 'app').name, 'app');
  pod.metadata!.annotations = { 'kubectl.kubernetes.io/default-container': 'app' };
  t.is(pickContainer(pod, undefined).name, 'app');
  t.is(t.throws(() => pickContainer(pod, 'nope'))?.message, 'pod web-1 has no container nope: --container takes one of sidecar, app');
});

test('serviceLinkEnv: the names and values of envvars.go FromServices', (t) => {
  const env = Object.fromEntries(serviceLinkEnv([svc('my-svc.v2', '10.0.0.9', [{ port: 53, protocol: 'UDP', name: 'dns-udp' }, { port: 8080, name: 'web' }]), svc('9lives', '10.0.0.10', [{ port: 1 }])]));
  t.deepEqual(env, {
    MY_SVC_V2_SERVICE_HOST: '10.0.0.9',
    MY_SVC_V2_SERVICE_PORT: '53',
    MY_SVC_V2_SERVICE_PORT_DNS_UDP: '53',
    MY_SVC_V2_SERVICE_PORT_WEB: '8080',
    MY_SVC_V2_PORT: 'udp://10.0.0.9:53',
    MY_SVC_V2_PORT_53_UDP: 'udp://10.0.0.9:53',
    MY_SVC_V2_PORT_53_UDP_PROTO: 'udp',
    MY_SVC_V2_PORT_53_UDP_PORT: '53',
    MY_SVC_V2_PORT_53_UDP_ADDR: '10.0.0.9',
    MY_SVC_V2_PORT_8080_TCP: 'tcp://10.0.0.9:8080',
    MY_SVC_V2_PORT_8080_TCP_PROTO: 'tcp',
    MY_SVC_V2_PORT_8080_TCP_PORT: '8080',
    MY_SVC_V2_PORT_8080_TCP_ADDR: '10.0.0.9',
    _9LIVES_SERVICE_HOST: '10.0.0.10',
    _9LIVES_SERVICE_PORT: '1',
    _9LIVES_PORT: 'tcp://10.0.0.10:1',
    _9LIVES_PORT_1_TCP: 'tcp://10.0.0.10:1',
    _9LIVES_PORT_1_TCP_PROTO: 'tcp',
    _9LIVES_PORT_1_TCP_PORT: '1',
    _9LIVES_PORT_1_TCP_ADDR: '10.0.0.10',
  });
});

/** Values that break naive quoting: newlines, both quotes, $, #, spaces, backslashes, = and unicode. */
const HARD_VALUES: Record<string, string> = {
  PLAIN: 'abc-1.2_3:/x@y%z+w=v,',
  EMPTY: '',
  SPACES: '  lead and trail  ',
  HASH: 'a # not a comment',
  HASH0: '#start',
  DOLLAR: '$HOME and $(VAR) and ${X}',
  NEWLINES: 'line1\nline2\n\nline4\n',
  CRLF: 'a\r\nb',
  DQUOTE: 'say "hi"',
  SQUOTE: "it's",
  BOTH: `it's "both"\nand $HOME # here`,
  BACKSLASH: 'C:\\path\\n not a newline',
  BACKSLASH_QUOTE: "\\'\\\"",
  TAB: 'a\tb',
  UNICODE: 'ünïcode ✓ 日本',
  EQUALS: 'a=b=c',
  PEM: '-----BEGIN KEY-----\nMIIB+/=\n-----END KEY-----',
};

function hasPythonDotenv(): boolean {
  try {
    execFileSync('python3', ['-c', 'import dotenv'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('dotenv: python-dotenv reads back every value exactly; the file is 0600 also when it existed wider', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktctl-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'web.env');
  fs.writeFileSync(file, 'old', { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  const env = { namespace: 'dev', pod: 'web-1', container: 'main', vars: new Map(Object.entries(HARD_VALUES)), origin: new Map() };
  writeSecretFile(file, formatDotenv(env));
  t.is(fs.statSync(file).mode & 0o777, 0o600);
  t.deepEqual(fs.readdirSync(dir), ['web.env']); // no temporary file left
  if (!hasPythonDotenv()) {
    t.fail('python3 with python-dotenv is needed to read the file back (pip install python-dotenv)');
    return;
  }
  const out = execFileSync('python3', ['-c', 'import json,sys; from dotenv import dotenv_values; print(json.dumps(dotenv_values(sys.argv[1], interpolate=False)))', file], { encoding: 'utf8' });
  t.deepEqual(JSON.parse(out), HARD_VALUES);
  const json = path.join(dir, 'web.json');
  writeSecretFile(json, formatEnvJson(env));
  t.deepEqual(JSON.parse(fs.readFileSync(json, 'utf8')), HARD_VALUES);
  t.is(fs.statSync(json).mode & 0o777, 0o600);
});

test('dotenv: a plain value is unquoted, single quotes when raw is enough, double quotes only for a quote or backslash', (t) => {
  t.is(dotenvValue('abc'), 'abc');
  t.is(dotenvValue(''), '');
  t.is(dotenvValue('a b'), "'a b'");
  t.is(dotenvValue('a\nb $X #c'), "'a\nb $X #c'");
  t.is(dotenvValue("it's"), `"it's"`);
  t.is(dotenvValue('a\\b"c\nd'), '"a\\\\b\\"c\\nd"');
  t.is(dotenvValue('a\r\nb'), '"a\\r\\nb"');
});
