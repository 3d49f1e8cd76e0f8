/**
 * The lab's API server through @kubernetes/client-node: discovery, CRUD, selectors, the three
 * patch kinds, watch (with bookmarks), Status bodies for bad input, the read-only user,
 * controllers (deployment -> replicaset -> pods, scale, cascading delete), pod status details,
 * services, secrets, custom resources, logs and exec.
 */
import test from 'ava';
import https from 'node:https';
import fs from 'node:fs';
import { PassThrough } from 'node:stream';
import {
  ApiException,
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  Exec,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type KubeConfig,
  type V1Deployment,
  type V1Pod,
} from '@kubernetes/client-node';
import { eventually, fileNamespace, kubeConfig, lab, waitForReadyPods } from './lab/fixture.js';

const ns = fileNamespace(test, 'lt-api');
const kc = (): KubeConfig => kubeConfig();
const core = (): CoreV1Api => kc().makeApiClient(CoreV1Api);
const apps = (): AppsV1Api => kc().makeApiClient(AppsV1Api);

interface Status {
  kind: string;
  status: string;
  message: string;
  reason: string;
  code: number;
  details?: { name?: string; kind?: string; group?: string; causes?: Array<{ reason: string; message: string; field?: string }> };
}

async function apiError(p: Promise<unknown>): Promise<{ code: number; status: Status }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) {
      const body: unknown = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
      return { code: e.code, status: body as Status };
    }
    throw e;
  }
  throw new Error('the request succeeded but an error was expected');
}

/** A raw HTTPS request to the lab (for what client-node cannot send: no token, broken JSON). */
function raw(method: string, path: string, opts: { body?: string; token?: string | null; contentType?: string } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const config = kc();
  const cluster = config.getCurrentCluster()!;
  const token = opts.token === undefined ? config.getCurrentUser()!.token : opts.token;
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(path, cluster.server),
      {
        method,
        ca: Buffer.from(cluster.caData!, 'base64'),
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': opts.contentType ?? 'application/json', Accept: 'application/json' },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

function echoDeployment(name: string, replicas: number, labels: Record<string, string>): V1Deployment {
  return {
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080, name: 'http' }] }] } },
    },
  };
}

test('discovery: version, groups, resources with subresources', async (t) => {
  const v = JSON.parse((await raw('GET', '/version')).body) as { major: string; gitVersion: string };
  t.is(v.major, '1');
  const apis = JSON.parse((await raw('GET', '/apis')).body) as { groups: Array<{ name: string }> };
  const groups = apis.groups.map((g) => g.name);
  for (const g of ['apps', 'authorization.k8s.io', 'networking.istio.io']) t.true(groups.includes(g), g);
  const v1 = JSON.parse((await raw('GET', '/api/v1')).body) as { resources: Array<{ name: string }> };
  const names = v1.resources.map((r) => r.name);
  for (const r of ['pods', 'pods/portforward', 'pods/exec', 'pods/log', 'pods/status', 'services', 'endpoints', 'configmaps', 'secrets', 'serviceaccounts', 'events', 'namespaces', 'nodes']) {
    t.true(names.includes(r), r);
  }
  const appsV1 = JSON.parse((await raw('GET', '/apis/apps/v1')).body) as { resources: Array<{ name: string }> };
  t.true(appsV1.resources.some((r) => r.name === 'deployments/scale'));
});

test('no or a wrong bearer token: 401 Status', async (t) => {
  for (const token of [null, 'not-a-token']) {
    const r = await raw('GET', '/api/v1/namespaces', { token });
    t.is(r.status, 401);
    const s = JSON.parse(r.body) as Status;
    t.like(s, { kind: 'Status', status: 'Failure', reason: 'Unauthorized', code: 401 });
  }
});

