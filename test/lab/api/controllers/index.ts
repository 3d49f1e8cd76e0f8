/**
 * The controllers of the lab, one file each: namespace lifecycle (namespace.ts), deployment ->
 * replicaset -> pods (deployment.ts, replicaset.ts), a one-node scheduler + kubelet that runs pods
 * through the data plane (LabNet) and reports their status (kubelet.ts), and endpoints from service
 * selectors with the sync of services and DNS records into the data plane (endpoints.ts). This file
 * routes the store's events to them and records Events for them.
 */
import { randomBytes } from 'node:crypto';
import type { JsonObject, KObject } from '../json.js';
import { R, randomSuffix, type Registry } from '../registry.js';
import { metaOf, type StoreEvent } from '../store.js';
import { timestamp } from '../clock.js';
import type { LabNet } from '../../net/types.js';
import { DeploymentController } from './deployment.js';
import { EndpointsController } from './endpoints.js';
import { Kubelet } from './kubelet.js';
import { NamespaceController } from './namespace.js';
import { ReplicaSetController } from './replicaset.js';
import { NODE_NAME, Queue, type ControllerContext } from './shared.js';

export { NODE_IP, NODE_LABELS, NODE_NAME, templateHash } from './shared.js';
export { randomSuffix };

export interface ControllerOptions {
  registry: Registry;
  net: LabNet;
  log?: (line: string) => void;
}

export class Controllers {
  readonly #reg: Registry;
  readonly #net: LabNet;
  readonly #log: (line: string) => void;
  readonly #queue: Queue;
  #retryTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #onStoreEvent = (ev: StoreEvent): void => this.#route(ev);
  readonly #namespaces: NamespaceController;
  readonly #deployments: DeploymentController;
  readonly #replicaSets: ReplicaSetController;
  readonly #kubeletCtl: Kubelet;
  readonly #endpoints: EndpointsController;

  constructor(opts: ControllerOptions) {
    this.#reg = opts.registry;
    this.#net = opts.net;
    this.#log = opts.log ?? (() => undefined);
    this.#queue = new Queue((e) => this.#log(`controller error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
    const self = this;
    const ctx: ControllerContext = {
      reg: this.#reg,
      net: this.#net,
      log: this.#log,
      queue: this.#queue,
      get stopped() {
        return self.#stopped;
      },
      record: (involved, type, reason, message, component) => this.#record(involved, type, reason, message, component),
    };
    this.#namespaces = new NamespaceController(ctx);
    this.#deployments = new DeploymentController(ctx);
    this.#replicaSets = new ReplicaSetController(ctx);
    this.#kubeletCtl = new Kubelet(ctx);
    this.#endpoints = new EndpointsController(ctx);
  }

  start(): void {
    this.#reg.store.events.on('event', this.#onStoreEvent);
    this.#net.events.on('containerStarted', this.#kubeletCtl.onStarted);
    this.#net.events.on('containerReady', this.#kubeletCtl.onReady);
    this.#net.events.on('containerExited', this.#kubeletCtl.onExited);
    this.#net.events.on('imagePullFailed', this.#kubeletCtl.onPullFailed);
    this.#net.events.on('containerWaiting', this.#kubeletCtl.onWaiting);
    this.#retryTimer = setInterval(() => this.#kubeletCtl.retryBlocked(), 2000);
    // pick up what exists already
    for (const info of [R.namespaces, R.deployments, R.replicasets, R.pods]) {
      for (const o of this.#reg.store.list(info)) this.#route({ type: 'ADDED', resource: `${info.group}/${info.name}`, rv: 0, object: o });
    }
    this.#endpoints.scheduleSync();
  }

  /** Stops reacting and deletes every pod through the data plane. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#reg.store.events.off('event', this.#onStoreEvent);
    this.#net.events.off('containerStarted', this.#kubeletCtl.onStarted);
    this.#net.events.off('containerReady', this.#kubeletCtl.onReady);
    this.#net.events.off('containerExited', this.#kubeletCtl.onExited);
    this.#net.events.off('imagePullFailed', this.#kubeletCtl.onPullFailed);
    this.#net.events.off('containerWaiting', this.#kubeletCtl.onWaiting);
    if (this.#retryTimer) clearInterval(this.#retryTimer);
    this.#endpoints.stop();
    this.#replicaSets.stop();
    await this.#kubeletCtl.stop();
  }

  #route(ev: StoreEvent): void {
    if (this.#stopped) return;
    const m = metaOf(ev.object);
    const ns = m.namespace ?? '';
    switch (ev.resource) {
      case '/namespaces':
        this.#queue.add(`ns:${m.name}`, () => this.#namespaces.reconcile(m.name!));
        break;
      case 'apps/deployments':
        this.#queue.add(`deploy:${ns}/${m.name}`, () => this.#deployments.reconcile(ns, m.name!));
        break;
      case 'apps/replicasets': {
        this.#queue.add(`rs:${ns}/${m.name}`, () => this.#replicaSets.reconcile(ns, m.name!));
        const owner = m.ownerReferences?.find((r) => r.controller && r.kind === 'Deployment');
        if (owner) this.#queue.add(`deploy:${ns}/${owner.name}`, () => this.#deployments.reconcile(ns, owner.name));
        break;
      }
      case '/pods': {
        const owner = m.ownerReferences?.find((r) => r.controller && r.kind === 'ReplicaSet');
        if (owner) this.#queue.add(`rs:${ns}/${owner.name}`, () => this.#replicaSets.reconcile(ns, owner.name));
        this.#kubeletCtl.handle(ev);
        this.#endpoints.scheduleSync();
        const nsObj = this.#reg.tryGet(R.namespaces, '', ns);
        if (nsObj && metaOf(nsObj).deletionTimestamp) this.#queue.add(`ns:${ns}`, () => this.#namespaces.reconcile(ns));
        break;
      }
      case '/services':
      case '/endpoints':
        this.#endpoints.scheduleSync();
        break;
      case '/secrets':
      case '/configmaps':
        if (ev.type !== 'DELETED') this.#queue.add(`retry:${ns}`, () => this.#kubeletCtl.retryBlocked(ns));
        break;
    }
    if (ev.type === 'DELETED' && ns !== '' && ev.resource !== '/pods') {
      const nsObj = this.#reg.tryGet(R.namespaces, '', ns);
      if (nsObj && metaOf(nsObj).deletionTimestamp) this.#queue.add(`ns:${ns}`, () => this.#namespaces.reconcile(ns));
    }
  }

  // ---- events (the Event kind) ----


  #record(involved: KObject, type: 'Normal' | 'Warning', reason: string, message: string, component = 'kubelet'): void {
    const ns = involved.metadata.namespace ?? 'default';
    const ts = timestamp();
    try {
      this.#reg.create(R.events, ns, {
        metadata: { name: `${involved.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: ns },
        involvedObject: {
          kind: involved.kind,
          namespace: ns,
          name: involved.metadata.name,
          uid: involved.metadata.uid,
          apiVersion: involved.apiVersion,
          resourceVersion: involved.metadata.resourceVersion,
        },
        reason,
        message,
        source: { component, host: component === 'kubelet' ? NODE_NAME : undefined } as JsonObject,
        firstTimestamp: ts,
        lastTimestamp: ts,
        count: 1,
        type,
        eventTime: null,
        reportingComponent: component,
        reportingInstance: component === 'kubelet' ? NODE_NAME : '',
      });
    } catch {
      // the namespace may be terminating: events are best effort
    }
  }
}
