/**
 * The lab's fault `freeze-shadow` (`npm run lab -- fault freeze-shadow SECONDS`, and
 * POST/GET/DELETE /lab/v1/faults/freeze-shadow): ktctl's shadow pods stop running for SECONDS and
 * then go on where they were, as a container paused by its runtime and resumed: a node under
 * memory pressure, a VM that was suspended, `ctr task pause`. Their sockets stay open; the kernel
 * still completes handshakes on their listening sockets and queues what peers send, up to the
 * receive window, but nobody reads or answers. The daemon continues them itself when the time is
 * up, so the caller may return at once (tests, benches and the demo run beside the fault).
 *
 * A real pause is the cgroup freezer: containerd's task Pause goes through the shim
 * (cmd/containerd-shim-runc-v2/task/service.go `(*service).Pause`) to runc, whose
 * libcontainer `(*Container).Pause` calls `cgroupManager.Freeze(cgroups.Frozen)`: on cgroup v2
 * opencontainers/cgroups fs2 `setFreezer` writes 1 to cgroup.freeze and `waitFrozen` polls
 * cgroup.events until it reads `frozen 1`; `(*Container).Resume` writes 0. The freezer stops
 * every task of the container's cgroup: its whole process tree and its exec'd processes.
 *
 * The lab's stand-in is SIGSTOP to every process of the pod, then SIGCONT: the lab gives its
 * containers no cgroup of their own (they are process groups in a network namespace, started
 * with `ip netns exec`), and SIGSTOP needs nothing but root, on cgroup v1 or v2 or a read-only
 * cgroup fs alike. For the pod's peers it is the same: not one instruction runs, no timer fires,
 * no byte is read, and SIGSTOP cannot be caught or ignored, as the freezer cannot. It differs
 * where only the node looks: `State:` in /proc/PID/status reads `T (stopped)` (a frozen task reads
 * S or D), and the parent could see the stop with waitpid(WUNTRACED) (the lab's kubelet, Node's
 * child_process, does not ask, so the pod stays Running and Ready, as a paused container does).
 * As `waitFrozen` waits for the cgroup, freeze() answers once every process reads T. A process
 * forked between the listing and the signal would escape, so the listing repeats until it finds
 * none new (a stopped process cannot fork), as runc's signalAllProcesses freezes the cgroup
 * before it signals.
 *
 * Deleting a frozen pod works as on a node: the kubelet's SIGTERM waits in the stopped processes
 * (containerd's CRI `stopContainer` sends the stop signal, waits the grace period, then SIGKILL;
 * runc's `signalInit` thaws the cgroup only for SIGKILL), and SIGKILL ends a stopped process
 * without a SIGCONT. The lab's delete path (net/pods.ts deletePod: SIGTERM to the group, SIGKILL
 * after the grace period, then every process left in the namespace) therefore needs no change:
 * a frozen shadow (grace period 5 s) goes after its grace period. The continue at the end never
 * reaches a process that is not the one it stopped (pid plus start time, net/procs.ts).
 * Stopping the control plane (`lab down`) continues every frozen pod first, so that the pods
 * it then deletes handle their SIGTERM at once.
 */
import { ApiError, badRequest } from './status.js';
import { isObject, type Json, type JsonObject } from './json.js';
import { R, type Registry } from './registry.js';
import { metaOf } from './store.js';
import type { LabNet } from '../net/types.js';
import { procStat, sameProcess } from '../net/procs.js';

/** The label of everything ktctl makes; its pods are the shadows (and routers) this fault freezes. */
export const SHADOW_LABEL = { key: 'app.kubernetes.io/managed-by', value: 'ktctl' } as const;
/** The longest freeze: an hour (a freeze that outlives its test would stall the next one). */
export const FREEZE_MAX_SECONDS = 3600;
/** Listing rounds until no new process shows up (each round stops the new ones). */
const STOP_ROUNDS = 50;
/** How long freeze() waits for every stopped process to read T (runc's waitFrozen: 10 s). */
const WAIT_STOPPED_MS = 2000;

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export interface FreezeRequest {
  seconds: number;
  /** only pods of this namespace (default: every namespace) */
  namespace?: string;
  /** only this pod (any pod, labelled or not, also one being deleted); with `namespace` when the
   * name is in several. Without it: the ktctl pods that are not being deleted. */
  pod?: string;
}

export interface PodFilter {
  namespace?: string;
  pod?: string;
}

/** A frozen pod as the endpoint answers it: the processes it stopped that still exist. */
export interface FrozenPod {
  namespace: string;
  name: string;
  uid: string;
  pids: number[];
  /** when the daemon continues it (RFC 3339, milliseconds) */
  thawAt: string;
}

