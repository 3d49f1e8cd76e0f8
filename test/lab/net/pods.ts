/**
 * Pods as processes: one network namespace per pod (veth to the node, /32 route each way), one
 * process group per container started with `ip netns exec`, volumes bind-mounted at their
 * mountPath inside the private mount namespace `ip netns exec` makes, logs to a file per
 * container, restarts per restartPolicy with back-off, readiness from probes run from the node.
 */
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { LAB, type ContainerRuntimeSpec, type LabNetEvents, type PodRuntimeSpec } from './types.js';
import { intToIp, ipBatch, ipToInt, run, sleep, sysBin } from './run.js';
import { connectFromNode } from './dial.js';
import { ECHO_IMAGE, echoProgramPath, lookupImage } from '../images/table.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The node's address on every pod's veth (on the node's lo; pods reach it `onlink`). */
export const POD_GATEWAY = '198.18.0.1';
const POD_BASE = ipToInt('198.18.0.0');
/** offsets inside 198.18.0.0/17 handed to pods: .0.2 .. .127.254 */
const POD_FIRST = 2;
const POD_LAST = 32766;
const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class LabNetError extends Error {
  override readonly name = 'LabNetError';
  constructor(
    readonly code: 'KTLAB_NO_SUCH_POD' | 'KTLAB_NO_SUCH_CONTAINER' | 'KTLAB_NO_PREVIOUS' | 'KTLAB_POD_RANGE_FULL' | 'KTLAB_LAPTOP_RANGE_FULL' | 'KTLAB_BAD_NAME' | 'KTLAB_EXISTS' | 'KTLAB_NOT_UP' | 'KTLAB_MOUNT_NS' | 'KTLAB_SYSCTL',
    message: string,
  ) {
    super(message);
  }
}

export function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** What an image runs: argv, plus whether it is our echo server (ready when its port accepts). */
export interface Program {
  argv: string[];
  echo: boolean;
}

/** `node` as a Node.js image has it on its PATH (/usr/local/bin/node): this machine's binary. */
function nodeBinary(argv0: string): string | undefined {
  return argv0 === 'node' || argv0 === 'nodejs' || argv0 === '/usr/local/bin/node' || argv0 === '/usr/local/bin/nodejs' ? process.execPath : undefined;
}

/**
 * Images -> programs (test/lab/images/table.ts): the echo server bundled in the lab's image store
 * `imagesDir`, or the Node.js image running the container's command (entrypoint
 * docker-entrypoint.sh and CMD ["node"]: arguments alone that start with '-' or name a script go to
 * node). `pullError`: the image is not in the lab's registry.
 */
export function resolveImage(c: Pick<ContainerRuntimeSpec, 'image' | 'command' | 'args'>, imagesDir: string): Program | { pullError: string } {
  const found = lookupImage(c.image);
  if ('pullError' in found) return found;
  const args = c.args ?? [];
  const command = c.command?.length ? [...c.command, ...args] : undefined;
  if (found.image === ECHO_IMAGE) {
    if (command) return { argv: command, echo: false };
    return { argv: [process.execPath, echoProgramPath(imagesDir), ...args], echo: true };
  }
  const argv = command ?? (args.length === 0 || args[0]!.startsWith('-') || /\.[cm]?js$/.test(args[0]!) ? ['node', ...args] : args);
  return { argv: [nodeBinary(argv[0]!) ?? argv[0]!, ...argv.slice(1)], echo: false };
}

interface Mount {
  src: string;
  dst: string;
  readOnly: boolean;
}

interface ContainerState {
  spec: ContainerRuntimeSpec;
  program: Program | { pullError: string };
  mounts: Mount[];
  env: Record<string, string>;
  child: ChildProcess | undefined;
  /** increases with every start; logs(follow) ends when the instance it began with is gone */
  instance: number;
  restartCount: number;
  startedAt: number;
  ready: boolean;
  failures: number;
  backoffMs: number;
  backoffTimer: NodeJS.Timeout | undefined;
  probeTimer: NodeJS.Timeout | undefined;
  exited: Promise<void> | undefined;
}

