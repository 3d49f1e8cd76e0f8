/**
 * The lab's command line (`npm run lab -- COMMAND`):
 *
 *   up                          start the lab (removing an earlier lab's remains first); prints the kubeconfig path
 *   down                        stop everything the lab started and remove its namespaces, links, tables and files
 *   status                      what runs: daemon, API server, pods
 *   laptop NAME [--delete]      make (or remove) a network namespace that plays a developer's machine
 *   exec NAMESPACE/POD [-c CONTAINER] -- CMD...   run a command inside a pod (its network namespace)
 *   fault cut-portforward [--abrupt] [-n NS]   end every open port-forward stream (to pods of NS):
 *                               a close frame 1001, or a TCP cut with no close frame: 1006
 *   fault freeze-shadow SECONDS [-n NS] [--pod NAME] [--wait]   stop ktctl's pods (label
 *                               app.kubernetes.io/managed-by=ktctl) of NS or of every namespace, or
 *                               the pod NAME, with SIGSTOP; the daemon continues them (SIGCONT) after
 *                               SECONDS (more than 0, at most 3600). Returns at once, printing each
 *                               frozen pod and its pids; --wait returns once they are continued
 *   fault thaw-shadow [-n NS] [--pod NAME]   continue frozen pods now
 *   portforward-idle MS [-n NS]  the runtime's stream idle timeout for new port-forward streams, in ms
 *                               (0 = none; default 4 h, as the kubelet's --streaming-connection-idle-timeout),
 *                               cluster-wide or for the pods of namespace NS
 *   portforward-refuse [PROTOCOL...] [-n NS]   the port-forward subprotocols the runtime refuses with a
 *                               bare 403, as one that does not speak them (none given: accept all again)
 *
 * The state folder is .lab (or $KTLAB_DIR).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FILES, makeCredentials } from './api/pki.js';
import { endpointFromState, execInPod, request, type LabEndpoint } from './api/client.js';
import { deleteFrozen, FaultRefused, FREEZE_MAX_SECONDS, getFrozen, postFreeze, type FrozenPod } from './api/freeze-client.js';
import { createLabNet, labNodeCommand } from './net/index.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DAEMON = path.join(REPO, 'test/lab/daemon.ts');

export function stateDirFromEnv(): string {
  return path.resolve(process.env.KTLAB_DIR ?? path.join(REPO, '.lab'));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(stateDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(stateDir, FILES.pid), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function stopDaemon(stateDir: string): Promise<void> {
  const pid = readPid(stateDir);
  if (pid === undefined || !alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
  if (alive(pid)) {
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 20 && alive(pid); i++) await sleep(50);
  }
}

function logTail(stateDir: string): string {
  try {
    return fs.readFileSync(path.join(stateDir, FILES.log), 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no daemon log)';
  }
}

interface PodLite {
  metadata: { name: string; namespace: string };
  status?: { phase?: string; podIP?: string; conditions?: Array<{ type: string; status: string }> };
}

async function webReady(ep: LabEndpoint): Promise<boolean> {
  const r = await request(ep, 'GET', '/api/v1/namespaces/default/pods?labelSelector=app%3Dweb');
  if (r.status !== 200) return false;
  const items = (r.body as { items: PodLite[] }).items;
  const ready = items.filter((p) => p.status?.phase === 'Running' && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
  return ready.length >= 2;
}

export async function labUp(stateDir: string, log: (line: string) => void = () => undefined): Promise<{ kubeconfig: string; ms: number }> {
  const t0 = Date.now();
  await stopDaemon(stateDir);
  const net = createLabNet({ stateDir, log });
  await net.down();
  for (const f of Object.values(FILES)) fs.rmSync(path.join(stateDir, f), { force: true });
  const { kubeconfig } = await makeCredentials(stateDir);
  log(`credentials in ${Date.now() - t0} ms`);
  await net.up();
  log(`data plane up at ${Date.now() - t0} ms`);
  const logFd = fs.openSync(path.join(stateDir, FILES.log), 'a');
  const argv = labNodeCommand([process.execPath, '--import', import.meta.resolve('tsx'), DAEMON, '--state-dir', stateDir]);
  const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', logFd, logFd], cwd: REPO, env: process.env });
  fs.closeSync(logFd);
  if (child.pid === undefined) throw new Error('could not start the lab daemon');
  fs.writeFileSync(path.join(stateDir, FILES.pid), `${child.pid}\n`);
  let exited: number | null | undefined;
  child.on('exit', (code) => {
    exited = code;
  });
  child.unref();
  const ep = endpointFromState(stateDir);
  const deadline = Date.now() + 60_000;
  let apiUp = false;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`the lab daemon exited (${String(exited)}):\n${logTail(stateDir)}`);
    try {
      if (!apiUp) {
        apiUp = (await request(ep, 'GET', '/version', undefined, 1000)).status === 200;
        if (apiUp) log(`API answering at ${Date.now() - t0} ms`);
      }
      if (apiUp && (await webReady(ep))) {
        const ms = Date.now() - t0;
        log(`web ready at ${ms} ms`);
        return { kubeconfig, ms };
      }
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`the lab did not become ready within 60 s:\n${logTail(stateDir)}`);
}

export async function labDown(stateDir: string, log: (line: string) => void = () => undefined): Promise<void> {
  await stopDaemon(stateDir);
  await createLabNet({ stateDir, log }).down();
  for (const f of Object.values(FILES)) fs.rmSync(path.join(stateDir, f), { force: true });
  try {
    fs.rmdirSync(stateDir);
  } catch {
    // not empty (someone else's files) or gone
  }
}

async function status(stateDir: string): Promise<number> {
  const out = process.stdout;
  const pid = readPid(stateDir);
  out.write(`state dir:  ${stateDir}\n`);
  out.write(`daemon:     ${pid !== undefined && alive(pid) ? `running (pid ${pid})` : 'not running'}\n`);
  if (!fs.existsSync(path.join(stateDir, FILES.tokens))) {
    out.write('api:        no credentials (the lab is not up)\n');
    return 1;
  }
  const ep = endpointFromState(stateDir);
  try {
    const v = await request(ep, 'GET', '/version', undefined, 2000);
    out.write(`api:        ${ep.server} answering (${String((v.body as { gitVersion?: string }).gitVersion)})\n`);
    out.write(`kubeconfig: ${path.join(stateDir, FILES.kubeconfig)}\n`);
    const pods = await request(ep, 'GET', '/api/v1/pods');
    const items = (pods.body as { items: PodLite[] }).items;
    out.write(`pods:       ${items.length}\n`);
    for (const p of items) {
      const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? 'ready' : 'not ready';
      out.write(`  ${p.metadata.namespace}/${p.metadata.name}  ${p.status?.phase ?? '?'}  ${ready}  ${p.status?.podIP ?? ''}\n`);
    }
    return 0;
  } catch (e) {
    out.write(`api:        not answering (${e instanceof Error ? e.message : String(e)})\n`);
    return 1;
  }
}

async function execCmd(stateDir: string, args: string[]): Promise<number> {
  const dd = args.indexOf('--');
  const before = dd >= 0 ? args.slice(0, dd) : args.slice(0, 1);
  const command = dd >= 0 ? args.slice(dd + 1) : args.slice(1);
  let container: string | undefined;
  const ci = before.findIndex((a) => a === '-c' || a === '--container');
  if (ci >= 0) {
    container = before[ci + 1];
    before.splice(ci, 2);
  }
  const target = before[0];
  if (!target || command.length === 0) {
    process.stderr.write('usage: lab exec NAMESPACE/POD [-c CONTAINER] -- CMD...\n');
    return 2;
  }
  const [ns, pod] = target.includes('/') ? target.split('/', 2) : ['default', target];
  const res = await execInPod(endpointFromState(stateDir), ns, pod, command, {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    container,
  });
  if (res.message) process.stderr.write(`${res.message}\n`);
  return res.exitCode;
}

/** Faults on command, while another process holds the lab (tests, benches, the demo). */
async function fault(stateDir: string, args: string[]): Promise<number> {
  const [what, ...opts] = args;
  if (what === 'cut-portforward') {
    const abrupt = opts.includes('--abrupt');
    const ni = opts.findIndex((a) => a === '-n' || a === '--namespace');
    const namespace = ni >= 0 ? opts[ni + 1] : undefined;
    if (ni >= 0 && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace ?? '')) {
      process.stderr.write('lab: fault cut-portforward -n needs a namespace name\n');
      return 2;
    }
    const r = await request(endpointFromState(stateDir), 'POST', '/lab/v1/faults/cut-portforward', { abrupt, namespace });
    if (r.status !== 200) throw new Error(`the lab refused the fault (${r.status}): ${JSON.stringify(r.body)}`);
    const cut = (r.body as { cut: number }).cut;
    process.stdout.write(`cut ${cut} port-forward stream(s) ${abrupt ? 'abruptly (TCP reset, no close frame: 1006)' : 'with a close frame (1001)'}\n`);
    return 0;
  }
  if (what === 'freeze-shadow' || what === 'thaw-shadow') return freezeCmd(stateDir, what, opts);
  process.stderr.write(`usage: ${FAULT_USAGE}\n`);
  return 2;
}