test('configmaps: create, get, list with label and field selectors, delete', async (t) => {
  const api = core();
  const mk = (name: string, labels: Record<string, string>): Promise<unknown> => api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name, labels }, data: { k: name } } });
  await mk('sel-a', { tier: 'front', env: 'prod' });
  await mk('sel-b', { tier: 'back', env: 'prod' });
  await mk('sel-c', { tier: 'back' });
  const got = await api.readNamespacedConfigMap({ namespace: ns, name: 'sel-a' });
  t.is(got.data?.k, 'sel-a');
  t.truthy(got.metadata?.uid);
  t.truthy(got.metadata?.resourceVersion);
  t.truthy(got.metadata?.creationTimestamp);
  const names = async (labelSelector?: string, fieldSelector?: string): Promise<string[]> => {
    const l = await api.listNamespacedConfigMap({ namespace: ns, labelSelector, fieldSelector });
    t.truthy(l.metadata?.resourceVersion);
    return l.items.map((i) => i.metadata!.name!).filter((n) => n.startsWith('sel-')).sort();
  };
  t.deepEqual(await names('tier=back'), ['sel-b', 'sel-c']);
  t.deepEqual(await names('tier==front'), ['sel-a']);
  t.deepEqual(await names('tier!=front'), ['sel-b', 'sel-c']);
  t.deepEqual(await names('tier in (front,middle)'), ['sel-a']);
  t.deepEqual(await names('env notin (prod)'), ['sel-c']);
  t.deepEqual(await names('env'), ['sel-a', 'sel-b']);
  t.deepEqual(await names('!env'), ['sel-c']);
  t.deepEqual(await names('tier=back,env=prod'), ['sel-b']);
  t.deepEqual(await names(undefined, 'metadata.name=sel-b'), ['sel-b']);
  t.deepEqual(await names(undefined, `metadata.namespace=${ns},metadata.name!=sel-b`), ['sel-a', 'sel-c']);
  await api.deleteNamespacedConfigMap({ namespace: ns, name: 'sel-c' });
  const gone = await apiError(api.readNamespacedConfigMap({ namespace: ns, name: 'sel-c' }));
  t.is(gone.code, 404);
  t.like(gone.status, { kind: 'Status', reason: 'NotFound', message: 'configmaps "sel-c" not found', details: { name: 'sel-c', kind: 'configmaps' } });
});

test('replace with a stale resourceVersion is 409 Conflict; patches: merge, strategic, JSON', async (t) => {
  const api = core();
  const cm = await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'patchme', labels: { a: '1' } }, data: { x: '1', y: '2' } } });
  const stale = cm.metadata!.resourceVersion!;
  await api.replaceNamespacedConfigMap({ namespace: ns, name: 'patchme', body: { ...cm, data: { x: '10' } } });
  const c = await apiError(api.replaceNamespacedConfigMap({ namespace: ns, name: 'patchme', body: { ...cm, metadata: { ...cm.metadata, resourceVersion: stale }, data: { x: '11' } } }));
  t.is(c.code, 409);
  t.is(c.status.reason, 'Conflict');
  t.regex(c.status.message, /^Operation cannot be fulfilled on configmaps "patchme": the object has been modified/);

  const merged = await api.patchNamespacedConfigMap(
    { namespace: ns, name: 'patchme', body: { metadata: { labels: { b: '2' } }, data: { y: 'new', x: null } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  t.deepEqual(merged.metadata?.labels, { a: '1', b: '2' });
  t.deepEqual(merged.data, { y: 'new' });

  const jp = await api.patchNamespacedConfigMap(
    { namespace: ns, name: 'patchme', body: [{ op: 'add', path: '/data/z', value: 'zz' }, { op: 'remove', path: '/metadata/labels/a' }, { op: 'test', path: '/data/y', value: 'new' }] },
    setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
  );
  t.deepEqual(jp.data, { y: 'new', z: 'zz' });
  t.deepEqual(jp.metadata?.labels, { b: '2' });
  const failed = await apiError(
    api.patchNamespacedConfigMap({ namespace: ns, name: 'patchme', body: [{ op: 'test', path: '/data/y', value: 'old' }] }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch)),
  );
  t.is(failed.code, 422);

  // strategic merge: containers merge by name, env by name, ports by containerPort
  const d = echoDeployment('smp', 0, { app: 'smp' });
  d.spec!.template.spec!.containers[0].env = [{ name: 'A', value: '1' }];
  await apps().createNamespacedDeployment({ namespace: ns, body: d });
  const patched = await apps().patchNamespacedDeployment(
    {
      namespace: ns,
      name: 'smp',
      body: { spec: { template: { spec: { containers: [{ name: 'echo', env: [{ name: 'B', value: '2' }], ports: [{ containerPort: 9090 }] }] } } } },
    },
    setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
  );
  const c0 = patched.spec!.template.spec!.containers[0];
  t.is(patched.spec!.template.spec!.containers.length, 1);
  t.is(c0.image, 'ktlab/echo');
  t.deepEqual(c0.env?.map((e) => e.name), ['A', 'B']);
  t.deepEqual(c0.ports?.map((p) => p.containerPort), [8080, 9090]);
  t.is(patched.metadata?.generation, 2, 'a spec change bumps generation');
});

