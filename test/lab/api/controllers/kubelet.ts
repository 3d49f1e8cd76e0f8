/** The lab's one node's scheduler and kubelet: pods bound to the node, run through the data plane (LabNet) with their images, volumes and users, and their status written back from its events. */
import { createHash } from 'node:crypto';
import { clone, deepEqual, isObject, type Condition, type Container, type ContainerStatus, type KeyToPath, type Pod, type PodStatus } from '../json.js';
import { R } from '../registry.js';
import { metaOf, type StoreEvent } from '../store.js';
import { timestamp } from '../clock.js';
import type { ContainerRuntimeSpec, PodRuntimeSpec } from '../../net/types.js';
import { lookupImage } from '../../images/table.js';
import { NODE_NAME, NODE_IP, NODE_LABELS, asT, toJ, isTerminating, ResolveError, type PodRuntime, type ControllerContext, stripTimes, shift } from './shared.js';

export class Kubelet {
  readonly #ctx: ControllerContext;
  readonly #pods = new Map<string, PodRuntime>();

  constructor(ctx: ControllerContext) {
    this.#ctx = ctx;
  }

  /** Deletes every pod it runs through the data plane. */
  async stop(): Promise<void> {
    const all = [...this.#pods.values()];
    for (const p of all) if (p.backoffTimer) clearTimeout(p.backoffTimer);
    await Promise.allSettled(all.filter((p) => p.created || p.creating).map((p) => this.#ctx.net.deletePod(p.uid)));
    this.#pods.clear();
  }

  handle(ev: StoreEvent): void {
    const pod = asT<Pod>(ev.object);
    const uid = pod.metadata.uid;
    if (ev.type === 'DELETED') {
      const rt = this.#pods.get(uid);
      if (rt) {
        this.#pods.delete(uid);
        if (rt.backoffTimer) clearTimeout(rt.backoffTimer);
        if (rt.created || rt.creating) this.#ctx.net.deletePod(uid).catch((e: unknown) => this.#ctx.log(`deletePod ${uid}: ${String(e)}`));
      }
      return;
    }
    this.#ctx.queue.add(`pod:${uid}`, () => this.#syncPod(pod.metadata.namespace ?? '', pod.metadata.name, uid));
  }

  #syncPod(ns: string, name: string, uid: string): void {
    const o = this.#ctx.reg.tryGet(R.pods, ns, name);
    if (!o || metaOf(o).uid !== uid) return;
    const pod = asT<Pod>(o);
    let rt = this.#pods.get(uid);
    if (isTerminating(pod)) {
      if (rt?.stopping) return;
      if (!rt || (!rt.created && !rt.creating)) {
        this.#pods.delete(uid);
        this.#ctx.reg.remove(R.pods, ns, name);
        return;
      }
      rt.stopping = true;
      if (rt.backoffTimer) clearTimeout(rt.backoffTimer);
      for (const c of pod.spec.containers) this.#ctx.record(pod, 'Normal', 'Killing', `Stopping container ${c.name}`);
      const wait = rt.creating ? new Promise((r) => setTimeout(r, 200)) : Promise.resolve();
      void wait
        .then(() => this.#ctx.net.deletePod(uid))
        .catch((e: unknown) => this.#ctx.log(`deletePod ${uid}: ${String(e)}`))
        .finally(() => {
          this.#pods.delete(uid);
          const cur = this.#ctx.reg.tryGet(R.pods, ns, name);
          if (cur && metaOf(cur).uid === uid) this.#ctx.reg.remove(R.pods, ns, name);
        });
      return;
    }
    if (!pod.spec.nodeName) {
      this.#schedule(pod);
      return;
    }
    if (!rt) {
      rt = {
        uid,
        namespace: ns,
        name,
        created: false,
        creating: false,
        stopping: false,
        containers: new Map(
          pod.spec.containers.map((c) => [
            c.name,
            { name: c.name, image: c.image, state: { waiting: { reason: 'ContainerCreating' } }, lastState: {}, ready: false, started: false, restartCount: 0 },
          ]),
        ),
      };
      this.#pods.set(uid, rt);
      this.#startPod(pod, rt);
    }
  }

  #schedule(pod: Pod): void {
    const sel = pod.spec.nodeSelector ?? {};
    const fits = Object.entries(sel).every(([k, v]) => NODE_LABELS[k] === v);
    const ns = pod.metadata.namespace ?? '';
    if (!fits) {
      const already = pod.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable');
      if (already) return;
      const message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
      const next = clone(pod);
      next.status = {
        ...(next.status ?? {}),
        phase: 'Pending',
        conditions: [{ type: 'PodScheduled', status: 'False', lastProbeTime: null, lastTransitionTime: timestamp(), reason: 'Unschedulable', message }],
      };
      delete (next.metadata as { resourceVersion?: string }).resourceVersion;
      this.#ctx.reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
      this.#ctx.record(pod, 'Warning', 'FailedScheduling', message, 'default-scheduler');
      return;
    }
    const next = clone(pod);
    next.spec.nodeName = NODE_NAME;
    next.status = {
      ...(next.status ?? {}),
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: timestamp() }],
    };
    delete (next.metadata as { resourceVersion?: string }).resourceVersion;
    this.#ctx.reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
    this.#ctx.record(pod, 'Normal', 'Scheduled', `Successfully assigned ${ns}/${pod.metadata.name} to ${NODE_NAME}`, 'default-scheduler');
  }

  #startPod(pod: Pod, rt: PodRuntime): void {
    let spec: PodRuntimeSpec;
    try {
      spec = this.#runtimeSpec(pod);
      rt.blocked = undefined;
    } catch (e) {
      if (!(e instanceof ResolveError)) throw e;
      const first = rt.blocked === undefined;
      rt.blocked = { reason: e.reason, message: e.message };
      for (const c of rt.containers.values()) c.state = { waiting: e.reason === 'ContainerCreating' ? { reason: e.reason } : { reason: e.reason, message: e.message } };
      this.#writeStatus(rt);
      if (first) this.#ctx.record(pod, 'Warning', e.reason === 'ContainerCreating' ? 'FailedMount' : 'Failed', e.reason === 'ContainerCreating' ? `MountVolume.SetUp failed: ${e.message}` : `Error: ${e.message}`);
      return;
    }
    rt.creating = true;
    rt.startTime = timestamp();
    this.#writeStatus(rt);
    this.#ctx.net.createPod(spec).then(
      ({ podIP }) => {
        rt.creating = false;
        rt.created = true;
        rt.podIP = podIP;
        if (this.#pods.get(rt.uid) !== rt || rt.stopping) return;
        this.#writeStatus(rt);
      },
      (e: unknown) => {
        rt.creating = false;
        this.#ctx.log(`createPod ${pod.metadata.namespace}/${pod.metadata.name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        if (this.#pods.get(rt.uid) !== rt || rt.stopping) return;
        this.#ctx.record(pod, 'Warning', 'FailedCreatePodSandBox', `Failed to create pod sandbox: ${e instanceof Error ? e.message : String(e)}`);
        // try again later like the kubelet does
        this.#pods.delete(rt.uid);
        setTimeout(() => this.#ctx.queue.add(`pod:${rt.uid}`, () => this.#syncPod(rt.namespace, rt.name, rt.uid)), 2000).unref();
      },
    );
  }

  retryBlocked(ns?: string): void {
    if (this.#ctx.stopped) return;
    for (const rt of this.#pods.values()) {
      if (!rt.blocked || (ns !== undefined && rt.namespace !== ns)) continue;
      const o = this.#ctx.reg.tryGet(R.pods, rt.namespace, rt.name);
      if (!o || isTerminating(asT<Pod>(o))) continue;
      this.#startPod(asT<Pod>(o), rt);
    }
  }

  #runtimeSpec(pod: Pod): PodRuntimeSpec {
    const ns = pod.metadata.namespace ?? '';
    const secret = (name: string, optional: boolean | undefined, reason: string): Record<string, Buffer> | undefined => {
      const s = this.#ctx.reg.tryGet(R.secrets, ns, name);
      if (!s) {
        if (optional) return undefined;
        throw new ResolveError(reason, `secret "${name}" not found`);
      }
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(isObject(s.data) ? s.data : {})) out[k] = Buffer.from(String(v), 'base64');
      return out;
    };
    const configMap = (name: string, optional: boolean | undefined, reason: string): Record<string, Buffer> | undefined => {
      const c = this.#ctx.reg.tryGet(R.configmaps, ns, name);
      if (!c) {
        if (optional) return undefined;
        throw new ResolveError(reason, `configmap "${name}" not found`);
      }
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(isObject(c.data) ? c.data : {})) out[k] = Buffer.from(String(v));
      for (const [k, v] of Object.entries(isObject(c.binaryData) ? c.binaryData : {})) out[k] = Buffer.from(String(v), 'base64');
      return out;
    };
    // Secret, ConfigMap and projected volumes as the kubelet's volume plugins write them
    // (pkg/volume/secret, configmap, projected: MakePayload): `items` pick and rename keys, each
    // file gets its item's mode, else the volume's defaultMode, else 0644
    // (SecretVolumeSourceDefaultMode / ConfigMapVolumeSourceDefaultMode).
    interface VolumeFiles {
      files: Record<string, Buffer>;
      modes: Record<string, number>;
    }
    const DEFAULT_MODE = 0o644;
    const payload = (into: VolumeFiles, data: Record<string, Buffer>, items: KeyToPath[] | undefined, defaultMode: number, what: string): void => {
      if (!items) {
        for (const [k, v] of Object.entries(data)) {
          into.files[k] = v;
          into.modes[k] = defaultMode;
        }
        return;
      }
      for (const it of items) {
        if (data[it.key] === undefined) throw new ResolveError('ContainerCreating', `${what} references non-existent ${what === 'configmap' ? 'config' : 'secret'} key: ${it.key}`);
        into.files[it.path] = data[it.key]!;
        into.modes[it.path] = it.mode ?? defaultMode;
      }
    };
    const volumes = new Map<string, VolumeFiles>();
    for (const v of pod.spec.volumes ?? []) {
      const vf: VolumeFiles = { files: {}, modes: {} };
      if (v.secret) payload(vf, secret(v.secret.secretName, v.secret.optional, 'ContainerCreating') ?? {}, v.secret.items, v.secret.defaultMode ?? DEFAULT_MODE, 'secret');
      else if (v.configMap) payload(vf, configMap(v.configMap.name, v.configMap.optional, 'ContainerCreating') ?? {}, v.configMap.items, v.configMap.defaultMode ?? DEFAULT_MODE, 'configmap');
      else if (v.projected) {
        const mode = v.projected.defaultMode ?? DEFAULT_MODE;
        for (const src of v.projected.sources ?? []) {
          if (src.secret) payload(vf, secret(src.secret.name, src.secret.optional, 'ContainerCreating') ?? {}, src.secret.items, mode, 'secret');
          else if (src.configMap) payload(vf, configMap(src.configMap.name, src.configMap.optional, 'ContainerCreating') ?? {}, src.configMap.items, mode, 'configmap');
        }
      }
      volumes.set(v.name, vf);
    }
    const portOf = (c: Container, p: number | string): number => {
      if (typeof p === 'number') return p;
      const found = (c.ports ?? []).find((x) => x.name === p);
      return found ? found.containerPort : Number(p);
    };
    const containers: ContainerRuntimeSpec[] = pod.spec.containers.map((c) => {
      const user = this.#effectiveUser(pod, c);
      const env: ContainerRuntimeSpec['env'] = [];
      for (const from of c.envFrom ?? []) {
        const data = from.secretRef
          ? secret(from.secretRef.name, from.secretRef.optional, 'CreateContainerConfigError')
          : from.configMapRef
            ? configMap(from.configMapRef.name, from.configMapRef.optional, 'CreateContainerConfigError')
            : undefined;
        for (const [k, v] of Object.entries(data ?? {})) env.push({ name: `${from.prefix ?? ''}${k}`, value: v.toString() });
      }
      for (const e of c.env ?? []) {
        if (e.valueFrom?.secretKeyRef) {
          const ref = e.valueFrom.secretKeyRef;
          const data = secret(ref.name, ref.optional, 'CreateContainerConfigError');
          if (data && data[ref.key] === undefined && !ref.optional) throw new ResolveError('CreateContainerConfigError', `couldn't find key ${ref.key} in Secret ${ns}/${ref.name}`);
          if (data && data[ref.key] !== undefined) env.push({ name: e.name, value: data[ref.key].toString() });
        } else if (e.valueFrom?.configMapKeyRef) {
          const ref = e.valueFrom.configMapKeyRef;
          const data = configMap(ref.name, ref.optional, 'CreateContainerConfigError');
          if (data && data[ref.key] === undefined && !ref.optional) throw new ResolveError('CreateContainerConfigError', `couldn't find key ${ref.key} in ConfigMap ${ns}/${ref.name}`);
          if (data && data[ref.key] !== undefined) env.push({ name: e.name, value: data[ref.key].toString() });
        } else if (e.valueFrom?.fieldRef) {
          env.push({ name: e.name, fieldPath: e.valueFrom.fieldRef.fieldPath });
        } else {
          // a value is expanded ($(VAR)) where the fieldRefs are known: the data plane (net/pods.ts)
          env.push({ name: e.name, value: e.value ?? '', expand: true });
        }
      }
      const probe = c.readinessProbe;
      let readinessProbe: ContainerRuntimeSpec['readinessProbe'];
      if (probe?.tcpSocket) readinessProbe = { tcpSocket: { port: portOf(c, probe.tcpSocket.port) } };
      else if (probe?.httpGet) readinessProbe = { httpGet: { port: portOf(c, probe.httpGet.port), path: probe.httpGet.path ?? '/' } };
      return {
        name: c.name,
        image: c.image,
        command: c.command,
        args: c.args,
        env,
        ports: (c.ports ?? []).map((p) => ({ containerPort: p.containerPort, name: p.name, protocol: p.protocol === 'UDP' ? 'UDP' : 'TCP' })),
        volumeMounts: (c.volumeMounts ?? []).map((m) => {
          let { files, modes } = volumes.get(m.name) ?? { files: {}, modes: {} };
          if (m.subPath) {
            files = files[m.subPath] !== undefined ? { [m.subPath]: files[m.subPath]! } : {};
            modes = modes[m.subPath] !== undefined ? { [m.subPath]: modes[m.subPath]! } : {};
          }
          return { mountPath: m.mountPath, readOnly: m.readOnly ?? false, files, modes };
        }),
        readinessProbe,
        runAsUser: user.uid,
        runAsGroup: user.gid,
      };
    });
    return {
      uid: pod.metadata.uid,
      namespace: ns,
      name: pod.metadata.name,
      containers,
      restartPolicy: pod.spec.restartPolicy ?? 'Always',
      terminationGracePeriodSeconds: pod.spec.terminationGracePeriodSeconds ?? 30,
      sysctls: pod.spec.securityContext?.sysctls,
      fsGroup: pod.spec.securityContext?.fsGroup,
    };
  }

  /**
   * The user a container runs as: its securityContext's, else the pod's, else the image's own
   * (the lab's image table); refused as a kubelet refuses it when runAsNonRoot is set and the
   * user would be root (pkg/kubelet/kuberuntime/security_context_others.go, verifyRunAsNonRoot;
   * the pod named as format.Pod writes it: name_namespace(uid)).
   */
  #effectiveUser(pod: Pod, c: Container): { uid: number; gid: number } {
    const sc = c.securityContext;
    const psc = pod.spec.securityContext;
    const found = lookupImage(c.image);
    const imageUid = 'image' in found ? found.image.uid : 0;
    const runAsUser = sc?.runAsUser ?? psc?.runAsUser;
    const runAsNonRoot = sc?.runAsNonRoot ?? psc?.runAsNonRoot;
    const where = `(pod: "${pod.metadata.name}_${pod.metadata.namespace ?? ''}(${pod.metadata.uid})", container: ${c.name})`;
    if (runAsNonRoot === true) {
      if (runAsUser === 0) throw new ResolveError('CreateContainerConfigError', `container's runAsUser breaks non-root policy ${where}`);
      if (runAsUser === undefined && imageUid === 0) throw new ResolveError('CreateContainerConfigError', `container has runAsNonRoot and image will run as root ${where}`);
    }
    const uid = runAsUser ?? imageUid;
    // without runAsGroup: the user's primary group from the image's /etc/passwd (in the lab's
    // images each user's group has its uid), else 0, as containerd does for an unknown uid
    const known = 'image' in found && Object.values(found.image.users).includes(uid);
    return { uid, gid: sc?.runAsGroup ?? psc?.runAsGroup ?? (known ? uid : 0) };
  }

  #podFor(uid: string): { rt: PodRuntime; pod: Pod } | undefined {
    const rt = this.#pods.get(uid);
    if (!rt || rt.stopping) return undefined;
    const o = this.#ctx.reg.tryGet(R.pods, rt.namespace, rt.name);
    if (!o || metaOf(o).uid !== uid) return undefined;
    return { rt, pod: asT<Pod>(o) };
  }

  readonly onStarted = (uid: string, container: string, startedAt: Date, restartCount: number): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const first = !c.started && restartCount === 0;
    c.state = { running: { startedAt: timestamp(shift(startedAt)) } };
    c.started = true;
    c.restartCount = restartCount;
    c.ready = false;
    this.#writeStatus(f.rt);
    if (first) {
      const spec = f.pod.spec.containers.find((x) => x.name === container);
      this.#ctx.record(f.pod, 'Normal', 'Pulled', `Container image "${spec?.image ?? ''}" already present on machine`);
      this.#ctx.record(f.pod, 'Normal', 'Created', `Created container: ${container}`);
      this.#ctx.record(f.pod, 'Normal', 'Started', `Started container ${container}`);
    }
  };

  readonly onReady = (uid: string, container: string, ready: boolean): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    c.ready = ready && c.state.running !== undefined;
    this.#writeStatus(f.rt);
  };

  readonly onExited = (uid: string, container: string, exitCode: number, reason: string, finishedAt: Date): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const policy = f.pod.spec.restartPolicy ?? 'Always';
    const terminated = {
      exitCode,
      reason: reason || (exitCode === 0 ? 'Completed' : 'Error'),
      startedAt: c.state.running?.startedAt,
      finishedAt: timestamp(shift(finishedAt)),
    };
    if (terminated.startedAt === undefined) delete terminated.startedAt;
    c.ready = false;
    const restarts = policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0);
    if (restarts) {
      c.lastState = { terminated };
      c.state = { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${Math.min(300, 10 * 2 ** c.restartCount)}s restarting failed container=${container} pod=${f.pod.metadata.name}_${f.pod.metadata.namespace}(${uid})` } };
      this.#ctx.record(f.pod, 'Warning', 'BackOff', `Back-off restarting failed container ${container} in pod ${f.pod.metadata.name}_${f.pod.metadata.namespace}(${uid})`);
    } else {
      c.state = { terminated };
    }
    this.#writeStatus(f.rt);
  };

  readonly onWaiting = (uid: string, container: string, reason: string, message: string): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    c.state = { waiting: { reason, message } };
    c.ready = false;
    this.#writeStatus(f.rt);
  };

  readonly onPullFailed = (uid: string, container: string, image: string, message: string): void => {
    const f = this.#podFor(uid);
    const c = f?.rt.containers.get(container);
    if (!f || !c) return;
    const wasPulling = c.state.waiting?.reason === 'ErrImagePull';
    c.state = { waiting: { reason: wasPulling ? 'ImagePullBackOff' : 'ErrImagePull', message: wasPulling ? `Back-off pulling image "${image}"` : message } };
    c.ready = false;
    this.#writeStatus(f.rt);
    if (!wasPulling) {
      this.#ctx.record(f.pod, 'Warning', 'Failed', `Failed to pull image "${image}": ${message}`);
      this.#ctx.record(f.pod, 'Warning', 'Failed', 'Error: ErrImagePull');
      if (f.rt.backoffTimer) clearTimeout(f.rt.backoffTimer);
      f.rt.backoffTimer = setTimeout(() => {
        const g = this.#podFor(uid);
        const cc = g?.rt.containers.get(container);
        if (!g || !cc || cc.state.waiting?.reason !== 'ErrImagePull') return;
        cc.state = { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${image}"` } };
        this.#writeStatus(g.rt);
        this.#ctx.record(g.pod, 'Normal', 'BackOff', `Back-off pulling image "${image}"`);
      }, 2000);
      f.rt.backoffTimer.unref();
    }
  };

  /** Derives the pod's status (phase, conditions, containerStatuses) from the runtime state. */
  #writeStatus(rt: PodRuntime): void {
    const o = this.#ctx.reg.tryGet(R.pods, rt.namespace, rt.name);
    if (!o || metaOf(o).uid !== rt.uid) return;
    const pod = asT<Pod>(o);
    const prev = pod.status ?? {};
    const cs: ContainerStatus[] = [...rt.containers.values()].map((c) => ({
      name: c.name,
      state: c.state,
      lastState: c.lastState,
      ready: c.ready,
      restartCount: c.restartCount,
      image: c.image,
      imageID: c.started ? `ktlab/${c.image}@sha256:${createHash('sha256').update(c.image).digest('hex')}` : '',
      containerID: c.started ? `ktlab://${createHash('sha256').update(`${rt.uid}/${c.name}/${c.restartCount}`).digest('hex')}` : undefined,
      started: c.state.running !== undefined,
    }));
    for (const s of cs) if (s.containerID === undefined) delete s.containerID;
    const all = [...rt.containers.values()];
    const policy = pod.spec.restartPolicy ?? 'Always';
    let phase: PodStatus['phase'] = 'Pending';
    const allTerminated = all.every((c) => c.state.terminated !== undefined);
    if (rt.podIP && allTerminated) phase = all.every((c) => c.state.terminated!.exitCode === 0) ? 'Succeeded' : 'Failed';
    else if (rt.podIP && all.some((c) => c.started || c.restartCount > 0 || c.lastState.terminated)) phase = 'Running';
    if (policy === 'Always' && phase !== 'Running' && phase !== 'Pending') phase = 'Running';
    const containersReady = rt.podIP !== undefined && all.every((c) => c.ready);
    const prevConds = prev.conditions ?? [];
    const cond = (type: string, ok: boolean, reason?: string, message?: string): Condition => {
      const old = prevConds.find((c) => c.type === type);
      const status = ok ? 'True' : 'False';
      const c: Condition = { type, status, lastProbeTime: null, lastTransitionTime: old && old.status === status ? old.lastTransitionTime : timestamp() };
      if (!ok && reason) c.reason = reason;
      if (!ok && message) c.message = message;
      return c;
    };
    const notReady = all.filter((c) => !c.ready).map((c) => c.name);
    const notReadyMsg = `containers with unready status: [${notReady.join(' ')}]`;
    const status: PodStatus = {
      phase,
      conditions: [
        cond('PodReadyToStartContainers', rt.podIP !== undefined),
        cond('Initialized', true),
        cond('Ready', containersReady, 'ContainersNotReady', notReadyMsg),
        cond('ContainersReady', containersReady, 'ContainersNotReady', notReadyMsg),
        cond('PodScheduled', true),
      ],
      hostIP: NODE_IP,
      hostIPs: [{ ip: NODE_IP }],
      startTime: rt.startTime,
      containerStatuses: cs,
      qosClass: prev.qosClass ?? 'BestEffort',
    };
    if (rt.podIP) {
      status.podIP = rt.podIP;
      status.podIPs = [{ ip: rt.podIP }];
    }
    if (deepEqual(stripTimes(prev), stripTimes(status))) return;
    const next = clone(pod);
    next.status = status;
    delete (next.metadata as { resourceVersion?: string }).resourceVersion;
    this.#ctx.reg.store.update(R.pods, toJ(next), { bumpGeneration: false });
  }
}