export interface PodState {
  spec: PodRuntimeSpec;
  ip: string;
  netns: string;
  veth: string;
  dir: string;
  containers: Map<string, ContainerState>;
  deleting: boolean;
  /** made by another LabNet instance (loaded from its pod.json): no processes of ours */
  foreign: boolean;
}

/** What STATE_DIR/net/pods/UID/pod.json records, so that any instance can exec, log, delete. */
interface PodRecord {
  spec: PodRuntimeSpec;
  ip: string;
  netns: string;
  veth: string;
}

export interface PodInfo {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  netns: string;
}

export interface PodRuntimeContext {
  netDir: string;
  /** namespace name prefix (ktlab- for the lab) and the node namespace's name */
  prefix: string;
  nodeNetns: string;
  events: EventEmitter<LabNetEvents>;
  log: (line: string) => void;
  /** run `ip netns add/del` (in the host's mount namespace) */
  netnsAdd(name: string): Promise<void>;
  netnsDel(name: string): Promise<void>;
  /** record a directory created on the host for a mountPath (removed by down()) */
  recordMkdir(dir: string): void;
  /** the lab's image store (test/lab/images/store.ts): a directory every pod user can read */
  imagesDir(): string;
}

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 20_000;
/** a container that ran this long without exiting starts over with the first back-off */
const BACKOFF_RESET_MS = 10_000;
const PROBE_FAST_MS = 100;
const PROBE_PERIOD_MS = 1000;
const PROBE_FAILURE_THRESHOLD = 3;
const DELETING_MARKER = 'deleting';

export class PodRuntime {
  readonly pods = new Map<string, PodState>();
  #cursor = POD_FIRST;
  #used = new Set<number>();
  #closed = false;
  #creating = new Map<string, Promise<{ podIP: string }>>();

  constructor(private readonly ctx: PodRuntimeContext) {}

  /** The pod's address and namespace come together: the namespace is named after the address
   * and `ip netns add` fails when it exists, so two LabNet instances never share an address. */
  async #allocate(): Promise<{ ip: string; short: string; netns: string }> {
    for (let n = 0; n <= POD_LAST - POD_FIRST; n++) {
      const off = this.#cursor;
      this.#cursor = this.#cursor >= POD_LAST ? POD_FIRST : this.#cursor + 1;
      const short = off.toString(16).padStart(4, '0');
      const netns = `${this.ctx.prefix}p-${short}`;
      if (this.#used.has(off) || fs.existsSync(`/run/netns/${netns}`)) continue;
      this.#used.add(off);
      try {
        await this.ctx.netnsAdd(netns);
      } catch (e) {
        this.#used.delete(off);
        if (fs.existsSync(`/run/netns/${netns}`)) continue; // taken meanwhile by another instance
        throw e;
      }
      return { ip: intToIp(POD_BASE + off), short, netns };
    }
    throw new LabNetError('KTLAB_POD_RANGE_FULL', `no free address in ${LAB.podCidr}`);
  }