test('bad input gets the Status a real API server sends, and the lab keeps serving', async (t) => {
  const api = core();
  const missingNs = await apiError(api.createNamespacedConfigMap({ namespace: 'nope-nope-nope', body: { metadata: { name: 'x' } } }));
  t.is(missingNs.code, 404);
  t.is(missingNs.status.message, 'namespaces "nope-nope-nope" not found');

  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'dup' } } });
  const dup = await apiError(api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'dup' } } }));
  t.is(dup.code, 409);
  t.like(dup.status, { reason: 'AlreadyExists', message: 'configmaps "dup" already exists' });

  const bad = await apiError(api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'Bad_Name' } } }));
  t.is(bad.code, 422);
  t.is(bad.status.reason, 'Invalid');
  t.regex(bad.status.message, /^ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain/);
  t.is(bad.status.details?.causes?.[0]?.field, 'metadata.name');
  t.is(bad.status.details?.causes?.[0]?.reason, 'FieldValueInvalid');

  const noContainers = await apiError(api.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'empty' }, spec: { containers: [] } } }));
  t.is(noContainers.code, 422);
  t.regex(noContainers.status.message, /spec.containers: Required value/);

  const broken = await raw('POST', `/api/v1/namespaces/${ns}/configmaps`, { body: '{"metadata": {"name": ' });
  t.is(broken.status, 400);
  t.like(JSON.parse(broken.body) as Status, { kind: 'Status', reason: 'BadRequest', code: 400 });

  const unknownKind = await raw('GET', `/api/v1/namespaces/${ns}/widgets`);
  t.is(unknownKind.status, 404);
  t.is((JSON.parse(unknownKind.body) as Status).reason, 'NotFound');

  const badSelector = await raw('GET', `/api/v1/namespaces/${ns}/configmaps?labelSelector=${encodeURIComponent('a in (b')}`);
  t.is(badSelector.status, 400);

  const notAllowed = await raw('POST', `/api/v1/namespaces/${ns}/configmaps/dup`, { body: '{}' });
  t.is(notAllowed.status, 405);
  t.is((JSON.parse(notAllowed.body) as Status).reason, 'MethodNotAllowed');

  const badPatchType = await raw('PATCH', `/api/v1/namespaces/${ns}/configmaps/dup`, { body: '{}', contentType: 'text/plain' });
  t.is(badPatchType.status, 415);

  const v = await raw('GET', '/version');
  t.is(v.status, 200, 'still serving');
});