const FAULT_USAGE = 'lab fault cut-portforward [--abrupt] [-n NAMESPACE] | freeze-shadow SECONDS [-n NAMESPACE] [--pod NAME] [--wait] | thaw-shadow [-n NAMESPACE] [--pod NAME]';
const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * `fault freeze-shadow SECONDS [-n NS] [--pod NAME] [--wait]` and `fault thaw-shadow [-n NS] [--pod NAME]`
 * (api/freeze.ts). Bad input and the lab's refusals (no such pod, no ktctl pod to freeze) are one
 * sentence and exit 2, before anything is frozen.
 */
async function freezeCmd(stateDir: string, what: 'freeze-shadow' | 'thaw-shadow', args: string[]): Promise<number> {
  const fail = (sentence: string): number => {
    process.stderr.write(`lab: fault ${what}: ${sentence}\n`);
    return 2;
  };
  let namespace: string | undefined;
  let pod: string | undefined;
  let wait = false;
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-n' || a === '--namespace' || a === '--pod') {
      const v = args[++i];
      if (v === undefined || !NAME.test(v) || v.length > (a === '--pod' ? 253 : 63)) return fail(`${a} needs a ${a === '--pod' ? 'pod' : 'namespace'} name`);
      if (a === '--pod') pod = v;
      else namespace = v;
    } else if (a === '--wait' && what === 'freeze-shadow') wait = true;
    else if (a.startsWith('-') && !/^-\d/.test(a)) return fail(`unknown option ${a} (usage: ${FAULT_USAGE})`);
    else positional.push(a);
  }
  let seconds = 0;
  if (what === 'thaw-shadow') {
    if (positional.length > 0) return fail(`takes no SECONDS (got ${positional.join(' ')})`);
  } else {
    if (positional.length !== 1) return fail(`needs one SECONDS, a number of seconds more than 0 and at most ${FREEZE_MAX_SECONDS}${positional.length ? ` (got ${positional.join(' ')})` : ''}`);
    const text = positional[0]!;
    if (!/^-?\d+(\.\d+)?$/.test(text)) return fail(`"${text}" is not a number of seconds (more than 0, at most ${FREEZE_MAX_SECONDS})`);
    seconds = Number(text);
    if (!(seconds > 0 && seconds <= FREEZE_MAX_SECONDS)) return fail(`SECONDS must be more than 0 and at most ${FREEZE_MAX_SECONDS} (got ${text})`);
  }
  if (!fs.existsSync(path.join(stateDir, FILES.tokens))) {
    process.stderr.write(`lab: fault ${what}: the lab is not up (no credentials in ${stateDir}): npm run lab -- up\n`);
    return 1;
  }
  const ep = endpointFromState(stateDir);
  const where = (p: FrozenPod): string => `${p.namespace}/${p.name}`;
  try {
    if (what === 'thaw-shadow') {
      const thawed = await deleteFrozen(ep, { namespace, pod });
      process.stdout.write(`continued ${thawed.length} frozen pod(s)${thawed.map((p) => `\n  ${where(p)}`).join('')}\n`);
      return 0;
    }
    const r = await postFreeze(ep, { seconds, namespace, pod });
    process.stdout.write(
      `froze ${r.frozen.length} pod(s) for ${seconds} s (SIGSTOP); the lab continues them (SIGCONT) at ${r.thawAt}:\n` +
        r.frozen.map((p) => `  ${where(p)}  pids ${p.pids.join(' ')}\n`).join(''),
    );
    if (!wait) return 0;
    // until the daemon has continued every pod it froze (or they are gone): bounded by the
    // latest continue time plus 30 s
    const uids = new Set(r.frozen.map((p) => p.uid));
    const deadline = Math.max(...r.frozen.map((p) => Date.parse(p.thawAt))) + 30_000;
    for (;;) {
      const still = (await getFrozen(ep, { namespace, pod })).filter((p) => uids.has(p.uid));
      if (still.length === 0) break;
      if (Date.now() > deadline) throw new Error(`the lab did not continue ${still.map(where).join(', ')} by ${new Date(deadline).toISOString()}`);
      await sleep(100);
    }
    process.stdout.write(`continued ${r.frozen.map(where).join(', ')}\n`);
    return 0;
  } catch (e) {
    if (e instanceof FaultRefused && e.status >= 400 && e.status < 500) return fail(e.message);
    throw e;
  }
}

