/**
 * `ktctl exchange --envFile/--envJson -- command` against the lab: a deployment whose container has
 * plain values, ConfigMap and Secret references, envFrom (with a prefix), fieldRefs and `$(VAR)`
 * references. What ktctl writes (dotenv read back by python-dotenv, JSON) and what the local
 * command gets must equal what `kubectl exec POD -- env -0` prints in the pod, for every variable
 * the pod's spec defines; the command's exit code (3) is ktctl's and the service is restored. In
 * scale mode the environment is the scaled-away pods'; a SIGTERM to ktctl reaches the command. A
 * ConfigMap key that went away (not optional) is one sentence, exit 1, nothing left and no file.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, CoreV1Api, type V1Container } from '@kubernetes/client-node';
import { closeServer, errorSentence, labKtctl, laptopServer, webLeftovers } from './helpers/ktctl.js';
import { eventually, fileNamespace, hasKubectl, kubeConfig, kubectl, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-env');
const ktctl = labKtctl(test, 'kt-env');
const strict = { KTCTL_PERMISSIONS: 'strict' };

/** Values that need quoting in a dotenv file. */
const GREETING = `hello world\nsecond line with $HOME, # and 'quotes' and "doubles" and C:\\dir\\ end`;
const PASSWORD = 'p@ss "w"\nord $$ #1';

const container: V1Container = {
  name: 'web',
  image: 'ktlab/echo',
  ports: [{ containerPort: 8080 }],
  envFrom: [{ configMapRef: { name: 'web-cfg' }, prefix: 'CFG_' }, { secretRef: { name: 'web-sec' } }, { configMapRef: { name: 'no-such-cm', optional: true } }],
  env: [
    { name: 'PLAIN', value: 'plain value' },
    { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'web-cfg', key: 'MODE' } } },
    { name: 'DB_KEY', valueFrom: { configMapKeyRef: { name: 'web-cfg', key: 'DB' } } },
    { name: 'PASS', valueFrom: { secretKeyRef: { name: 'web-sec', key: 'password' } } },
    { name: 'MAYBE', valueFrom: { secretKeyRef: { name: 'web-sec', key: 'absent', optional: true } } },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'POD_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    { name: 'URL', value: 'http://$(POD_IP):8080/$(MODE)?u=$(user)&later=$(LATE)' },
    { name: 'ESCAPED', value: '$$(POD_IP) and $(NOPE)' },
    { name: 'LATE', value: 'late' },
  ],
};

/** The names the pod's spec defines: the envFrom keys (with prefixes) and the env names, minus optional ones that are absent. */
const SPEC_NAMES = ['CFG_MODE', 'CFG_GREETING', 'CFG_DB', 'user', 'password', 'PLAIN', 'MODE', 'DB_KEY', 'PASS', 'POD_NAME', 'POD_IP', 'POD_NS', 'URL', 'ESCAPED', 'LATE'];

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'web-cfg' }, data: { MODE: 'cm-mode', GREETING, DB: 'postgres://db:5432/x' } } });
  await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'web-sec' }, stringData: { user: 'alice', password: PASSWORD } } });
  const labels = { app: 'web' };
  await kubeConfig().makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace: ns,
    body: { metadata: { name: 'web', labels }, spec: { replicas: 1, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [container] } } } },
  });
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'web' }, spec: { selector: labels, ports: [{ port: 80, targetPort: 8080 }] } } });
  await waitForReadyPods(ns, 'app=web', 1);
});

/** `env -0` output as a map. */
function parseEnv0(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of text.split('\0')) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    out[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return out;
}

const pick = (env: Record<string, string>, names: string[]): Record<string, string | undefined> => Object.fromEntries(names.map((n) => [n, env[n]]));