test('the read-only user may get, list and watch, and gets the real 403 message for the rest', async (t) => {
  const ro = kubeConfig('readonly').makeApiClient(CoreV1Api);
  await core().createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'ro-visible' } } });
  t.is((await ro.readNamespacedConfigMap({ namespace: ns, name: 'ro-visible' })).metadata?.name, 'ro-visible');
  t.true((await ro.listNamespacedConfigMap({ namespace: ns })).items.length > 0);
  const create = await apiError(ro.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'x' }, spec: { containers: [{ name: 'c', image: 'ktlab/echo' }] } } }));
  t.is(create.code, 403);
  t.is(create.status.reason, 'Forbidden');
  t.is(create.status.message, `pods is forbidden: User "lab-readonly" cannot create resource "pods" in API group "" in the namespace "${ns}"`);
  const del = await apiError(ro.deleteNamespacedConfigMap({ namespace: ns, name: 'ro-visible' }));
  t.is(del.status.message, `configmaps "ro-visible" is forbidden: User "lab-readonly" cannot delete resource "configmaps" in API group "" in the namespace "${ns}"`);

  const review = async (config: KubeConfig, verb: string, resource: string): Promise<boolean> => {
    const r = await config.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: { namespace: ns, verb, resource } } } });
    return r.status?.allowed ?? false;
  };
  t.true(await review(kc(), 'create', 'pods'));
  t.false(await review(kubeConfig('readonly'), 'create', 'pods'));
  t.true(await review(kubeConfig('readonly'), 'list', 'pods'));
  t.false(await review(kubeConfig('readonly'), 'create', 'pods/portforward'));
});

test('watch: ADDED, MODIFIED, DELETED in order, from a resourceVersion, and BOOKMARKs on an idle watch', async (t) => {
  const api = core();
  const seen: string[] = [];
  const base = await api.listNamespacedConfigMap({ namespace: ns, labelSelector: 'watched=yes' });
  let bookmarks = 0;
  const done = new Promise<void>((resolve, reject) => {
    void new Watch(kc())
      .watch(
        `/api/v1/namespaces/${ns}/configmaps`,
        { labelSelector: 'watched=yes', resourceVersion: base.metadata!.resourceVersion, allowWatchBookmarks: true },
        (type, obj: { metadata?: { name?: string } }) => {
          if (type === 'BOOKMARK') {
            bookmarks++;
            return;
          }
          seen.push(`${type} ${obj.metadata?.name}`);
          if (type === 'DELETED') resolve();
        },
        (err: unknown) => (err ? reject(err as Error) : undefined),
      )
      .then((ctl) => t.teardown(() => ctl.abort()));
  });
  await new Promise((r) => setTimeout(r, 200));
  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'w1', labels: { watched: 'yes' } } } });
  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'unwatched' } } });
  await api.patchNamespacedConfigMap({ namespace: ns, name: 'w1', body: { data: { a: 'b' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await api.deleteNamespacedConfigMap({ namespace: ns, name: 'w1' });
  await done;
  t.deepEqual(seen, ['ADDED w1', 'MODIFIED w1', 'DELETED w1']);
  // an idle watch gets BOOKMARKs (every 5 s) long before client-node's 30 s inactivity timeout
  await eventually(async () => (bookmarks > 0 ? true : undefined), 'a BOOKMARK event', 12_000);
  t.pass();
});

test('generateName, secrets with stringData, default service account', async (t) => {
  const api = core();
  const cm = await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { generateName: 'gen-' } } });
  t.regex(cm.metadata!.name!, /^gen-[a-z0-9]{5}$/);
  const s = await api.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'sec' }, data: { a: Buffer.from('A').toString('base64') }, stringData: { b: 'B' } } });
  t.is(s.type, 'Opaque');
  t.deepEqual(s.data, { a: 'QQ==', b: 'Qg==' });
  const sa = await eventually(() => api.readNamespacedServiceAccount({ namespace: ns, name: 'default' }), 'the default service account');
  t.is(sa.metadata?.name, 'default');
});