  #free(ip: string): void {
    this.#used.delete(ipToInt(ip) - POD_BASE);
  }

  /** idempotent per uid: a second call (also while the first runs) answers the same address */
  createPod(spec: PodRuntimeSpec): Promise<{ podIP: string }> {
    const existing = this.pods.get(spec.uid);
    if (existing) return Promise.resolve({ podIP: existing.ip });
    let pending = this.#creating.get(spec.uid);
    if (!pending) {
      pending = this.#create(spec).finally(() => this.#creating.delete(spec.uid));
      this.#creating.set(spec.uid, pending);
    }
    return pending;
  }

  async #create(spec: PodRuntimeSpec): Promise<{ podIP: string }> {
    const { ip, short, netns } = await this.#allocate();
    const veth = `ktlab-v${short}`;
    const dir = path.join(this.ctx.netDir, 'pods', spec.uid);
    const pod: PodState = { spec: structuredClone(spec), ip, netns, veth, dir, containers: new Map(), deleting: false, foreign: false };
    this.pods.set(spec.uid, pod);
    try {
      fs.mkdirSync(path.join(dir, 'logs'), { recursive: true });
      const etc = `/etc/netns/${netns}`;
      fs.mkdirSync(etc, { recursive: true });
      fs.writeFileSync(
        path.join(etc, 'resolv.conf'),
        `nameserver ${LAB.clusterDnsIp}\nsearch ${spec.namespace}.svc.${LAB.clusterDomain} svc.${LAB.clusterDomain} ${LAB.clusterDomain}\noptions ndots:5\n`,
      );
      fs.writeFileSync(
        path.join(etc, 'hosts'),
        `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip}\t${spec.name}\n`,
      );
      await ipBatch(
        [
          'link set lo up',
          `link add eth0 type veth peer name ${veth} netns ${this.ctx.nodeNetns}`,
          `addr add ${ip}/32 dev eth0`,
          'link set eth0 up',
          `route add default via ${POD_GATEWAY} dev eth0 onlink`,
        ],
        netns,
      );
      await ipBatch([`link set ${veth} up`, `route add ${ip}/32 dev ${veth} src ${POD_GATEWAY}`], this.ctx.nodeNetns);
      // Pod sysctls as the kubelet sets them: only namespaced net.* ones (e.g.
      // net.ipv4.ip_unprivileged_port_start), inside the pod's own network namespace.
      for (const x of spec.sysctls ?? []) {
        if (!/^net\.[a-z0-9_.]+$/.test(x.name) || !/^[0-9a-z_ -]+$/i.test(x.value)) {
          this.ctx.log(`pod ${spec.namespace}/${spec.name}: sysctl ${x.name} not applied (the lab sets namespaced net.* sysctls only)`);
          continue;
        }
        const r = await run('ip', ['netns', 'exec', netns, sysBin('sysctl'), '-q', '-w', `${x.name}=${x.value}`]);
        if (r.code !== 0) throw new LabNetError('KTLAB_SYSCTL', `pod ${spec.namespace}/${spec.name}: sysctl ${x.name}=${x.value}: ${r.stderr.trim()}`);
      }
      for (const c of spec.containers) pod.containers.set(c.name, this.#prepareContainer(pod, c, true));
      const record: PodRecord = {
        spec: { ...spec, containers: spec.containers.map((c) => ({ ...c, volumeMounts: c.volumeMounts.map((v) => ({ ...v, files: {} })) })) },
        ip,
        netns,
        veth,
      };
      fs.writeFileSync(path.join(dir, 'pod.json'), JSON.stringify(record));
    } catch (e) {
      this.pods.delete(spec.uid);
      await this.#removeNetwork(pod);
      fs.rmSync(dir, { recursive: true, force: true });
      this.#free(ip);
      throw e;
    }
    // start after returning the IP, so the control plane records it before the first event
    setImmediate(() => {
      for (const c of pod.containers.values()) {
        if (pod.deleting || this.#closed) return;
        if ('pullError' in c.program) {
          this.ctx.events.emit('imagePullFailed', spec.uid, c.spec.name, c.spec.image, c.program.pullError);
          continue;
        }
        this.#start(pod, c);
      }
    });
    return { podIP: ip };
  }

  #prepareContainer(pod: PodState, spec: ContainerRuntimeSpec, write: boolean): ContainerState {
    const mounts: Mount[] = [];
    spec.volumeMounts.forEach((vm, i) => {
      const src = path.join(pod.dir, 'volumes', spec.name, String(i));
      if (!write) {
        mounts.push({ src, dst: vm.mountPath, readOnly: vm.readOnly });
        return;
      }
      fs.mkdirSync(src, { recursive: true });
      // as the kubelet's volume plugins leave them: each file with its item's or the volume's mode;
      // with an fsGroup, group-owned by it and group-readable (pkg/volume/volume_linux.go
      // SetVolumeOwnership: these volumes are read-only, so it adds 0440)
      const group = pod.spec.fsGroup ?? 0;
      const fsGroupBits = pod.spec.fsGroup !== undefined ? 0o440 : 0;
      for (const [name, data] of Object.entries(vm.files)) {
        const file = path.join(src, name);
        if (!file.startsWith(src + path.sep)) continue; // a key like ../x must not escape
        fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
        const mode = ((vm.modes?.[name] ?? 0o644) | fsGroupBits) & 0o777;
        fs.writeFileSync(file, data, { mode });
        fs.chownSync(file, 0, group);
        fs.chmodSync(file, mode);
      }
      fs.chmodSync(src, 0o755);
      this.#mkdirOnHost(vm.mountPath);
      mounts.push({ src, dst: vm.mountPath, readOnly: vm.readOnly });
    });
    const env: Record<string, string> = {
      PATH: PATH_ENV,
      HOME: spec.runAsUser ? '/' : '/root',
      HOSTNAME: pod.spec.name,
    };
    const program = resolveImage(spec, this.ctx.imagesDir());
    if ('echo' in program && program.echo) {
      env.KTLAB_POD_NAME = pod.spec.name;
      env.KTLAB_POD_NAMESPACE = pod.spec.namespace;
      env.KTLAB_POD_IP = pod.ip;
      env.KTLAB_DEFAULT_PORT = String(spec.ports[0]?.containerPort ?? 8080);
    }
    // The kubelet's makeEnvironmentVariables (pkg/kubelet/kubelet_pods.go): a value's $(VAR) refers to
    // the variables declared before it (envFrom's and env's, fieldRefs resolved), never the runtime's PATH.
    const declared = new Map<string, string>();
    for (const e of spec.env) {
      let v: string | undefined;
      if (e.value !== undefined) v = e.expand && e.value !== '' ? expandRefs(e.value, declared) : e.value;
      else if (e.fieldPath) v = this.#fieldValue(pod, e.fieldPath);
      if (v === undefined) continue;
      env[e.name] = v;
      declared.set(e.name, v);
    }
    return {
      spec,
      program,
      mounts,
      env,
      child: undefined,
      instance: 0,
      restartCount: 0,
      startedAt: 0,
      ready: false,
      failures: 0,
      backoffMs: 0,
      backoffTimer: undefined,
      probeTimer: undefined,
      exited: undefined,
    };
  }

  #fieldValue(pod: PodState, fieldPath: string): string {
    switch (fieldPath) {
      case 'metadata.name':
        return pod.spec.name;
      case 'metadata.namespace':
        return pod.spec.namespace;
      case 'metadata.uid':
        return pod.spec.uid;
      case 'status.podIP':
        return pod.ip;
      case 'status.podIPs':
        return pod.ip;
      case 'status.hostIP':
        return LAB.apiServerIp;
      case 'spec.nodeName':
        return LAB.nodeNetns;
      case 'spec.serviceAccountName':
        return 'default';
      default:
        return '';
    }
  }

  #mkdirOnHost(dir: string): void {
    const missing: string[] = [];
    let d = path.resolve(dir);
    while (!fs.existsSync(d)) {
      missing.unshift(d);
      d = path.dirname(d);
    }
    for (const m of missing) {
      fs.mkdirSync(m);
      this.ctx.recordMkdir(m);
    }
  }

  /** argv that runs `inner` in the pod: its netns, its mounts, its user. */
  #wrap(pod: PodState, c: ContainerState, inner: string[]): string[] {
    const lines = ['set -e'];
    for (const m of c.mounts) {
      lines.push(`mount --bind ${shQuote(m.src)} ${shQuote(m.dst)}`);
      if (m.readOnly) lines.push(`mount -o remount,bind,ro ${shQuote(m.dst)}`);
    }
    lines.push(`hostname ${shQuote(pod.spec.name.slice(0, 63))} 2>/dev/null || true`, 'cd /', 'exec "$@"');
    // the container's user and group, and the pod's fsGroup as a supplementary group (as the
    // container runtime sets them from the CRI's LinuxContainerSecurityContext)
    const user = c.spec.runAsUser ?? 0;
    const group = c.spec.runAsGroup ?? 0;
    const fsGroup = pod.spec.fsGroup;
    const groups = fsGroup !== undefined && fsGroup !== group ? [`--groups=${fsGroup}`] : ['--clear-groups'];
    const argv = user !== 0 || group !== 0 || fsGroup !== undefined ? [sysBin('setpriv'), `--reuid=${user}`, `--regid=${group}`, ...groups, '--', ...inner] : inner;
    return [sysBin('ip'), 'netns', 'exec', pod.netns, sysBin('unshare'), '--uts', sysBin('sh'), '-c', lines.join('\n'), 'ktlab-pod', ...argv];
  }

  #logPath(pod: PodState, container: string, previous = false): string {
    return path.join(pod.dir, 'logs', `${container}${previous ? '.previous' : ''}.log`);
  }

  #start(pod: PodState, c: ContainerState): void {
    if ('pullError' in c.program || pod.deleting || this.#closed) return;
    if (!fs.existsSync(`/run/netns/${pod.netns}`) || !fs.existsSync(pod.dir)) {
      // removed under our feet (down() or deletePod() of another instance): nothing to restart
      this.ctx.log(`pod ${pod.spec.namespace}/${pod.spec.name}: its namespace is gone, forgetting it`);
      this.#forget(pod);
      return;
    }
    const logFile = this.#logPath(pod, c.spec.name);
    let fd: number;
    try {
      if (c.instance > 0 && fs.existsSync(logFile)) fs.renameSync(logFile, this.#logPath(pod, c.spec.name, true));
      fd = fs.openSync(logFile, 'a');
    } catch (e) {
      this.ctx.log(`pod ${pod.spec.namespace}/${pod.spec.name}: cannot open its log: ${e instanceof Error ? e.message : String(e)}`);
      this.#forget(pod);
      return;
    }
    const argv = this.#wrap(pod, c, c.program.argv);
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { env: c.env, cwd: '/', stdio: ['ignore', fd, fd], detached: true });
    } finally {
      fs.closeSync(fd);
    }
    c.instance++;
    c.child = child;
    c.startedAt = Date.now();
    const restartCount = c.restartCount;
    let resolveExited: () => void = () => {};
    c.exited = new Promise((r) => (resolveExited = r));
    let spawned = false;
    child.once('spawn', () => {
      spawned = true;
      if (pod.deleting) return;
      this.ctx.events.emit('containerStarted', pod.spec.uid, c.spec.name, new Date(c.startedAt), restartCount);
      this.#startReadiness(pod, c, child);
    });
    const onEnd = (code: number): void => {
      if (c.child === child) c.child = undefined;
      this.#stopProbe(c);
      resolveExited();
      if (!pod.deleting && fs.existsSync(path.join(pod.dir, DELETING_MARKER))) this.#forget(pod); // another instance deletes it
      if (pod.deleting || this.#closed) return;
      if (c.ready) {
        c.ready = false;
        this.ctx.events.emit('containerReady', pod.spec.uid, c.spec.name, false);
      }
      const reason = code === 0 ? 'Completed' : 'Error';
      this.ctx.events.emit('containerExited', pod.spec.uid, c.spec.name, code, reason, new Date());
      this.#maybeRestart(pod, c, code);
    };
    child.once('error', (e) => {
      try {
        fs.appendFileSync(logFile, `ktlab: cannot start ${argv[0]}: ${e.message}\n`);
      } catch {
        // the pod directory is gone
      }
      if (!spawned) onEnd(127);
    });
    child.once('exit', (code, signal) => {
      const exitCode = code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0);
      onEnd(exitCode);
    });
  }

  #maybeRestart(pod: PodState, c: ContainerState, code: number): void {
    const policy = pod.spec.restartPolicy;
    if (policy === 'Never' || (policy === 'OnFailure' && code === 0)) return;
    const ran = Date.now() - c.startedAt;
    c.backoffMs = ran >= BACKOFF_RESET_MS || c.backoffMs === 0 ? BACKOFF_FIRST_MS : Math.min(c.backoffMs * 2, BACKOFF_MAX_MS);
    const delay = c.backoffMs;
    this.ctx.events.emit(
      'containerWaiting',
      pod.spec.uid,
      c.spec.name,
      'CrashLoopBackOff',
      `back-off ${Math.round(delay / 1000)}s restarting failed container=${c.spec.name} pod=${pod.spec.name}_${pod.spec.namespace}(${pod.spec.uid})`,
    );
    c.backoffTimer = setTimeout(() => {
      c.backoffTimer = undefined;
      c.restartCount++;
      this.#start(pod, c);
    }, delay);
  }

  /** readiness: the probe if any; echo without a probe: its port accepts; else ready at start */
  #startReadiness(pod: PodState, c: ContainerState, child: ChildProcess): void {
    const probe = c.spec.readinessProbe;
    const setReady = (ready: boolean): void => {
      if (c.child !== child || pod.deleting || c.ready === ready) return;
      c.ready = ready;
      this.ctx.events.emit('containerReady', pod.spec.uid, c.spec.name, ready);
    };
    if (!probe && !('echo' in c.program && c.program.echo)) {
      setReady(true);
      return;
    }
    const check: () => Promise<boolean> = probe
      ? 'tcpSocket' in probe
        ? () => this.#tcpCheck(pod.ip, probe.tcpSocket.port)
        : () => this.#httpCheck(pod.ip, probe.httpGet.port, probe.httpGet.path)
      : () => this.#tcpCheck(pod.ip, Number(c.env.PORT || c.env.KTLAB_DEFAULT_PORT || 8080));
    const oneShot = !probe;
    let everReady = false;
    let failures = 0;
    const tick = async (): Promise<void> => {
      c.probeTimer = undefined;
      if (c.child !== child || pod.deleting) return;
      const ok = await check();
      if (c.child !== child || pod.deleting) return;
      if (ok) {
        failures = 0;
        everReady = true;
        setReady(true);
        if (oneShot) return;
      } else if (everReady && ++failures >= PROBE_FAILURE_THRESHOLD) setReady(false);
      c.probeTimer = setTimeout(() => void tick(), everReady ? PROBE_PERIOD_MS : PROBE_FAST_MS);
    };
    c.probeTimer = setTimeout(() => void tick(), PROBE_FAST_MS);
  }

  #stopProbe(c: ContainerState): void {
    if (c.probeTimer) clearTimeout(c.probeTimer);
    c.probeTimer = undefined;
  }

  async #tcpCheck(ip: string, port: number): Promise<boolean> {
    try {
      const s = await connectFromNode(this.ctx.nodeNetns, this.ctx.netDir, ip, port, 1000);
      s.destroy();
      return true;
    } catch {
      return false;
    }
  }

  async #httpCheck(ip: string, port: number, urlPath: string): Promise<boolean> {
    let sock;
    try {
      sock = await connectFromNode(this.ctx.nodeNetns, this.ctx.netDir, ip, port, 1000);
    } catch {
      return false;
    }
    const s = sock;
    return new Promise<boolean>((resolve) => {
      const req = http.request(
        { createConnection: () => s, path: urlPath || '/', method: 'GET', headers: { host: `${ip}:${port}`, 'user-agent': 'kube-probe/1.30', connection: 'close' }, timeout: 1000 },
        (res) => {
          res.resume();
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
          s.destroy();
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => {
        s.destroy();
        resolve(false);
      });
      req.end();
    });
  }

  get(uid: string): PodState {
    const pod = this.pods.get(uid) ?? this.#loadForeign(uid);
    if (!pod) throw new LabNetError('KTLAB_NO_SUCH_POD', `no pod with uid ${uid} in the lab`);
    return pod;
  }

  #readRecord(uid: string): PodRecord | undefined {
    if (!/^[A-Za-z0-9._-]+$/.test(uid)) return undefined;
    try {
      return JSON.parse(fs.readFileSync(path.join(this.ctx.netDir, 'pods', uid, 'pod.json'), 'utf8')) as PodRecord;
    } catch {
      return undefined;
    }
  }

  /** a pod another instance made (the daemon's, seen from the CLI): exec, logs, connect, delete */
  #loadForeign(uid: string): PodState | undefined {
    const r = this.#readRecord(uid);
    if (!r || !fs.existsSync(`/run/netns/${r.netns}`)) return undefined;
    const pod: PodState = { spec: r.spec, ip: r.ip, netns: r.netns, veth: r.veth, dir: path.join(this.ctx.netDir, 'pods', uid), containers: new Map(), deleting: false, foreign: true };
    for (const c of r.spec.containers) pod.containers.set(c.name, this.#prepareContainer(pod, c, false));
    return pod;
  }

  /** every pod of the lab, this instance's and the others' (from their pod.json) */
  list(): PodInfo[] {
    const out = new Map<string, PodInfo>();
    let uids: string[] = [];
    try {
      uids = fs.readdirSync(path.join(this.ctx.netDir, 'pods'));
    } catch {
      // no pods yet
    }
    for (const uid of uids) {
      const r = this.#readRecord(uid);
      if (r) out.set(uid, { uid, namespace: r.spec.namespace, name: r.spec.name, ip: r.ip, netns: r.netns });
    }
    for (const p of this.pods.values()) if (!p.deleting && fs.existsSync(p.dir)) out.set(p.spec.uid, { uid: p.spec.uid, namespace: p.spec.namespace, name: p.spec.name, ip: p.ip, netns: p.netns });
    return [...out.values()];
  }

  #container(uid: string, name: string): { pod: PodState; c: ContainerState } {
    const pod = this.get(uid);
    const c = pod.containers.get(name);
    if (!c) throw new LabNetError('KTLAB_NO_SUCH_CONTAINER', `container ${name} is not valid for pod ${pod.spec.name}`);
    return { pod, c };
  }

  exec(uid: string, container: string, command: string[], options: { tty: boolean }): ChildProcessWithoutNullStreams {
    const { pod, c } = this.#container(uid, container);
    const env = { ...c.env };
    let inner = command;
    if (options.tty) {
      env.TERM = env.TERM ?? 'xterm';
      inner = [sysBin('script'), '-q', '-f', '-e', '-c', command.map(shQuote).join(' '), '/dev/null'];
    }
    const argv = this.#wrap(pod, c, inner);
    return spawn(argv[0]!, argv.slice(1), { env, cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] });
  }

  logs(uid: string, container: string, options: { follow: boolean; tailLines?: number; previous?: boolean }): Readable {
    const { pod, c } = this.#container(uid, container);
    const file = this.#logPath(pod, container, options.previous ?? false);
    if (options.previous && !fs.existsSync(file)) {
      throw new LabNetError('KTLAB_NO_PREVIOUS', `previous terminated container "${container}" in pod "${pod.spec.name}" not found`);
    }
    const instance = c.instance;
    const follow = options.follow && !options.previous;
    let pos = 0;
    let timer: NodeJS.Timeout | undefined;
    let first = true;
    const readFrom = (): Buffer => {
      let fd: number;
      try {
        fd = fs.openSync(file, 'r');
      } catch {
        return Buffer.alloc(0);
      }
      try {
        const size = fs.fstatSync(fd).size;
        if (size < pos) pos = 0; // rotated: a new instance started
        if (size === pos) return Buffer.alloc(0);
        const buf = Buffer.alloc(size - pos);
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        pos += n;
        return buf.subarray(0, n);
      } finally {
        fs.closeSync(fd);
      }
    };
    const stream = new Readable({
      read: () => {
        if (!first) return;
        first = false;
        let data = readFrom();
        if (options.tailLines !== undefined) data = tail(data, options.tailLines);
        if (data.length) stream.push(data);
        if (!follow) {
          stream.push(null);
          return;
        }
        const poll = (): void => {
          timer = undefined;
          const gone = pod.foreign ? !fs.existsSync(pod.dir) : !this.pods.has(uid) || pod.deleting || c.instance !== instance || !c.child;
          if (!pod.foreign && c.instance !== instance) {
            stream.push(null); // the log was rotated: this instance's output is complete
            return;
          }
          const more = readFrom();
          if (more.length) stream.push(more);
          if (gone) {
            stream.push(null);
            return;
          }
          timer = setTimeout(poll, 200);
        };
        timer = setTimeout(poll, 200);
      },
      destroy: (err, cb) => {
        if (timer) clearTimeout(timer);
        cb(err);
      },
    });
    return stream;
  }

  async connect(uid: string, port: number): Promise<import('node:net').Socket> {
    const pod = this.get(uid);
    return connectFromNode(this.ctx.nodeNetns, this.ctx.netDir, pod.ip, port);
  }

  async deletePod(uid: string): Promise<void> {
    await this.#creating.get(uid)?.catch(() => undefined); // a pod being made is deleted once it exists
    const pod = this.pods.get(uid) ?? this.#loadForeign(uid);
    if (!pod || pod.deleting) return;
    pod.deleting = true;
    const graceMs = Math.max(0, pod.spec.terminationGracePeriodSeconds) * 1000;
    if (pod.foreign) {
      fs.writeFileSync(path.join(pod.dir, DELETING_MARKER), '');
      await killNetnsProcesses(pod.netns, graceMs);
    }
    else await Promise.all([...pod.containers.values()].map((c) => this.#stopContainer(c, graceMs)));
    await this.#removeNetwork(pod);
    fs.rmSync(pod.dir, { recursive: true, force: true });
    if (!pod.foreign) this.#free(pod.ip);
    this.pods.delete(uid);
  }

  /** the pod is being deleted by another instance: no restarts, no events, forget it */
  #forget(pod: PodState): void {
    pod.deleting = true;
    for (const c of pod.containers.values()) {
      if (c.backoffTimer) clearTimeout(c.backoffTimer);
      c.backoffTimer = undefined;
      this.#stopProbe(c);
    }
    this.pods.delete(pod.spec.uid);
    this.#free(pod.ip);
  }

  async #stopContainer(c: ContainerState, graceMs: number): Promise<void> {
    if (c.backoffTimer) clearTimeout(c.backoffTimer);
    c.backoffTimer = undefined;
    this.#stopProbe(c);
    const child = c.child;
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const exited = c.exited ?? Promise.resolve();
    killGroup(child.pid, 'SIGTERM');
    const t = sleep(graceMs).then(() => 'timeout' as const);
    if ((await Promise.race([exited.then(() => 'exited' as const), t])) === 'timeout') killGroup(child.pid, 'SIGKILL');
    else killGroup(child.pid, 'SIGKILL'); // children the main process left behind
    await Promise.race([exited, sleep(2000)]);
  }

  async #removeNetwork(pod: PodState): Promise<void> {
    await killNetnsProcesses(pod.netns, 0);
    await run('ip', ['-n', this.ctx.nodeNetns, 'link', 'del', pod.veth]).catch(() => undefined);
    await this.ctx.netnsDel(pod.netns).catch(() => undefined);
    fs.rmSync(`/etc/netns/${pod.netns}`, { recursive: true, force: true });
  }

  /** stop everything without events (down()) */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.pods.keys()].map((uid) => this.deletePod(uid)));
  }
}

