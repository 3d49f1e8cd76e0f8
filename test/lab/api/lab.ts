/**
 * The lab's control plane in one object: store, registry, controllers and the HTTPS API server,
 * seeded with what a fresh cluster has (namespaces, the node, kube-dns) and the demo `web` app.
 */
import { Store } from './store.js';
import { R, Registry } from './registry.js';
import { Controllers, NODE_IP, NODE_LABELS, NODE_NAME } from './controllers/index.js';
import { ApiServer } from './server.js';
import type { User } from './auth.js';
import { GROUPS } from './rbac.js';
import { bootstrapClusterRoleBindings, bootstrapClusterRoles, labBindings } from './rbac-bootstrap.js';
import { USERS, type Tokens } from './pki.js';
import { ExecTokenVerifier } from './exec-token.js';
import { timestamp } from './clock.js';
import { LAB, type LabNet } from '../net/types.js';
import type { JsonObject } from './json.js';

export interface ControlPlaneOptions {
  net: LabNet;
  tokens: Tokens;
  tls?: { key: string | Buffer; cert: string | Buffer };
  log?: (line: string) => void;
  /** seed the demo deployment/service `web` in default (default true) */
  demo?: boolean;
  bookmarkIntervalMs?: number;
  /** the signing key of the exec plugin's tokens (exec-token.ts); without it they get 401 */
  execTokenKey?: Buffer;
}

export class ControlPlane {
  readonly store = new Store();
  readonly registry = new Registry(this.store);
  readonly controllers: Controllers;
  readonly server: ApiServer;
  readonly execTokens: ExecTokenVerifier | undefined;

  constructor(opts: ControlPlaneOptions) {
    this.controllers = new Controllers({ registry: this.registry, net: opts.net, log: opts.log });
    // what each may do comes from RBAC alone: admin through the cluster-admin binding of
    // system:masters, readonly through a binding to view, dev through whatever tests bind to it
    const users = new Map<string, User>([
      [opts.tokens.admin, { name: USERS.admin, groups: [GROUPS.masters, GROUPS.authenticated] }],
      [opts.tokens.readonly, { name: USERS.readonly, groups: [GROUPS.authenticated] }],
      [opts.tokens.dev, { name: USERS.dev, groups: [GROUPS.authenticated] }],
    ]);
    this.execTokens = opts.execTokenKey ? new ExecTokenVerifier(opts.execTokenKey) : undefined;
    this.server = new ApiServer({ registry: this.registry, net: opts.net, users, execTokens: this.execTokens, tls: opts.tls, log: opts.log, bookmarkIntervalMs: opts.bookmarkIntervalMs });
    this.#seed(opts.demo ?? true);
  }

  #seed(demo: boolean): void {
    const reg = this.registry;
    for (const role of bootstrapClusterRoles()) reg.create(R.clusterroles, '', role);
    for (const binding of [...bootstrapClusterRoleBindings(), ...labBindings(USERS.readonly)]) reg.create(R.clusterrolebindings, '', binding);
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) reg.create(R.namespaces, '', { metadata: { name: ns } });
    const node = reg.create(R.nodes, '', {
      metadata: { name: NODE_NAME, labels: NODE_LABELS },
      spec: { podCIDR: LAB.podCidr, podCIDRs: [LAB.podCidr] },
    });
    const ts = timestamp();
    const nodeStatus: JsonObject = {
      addresses: [
        { type: 'InternalIP', address: NODE_IP },
        { type: 'Hostname', address: NODE_NAME },
      ],
      allocatable: { cpu: '2', memory: '4Gi', pods: '110', 'ephemeral-storage': '10Gi' },
      capacity: { cpu: '2', memory: '4Gi', pods: '110', 'ephemeral-storage': '10Gi' },
      conditions: [
        { type: 'MemoryPressure', status: 'False', lastHeartbeatTime: ts, lastTransitionTime: ts, reason: 'KubeletHasSufficientMemory', message: 'kubelet has sufficient memory available' },
        { type: 'DiskPressure', status: 'False', lastHeartbeatTime: ts, lastTransitionTime: ts, reason: 'KubeletHasNoDiskPressure', message: 'kubelet has no disk pressure' },
        { type: 'PIDPressure', status: 'False', lastHeartbeatTime: ts, lastTransitionTime: ts, reason: 'KubeletHasSufficientPID', message: 'kubelet has sufficient PID available' },
        { type: 'Ready', status: 'True', lastHeartbeatTime: ts, lastTransitionTime: ts, reason: 'KubeletReady', message: 'kubelet is posting ready status' },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        architecture: 'amd64',
        bootID: '',
        containerRuntimeVersion: 'ktlab://1.0.0',
        kernelVersion: '',
        kubeProxyVersion: 'v1.35.0-ktlab',
        kubeletVersion: 'v1.35.0-ktlab',
        machineID: '',
        operatingSystem: 'linux',
        osImage: 'ktlab',
        systemUUID: '',
      },
    };
    reg.update(R.nodes, '', NODE_NAME, { ...node, status: nodeStatus }, { subresource: 'status' });
    reg.create(R.services, 'kube-system', {
      metadata: { name: 'kube-dns', labels: { 'k8s-app': 'kube-dns', 'kubernetes.io/name': 'CoreDNS', 'kubernetes.io/cluster-service': 'true' } },
      spec: {
        clusterIP: LAB.clusterDnsIp,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
        ],
      },
    });
    if (!demo) return;
    reg.create(R.deployments, 'default', {
      metadata: { name: 'web', labels: { app: 'web' } },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'web', image: 'ktlab/echo', ports: [{ containerPort: 8080, name: 'http' }] }] },
        },
      },
    });
    reg.create(R.services, 'default', {
      metadata: { name: 'web', labels: { app: 'web' } },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
    });
  }

  async start(host: string, port: number): Promise<{ port: number }> {
    this.controllers.start();
    const addr = await this.server.listen(port, host);
    return { port: addr.port };
  }

  /** Stops serving and deletes every pod through the data plane. */
  async stop(): Promise<void> {
    await this.server.close();
    await this.controllers.stop();
  }
}