test('services: ClusterIP allocation, an explicit ClusterIP, a taken one, LoadBalancer', async (t) => {
  const api = core();
  const a = await api.createNamespacedService({ namespace: ns, body: { metadata: { name: 'svc-a' }, spec: { selector: { app: 'none' }, ports: [{ port: 80 }] } } });
  t.regex(a.spec!.clusterIP!, /^198\.19\.\d+\.\d+$/);
  t.not(a.spec!.clusterIP, '198.19.0.10');
  t.is(a.spec!.ports![0].targetPort, 80);
  t.is(a.spec!.ports![0].protocol, 'TCP');
  const explicit = `198.19.${200 + Math.floor(Math.random() * 50)}.${1 + Math.floor(Math.random() * 250)}`;
  const b = await api.createNamespacedService({ namespace: ns, body: { metadata: { name: 'svc-b' }, spec: { clusterIP: explicit, ports: [{ port: 81 }] } } });
  t.is(b.spec!.clusterIP, explicit);
  const taken = await apiError(api.createNamespacedService({ namespace: ns, body: { metadata: { name: 'svc-c' }, spec: { clusterIP: explicit, ports: [{ port: 82 }] } } }));
  t.is(taken.code, 422);
  t.regex(taken.status.message, /provided IP is already allocated/);
  const lb = await api.createNamespacedService({ namespace: ns, body: { metadata: { name: 'svc-lb' }, spec: { type: 'LoadBalancer', selector: { app: 'x' }, ports: [{ port: 80 }] } } });
  t.is(lb.spec!.type, 'LoadBalancer');
  t.true((lb.spec!.ports![0].nodePort ?? 0) >= 30000);
  const dns = await api.readNamespacedService({ namespace: 'kube-system', name: 'kube-dns' });
  t.is(dns.spec!.clusterIP, '198.19.0.10');
});