/** The runtime's port-forward settings, for new streams: `portforward-idle MS`, `portforward-refuse [PROTOCOL...]`. */
async function portForwardSettings(stateDir: string, cmd: 'portforward-idle' | 'portforward-refuse', argv: string[]): Promise<number> {
  const args = [...argv];
  let namespace = '';
  const ni = args.findIndex((a) => a === '-n' || a === '--namespace');
  if (ni >= 0) {
    namespace = args[ni + 1] ?? '';
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace)) {
      process.stderr.write(`lab: ${cmd} -n needs a namespace name\n`);
      return 2;
    }
    args.splice(ni, 2);
  }
  let body: { idleTimeoutMs?: number; refuseProtocols?: string[] };
  if (cmd === 'portforward-idle') {
    const ms = args.length === 1 && /^\d+$/.test(args[0]) ? Number(args[0]) : NaN;
    if (!Number.isSafeInteger(ms) || ms > 2 ** 31 - 1) {
      process.stderr.write('usage: lab portforward-idle MS [-n NAMESPACE] (a whole number of milliseconds up to 2147483647; 0 = no idle timeout)\n');
      return 2;
    }
    body = { idleTimeoutMs: ms };
  } else {
    const bad = args.find((a) => !/^[!#$%&'*+\-.0-9A-Z^_`|a-z~]+$/.test(a));
    if (bad !== undefined) {
      process.stderr.write(`lab: "${bad}" is not a WebSocket subprotocol name\n`);
      return 2;
    }
    body = { refuseProtocols: args };
  }
  const r = await request(endpointFromState(stateDir), 'PUT', `/lab/v1/portforward${namespace ? `?namespace=${namespace}` : ''}`, body);
  if (r.status !== 200) throw new Error(`the lab refused the setting (${r.status}): ${JSON.stringify(r.body)}`);
  const now = r.body as { idleTimeoutMs: number; refuseProtocols: string[] };
  process.stdout.write(
    `port-forward streams ${namespace ? `to pods in ${namespace} ` : ''}from now on: idle timeout ${now.idleTimeoutMs === 0 ? 'none' : `${now.idleTimeoutMs} ms`}, refused subprotocols: ${now.refuseProtocols.length ? now.refuseProtocols.join(', ') : 'none'}\n`,
  );
  return 0;
}

const USAGE = `usage: lab up | down | status | laptop NAME [--delete] | exec NAMESPACE/POD [-c CONTAINER] -- CMD...
       lab fault cut-portforward [--abrupt] [-n NS] | fault freeze-shadow SECONDS [-n NS] [--pod NAME] [--wait] | fault thaw-shadow [-n NS] [--pod NAME]
       lab portforward-idle MS [-n NS] | portforward-refuse [PROTOCOL...] [-n NS]
state folder: .lab (or $KTLAB_DIR)
`;

async function main(argv: string[]): Promise<number> {
  const stateDir = stateDirFromEnv();
  const [cmd, ...rest] = argv;
  const log = (line: string): void => {
    if (process.env.KTLAB_VERBOSE) process.stderr.write(`lab: ${line}\n`);
  };
  switch (cmd) {
    case 'up': {
      const { kubeconfig, ms } = await labUp(stateDir, log);
      process.stderr.write(`lab is up (${(ms / 1000).toFixed(1)} s); kubeconfig:\n`);
      process.stdout.write(`${kubeconfig}\n`);
      return 0;
    }
    case 'down':
      await labDown(stateDir, log);
      process.stderr.write('lab is down\n');
      return 0;
    case 'status':
      return status(stateDir);
    case 'laptop': {
      const name = rest.find((a) => !a.startsWith('-'));
      if (!name) {
        process.stderr.write('usage: lab laptop NAME [--delete]\n');
        return 2;
      }
      const net = createLabNet({ stateDir, log });
      if (rest.includes('--delete')) await net.deleteLaptop(name);
      else {
        await net.createLaptop(name);
        process.stdout.write(`${name}\n`);
      }
      return 0;
    }
    case 'exec':
      return execCmd(stateDir, rest);
    case 'fault':
      return fault(stateDir, rest);
    case 'portforward-idle':
    case 'portforward-refuse':
      return portForwardSettings(stateDir, cmd, rest);
    default:
      process.stderr.write(USAGE);
      return cmd === undefined || cmd === 'help' || cmd === '--help' ? 0 : 2;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`lab: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
