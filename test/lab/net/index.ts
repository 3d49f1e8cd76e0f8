/**
 * The lab's data plane (see types.ts for the contract with the control plane).
 *
 * Topology made by up():
 *
 *   host ns: ktlab-h0 198.18.255.1/24 (its only route: the connected 198.18.255.0/24)
 *      |
 *   ktlab-out: bridge ktlab-br0 (198.18.255.3 upstream DNS, 198.18.255.4 www.example.test)
 *      |  \__ laptops: eth0 198.18.255.1xx/24 <-> ktlab-lN
 *   ktlab-node: ktlab-n0 198.18.255.2/24 (API server), lo: 198.18.0.1 (pod gateway) and
 *      198.19.0.10 (cluster DNS), veth ktlab-svc0 routes 198.19.0.0/16 (services, nft ktlab-svc),
 *      ktlab-vXXXX <-> eth0 of pod namespace ktlab-p-XXXX (routed /32 each way)
 *
 * Everything is named ktlab-*, so down() on a fresh instance finds what a crashed lab left.
 * Laptops may have any name: they are recorded under STATE_DIR/net/laptops/.
 *
 * Processes that must outlive the caller of up() (the node agent: cluster DNS + connect relay;
 * the outside agent: upstream DNS + www) run detached; down() stops every process whose
 * network namespace is a lab one.
 *
 * The lab daemon must run in the node's network namespace but in the host's mount namespace
 * (start it with labNodeCommand(), i.e. `nsenter --net=/run/netns/ktlab-node ...`), because
 * namespaces made with `ip netns add` from a private mount namespace (`ip netns exec` makes one)
 * are invisible to everyone else.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Socket } from 'node:net';
import { LAB, type LabNet, type LabNetEvents, type PodRuntimeSpec, type ServiceRuntimeSpec } from './types.js';
import { ipBatch, nftApply, run, runOk, sysBin } from './run.js';
import { ServiceSync, renderServiceTable } from './services.js';
import { LabNetError, PodRuntime, REPO_ROOT, killNetnsProcesses, type PodInfo } from './pods.js';
import { makeImageStore, removeImageStore } from '../images/store.js';
import { DNS_RECORDS_FILE } from './constants.js';
import { netnsPids } from './procs.js';

export { LAB } from './types.js';
export type * from './types.js';
export { LabNetError, type PodInfo } from './pods.js';
export { renderServiceTable } from './services.js';

const BRIDGE = 'ktlab-br0';
const HOST_VETH = 'ktlab-h0';
const HOST_PEER = 'ktlab-h1';
const NODE_VETH = 'ktlab-n0';
const NODE_PEER = 'ktlab-n1';
const SVC_DUMMY = 'ktlab-svc0';
const SVC_DUMMY_PEER = 'ktlab-svc1';
const DEFAULT_PREFIX = 'ktlab-';
/** STATE_DIR/net/IMAGES_DIR_FILE names the lab's image store */
const IMAGES_DIR_FILE = 'images-dir.txt';
const LAPTOP_FIRST = 100;
const LAPTOP_COUNT = 150;
const TSX_LOADER = import.meta.resolve('tsx');
const AGENT = path.join(REPO_ROOT, 'test/lab/net/agent.ts');

export interface LabNetOptions {
  /** the lab's state folder (e.g. .lab); the data plane keeps its files in STATE_DIR/net */
  stateDir: string;
  log?: (line: string) => void;
  /**
   * (additive) Namespace name prefix, `ktlab-` by default. Any other prefix makes an isolated
   * lab: same addresses inside its own namespaces (`PREFIXnode`, `PREFIXout`, `PREFIXp-XXXX`),
   * but no link to the host (the host link's address is fixed), so it can run beside the real
   * lab; it is reached through connect(), exec() and laptops. Tests use it.
   */
  prefix?: string;
}

/** argv prefix that runs a program in the node namespace, keeping the host's mount namespace */
export function labNodeCommand(argv: string[]): string[] {
  return [sysBin('nsenter'), `--net=/run/netns/${LAB.nodeNetns}`, '--', ...argv];
}

/** LabNet plus what this implementation adds (all additive to the contract in types.ts). */
export interface LabDataPlane extends LabNet {
  /** the node namespace's name: ktlab-node, or PREFIXnode for an isolated lab */
  readonly nodeNetns: string;
  /** the outside segment's namespace (bridge, upstream DNS, www.example.test) */
  readonly outNetns: string;
  /** resolves once every setServices() so far is in the kernel */
  servicesSettled(): Promise<void>;
  /** the lab's pods, also those another instance (the daemon) made */
  listPods(): PodInfo[];
}