test('deployment -> replicaset -> pods; scale subresource; status; cascading delete', async (t) => {
  const a = apps();
  await a.createNamespacedDeployment({ namespace: ns, body: echoDeployment('dep', 2, { app: 'dep' }) });
  const pods = await waitForReadyPods(ns, 'app=dep', 2);
  for (const p of pods) {
    t.regex(p.status!.podIP!, /^198\.18\.([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7])\.\d+$/, 'pod IP in 198.18.0.0/17');
    t.is(p.spec!.nodeName, 'ktlab-node');
    t.truthy(p.metadata!.labels!['pod-template-hash']);
    t.is(p.metadata!.ownerReferences![0].kind, 'ReplicaSet');
    const cs = p.status!.containerStatuses![0];
    t.true(cs.ready);
    t.truthy(cs.state?.running?.startedAt);
  }
  const rsList = await a.listNamespacedReplicaSet({ namespace: ns, labelSelector: 'app=dep' });
  t.is(rsList.items.length, 1);
  t.is(rsList.items[0].metadata!.ownerReferences![0].name, 'dep');
  const d = await eventually(async () => {
    const x = await a.readNamespacedDeployment({ namespace: ns, name: 'dep' });
    return x.status?.availableReplicas === 2 ? x : undefined;
  }, 'deployment status');
  t.is(d.status!.observedGeneration, d.metadata!.generation);
  t.is(d.status!.updatedReplicas, 2);
  t.is(d.status!.readyReplicas, 2);
  t.true(d.status!.conditions!.some((c) => c.type === 'Available' && c.status === 'True'));

  const scale = await a.readNamespacedDeploymentScale({ namespace: ns, name: 'dep' });
  t.is(scale.spec?.replicas, 2);
  await a.replaceNamespacedDeploymentScale({ namespace: ns, name: 'dep', body: { ...scale, spec: { replicas: 3 } } });
  await waitForReadyPods(ns, 'app=dep', 3);
  await a.patchNamespacedDeploymentScale({ namespace: ns, name: 'dep', body: { spec: { replicas: 1 } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  await waitForReadyPods(ns, 'app=dep', 1);

  await a.deleteNamespacedDeployment({ namespace: ns, name: 'dep' });
  await eventually(async () => {
    const p = await core().listNamespacedPod({ namespace: ns, labelSelector: 'app=dep' });
    const r = await a.listNamespacedReplicaSet({ namespace: ns, labelSelector: 'app=dep' });
    return p.items.length === 0 && r.items.length === 0 ? true : undefined;
  }, 'replicasets and pods of a deleted deployment to go');
  t.pass();
});

test('pod status: unschedulable nodeSelector, unknown image, graceful delete', async (t) => {
  const api = core();
  const pod = (name: string, image: string, extra: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod => ({
    metadata: { name },
    spec: { containers: [{ name: 'c', image }], ...extra },
  });
  await api.createNamespacedPod({ namespace: ns, body: pod('unsched', 'ktlab/echo', { nodeSelector: { disktype: 'ssd' } }) });
  await api.createNamespacedPod({ namespace: ns, body: pod('nopull', 'registry.invalid/none:1') });
  const un = await eventually(async () => {
    const p = await api.readNamespacedPod({ namespace: ns, name: 'unsched' });
    return p.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  }, 'PodScheduled=False');
  t.is(un.reason, 'Unschedulable');
  t.regex(un.message ?? '', /0\/1 nodes are available: 1 node\(s\) didn't match Pod's node affinity\/selector/);
  t.is((await api.readNamespacedPod({ namespace: ns, name: 'unsched' })).status?.phase, 'Pending');
  const reason = await eventually(async () => {
    const p = await api.readNamespacedPod({ namespace: ns, name: 'nopull' });
    const r = p.status?.containerStatuses?.[0]?.state?.waiting?.reason;
    return r === 'ErrImagePull' || r === 'ImagePullBackOff' ? r : undefined;
  }, 'ErrImagePull');
  t.true(reason === 'ErrImagePull' || reason === 'ImagePullBackOff');

  await api.createNamespacedPod({ namespace: ns, body: pod('graceful', 'ktlab/echo') });
  await eventually(async () => ((await api.readNamespacedPod({ namespace: ns, name: 'graceful' })).status?.phase === 'Running' ? true : undefined), 'graceful pod Running');
  const deleted = await api.deleteNamespacedPod({ namespace: ns, name: 'graceful' });
  t.truthy(deleted.metadata?.deletionTimestamp, 'a running pod is deleted gracefully');
  await eventually(async () => {
    const r = await apiError(api.readNamespacedPod({ namespace: ns, name: 'graceful' })).catch(() => undefined);
    return r?.code === 404 ? true : undefined;
  }, 'the pod to be gone');
  t.pass();
});

test('nodes, custom resources (networking.istio.io/v1), pod logs and exec', async (t) => {
  const node = await core().readNode({ name: 'ktlab-node' });
  t.is(node.spec?.podCIDR, '198.18.0.0/17');

  const co = kc().makeApiClient(CustomObjectsApi);
  const vs = { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'vs1' }, spec: { hosts: ['web'], http: [{ route: [{ destination: { host: 'web' } }] }] } };
  await co.createNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: ns, plural: 'virtualservices', body: vs });
  const got = (await co.getNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: ns, plural: 'virtualservices', name: 'vs1' })) as typeof vs;
  t.deepEqual(got.spec, vs.spec);
  const list = (await co.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: ns, plural: 'destinationrules' })) as { items: unknown[] };
  t.deepEqual(list.items, []);

  await core().createNamespacedPod({ namespace: ns, body: { metadata: { name: 'logger', labels: { app: 'logger' } }, spec: { containers: [{ name: 'c', image: 'ktlab/echo', ports: [{ containerPort: 8080 }] }] } } });
  await waitForReadyPods(ns, 'app=logger', 1);
  const log = await core().readNamespacedPodLog({ namespace: ns, name: 'logger' });
  t.regex(log, /listening/);

  const out = new PassThrough();
  const err = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const status = await new Promise<{ status?: string; details?: { causes?: Array<{ message?: string }> } }>((resolve, reject) => {
    new Exec(kc())
      .exec(ns, 'logger', 'c', ['sh', '-c', 'echo hello-from-$HOSTNAME-or-pod; exit 7'], out, err, null, false, (s) => resolve(s as never))
      .catch(reject);
  });
  t.regex(Buffer.concat(chunks).toString(), /hello-from-/);
  t.is(status.status, 'Failure');
  t.is(status.details?.causes?.[0]?.message, '7');
});

