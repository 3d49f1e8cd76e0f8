/**
 * The contract between the lab's control plane (test/lab/api: API server, store, controllers)
 * and its data plane (test/lab/net: namespaces, pods as processes, services as nftables DNAT,
 * DNS, port-forward and exec plumbing). The control plane resolves everything that needs the
 * API's objects (secret/configmap contents, env valueFrom, numeric ports); the data plane only runs.
 */
import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Readable } from 'node:stream';

/** Lab address plan (DESIGN.md "The lab"). */
export const LAB = {
  outsideCidr: '198.18.255.0/24',
  apiServerIp: '198.18.255.2',
  apiServerPort: 6443,
  /** the lab's upstream DNS on the outside segment (answers example.test, else NXDOMAIN/REFUSED) */
  upstreamDnsIp: '198.18.255.3',
  /** www.example.test: an HTTP server on the outside segment */
  wwwIp: '198.18.255.4',
  /** the host's own end of its link to the outside segment */
  hostIp: '198.18.255.1',
  podCidr: '198.18.0.0/17',
  serviceCidr: '198.19.0.0/16',
  clusterDnsIp: '198.19.0.10',
  clusterDomain: 'cluster.local',
  /** name of the namespace where the lab daemon (API server, controllers, DNS) runs */
  nodeNetns: 'ktlab-node',
} as const;

export interface ContainerRuntimeSpec {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  /** env already resolved from value/secretKeyRef/configMapKeyRef; fieldRef left as fieldPath; `expand`: a value whose $(VAR) references are still to expand */
  env: Array<{ name: string; value?: string; fieldPath?: string; expand?: boolean }>;
  ports: Array<{ containerPort: number; name?: string; protocol: 'TCP' | 'UDP' }>;
  /** volume contents resolved by the control plane (secret data decoded, configmap data), each file's mode */
  volumeMounts: Array<{ mountPath: string; readOnly: boolean; files: Record<string, Buffer>; modes?: Record<string, number> }>;
  /** numeric port already resolved from a named port */
  readinessProbe?: { tcpSocket: { port: number } } | { httpGet: { port: number; path: string } };
  /** the effective user and group (the pod's or container's securityContext, else the image's user) */
  runAsUser?: number;
  runAsGroup?: number;
}

export interface PodRuntimeSpec {
  uid: string;
  namespace: string;
  name: string;
  containers: ContainerRuntimeSpec[];
  restartPolicy: 'Always' | 'OnFailure' | 'Never';
  terminationGracePeriodSeconds: number;
  /** spec.securityContext.sysctls: namespaced net.* ones are set in the pod's network namespace */
  sysctls?: Array<{ name: string; value: string }>;
  /** spec.securityContext.fsGroup: owns the volumes' files and is a supplementary group of every container */
  fsGroup?: number;
}

export interface ServiceRuntimeSpec {
  namespace: string;
  name: string;
  clusterIP: string;
  ports: Array<{
    port: number;
    protocol: 'TCP' | 'UDP';
    /** ready endpoints: pod IP and numeric target port */
    endpoints: Array<{ ip: string; port: number }>;
  }>;
}

/** Events of LabNet.events (control plane updates pod status from them). */
export interface LabNetEvents {
  /** the process started (state running); restartCount is how often it was restarted before */
  containerStarted: [uid: string, container: string, startedAt: Date, restartCount: number];
  /** readiness changed (probe passed/failed; no probe = ready once started) */
  containerReady: [uid: string, container: string, ready: boolean];
  /** the process ended; the data plane restarts it per restartPolicy (with back-off) */
  containerExited: [uid: string, container: string, exitCode: number, reason: string, finishedAt: Date];
  /** the image maps to no program: the control plane shows ErrImagePull / ImagePullBackOff */
  imagePullFailed: [uid: string, container: string, image: string, message: string];
  /** (additive) the container exited and waits for its back-off before the restart:
   * reason `CrashLoopBackOff`, message as the kubelet words it */
  containerWaiting: [uid: string, container: string, reason: string, message: string];
}

export interface LabNet {
  /** create the node and outside namespaces, bridge, host link, nft table, DNS servers, www server */
  up(): Promise<void>;
  /** remove everything up() and later calls made: processes, namespaces, veths, nft tables, files */
  down(): Promise<void>;

  /** allocate an IP from the pod range, make the pod's netns + veth + resolv.conf, write volume
   * files, start its containers. Resolves when the network exists (processes may still start). */
  createPod(spec: PodRuntimeSpec): Promise<{ podIP: string }>;
  /** SIGTERM, SIGKILL after the grace period, remove netns and files, free the IP */
  deletePod(uid: string): Promise<void>;
  readonly events: EventEmitter<LabNetEvents>;

  logs(uid: string, container: string, options: { follow: boolean; tailLines?: number; previous?: boolean }): Readable;
  exec(uid: string, container: string, command: string[], options: { tty: boolean }): ChildProcessWithoutNullStreams;
  /** a TCP connection to podIP:port from the node (rejects like net.connect: ECONNREFUSED ...) */
  connect(uid: string, port: number): Promise<Socket>;
  /** (additive, optional) the pids of the pod's processes now (every process in its network
   * namespace), for the lab's faults; [] for an unknown pod. Absent: this data plane runs no processes. */
  podProcesses?(uid: string): number[];

  /** full sync of service DNAT rules (idempotent; applied within a second) */
  setServices(services: ServiceRuntimeSpec[]): void;
  /** full sync of cluster DNS content */
  setDnsRecords(records: {
    services: Array<{ namespace: string; name: string; clusterIP: string }>;
    pods: Array<{ namespace: string; ip: string }>;
  }): void;

  /** a laptop namespace: route to the outside segment only, /etc/netns/NAME/resolv.conf -> upstream DNS */
  createLaptop(name: string): Promise<void>;
  deleteLaptop(name: string): Promise<void>;
}