export function createLabNet(options: LabNetOptions): LabDataPlane {
  return new LabNetImpl(options);
}

/** The base rules of the node: pods reach the outside segment masqueraded as the node; nothing
 * from the outside segment opens a connection to a pod (pods are reachable only through ktctl). */
/** The host's nft table that keeps the lab's range on the machine while the lab is up. */
export const GUARD_TABLE = 'ktlab-guard';
/** The lab's whole address range (RFC 2544): pods, services, the outside segment. */
export const LAB_RANGE = '198.18.0.0/15';

/**
 * The lab's guard, in the host's namespace: the host has no route to pod or service addresses, so
 * without it a packet for one (a mistaken curl "without ktctl") would follow the default route
 * out of the machine. Packets for 198.18.0.0/15 may leave only through the lab's own link
 * (ktlab-h0) or a ktctl TUN device (kt0, ktN); any other is refused on the spot (counter
 * `refused`, an ICMP admin-prohibited to the sender, so the program fails at once). A second
 * counter after routing (`leaked`) counts, and drops, whatever would still get past: tests read it.
 */
export function renderGuardTable(): string {
  return `table inet ${GUARD_TABLE} {
  counter refused { }
  counter leaked { }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr ${LAB_RANGE} oifname "${HOST_VETH}" accept
    ip daddr ${LAB_RANGE} oifname "kt*" accept
    ip daddr ${LAB_RANGE} oifname "lo" accept
    ip daddr ${LAB_RANGE} counter name refused reject with icmpx type admin-prohibited
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ip daddr ${LAB_RANGE} oifname "${HOST_VETH}" accept
    ip daddr ${LAB_RANGE} oifname "kt*" accept
    ip daddr ${LAB_RANGE} counter name refused reject with icmpx type admin-prohibited
  }
  chain postrouting {
    type filter hook postrouting priority 300; policy accept;
    ip daddr ${LAB_RANGE} oifname "${HOST_VETH}" accept
    ip daddr ${LAB_RANGE} oifname "kt*" accept
    ip daddr ${LAB_RANGE} oifname "lo" accept
    ip daddr ${LAB_RANGE} counter name leaked drop
  }
}
`;
}

export function renderBaseTable(): string {
  return (
    `table ip ktlab-base\n` +
    `delete table ip ktlab-base\n` +
    `table ip ktlab-base {\n` +
    `\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n` +
    `\t\toifname "${NODE_VETH}" ip saddr ${LAB.podCidr} masquerade\n\t}\n` +
    `\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n` +
    `\t\tiifname "${NODE_VETH}" ct state new drop\n\t}\n` +
    `}\n`
  );
}

/** true when /run/netns is a slave mount here (we run inside `ip netns exec`'s mount namespace) */
function inPrivateMountNs(): boolean {
  try {
    const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    for (const line of info.split('\n')) {
      const f = line.split(' ');
      if (f[4] === '/run/netns') return f.slice(6, f.indexOf('-')).some((x) => x.startsWith('master:'));
    }
  } catch {
    // no /proc: assume the host
  }
  return false;
}

class LabNetImpl implements LabDataPlane {
  readonly events = new EventEmitter<LabNetEvents>();
  readonly #netDir: string;
  readonly #log: (line: string) => void;
  readonly #pods: PodRuntime;
  readonly #services: ServiceSync;
  readonly #prefix: string;
  readonly #hostLink: boolean;
  readonly nodeNetns: string;
  readonly outNetns: string;