test('env and volumes from secrets and configmaps reach the container; exits restart it', async (t) => {
  const api = core();
  await api.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'pod-secret' }, stringData: { password: 's3cret', 'key.pem': 'KEY' } } });
  await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'pod-config' }, data: { greeting: 'hello', 'app.conf': 'a=1' } } });
  await api.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name: 'wired', labels: { app: 'wired' } },
      spec: {
        containers: [
          {
            name: 'c',
            image: 'ktlab/echo',
            ports: [{ containerPort: 8080 }],
            env: [
              { name: 'PLAIN', value: 'p' },
              { name: 'FROM_SECRET', valueFrom: { secretKeyRef: { name: 'pod-secret', key: 'password' } } },
              { name: 'FROM_CONFIG', valueFrom: { configMapKeyRef: { name: 'pod-config', key: 'greeting' } } },
            ],
            volumeMounts: [
              { name: 'keys', mountPath: '/etc/lab-test-keys', readOnly: true },
              { name: 'conf', mountPath: '/etc/lab-test-conf' },
            ],
          },
        ],
        volumes: [
          { name: 'keys', secret: { secretName: 'pod-secret' } },
          { name: 'conf', configMap: { name: 'pod-config', items: [{ key: 'app.conf', path: 'renamed.conf' }] } },
        ],
      },
    },
  });
  await waitForReadyPods(ns, 'app=wired', 1);
  const { labExec } = await import('./lab/fixture.js');
  const r = await labExec({ namespace: ns, name: 'wired' }, ['sh', '-c', 'echo "$PLAIN $FROM_SECRET $FROM_CONFIG"; cat /etc/lab-test-keys/password /etc/lab-test-keys/key.pem /etc/lab-test-conf/renamed.conf']);
  t.is(r.exitCode, 0, r.stderr);
  t.is(r.stdout, 'p s3cret hello\ns3cretKEYa=1');

  await api.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'crasher' }, spec: { containers: [{ name: 'c', image: 'ktlab/echo', command: ['sh', '-c', 'exit 3'] }] } } });
  const cs = await eventually(async () => {
    const p = await api.readNamespacedPod({ namespace: ns, name: 'crasher' });
    const s = p.status?.containerStatuses?.[0];
    return s && s.restartCount >= 1 && s.lastState?.terminated ? s : undefined;
  }, 'the crashing container to be restarted');
  t.is(cs.lastState?.terminated?.exitCode, 3);
  // No assertion on `ready`: a container without a probe counts as ready while its next instance
  // runs, as in a real cluster, so the value depends on when the status is read.
});

test('deletecollection with a label selector; a watch with timeoutSeconds ends by itself', async (t) => {
  const api = core();
  for (const [name, group] of [['dc-1', 'x'], ['dc-2', 'x'], ['dc-3', 'y']]) {
    await api.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name, labels: { dc: group } } } });
  }
  await api.deleteCollectionNamespacedConfigMap({ namespace: ns, labelSelector: 'dc=x' });
  const left = await api.listNamespacedConfigMap({ namespace: ns, labelSelector: 'dc' });
  t.deepEqual(left.items.map((i) => i.metadata!.name), ['dc-3']);
  const r = await raw('GET', `/api/v1/namespaces/${ns}/configmaps?watch=1&labelSelector=dc%3Dy&timeoutSeconds=1`);
  t.is(r.status, 200);
  const events = r.body.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as { type: string; object: { metadata: { name: string } } });
  t.deepEqual(events.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED dc-3']);
});

test('the lab kubeconfig has the admin and read-only contexts', (t) => {
  const text = fs.readFileSync(lab().kubeconfig, 'utf8');
  t.regex(text, /server: https:\/\/198\.18\.255\.2:6443/);
  t.regex(text, /current-context: lab\n/);
  t.regex(text, /name: lab-readonly/);
});
