/**
 * What a ktctl exchange killed with -9 leaves behind, and the two ways back: `recover web` (refused
 * while the owner lives, then selector, replicas, shadow and lock restored/removed) and `clean`
 * (the same for a stale run, found by its heartbeat). Also a lock whose owner died on this machine
 * is taken over by the next exchange with a warning.
 */
import test, { type ExecutionContext } from 'ava';
import type http from 'node:http';
import { CoreV1Api } from '@kubernetes/client-node';
import { closeServer, deployWeb, labKtctl, laptopServer, podCurl, webLeftovers, webPodsAnswer, type CliRun } from './helpers/ktctl.js';
import { eventually, fileNamespace, kubeConfig, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'kt-recov');
const ktctl = labKtctl(test, 'kt-recov');

let laptop: http.Server;
let laptopPort = 0;

const curl = (url: string): ReturnType<typeof podCurl> => podCurl({ namespace: ns, name: 'client' }, [url]);

/** Everything ktctl may leave: its objects, annotations on web, a changed selector or replica count. */
const leftovers = (): Promise<string[]> => webLeftovers(ns, 2);

test.before(async () => {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'client', labels: { app: 'client' } }, spec: { containers: [{ name: 'main', image: 'ktlab/echo' }] } } });
  ({ server: laptop, port: laptopPort } = await laptopServer());
  await deployWeb(ns, 2);
  await waitForReadyPods(ns, 'app=client', 1);
});

test.after.always(() => (laptop ? closeServer(laptop) : undefined));

/** Starts an exchange and checks web answers from the laptop; the test kills it with -9. */
async function killedExchange(t: ExecutionContext, mode: 'selector' | 'scale'): Promise<CliRun> {
  const run = ktctl.start(t, ['exchange', 'web', '--expose', `${laptopPort}:80`, '--mode', mode, '-n', ns]);
  await run.waitFor(/exchanged service/);
  const body = await eventually(async () => {
    const r = await curl('http://web/x');
    return r.code === 0 && r.body.startsWith('laptop') ? r.body : undefined;
  }, 'the laptop behind web');
  t.is(body, 'laptop /x');
  return run;
}

test.serial('kill -9 during a selector exchange: recover refuses while it lives, then restores selector, lock and removes the shadow', async (t) => {
  const run = await killedExchange(t, 'selector');
  const refused = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(refused.code, 1);
  t.regex(refused.log, new RegExp(`ktctl: the service web in namespace ${ns} is still in use by the live ktctl process \\S+ ${run.child.pid} \\(heartbeat \\d+ s ago\\): stop that process`));

  run.child.kill('SIGKILL');
  await run.exited;
  t.not((await leftovers()).length, 0);
  const r = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(r.code, 0, r.log);
  t.regex(r.log, /restored the selector of service \S+ to app=web/);
  t.regex(r.log, /deleted pod \S+\/ktctl-/);
  t.regex(r.log, /deleted secret \S+\/ktctl-/);
  t.regex(r.log, /removed the exchange lock of \S+ \d+ from service/);
  t.deepEqual(await leftovers(), []);
  t.regex(await webPodsAnswer(async () => (await curl('http://web/after')).body), /"pod":"web-/);
  // Nothing left to do the second time.
  const again = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(again.code, 0, again.log);
  t.regex(again.log, /has nothing of ktctl's to recover/);
  t.regex((await ktctl.run(['recover', 'nope', '-n', ns])).log, /ktctl: the service nope does not exist in namespace \S+ and ktctl made nothing for it there/);
});

test.serial('kill -9 during a scale exchange: recover scales the deployment back', async (t) => {
  const run = await killedExchange(t, 'scale');
  run.child.kill('SIGKILL');
  await run.exited;
  const r = await ktctl.run(['recover', 'web', '-n', ns]);
  t.is(r.code, 0, r.log);
  t.regex(r.log, /scaled deployment \S+\/web back to 2 replica\(s\)/);
  t.deepEqual(await leftovers(), []);
  await waitForReadyPods(ns, 'app=web', 2);
});

test.serial('kill -9, then the next exchange takes the dead owner\'s lock over; clean restores a stale scale exchange', async (t) => {
  const dead = await killedExchange(t, 'selector');
  dead.child.kill('SIGKILL');
  await dead.exited;
  // The dead run's selector, shadow and lock are still there; a new exchange takes the lock over with
  // a warning and restores what the dead run changed before it makes its own changes.
  const next = ktctl.start(t, ['exchange', 'web', '--expose', `${laptopPort}:80`, '--mode', 'scale', '-n', ns]);
  await next.waitFor(/exchanged service/);
  t.regex(next.log(), new RegExp(`warning: taking over the lock on service \\S+ from \\S+ ${dead.child.pid} \\(exchange, heartbeat \\d+ s ago; the process is gone\\)`));
  t.regex(next.log(), /recover: restored the selector of service \S+ to app=web/);
  t.regex(next.log(), /recover: deleted pod \S+\/ktctl-/);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  t.deepEqual((await core.readNamespacedService({ name: 'web', namespace: ns })).spec?.selector, { app: 'web' });
  t.is(
    await eventually(async () => {
      const r = await curl('http://web/scale');
      return r.code === 0 && r.body.startsWith('laptop') ? r.body : undefined;
    }, 'the laptop behind web in scale mode'),
    'laptop /scale',
  );
  next.child.kill('SIGKILL');
  await next.exited;

  const dry = await ktctl.run(['clean', '--thresholdInMinus', '0', '--dryRun', '-n', ns]);
  t.is(dry.code, 0, dry.log);
  t.regex(dry.log, /would restore service \S+\/web/);
  t.regex(dry.log, /would restore deployment \S+\/web/);
  const c = await ktctl.run(['clean', '--thresholdInMinus', '0', '-n', ns]);
  t.is(c.code, 0, c.log);
  t.regex(c.log, /restored service \S+\/web/);
  t.regex(c.log, /restored deployment \S+\/web/);
  t.regex(c.log, /deleted pod \S+\/ktctl-/);
  t.deepEqual(await leftovers(), []);
  await waitForReadyPods(ns, 'app=web', 2);
  t.regex(await webPodsAnswer(async () => (await curl('http://web/after')).body), /"pod":"web-/);
});
