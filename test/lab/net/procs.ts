/**
 * A pod's processes, read from /proc, for the lab's faults (`fault freeze-shadow`): which
 * processes are the pod's, their state, and a start time that tells a process from a later one
 * that got the same pid (the kernel reuses pids; a signal meant for a pod must never reach
 * whatever runs under its old pid after the pod is gone).
 *
 * A pod's processes are every process whose network namespace is the pod's. That is the set the
 * lab's delete path kills (pods.ts `killNetnsProcesses`, `ip netns pids`): each container's
 * process group (the lab starts each container as a session leader), whatever the containers
 * forked or double-forked, and the processes `kubectl exec` started in the pod, which a real
 * runtime puts into the container's cgroup too. The lab's own plumbing never runs there: probes
 * and port-forward connect from the node.
 */
import fs from 'node:fs';

export interface ProcStat {
  pid: number;
  /** /proc/PID/stat field 3: R running, S sleeping, D disk wait, T stopped, t traced, Z zombie, ... */
  state: string;
  ppid: number;
  /** field 22, in clock ticks since boot: with the pid, it names one process for its whole life */
  startTime: string;
}

/** /proc/PID/stat, or undefined when the process is gone. The command name (field 2) may hold
 * spaces and parentheses, so the fields after it are counted from its last ')'. */
export function procStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // after ") ": field 3 (state) is index 0, field 4 (ppid) index 1, field 22 (starttime) index 19
  const f = text.slice(close + 2).split(' ');
  if (f.length < 20) return undefined;
  return { pid, state: f[0]!, ppid: Number(f[1]), startTime: f[19]! };
}

/** the `State:` letter a person sees in /proc/PID/status (T for SIGSTOP), or undefined when gone */
export function procState(pid: number): string | undefined {
  return procStat(pid)?.state;
}

/** true while `pid` is still the process that had `startTime` and has not ended: not gone, not a
 * zombie waiting for its parent (or init) to reap it, not a later process with the same pid */
export function sameProcess(pid: number, startTime: string): boolean {
  const st = procStat(pid);
  return st !== undefined && st.startTime === startTime && st.state !== 'Z' && st.state !== 'X';
}

/**
 * Every process in the network namespace /run/netns/NAME, as `ip netns pids` finds them: the
 * processes whose /proc/PID/ns/net is that namespace (same device and inode). Never this process.
 * Empty when the namespace is gone.
 */
export function netnsPids(netns: string): number[] {
  let target: fs.Stats;
  try {
    target = fs.statSync(`/run/netns/${netns}`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const ns = fs.statSync(`/proc/${entry}/ns/net`);
      if (ns.ino === target.ino && ns.dev === target.dev) out.push(pid);
    } catch {
      // gone, or a kernel thread
    }
  }
  return out.sort((a, b) => a - b);
}