test.serial('--envFile, --envJson and -- command get what kubectl exec env prints in the pod; exit code 3 is ktctl\'s; the service is restored', async (t) => {
  if (!hasKubectl()) {
    t.fail('kubectl is needed (the independent client that reads the pod\'s env)');
    return;
  }
  const pods = await waitForReadyPods(ns, 'app=web', 1);
  const podName = pods[0]!.metadata!.name!;
  const exec = await kubectl(['exec', '-n', ns, podName, '--', 'env', '-0']);
  t.is(exec.exitCode, 0, exec.stderr);
  const inPod = pick(parseEnv0(exec.stdout), SPEC_NAMES);
  // the pod itself resolved everything (the lab's kubelet, as a real one)
  t.is(inPod.CFG_GREETING, GREETING);
  t.is(inPod.PASS, PASSWORD);
  t.regex(inPod.URL ?? '', /^http:\/\/198\.18\.\d+\.\d+:8080\/cm-mode\?u=alice&later=\$\(LATE\)$/);
  t.is(inPod.ESCAPED, '$(POD_IP) and $(NOPE)');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const envFile = path.join(dir, 'web.env');
  const envJson = path.join(dir, 'web.json');
  const seen = path.join(dir, 'seen.env0');
  const { server, port } = await laptopServer();
  t.teardown(() => closeServer(server));
  const r = await ktctl.run(
    ['exchange', 'web', '--expose', `${port}:80`, '-n', ns, '--envFile', envFile, '--envJson', envJson, '--', 'sh', '-c', `env -0 > '${seen}'; exit 3`],
    { env: { ...strict, KTCTL_TEST_OWN: 'mine', PLAIN: 'overridden by the pod' }, timeoutMs: 90_000 },
  );
  t.is(r.code, 3, r.log);
  t.regex(r.stdout, /exchanged service \S+ port 80/);
  t.regex(r.stdout, new RegExp(`wrote the environment of ${ns}/${podName} \\(container web\\) to ${envFile.replace(/[.]/g, '\\.')}`));

  const fromDotenv = JSON.parse(
    execFileSync('python3', ['-c', 'import json,sys; from dotenv import dotenv_values; print(json.dumps(dotenv_values(sys.argv[1], interpolate=False)))', envFile], { encoding: 'utf8' }),
  ) as Record<string, string>;
  const fromJson = JSON.parse(fs.readFileSync(envJson, 'utf8')) as Record<string, string>;
  const command = parseEnv0(fs.readFileSync(seen, 'utf8'));
  t.deepEqual(pick(fromDotenv, SPEC_NAMES), inPod);
  t.deepEqual(pick(fromJson, SPEC_NAMES), inPod);
  t.deepEqual(pick(command, SPEC_NAMES), inPod);
  t.false('MAYBE' in fromJson); // optional and absent: left out, as in the pod
  // the command's environment is ktctl's own with the workload's over it
  t.is(command.KTCTL_TEST_OWN, 'mine');
  t.is(command.PLAIN, 'plain value');
  // the service links of the namespace (the kubelet adds them), without the kubernetes service's
  t.regex(fromJson.WEB_SERVICE_HOST ?? '', /^198\.19\.\d+\.\d+$/);
  t.is(fromJson.WEB_PORT, `tcp://${fromJson.WEB_SERVICE_HOST}:80`);
  t.false(Object.keys(fromJson).some((k) => k.startsWith('KUBERNETES_')));
  for (const f of [envFile, envJson]) t.is(fs.statSync(f).mode & 0o777, 0o600, f);
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('--mode scale reads the environment before the pods are scaled away; a SIGTERM to ktctl reaches the command, whose exit code is ktctl\'s', async (t) => {
  const before = (await waitForReadyPods(ns, 'app=web', 1)).map((p) => p.metadata!.name!);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const envJson = path.join(dir, 'web.json');
  const started = path.join(dir, 'started');
  // the command says when it runs, and ends with 7 on SIGTERM
  const script = `trap 'exit 7' TERM; echo "$POD_NAME" > '${started}'; while :; do sleep 0.1; done`;
  const run = ktctl.start(t, ['exchange', 'web', '--mode', 'scale', '--recoverWaitTime', '60', '--expose', '80', '--skipPortChecking', '-n', ns, '--envJson', envJson, '--', 'sh', '-c', script], { env: strict });
  await run.waitFor(/exchanged service \S+ port 80/, 90_000);
  await eventually(async () => (fs.existsSync(started) ? true : undefined), 'the command started', 20_000);
  t.true(before.includes(fs.readFileSync(started, 'utf8').trim()), 'POD_NAME is one of the pods that ran before the scale-down');
  t.is(JSON.parse(fs.readFileSync(envJson, 'utf8')).MODE, 'cm-mode');
  run.child.kill('SIGTERM');
  t.is(await run.exited, 7, run.log());
  t.regex(run.log(), /scaled deployment/);
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('mesh --mode manual writes the same environment', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const envFile = path.join(dir, 'web.env');
  const r = await ktctl.run(['mesh', 'web', '--mode', 'manual', '--versionMark', 'version:env', '--expose', '80', '--skipPortChecking', '-n', ns, '--envFile', envFile, '--', 'sh', '-c', 'test "$MODE" = cm-mode && test "$user" = alice'], {
    env: strict,
    timeoutMs: 90_000,
  });
  t.is(r.code, 0, r.log);
  t.regex(fs.readFileSync(envFile, 'utf8'), /^MODE=cm-mode$/m);
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('a ConfigMap key that is gone (not optional): one sentence, exit 1, nothing left and no file written', async (t) => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  // The running pod keeps its environment; the key it was started with goes away.
  await core.replaceNamespacedConfigMap({ name: 'web-cfg', namespace: ns, body: { metadata: { name: 'web-cfg' }, data: { MODE: 'cm-mode', GREETING } } });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-env-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const envFile = path.join(dir, 'web.env');
  const r = await ktctl.run(['exchange', 'web', '--expose', '80', '--skipPortChecking', '-n', ns, '--envFile', envFile, '--', 'true'], { env: strict });
  t.is(r.code, 1, r.log);
  t.is(errorSentence(t, r.stderr), `ktctl: couldn't find key DB in ConfigMap ${ns}/web-cfg, which variable DB_KEY of container web (pod ${(await waitForReadyPods(ns, 'app=web', 1))[0]!.metadata!.name}) takes (mark it optional: true, or add the key)`);
  t.false(fs.existsSync(envFile));
  t.deepEqual(await webLeftovers(ns, 1), []);
});

test.serial('--container names a container the pod does not have: one sentence naming the ones it has', async (t) => {
  const r = await ktctl.run(['exchange', 'web', '--expose', '80', '--skipPortChecking', '-n', ns, '--envJson', path.join(os.tmpdir(), 'kt-env-never.json'), '--container', 'nope'], { env: strict });
  t.is(r.code, 1, r.log);
  t.regex(errorSentence(t, r.stderr), /^ktctl: pod web-\S+ has no container nope: --container takes one of web$/);
  t.deepEqual(await webLeftovers(ns, 1), []);
});
