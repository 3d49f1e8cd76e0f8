/**
 * `ktctl connect` in TUN mode against the lab: ktctl runs in a laptop namespace of the lab (a route
 * to the outside segment only), and a plain curl there reaches `web` by service name, by the short
 * `web.NS` form, by FQDN and by pod IP, with no proxy; `www.example.test` keeps resolving through
 * the laptop's original resolver. SIGINT removes the device, the routes, the DNS change and every
 * ktctl object in the cluster.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileNamespace } from './lab/fixture.js';
import { createLabNet } from './lab/net/index.js';
import { ktctlObjects, labKtctl } from './helpers/ktctl.js';
import { deployEcho } from './helpers/lab-echo.js';
import { run } from './helpers/netns.js';
import { REPO } from './helpers/ssh-fixtures.js';

const ns = fileNamespace(test, 'kt-tun');
const ktctl = labKtctl(test, 'kt-tun');

test.before(() => deployEcho(ns, { echo: [{ port: 80, targetPort: 8080 }] }));

test('TUN mode on the lab: curl by name, short name, FQDN and pod IP from a laptop; SIGINT leaves nothing', async (t) => {
  const stateDir = process.env.KTLAB_DIR ?? join(REPO, '.lab');
  const laptop = `kt-tun-${randomBytes(3).toString('hex')}`;
  const net = createLabNet({ stateDir });
  await net.createLaptop(laptop);
  t.teardown(() => net.deleteLaptop(laptop));
  const resolvConf = `/etc/netns/${laptop}/resolv.conf`;
  const before = readFileSync(resolvConf);

  const child = ktctl.start(t, ['connect', '-n', ns], { netns: laptop });
  await child.waitFor(/press Ctrl-C to disconnect/);

  const curl = async (url: string): Promise<Record<string, unknown>> => {
    const r = await run('ip', ['netns', 'exec', laptop, 'curl', '-sS', '--max-time', '10', url]);
    t.is(r.code, 0, `${url}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  // `echo` alone follows -n; `echo.NS` and the FQDN work from anywhere.
  t.is((await curl('http://echo/a')).namespace, ns);
  t.is((await curl(`http://echo.${ns}/b`)).path, '/b');
  const byFqdn = await curl(`http://echo.${ns}.svc.cluster.local/c`);
  t.is(byFqdn.path, '/c');
  t.is((await curl(`http://${String(byFqdn.ip)}:8080/d`)).path, '/d');
  // The laptop's own resolver still answers names outside the cluster.
  t.is((await curl('http://www.example.test/')).ip, '198.18.255.4');

  await child.stop(t);
  t.true(readFileSync(resolvConf).equals(before), 'resolv.conf restored byte for byte');
  const links = await run('ip', ['-n', laptop, '-o', 'link', 'show']);
  t.false(/\bkt\d+:/.test(links.stdout), links.stdout);
  const routes = await run('ip', ['-n', laptop, 'route', 'show']);
  t.false(routes.stdout.includes('kt'), routes.stdout);
  t.deepEqual(await ktctlObjects(ns), []);
  t.false(existsSync(join(ktctl.stateDir, 'tun-kt0.json')));
});