function tail(data: Buffer, lines: number): Buffer {
  if (lines <= 0) return Buffer.alloc(0);
  let end = data.length;
  if (end > 0 && data[end - 1] === 10) end--;
  let count = 0;
  for (let i = end - 1; i >= 0; i--) {
    if (data[i] === 10 && ++count === lines) return data.subarray(i + 1);
  }
  return data;
}

export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** every process in a namespace: SIGTERM, then SIGKILL after graceMs (never this process) */
export async function killNetnsProcesses(netns: string, graceMs: number): Promise<void> {
  const pids = async (): Promise<number[]> => {
    const r = await run('ip', ['netns', 'pids', netns]);
    if (r.code !== 0) return [];
    return r.stdout
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((p) => Number.isInteger(p) && p !== process.pid);
  };
  let list = await pids();
  if (list.length === 0) return;
  if (graceMs > 0) {
    for (const p of list) signal(p, 'SIGTERM');
    const until = Date.now() + graceMs;
    while (Date.now() < until) {
      await sleep(50);
      list = await pids();
      if (list.length === 0) return;
    }
  }
  for (let i = 0; i < 20 && list.length; i++) {
    for (const p of list) signal(p, 'SIGKILL');
    await sleep(25);
    list = await pids();
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

/**
 * `$(VAR)` as kubernetes/kubernetes third_party/forked/golang/expansion/expand.go `Expand` with
 * `MappingFuncFor(declared)`: `$$` is `$`, an unknown or unclosed reference stays as written.
 */
function expandRefs(input: string, declared: ReadonlyMap<string, string>): string {
  let out = '';
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (c !== '$' || i + 1 >= input.length) {
      out += c;
      i++;
      continue;
    }
    const n = input[i + 1]!;
    if (n === '$') {
      out += '$';
      i += 2;
    } else if (n === '(') {
      const close = input.indexOf(')', i + 2);
      if (close < 0) {
        out += '$(';
        i += 2;
      } else {
        const name = input.slice(i + 2, close);
        out += declared.get(name) ?? `$(${name})`;
        i = close + 1;
      }
    } else {
      out += `$${n}`;
      i += 2;
    }
  }
  return out;
}