  constructor(options: LabNetOptions) {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    if (!/^[a-z][a-z0-9-]{0,14}-$/.test(prefix)) throw new LabNetError('KTLAB_BAD_NAME', `bad prefix ${JSON.stringify(prefix)}`);
    if (prefix !== DEFAULT_PREFIX && (DEFAULT_PREFIX.startsWith(prefix) || prefix.startsWith(DEFAULT_PREFIX))) throw new LabNetError('KTLAB_BAD_NAME', `prefix ${prefix} would cover the lab's own names`);
    this.#prefix = prefix;
    this.#hostLink = prefix === DEFAULT_PREFIX;
    this.nodeNetns = `${prefix}node`;
    this.outNetns = `${prefix}out`;
    this.#netDir = path.resolve(options.stateDir, 'net');
    this.#log = options.log ?? (() => {});
    this.#services = new ServiceSync(this.nodeNetns, this.#log);
    this.#pods = new PodRuntime({
      prefix,
      nodeNetns: this.nodeNetns,
      netDir: this.#netDir,
      events: this.events,
      log: this.#log,
      netnsAdd: (name) => this.#netnsAdd(name),
      netnsDel: (name) => this.#netnsDel(name),
      recordMkdir: (dir) => {
        fs.mkdirSync(this.#netDir, { recursive: true });
        fs.appendFileSync(path.join(this.#netDir, 'mkdirs.txt'), dir + '\n');
      },
      imagesDir: () => (this.#images ??= fs.readFileSync(path.join(this.#netDir, IMAGES_DIR_FILE), 'utf8').trim()),
    });
  }

  /** the image store up() made (test/lab/images/store.ts), read back by other instances */
  #images: string | undefined;

  #checkMountNs(): void {
    if (inPrivateMountNs()) {
      throw new LabNetError(
        'KTLAB_MOUNT_NS',
        'this process runs in a private mount namespace (ip netns exec?): namespaces it creates would be invisible to the host; start it with nsenter --net=/run/netns/ktlab-node instead',
      );
    }
  }

  async #netnsAdd(name: string): Promise<void> {
    this.#checkMountNs();
    await runOk('ip', ['netns', 'add', name]);
  }