interface Frozen {
  namespace: string;
  name: string;
  uid: string;
  /** pid -> start time (net/procs.ts), so that the continue reaches only these processes */
  procs: Map<number, string>;
  thawAt: number;
  timer: NodeJS.Timeout;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function optionalName(v: Json | undefined, what: string, max: number): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || v.length > max || !NAME.test(v)) throw badRequest(`${what} must be a ${what === 'namespace' ? 'namespace' : 'pod'} name`);
  return v;
}

/** The body of POST /lab/v1/faults/freeze-shadow: {"seconds": N, "namespace"?: NS, "pod"?: NAME}. */
export function parseFreezeRequest(body: Json): FreezeRequest {
  if (!isObject(body)) throw badRequest('expected {"seconds": number, "namespace"?: string, "pod"?: string}');
  const seconds = body.seconds;
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0 || seconds > FREEZE_MAX_SECONDS) {
    throw badRequest(`seconds must be a number more than 0 and at most ${FREEZE_MAX_SECONDS}`);
  }
  return { seconds, namespace: optionalName(body.namespace, 'namespace', 63), pod: optionalName(body.pod, 'pod', 253) };
}

/** ?namespace=NS&pod=NAME of GET and DELETE. */
export function parsePodFilter(q: URLSearchParams): PodFilter {
  return { namespace: optionalName(q.get('namespace') ?? undefined, 'namespace', 63), pod: optionalName(q.get('pod') ?? undefined, 'pod', 253) };
}

export class ShadowFreezer {
  readonly #frozen = new Map<string, Frozen>();
  readonly #registry: Registry;
  readonly #net: LabNet;
  readonly #log: (line: string) => void;

  constructor(registry: Registry, net: LabNet, log: (line: string) => void = () => undefined) {
    this.#registry = registry;
    this.#net = net;
    this.#log = log;
  }

