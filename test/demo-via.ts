/**
 * `npm run demo`: ktctl's main job, end to end, on this machine alone.
 *
 * Makes a "remote network" (a network namespace with an OpenSSH sshd and a web server on an
 * address only that network has, plus a name only its resolver knows) and a "laptop" namespace
 * linked to it; runs `ktctl connect --mode socks --via root@SERVER:2022` in the laptop; curls the
 * remote web server through the proxy by IP and by name; stops ktctl with SIGINT; removes
 * everything. Every command is printed as it runs, so a person can repeat it by hand.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, linkNetns, waitForTcp } from './helpers/netns.js';
import { ed25519, REPO, startTargets, TeardownList, ZONE } from './helpers/ssh-fixtures.js';

const say = (line: string): void => void process.stdout.write(`${line}\n`);

async function main(cleanup: TeardownList): Promise<void> {
  const server = await createNetns(cleanup, 'ktdemo');
  const laptop = await createNetns(cleanup, 'ktdemo');
  const { bIp: serverIp } = await linkNetns(cleanup, laptop, server);
  const web = await server.addTargetAddress();
  server.setResolvConf(`nameserver ${web}\nsearch ${ZONE}\n`);
  await startTargets(server, web);
  server.spawn('node', ['-e', `require('node:http').createServer((q, s) => s.end('hello from the remote network (' + q.headers.host + ')\\n')).listen(80, '${web}')`]);
  await waitForTcp(server, web, 80);

  const dir = mkdtempSync(join(tmpdir(), 'ktdemo-'));
  cleanup.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const user = ed25519('ktctl-demo');
  const host = ed25519('demo-sshd');
  writeFileSync(join(dir, 'id_ed25519'), user.private, { mode: 0o600 });
  writeFileSync(join(dir, 'authorized_keys'), user.public + '\n', { mode: 0o600 });
  writeFileSync(join(dir, 'ssh_host_ed25519_key'), host.private, { mode: 0o600 });
  writeFileSync(join(dir, 'known_hosts'), `[${serverIp}]:2022 ${host.public}\n`);
  writeFileSync(
    join(dir, 'sshd_config'),
    [`Port 2022`, `HostKey ${dir}/ssh_host_ed25519_key`, `AuthorizedKeysFile ${dir}/authorized_keys`, `PidFile ${dir}/sshd.pid`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'UsePAM no', 'StrictModes no', 'AllowTcpForwarding yes'].join('\n') + '\n',
  );
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  server.spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')]);
  await waitForTcp(server, serverIp, 2022);
  say(`remote network: sshd at ${serverIp}:2022, a web server at ${web}:80 (also "web.${ZONE}", known only to the remote resolver)`);
  say(`laptop: network namespace ${laptop.name}, which has no route to ${web}`);
  const direct = await laptop.exec('curl', ['-sS', '--max-time', '2', `http://${web}/`]);
  say(`$ curl http://${web}/        # without ktctl\n${direct.stderr.trim() || direct.stdout.trim()}`);

  const args = ['connect', '--mode', 'socks', '--via', `root@${serverIp}:2022`, '--identity', join(dir, 'id_ed25519'), '--knownHosts', join(dir, 'known_hosts')];
  say(`$ ktctl ${args.join(' ')}`);
  const ktctl = laptop.spawn('node', [join(REPO, 'dist/cli/main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.teardown(() => ktctl.kill('SIGKILL'));
  ktctl.stderr?.on('data', (d: Buffer) => process.stdout.write(`  [ktctl] ${d.toString().trimEnd().split('\n').join('\n  [ktctl] ')}\n`));
  const exported = await new Promise<string>((resolve, reject) => {
    let out = '';
    ktctl.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    ktctl.once('exit', (code) => reject(new Error(`ktctl exited with ${code}`)));
  });
  say(`  ${exported}`);
  for (const url of [`http://${web}/`, `http://web.${ZONE}/`, 'http://web/']) {
    say(`$ curl -x socks5h://127.0.0.1:2223 ${url}`);
    say(`  ${(await laptop.execOk('curl', ['-sS', '--max-time', '10', '-x', 'socks5h://127.0.0.1:2223', url])).trim()}`);
  }
  say(`$ curl -x http://127.0.0.1:2223 http://web.${ZONE}/`);
  say(`  ${(await laptop.execOk('curl', ['-sS', '--max-time', '10', '-x', 'http://127.0.0.1:2223', `http://web.${ZONE}/`])).trim()}`);
  say('$ kill -INT <ktctl>');
  const code = await new Promise<number | null>((resolve) => {
    ktctl.removeAllListeners('exit');
    ktctl.once('exit', resolve);
    ktctl.kill('SIGINT');
  });
  say(`ktctl exited with ${code}`);
  if (code !== 0) throw new Error(`ktctl exited with ${code}`);
}

const cleanup = new TeardownList();
try {
  await main(cleanup);
  say('demo done; removing the namespaces');
} catch (error) {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
} finally {
  await cleanup.run();
}