  async #netnsDel(name: string): Promise<void> {
    await runOk('ip', ['netns', 'del', name]);
  }

  async up(): Promise<void> {
    this.#checkMountNs();
    const t0 = Date.now();
    await this.#removeAll();
    fs.mkdirSync(path.join(this.#netDir, 'logs'), { recursive: true });
    this.#images = await makeImageStore();
    fs.writeFileSync(path.join(this.#netDir, IMAGES_DIR_FILE), `${this.#images}\n`);
    this.#writeDnsRecords({ services: [], pods: [] });
    const node = this.nodeNetns;
    const out = this.outNetns;
    await this.#netnsAdd(node);
    await this.#netnsAdd(out);
    // the outside segment: a bridge in its own namespace
    await ipBatch(
      [
        'link set lo up',
        `link add ${BRIDGE} type bridge forward_delay 0`,
        `addr add ${LAB.upstreamDnsIp}/24 dev ${BRIDGE}`,
        `addr add ${LAB.wwwIp}/24 dev ${BRIDGE}`,
        `link set ${BRIDGE} up`,
        `link add ${NODE_PEER} type veth peer name ${NODE_VETH} netns ${node}`,
        `link set ${NODE_PEER} master ${BRIDGE}`,
        `link set ${NODE_PEER} up`,
      ],
      out,
    );
    // the node: API server address, pod gateway, cluster DNS address, service range
    await ipBatch(
      [
        'link set lo up',
        `addr add ${LAB.apiServerIp}/24 dev ${NODE_VETH}`,
        `link set ${NODE_VETH} up`,
        `addr add 198.18.0.1/32 dev lo`,
        `addr add ${LAB.clusterDnsIp}/32 dev lo`,
        // the kernel may lack the dummy driver: a veth pair gives the service range a route
        // (what is not DNATed is rejected by the ktlab-svc filter chains before it leaves)
        `link add ${SVC_DUMMY} type veth peer name ${SVC_DUMMY_PEER}`,
        `link set ${SVC_DUMMY_PEER} up`,
        `link set ${SVC_DUMMY} up`,
        `route add ${LAB.serviceCidr} dev ${SVC_DUMMY}`,
      ],
      node,
    );
    await runOk('ip', [
      'netns', 'exec', node, sysBin('sysctl'), '-q', '-w',
      'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0',
    ]);
    await nftApply(node, renderBaseTable() + renderServiceTable([]));
    if (this.#hostLink) {
      // the host's one link: the outside segment and nothing else
      await ipBatch([`link add ${HOST_VETH} type veth peer name ${HOST_PEER} netns ${out}`]);
      await run('sysctl', ['-q', '-w', `net.ipv6.conf.${HOST_VETH}.disable_ipv6=1`]);
      await ipBatch([`addr add ${LAB.hostIp}/24 dev ${HOST_VETH}`, `link set ${HOST_VETH} up`]);
      await ipBatch([`link set ${HOST_PEER} master ${BRIDGE}`, `link set ${HOST_PEER} up`], out);
      // the guard: nothing for the lab's range leaves this machine by another way (renderGuardTable)
      await runOk(sysBin('nft'), ['-f', '-'], renderGuardTable());
    }
    const t1 = Date.now();
    await Promise.all([this.#startAgent('node', node), this.#startAgent('outside', out)]);
    this.#log(`net: topology in ${t1 - t0} ms, agents ready in ${Date.now() - t1} ms`);
    this.#log(`net: up in ${Date.now() - t0} ms`);
  }

  /** start an agent detached in a namespace; resolves when it wrote "ready" on fd 3 */
  #startAgent(mode: 'node' | 'outside', netns: string): Promise<void> {
    const logFile = path.join(this.#netDir, 'logs', `agent-${mode}.log`);
    const fd = fs.openSync(logFile, 'a');
    const child = spawn(
      sysBin('nsenter'),
      [`--net=/run/netns/${netns}`, '--', process.execPath, '--import', TSX_LOADER, AGENT, mode, this.#netDir],
      { detached: true, stdio: ['ignore', fd, fd, 'pipe'], cwd: '/' },
    );
    fs.closeSync(fd);
    return new Promise((resolve, reject) => {
      const pipe = child.stdio[3] as Readable | null;
      const timer = setTimeout(() => done(new Error(`lab ${mode} agent not ready after 15 s (see ${logFile})`)), 15_000);
      const done = (err?: Error): void => {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        pipe?.destroy();
        child.unref();
        if (err) reject(err);
        else resolve();
      };
      let text = '';
      pipe?.on('data', (b: Buffer) => {
        text += b.toString();
        if (text.includes('ready')) done();
      });
      pipe?.on('error', () => {});
      child.once('exit', (code) => done(new Error(`lab ${mode} agent exited with ${code} (see ${logFile})`)));
      child.once('error', (e) => done(e));
    });
  }

  async down(): Promise<void> {
    this.#services.close();
    await this.#pods.close();
    await this.#removeAll();
  }

  /** remove every ktlab-* namespace, link, nft table, /etc/netns entry, recorded dir and file */
  async #removeAll(): Promise<void> {
    const laptops = this.#laptopNames();
    const list = await run('ip', ['netns', 'list']);
    const names = new Set<string>(laptops);
    for (const line of list.stdout.split('\n')) {
      const name = line.trim().split(/\s+/)[0];
      if (name?.startsWith(this.#prefix)) names.add(name);
    }
    // processes first (a namespace lives on while a process is in it), then the namespaces
    await Promise.all([...names].map((n) => killNetnsProcesses(n, 1000)));
    await Promise.all([...names].map((n) => run('ip', ['netns', 'del', n])));
    if (this.#hostLink) {
      // the lab makes no host links or tables but ktlab-h0; remove any ktlab-* a crash left
      const links = await run('ip', ['-o', 'link', 'show']);
      for (const line of links.stdout.split('\n')) {
        const m = /^\d+:\s+([^:@\s]+)/.exec(line);
        if (m?.[1]?.startsWith(DEFAULT_PREFIX)) await run('ip', ['link', 'del', m[1]]);
      }
      const tables = await run('nft', ['list', 'tables']);
      for (const line of tables.stdout.split('\n')) {
        const m = /^table (\S+) (\S+)$/.exec(line.trim());
        if (m?.[2]?.startsWith(DEFAULT_PREFIX)) await run('nft', ['delete', 'table', m[1]!, m[2]]);
      }
    }
    if (fs.existsSync('/etc/netns')) {
      for (const e of fs.readdirSync('/etc/netns')) {
        if (e.startsWith(this.#prefix) || laptops.includes(e)) fs.rmSync(path.join('/etc/netns', e), { recursive: true, force: true });
      }
      if (this.#hostLink) {
        try {
          fs.rmdirSync('/etc/netns');
        } catch {
          // not empty: someone else's
        }
      }
    }
    const images = path.join(this.#netDir, IMAGES_DIR_FILE);
    if (fs.existsSync(images)) removeImageStore(fs.readFileSync(images, 'utf8').trim());
    this.#images = undefined;
    const mkdirs = path.join(this.#netDir, 'mkdirs.txt');
    if (fs.existsSync(mkdirs)) {
      const dirs = [...new Set(fs.readFileSync(mkdirs, 'utf8').split('\n').filter(Boolean))];
      dirs.sort((a, b) => b.length - a.length);
      for (const d of dirs) {
        try {
          fs.rmdirSync(d);
        } catch {
          // not empty or gone
        }
      }
    }
    fs.rmSync(this.#netDir, { recursive: true, force: true });
  }

  createPod(spec: PodRuntimeSpec): Promise<{ podIP: string }> {
    return this.#pods.createPod(spec);
  }

  deletePod(uid: string): Promise<void> {
    return this.#pods.deletePod(uid);
  }

  logs(uid: string, container: string, options: { follow: boolean; tailLines?: number; previous?: boolean }): Readable {
    return this.#pods.logs(uid, container, options);
  }

  exec(uid: string, container: string, command: string[], options: { tty: boolean }): ChildProcessWithoutNullStreams {
    return this.#pods.exec(uid, container, command, options);
  }

  connect(uid: string, port: number): Promise<Socket> {
    return this.#pods.connect(uid, port);
  }

  listPods(): PodInfo[] {
    return this.#pods.list();
  }

  podProcesses(uid: string): number[] {
    const pod = this.#pods.pods.get(uid) ?? this.#pods.list().find((p) => p.uid === uid);
    return pod ? netnsPids(pod.netns) : [];
  }

  setServices(services: ServiceRuntimeSpec[]): void {
    this.#services.set(services);
  }

  servicesSettled(): Promise<void> {
    return this.#services.settled();
  }

  setDnsRecords(records: { services: Array<{ namespace: string; name: string; clusterIP: string }>; pods: Array<{ namespace: string; ip: string }> }): void {
    this.#writeDnsRecords(records);
  }

  #writeDnsRecords(records: { services: Array<{ namespace: string; name: string; clusterIP: string }>; pods: Array<{ namespace: string; ip: string }> }): void {
    fs.mkdirSync(this.#netDir, { recursive: true });
    const file = path.join(this.#netDir, DNS_RECORDS_FILE);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ services: records.services, pods: records.pods }));
    fs.renameSync(tmp, file);
  }

  #laptopDir(): string {
    return path.join(this.#netDir, 'laptops');
  }

  #laptopNames(): string[] {
    try {
      return fs
        .readdirSync(this.#laptopDir())
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -5));
    } catch {
      return [];
    }
  }

  async createLaptop(name: string): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name) || name === this.nodeNetns || name === this.outNetns || name.startsWith(`${this.#prefix}p-`)) {
      throw new LabNetError('KTLAB_BAD_NAME', `laptop name ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-'`);
    }
    if (!fs.existsSync(`/run/netns/${this.outNetns}`)) throw new LabNetError('KTLAB_NOT_UP', 'the lab is not up (no outside segment)');
    if (fs.existsSync(`/run/netns/${name}`)) throw new LabNetError('KTLAB_EXISTS', `a network namespace named ${name} exists already`);
    const ipDir = path.join(this.#netDir, 'laptop-ips');
    fs.mkdirSync(ipDir, { recursive: true });
    fs.mkdirSync(this.#laptopDir(), { recursive: true });
    let index = -1;
    for (let i = 0; i < LAPTOP_COUNT; i++) {
      try {
        fs.writeFileSync(path.join(ipDir, String(i)), name, { flag: 'wx' });
        index = i;
        break;
      } catch {
        // taken
      }
    }
    if (index < 0) throw new LabNetError('KTLAB_LAPTOP_RANGE_FULL', 'no free laptop address (198.18.255.100-249)');
    const ip = `198.18.255.${LAPTOP_FIRST + index}`;
    const peer = `ktlab-l${index}`;
    fs.writeFileSync(path.join(this.#laptopDir(), `${name}.json`), JSON.stringify({ name, ip, index, peer }));
    try {
      fs.mkdirSync(`/etc/netns/${name}`, { recursive: true });
      fs.writeFileSync(`/etc/netns/${name}/resolv.conf`, `nameserver ${LAB.upstreamDnsIp}\n`);
      await this.#netnsAdd(name);
      await ipBatch(
        ['link set lo up', `link add eth0 type veth peer name ${peer} netns ${this.outNetns}`, `addr add ${ip}/24 dev eth0`, 'link set eth0 up'],
        name,
      );
      await ipBatch([`link set ${peer} master ${BRIDGE}`, `link set ${peer} up`], this.outNetns);
    } catch (e) {
      await this.deleteLaptop(name);
      throw e;
    }
  }

  async deleteLaptop(name: string): Promise<void> {
    const file = path.join(this.#laptopDir(), `${name}.json`);
    let index: number | undefined;
    try {
      index = (JSON.parse(fs.readFileSync(file, 'utf8')) as { index: number }).index;
    } catch {
      // not ours (or gone): still remove what carries the name
    }
    if (fs.existsSync(`/run/netns/${name}`) && index !== undefined) {
      await killNetnsProcesses(name, 1000);
      await run('ip', ['netns', 'del', name]);
    }
    if (index !== undefined) {
      fs.rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
      fs.rmSync(path.join(this.#netDir, 'laptop-ips', String(index)), { force: true });
      fs.rmSync(file, { force: true });
    }
  }
}