  /**
   * Stops every process of the chosen pods (SIGSTOP) and arms their continue (SIGCONT) after
   * `seconds`. A pod frozen already keeps its processes stopped and continues at the later of
   * the two times. Refuses (404) a pod that does not exist and a selection with no ktctl pod,
   * (409) pods with no process (not started yet, or in back-off).
   */
  async freeze(req: FreezeRequest): Promise<{ seconds: number; thawAt: string; frozen: FrozenPod[] }> {
    const podProcesses = this.#net.podProcesses?.bind(this.#net);
    if (!podProcesses) throw badRequest("this lab's data plane runs no processes (a fake one): there is nothing to freeze");
    this.#prune();
    const targets = this.#targets(req);
    const thawAt = Date.now() + Math.round(req.seconds * 1000);
    const chosen: Frozen[] = [];
    for (const t of targets) {
      const existing = this.#frozen.get(t.uid);
      const procs = existing?.procs ?? new Map<number, string>();
      this.#stop(t.uid, procs, podProcesses);
      if (procs.size === 0) continue;
      const at = Math.max(thawAt, existing?.thawAt ?? 0);
      if (existing) clearTimeout(existing.timer);
      const f: Frozen = { ...t, procs, thawAt: at, timer: this.#arm(t.uid, at) };
      this.#frozen.set(t.uid, f);
      chosen.push(f);
    }
    if (chosen.length === 0) {
      const which = req.pod ? `pod ${req.namespace ? `${req.namespace}/` : ''}${req.pod} has` : `no ktctl pod ${req.namespace ? `in namespace ${req.namespace}` : 'in the lab'} has`;
      throw new ApiError(409, 'Conflict', `${which} a running process to freeze (not started yet, or waiting to restart)`);
    }
    await this.#waitStopped(chosen);
    for (const f of chosen) this.#log(`fault freeze-shadow: stopped ${f.namespace}/${f.name} (pids ${[...f.procs.keys()].join(' ')}) until ${new Date(f.thawAt).toISOString()}`);
    return { seconds: req.seconds, thawAt: new Date(thawAt).toISOString(), frozen: chosen.map((f) => this.#view(f)) };
  }

  /** The pods frozen now (of a namespace, or one pod). */
  list(filter: PodFilter = {}): FrozenPod[] {
    this.#prune();
    return this.#matching(filter).map((f) => this.#view(f));
  }

  /** Continues the frozen pods now (of a namespace, or one pod); answers those it continued. */
  thaw(filter: PodFilter = {}): FrozenPod[] {
    this.#prune();
    const out = this.#matching(filter).map((f) => this.#view(f));
    for (const f of this.#matching(filter)) this.#continue(f, 'on request');
    return out;
  }

  /** Continues every frozen pod (the control plane stops: `lab down`). */
  thawAll(): void {
    for (const f of [...this.#frozen.values()]) this.#continue(f, 'the lab stops');
  }

  #targets(req: FreezeRequest): Array<{ namespace: string; name: string; uid: string }> {
    const pods = this.#registry.store.list(R.pods, req.namespace).map((p) => metaOf(p));
    const where = req.namespace ? `in namespace ${req.namespace}` : 'in any namespace';
    const picked = req.pod
      ? pods.filter((m) => m.name === req.pod)
      : pods.filter((m) => m.labels?.[SHADOW_LABEL.key] === SHADOW_LABEL.value && !m.deletionTimestamp);
    if (picked.length === 0) {
      throw new ApiError(404, 'NotFound', req.pod ? `pods "${req.pod}" not found ${where}` : `no ktctl pod (label ${SHADOW_LABEL.key}=${SHADOW_LABEL.value}) ${where}`);
    }
    if (req.pod && picked.length > 1) {
      throw badRequest(`pod name "${req.pod}" is in namespaces ${picked.map((m) => m.namespace).join(', ')}: name one`);
    }
    return picked.map((m) => ({ namespace: m.namespace ?? '', name: m.name ?? '', uid: m.uid ?? '' }));
  }

  /** SIGSTOP to each process of the pod not stopped yet, until a listing finds no new one. */
  #stop(uid: string, procs: Map<number, string>, podProcesses: (uid: string) => number[]): void {
    for (let round = 0; round < STOP_ROUNDS; round++) {
      // not stopped by us yet, and not ended (a zombie only waits to be reaped)
      const fresh = podProcesses(uid).flatMap((pid) => {
        const st = procStat(pid);
        return st && !'ZX'.includes(st.state) && procs.get(pid) !== st.startTime ? [st] : [];
      });
      if (fresh.length === 0) return;
      for (const st of fresh) {
        try {
          process.kill(st.pid, 'SIGSTOP');
          procs.set(st.pid, st.startTime);
        } catch {
          // gone meanwhile
        }
      }
    }
    this.#log(`fault freeze-shadow: pod ${uid} still forked new processes after ${STOP_ROUNDS} rounds`);
  }

  /** as runc's waitFrozen: until every stopped process reads T (or is gone), bounded */
  async #waitStopped(list: Frozen[]): Promise<void> {
    const deadline = Date.now() + WAIT_STOPPED_MS;
    const running = (): number[] =>
      list.flatMap((f) =>
        [...f.procs].flatMap(([pid, start]) => {
          const st = procStat(pid);
          return st && st.startTime === start && !'TZX'.includes(st.state) ? [pid] : [];
        }),
      );
    let left = running();
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(10);
      left = running();
    }
    if (left.length > 0) this.#log(`fault freeze-shadow: pids ${left.join(' ')} did not read T within ${WAIT_STOPPED_MS} ms (uninterruptible?)`);
  }

  #arm(uid: string, at: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const f = this.#frozen.get(uid);
      if (f && f.timer === timer) this.#continue(f, 'time is up');
    }, Math.max(0, at - Date.now()));
    timer.unref(); // an in-process control plane must not keep its test process alive
    return timer;
  }

  /** SIGCONT to each process it stopped that is still that process (never to a reused pid). */
  #continue(f: Frozen, why: string): void {
    clearTimeout(f.timer);
    this.#frozen.delete(f.uid);
    const continued: number[] = [];
    for (const [pid, start] of f.procs) {
      if (!sameProcess(pid, start)) continue;
      try {
        process.kill(pid, 'SIGCONT');
        continued.push(pid);
      } catch {
        // gone meanwhile
      }
    }
    this.#log(`fault freeze-shadow: continued ${f.namespace}/${f.name} (${why}; pids ${continued.join(' ') || 'none left'})`);
  }

  /** forgets pods whose stopped processes are all gone (the pod was deleted while frozen) */
  #prune(): void {
    for (const f of [...this.#frozen.values()]) {
      if (![...f.procs].some(([pid, start]) => sameProcess(pid, start))) {
        clearTimeout(f.timer);
        this.#frozen.delete(f.uid);
        this.#log(`fault freeze-shadow: ${f.namespace}/${f.name} is gone while frozen`);
      }
    }
  }

  #matching(filter: PodFilter): Frozen[] {
    return [...this.#frozen.values()].filter((f) => (filter.namespace === undefined || f.namespace === filter.namespace) && (filter.pod === undefined || f.name === filter.pod));
  }

  #view(f: Frozen): FrozenPod {
    const pids = [...f.procs].filter(([pid, start]) => sameProcess(pid, start)).map(([pid]) => pid).sort((a, b) => a - b);
    return { namespace: f.namespace, name: f.name, uid: f.uid, pids, thawAt: new Date(f.thawAt).toISOString() };
  }
}

/** JSON of the answers (FrozenPod has only JSON values). */
export function frozenJson(list: FrozenPod[]): JsonObject[] {
  return list as unknown as JsonObject[];
}
