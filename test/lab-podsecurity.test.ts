/**
 * The lab's Pod Security Admission (test/lab/api/podsecurity.ts): each check of baseline and
 * restricted with the reason and detail pod-security-admission v0.32 gives, the order of the
 * aggregate message, the namespace labels, and the decisions the API server acts on; then the same
 * through an in-process API server (fake data plane, 127.0.0.1:0, never the shared lab) and
 * kubectl. The expected strings come from the Go source and its tests (policy/check_*_test.go).
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ControlPlane } from './lab/api/lab.js';
import { FakeLabNet } from './lab/api/fake-net.js';
import { FILES, makeCredentials, renderKubeconfig } from './lab/api/pki.js';
import type { JsonObject } from './lab/api/json.js';
import {
  admitPod,
  admitPodTemplate,
  checkIds,
  evaluatePod,
  forbiddenDetail,
  isSignificantPodUpdate,
  namespaceLabelErrors,
  namespaceUpdateWarnings,
  policyToEvaluate,
  warningHeader,
  type CheckFailure,
  type Level,
  type PodMeta,
} from './lab/api/podsecurity.js';
import { eventually } from './helpers/poll.js';

const RESTRICTED_SC: JsonObject = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } };

/** A container that passes restricted on its own (with the pod-level settings below). */
function goodContainer(name: string, extra: JsonObject = {}): JsonObject {
  return { name, image: 'ktlab/echo', securityContext: { ...RESTRICTED_SC, ...extra } };
}

/** A pod spec that passes restricted. */
function goodSpec(): JsonObject {
  return {
    securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
    containers: [goodContainer('app')],
    volumes: [
      { name: 's', secret: { secretName: 's' } },
      { name: 'c', configMap: { name: 'c' } },
      { name: 'p', projected: { sources: [] } },
      { name: 'e', emptyDir: {} },
    ],
  };
}

function failures(level: Level, spec: JsonObject, meta: PodMeta = {}): CheckFailure[] {
  return evaluatePod(level, meta, spec);
}

/** The one failure of `id`, or undefined. */
function only(level: Level, spec: JsonObject, id: string, meta: PodMeta = {}): { reason: string; detail: string } | undefined {
  const f = failures(level, spec, meta).find((x) => x.id === id);
  return f ? { reason: f.reason, detail: f.detail } : undefined;
}

function withSpec(patch: (s: JsonObject) => void): JsonObject {
  const s = goodSpec();
  patch(s);
  return s;
}

function firstContainer(s: JsonObject): JsonObject {
  return (s.containers as JsonObject[])[0];
}

function sc(s: JsonObject): JsonObject {
  return firstContainer(s).securityContext as JsonObject;
}

// ---- the passing pod ----

test('restricted pod: no failures at restricted, baseline or privileged', (t) => {
  for (const level of ['restricted', 'baseline', 'privileged'] as const) t.deepEqual(failures(level, goodSpec()), [], level);
});

test('privileged level: runs no checks at all', (t) => {
  const s = withSpec((x) => {
    x.hostNetwork = true;
    sc(x).privileged = true;
  });
  t.deepEqual(failures('privileged', s), []);
  t.deepEqual(checkIds('privileged'), []);
});

test('a bare pod (kubectl run): the four restricted failures in the real order and words', (t) => {
  const spec: JsonObject = { containers: [{ name: 'x', image: 'ktlab/echo' }], securityContext: {} };
  t.deepEqual(failures('baseline', spec), []);
  t.is(
    forbiddenDetail(failures('restricted', spec)),
    'allowPrivilegeEscalation != false (container "x" must set securityContext.allowPrivilegeEscalation=false), ' +
      'unrestricted capabilities (container "x" must set securityContext.capabilities.drop=["ALL"]), ' +
      'runAsNonRoot != true (pod or container "x" must set securityContext.runAsNonRoot=true), ' +
      'seccompProfile (pod or container "x" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
  );
});

// ---- check order (registry.go populate) ----

test('check order: baseline IDs sorted, then restricted IDs sorted; restricted drops the baseline checks it overrides', (t) => {
  t.deepEqual(checkIds('baseline'), [
    'appArmorProfile', 'capabilities_baseline', 'hostNamespaces', 'hostPathVolumes', 'hostPorts', 'privileged',
    'procMount', 'seLinuxOptions', 'seccompProfile_baseline', 'sysctls', 'windowsHostProcess',
  ]);
  t.deepEqual(checkIds('restricted'), [
    'appArmorProfile', 'hostNamespaces', 'hostPorts', 'privileged', 'procMount', 'seLinuxOptions', 'sysctls', 'windowsHostProcess',
    'allowPrivilegeEscalation', 'capabilities_restricted', 'restrictedVolumes', 'runAsNonRoot', 'runAsUser', 'seccompProfile_restricted',
  ]);
});

// ---- baseline checks ----

test('hostNamespaces: all three, in the Go order', (t) => {
  const s = withSpec((x) => Object.assign(x, { hostIPC: true, hostPID: true, hostNetwork: true }));
  t.deepEqual(only('baseline', s, 'hostNamespaces'), { reason: 'host namespaces', detail: 'hostNetwork=true, hostPID=true, hostIPC=true' });
  t.deepEqual(only('restricted', s, 'hostNamespaces'), { reason: 'host namespaces', detail: 'hostNetwork=true, hostPID=true, hostIPC=true' });
  t.is(only('baseline', withSpec((x) => (x.hostNetwork = false)), 'hostNamespaces'), undefined);
});

test('privileged: containers and init containers', (t) => {
  const s = withSpec((x) => {
    x.initContainers = [goodContainer('d', { privileged: true })];
    x.containers = [goodContainer('a', { privileged: false }), goodContainer('e', { privileged: true })];
  });
  t.deepEqual(only('baseline', s, 'privileged'), { reason: 'privileged', detail: 'containers "d", "e" must not set securityContext.privileged=true' });
});

test('hostPort: singular and plural wording, ports sorted as strings', (t) => {
  const one = withSpec((x) => (firstContainer(x).ports = [{ containerPort: 80, hostPort: 20 }]));
  t.deepEqual(only('baseline', one, 'hostPorts'), { reason: 'hostPort', detail: 'container "app" uses hostPort 20' });
  const many = withSpec((x) => {
    x.containers = [
      goodContainer('a', {}),
      { ...goodContainer('b'), ports: [{ containerPort: 1, hostPort: 20 }, { containerPort: 2, hostPort: 10 }] },
      { ...goodContainer('c'), ports: [{ containerPort: 3, hostPort: 30 }, { containerPort: 4, hostPort: 0 }] },
    ];
  });
  t.deepEqual(only('baseline', many, 'hostPorts'), { reason: 'hostPort', detail: 'containers "b", "c" use hostPorts 10, 20, 30' });
});

test('hostPath volumes at baseline; restricted volume types at restricted instead', (t) => {
  const s = withSpec((x) => (x.volumes = [{ name: 'a', hostPath: { path: '/' } }, { name: 'b', hostPath: { path: '/etc' } }, { name: 'c', emptyDir: {} }]));
  t.deepEqual(only('baseline', s, 'hostPathVolumes'), { reason: 'hostPath volumes', detail: 'volumes "a", "b"' });
  t.is(only('restricted', s, 'hostPathVolumes'), undefined);
  t.deepEqual(only('restricted', s, 'restrictedVolumes'), { reason: 'restricted volume types', detail: 'volumes "a", "b" use restricted volume type "hostPath"' });
});

test('restricted volume types: every source the Go switch names, and unknown', (t) => {
  const sources = [
    'hostPath', 'gcePersistentDisk', 'awsElasticBlockStore', 'gitRepo', 'nfs', 'iscsi', 'glusterfs', 'rbd', 'flexVolume', 'cinder', 'cephfs',
    'flocker', 'fc', 'azureFile', 'vsphereVolume', 'quobyte', 'azureDisk', 'photonPersistentDisk', 'portworxVolume', 'scaleIO', 'storageos',
  ];
  const s = withSpec((x) => {
    x.volumes = [
      ...sources.map((k, i) => ({ name: `b${i + 1}`, [k]: {} })),
      { name: 'c1' },
      { name: 'ok1', csi: { driver: 'x' } },
      { name: 'ok2', downwardAPI: {} },
      { name: 'ok3', ephemeral: {} },
      { name: 'ok4', persistentVolumeClaim: { claimName: 'x' } },
    ];
  });
  t.deepEqual(only('restricted', s, 'restrictedVolumes'), {
    reason: 'restricted volume types',
    detail:
      'volumes "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12", "b13", "b14", "b15", "b16", "b17", "b18", "b19", "b20", "b21", "c1"' +
      ' use restricted volume types ' +
      '"awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", ' +
      '"hostPath", "iscsi", "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos", "unknown", "vsphereVolume"',
  });
  t.deepEqual(only('restricted', withSpec((x) => (x.volumes = [{ name: 'n', nfs: { server: 's', path: '/' } }])), 'restrictedVolumes'), {
    reason: 'restricted volume types',
    detail: 'volume "n" uses restricted volume type "nfs"',
  });
});

test('non-default capabilities (baseline): the default set is allowed, others listed sorted', (t) => {
  const s = withSpec((x) => {
    x.containers = [
      goodContainer('a', { capabilities: { add: ['FOO', 'BAR', 'CHOWN'] } }),
      goodContainer('b', { capabilities: { add: ['BAZ'] } }),
      goodContainer('c', { capabilities: { add: ['NET_BIND_SERVICE', 'KILL', 'SYS_CHROOT'] } }),
    ];
  });
  t.deepEqual(only('baseline', s, 'capabilities_baseline'), {
    reason: 'non-default capabilities',
    detail: 'containers "a", "b" must not include "BAR", "BAZ", "FOO" in securityContext.capabilities.add',
  });
  t.is(only('restricted', s, 'capabilities_baseline'), undefined);
});

test('unrestricted capabilities (restricted): drop ALL missing and forbidden adds, joined by "; "', (t) => {
  const s = withSpec((x) => {
    x.containers = [
      { name: 'a', image: 'i', securityContext: { allowPrivilegeEscalation: false, capabilities: { add: ['FOO', 'BAR'] } } },
      { name: 'b', image: 'i', securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['NET_RAW'], add: ['BAZ'] } } },
      goodContainer('c', { capabilities: { drop: ['ALL'], add: ['CHOWN', 'NET_BIND_SERVICE'] } }),
    ];
  });
  t.deepEqual(only('restricted', s, 'capabilities_restricted'), {
    reason: 'unrestricted capabilities',
    detail: 'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add',
  });
  const noCaps = withSpec((x) => delete sc(x).capabilities);
  t.deepEqual(only('restricted', noCaps, 'capabilities_restricted'), { reason: 'unrestricted capabilities', detail: 'container "app" must set securityContext.capabilities.drop=["ALL"]' });
});

test('procMount: anything but Default', (t) => {
  const s = withSpec((x) => {
    x.containers = [goodContainer('a', { procMount: 'Default' }), goodContainer('d', { procMount: 'Unmasked' }), goodContainer('e', { procMount: 'other' })];
  });
  const want = { reason: 'procMount', detail: 'containers "d", "e" must not set securityContext.procMount to "Unmasked", "other"' };
  t.deepEqual(only('baseline', s, 'procMount'), want);
  t.deepEqual(only('restricted', s, 'procMount'), want);
});

test('seLinuxOptions: pod and containers, types, user and role', (t) => {
  const s = withSpec((x) => {
    (x.securityContext as JsonObject).seLinuxOptions = { type: 'foo' };
    x.containers = [
      goodContainer('a', { seLinuxOptions: { type: 'container_t', level: 's0:c1' } }),
      goodContainer('b', { seLinuxOptions: { type: 'container_engine_t' } }),
      goodContainer('e', { seLinuxOptions: { type: 'bar' } }),
      goodContainer('f', { seLinuxOptions: { user: 'u' } }),
      goodContainer('g', { seLinuxOptions: { role: 'r' } }),
    ];
  });
  t.deepEqual(only('baseline', s, 'seLinuxOptions'), {
    reason: 'seLinuxOptions',
    detail: 'pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set',
  });
  const user = withSpec((x) => ((x.securityContext as JsonObject).seLinuxOptions = { user: 'x' }));
  t.deepEqual(only('baseline', user, 'seLinuxOptions'), { reason: 'seLinuxOptions', detail: 'pod set forbidden securityContext.seLinuxOptions: user may not be set' });
});

test('seccompProfile (baseline): Unconfined is forbidden, unset is fine', (t) => {
  const s = withSpec((x) => {
    (x.securityContext as JsonObject).seccompProfile = { type: 'Unconfined' };
    x.containers = [goodContainer('a'), goodContainer('c', { seccompProfile: { type: 'Unconfined' } }), goodContainer('d', { seccompProfile: { type: 'Unconfined' } })];
  });
  t.deepEqual(only('baseline', s, 'seccompProfile_baseline'), {
    reason: 'seccompProfile',
    detail: 'pod and containers "c", "d" must not set securityContext.seccompProfile.type to "Unconfined"',
  });
  t.is(only('baseline', { containers: [{ name: 'x', image: 'i' }] }, 'seccompProfile_baseline'), undefined);
});

test('seccompProfile (restricted): explicit bad values first, then the containers left unset', (t) => {
  const unset = withSpec((x) => {
    delete (x.securityContext as JsonObject).seccompProfile;
    x.containers = [goodContainer('a'), goodContainer('b'), goodContainer('c', { seccompProfile: { type: 'Localhost', localhostProfile: 'p' } })];
  });
  t.deepEqual(only('restricted', unset, 'seccompProfile_restricted'), {
    reason: 'seccompProfile',
    detail: 'pod or containers "a", "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
  });
  const bad = withSpec((x) => {
    (x.securityContext as JsonObject).seccompProfile = { type: 'Unconfined' };
    x.containers = [goodContainer('a'), goodContainer('c', { seccompProfile: { type: 'Unconfined' } })];
  });
  t.deepEqual(only('restricted', bad, 'seccompProfile_restricted'), {
    reason: 'seccompProfile',
    detail: 'pod and container "c" must not set securityContext.seccompProfile.type to "Unconfined"',
  });
  t.is(only('restricted', bad, 'seccompProfile_baseline'), undefined);
});

test('sysctls: the v1.32 allowed list (with net.ipv4.ip_unprivileged_port_start) and the rest in spec order', (t) => {
  const allowed = [
    'kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.tcp_syncookies', 'net.ipv4.ping_group_range',
    'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.ip_local_reserved_ports', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout',
    'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes', 'net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem',
  ];
  const ok = withSpec((x) => ((x.securityContext as JsonObject).sysctls = allowed.map((name) => ({ name, value: '1' }))));
  t.is(only('baseline', ok, 'sysctls'), undefined);
  const bad = withSpec((x) => ((x.securityContext as JsonObject).sysctls = [{ name: 'b', value: '1' }, { name: 'net.ipv4.tcp_syncookies', value: '1' }, { name: 'a', value: '1' }]));
  t.deepEqual(only('baseline', bad, 'sysctls'), { reason: 'forbidden sysctls', detail: 'b, a' });
  // v1.37 allows it; the lab is v1.32
  const later = withSpec((x) => ((x.securityContext as JsonObject).sysctls = [{ name: 'net.ipv4.tcp_notsent_lowat', value: '1' }]));
  t.deepEqual(only('restricted', later, 'sysctls'), { reason: 'forbidden sysctls', detail: 'net.ipv4.tcp_notsent_lowat' });
});

test('appArmor: pod, containers and annotations; reason pluralized by the number of bad values', (t) => {
  const pod = withSpec((x) => ((x.securityContext as JsonObject).appArmorProfile = { type: 'Unconfined' }));
  t.deepEqual(only('baseline', pod, 'appArmorProfile'), { reason: 'forbidden AppArmor profile', detail: 'pod must not set AppArmor profile type to "Unconfined"' });
  const init = withSpec((x) => (x.initContainers = [goodContainer('bar', { appArmorProfile: { type: 'Unconfined' } })]));
  t.deepEqual(only('baseline', init, 'appArmorProfile'), { reason: 'forbidden AppArmor profile', detail: 'container "bar" must not set AppArmor profile type to "Unconfined"' });
  const annotations: PodMeta = {
    annotations: {
      'container.apparmor.security.beta.kubernetes.io/b': 'unconfined',
      'container.apparmor.security.beta.kubernetes.io/a': 'localhost/x',
      'container.apparmor.security.beta.kubernetes.io/c': 'runtime/default',
      'container.apparmor.security.beta.kubernetes.io/d': 'unknown',
    },
  };
  t.deepEqual(only('baseline', pod, 'appArmorProfile', annotations), {
    reason: 'forbidden AppArmor profiles',
    detail:
      'pod and annotations must not set AppArmor profile type to "Unconfined", ' +
      '"container.apparmor.security.beta.kubernetes.io/b="unconfined"", "container.apparmor.security.beta.kubernetes.io/d="unknown""',
  });
  t.deepEqual(only('baseline', goodSpec(), 'appArmorProfile', { annotations: { 'container.apparmor.security.beta.kubernetes.io/a': 'runtime/default' } }), undefined);
});

test('hostProcess: pod and containers', (t) => {
  const s = withSpec((x) => {
    (x.securityContext as JsonObject).windowsOptions = { hostProcess: true };
    x.containers = [goodContainer('a'), goodContainer('e', { windowsOptions: { hostProcess: true } }), goodContainer('f', { windowsOptions: { hostProcess: true } })];
  });
  t.deepEqual(only('baseline', s, 'windowsHostProcess'), { reason: 'hostProcess', detail: 'pod and containers "e", "f" must not set securityContext.windowsOptions.hostProcess=true' });
});

// ---- restricted checks ----

test('allowPrivilegeEscalation: unset and true fail, init and ephemeral containers too', (t) => {
  const s = withSpec((x) => {
    x.initContainers = [{ name: 'a', image: 'i', securityContext: { capabilities: { drop: ['ALL'] } } }];
    x.containers = [goodContainer('b', { allowPrivilegeEscalation: true }), goodContainer('ok')];
    x.ephemeralContainers = [{ name: 'c', image: 'i' }];
  });
  t.deepEqual(only('restricted', s, 'allowPrivilegeEscalation'), {
    reason: 'allowPrivilegeEscalation != false',
    detail: 'containers "a", "b", "c" must set securityContext.allowPrivilegeEscalation=false',
  });
  t.is(only('baseline', s, 'allowPrivilegeEscalation'), undefined);
});

test('runAsNonRoot: explicit false before implicit unset; container true covers a pod without it', (t) => {
  const explicit = withSpec((x) => {
    (x.securityContext as JsonObject).runAsNonRoot = false;
    x.containers = [goodContainer('a'), goodContainer('c', { runAsNonRoot: false }), goodContainer('d', { runAsNonRoot: false })];
  });
  t.deepEqual(only('restricted', explicit, 'runAsNonRoot'), { reason: 'runAsNonRoot != true', detail: 'pod and containers "c", "d" must not set securityContext.runAsNonRoot=false' });
  const implicit = withSpec((x) => {
    delete (x.securityContext as JsonObject).runAsNonRoot;
    x.containers = [goodContainer('a'), goodContainer('b'), goodContainer('c', { runAsNonRoot: true })];
  });
  t.deepEqual(only('restricted', implicit, 'runAsNonRoot'), { reason: 'runAsNonRoot != true', detail: 'pod or containers "a", "b" must set securityContext.runAsNonRoot=true' });
  // hostUsers: false does not relax it in v1.32 (the gate is off by default)
  t.truthy(only('restricted', { ...implicit, hostUsers: false }, 'runAsNonRoot'));
});

test('runAsUser=0: pod and containers; other ids pass', (t) => {
  const s = withSpec((x) => {
    (x.securityContext as JsonObject).runAsUser = 0;
    x.containers = [goodContainer('a', { runAsUser: 1 }), goodContainer('c', { runAsUser: 0 }), goodContainer('d', { runAsUser: 0 })];
  });
  t.deepEqual(only('restricted', s, 'runAsUser'), { reason: 'runAsUser=0', detail: 'pod and containers "c", "d" must not set runAsUser=0' });
  t.is(only('baseline', s, 'runAsUser'), undefined);
});

test('windows pods: the os-exempt restricted checks pass, the others still run', (t) => {
  const spec: JsonObject = { os: { name: 'windows' }, containers: [{ name: 'w', image: 'i' }] };
  t.deepEqual(failures('restricted', spec).map((f) => f.id), ['runAsNonRoot']);
});

// ---- baseline vs restricted, several containers, the message ----

test('baseline vs restricted: a pod can pass one and fail the other', (t) => {
  const spec: JsonObject = {
    containers: [
      { name: 'web', image: 'i', securityContext: { capabilities: { add: ['NET_BIND_SERVICE'] } } },
      { name: 'sidecar', image: 'i', securityContext: { runAsUser: 0 } },
    ],
  };
  t.deepEqual(failures('baseline', spec), []);
  t.deepEqual(failures('restricted', spec).map((f) => f.id), ['allowPrivilegeEscalation', 'capabilities_restricted', 'runAsNonRoot', 'runAsUser', 'seccompProfile_restricted']);
  t.is(
    forbiddenDetail(failures('restricted', spec)),
    'allowPrivilegeEscalation != false (containers "web", "sidecar" must set securityContext.allowPrivilegeEscalation=false), ' +
      'unrestricted capabilities (containers "web", "sidecar" must set securityContext.capabilities.drop=["ALL"]), ' +
      'runAsNonRoot != true (pod or containers "web", "sidecar" must set securityContext.runAsNonRoot=true), ' +
      'runAsUser=0 (container "sidecar" must not set runAsUser=0), ' +
      'seccompProfile (pod or containers "web", "sidecar" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
  );
});

test('baseline message: baseline checks in ID order', (t) => {
  const spec: JsonObject = {
    hostNetwork: true,
    containers: [{ name: 'a', image: 'i', ports: [{ containerPort: 80, hostPort: 80 }], securityContext: { privileged: true, capabilities: { add: ['NET_ADMIN'] } } }],
    volumes: [{ name: 'root', hostPath: { path: '/' } }],
  };
  t.is(
    forbiddenDetail(failures('baseline', spec)),
    'non-default capabilities (container "a" must not include "NET_ADMIN" in securityContext.capabilities.add), host namespaces (hostNetwork=true), ' +
      'hostPath volumes (volume "root"), hostPort (container "a" uses hostPort 80), privileged (container "a" must not set securityContext.privileged=true)',
  );
});

// ---- namespace labels and decisions (admission.go, api/helpers.go) ----

const ENFORCE = 'pod-security.kubernetes.io/enforce';
const BARE: JsonObject = { containers: [{ name: 'x', image: 'ktlab/echo' }] };

test('admitPod: enforce=restricted refuses with the violation admission.go formats', (t) => {
  const d = admitPod({ [ENFORCE]: 'restricted' }, {}, BARE);
  t.is(d.violation, `violates PodSecurity "restricted:latest": ${forbiddenDetail(failures('restricted', BARE))}`);
  t.deepEqual(d.warnings, []);
});

test('admitPod: a pinned version is printed as given (and evaluated as latest)', (t) => {
  const d = admitPod({ [ENFORCE]: 'baseline', 'pod-security.kubernetes.io/enforce-version': 'v1.30' }, {}, { containers: [{ name: 'x', image: 'i', securityContext: { privileged: true } }] });
  t.is(d.violation, 'violates PodSecurity "baseline:v1.30": privileged (container "x" must not set securityContext.privileged=true)');
});

test('admitPod: warn only warns; warn follows a stricter enforce; no labels allow everything', (t) => {
  const warn = admitPod({ 'pod-security.kubernetes.io/warn': 'restricted' }, {}, BARE);
  t.is(warn.violation, undefined);
  t.deepEqual(warn.warnings, [`would violate PodSecurity "restricted:latest": ${forbiddenDetail(failures('restricted', BARE))}`]);
  const both = admitPod({ [ENFORCE]: 'baseline' }, {}, BARE);
  t.deepEqual(both, { warnings: [] });
  const audit = admitPod({ 'pod-security.kubernetes.io/audit': 'restricted' }, {}, BARE);
  t.is(audit.violation, undefined);
  t.deepEqual(audit.warnings, []);
  t.truthy(audit.auditViolation);
  t.deepEqual(admitPod(undefined, {}, BARE), { warnings: [] });
  t.deepEqual(admitPod({ [ENFORCE]: 'restricted' }, {}, goodSpec()), { warnings: [] });
});

test('admitPodTemplate: templates never get enforce, only the (defaulted) warn level', (t) => {
  const d = admitPodTemplate({ [ENFORCE]: 'restricted' }, {}, BARE);
  t.is(d.violation, undefined);
  t.deepEqual(d.warnings, [`would violate PodSecurity "restricted:latest": ${forbiddenDetail(failures('restricted', BARE))}`]);
  t.deepEqual(admitPodTemplate({ [ENFORCE]: 'restricted', 'pod-security.kubernetes.io/warn': 'privileged' }, {}, BARE).warnings, []);
});

test('policyToEvaluate: bad enforce fails closed, bad warn and audit fail open, bad versions are latest', (t) => {
  const { policy, errors } = policyToEvaluate({
    [ENFORCE]: 'strict',
    'pod-security.kubernetes.io/enforce-version': '1.30',
    'pod-security.kubernetes.io/warn': 'nope',
    'pod-security.kubernetes.io/audit': 'x',
  });
  t.deepEqual(policy, {
    enforce: { level: 'restricted', version: 'latest' },
    audit: { level: 'privileged', version: 'latest' },
    warn: { level: 'privileged', version: 'latest' },
  });
  t.deepEqual(errors, [
    { label: ENFORCE, value: 'strict', detail: 'must be one of privileged, baseline, restricted' },
    { label: 'pod-security.kubernetes.io/enforce-version', value: '1.30', detail: 'must be "latest" or "v1.x"' },
    { label: 'pod-security.kubernetes.io/audit', value: 'x', detail: 'must be one of privileged, baseline, restricted' },
    { label: 'pod-security.kubernetes.io/warn', value: 'nope', detail: 'must be one of privileged, baseline, restricted' },
  ]);
  // a bad enforce level still refuses pods as restricted
  t.truthy(admitPod({ [ENFORCE]: 'strict' }, {}, BARE).violation?.startsWith('violates PodSecurity "restricted:latest": '));
});

test('namespaceLabelErrors: creates refuse bad labels; updates only new ones', (t) => {
  t.is(namespaceLabelErrors({ [ENFORCE]: 'bad' }, undefined, false).length, 1);
  t.is(namespaceLabelErrors({ [ENFORCE]: 'bad', other: 'x' }, { [ENFORCE]: 'bad' }, true).length, 0);
  t.is(namespaceLabelErrors({ [ENFORCE]: 'worse' }, { [ENFORCE]: 'bad' }, true).length, 1);
  t.is(namespaceLabelErrors({ [ENFORCE]: 'bad' }, {}, true).length, 1);
});

test('namespaceUpdateWarnings: a stricter enforce level names the existing pods that violate it', (t) => {
  const pod = (name: string, controllerUid?: string): { name: string; controllerUid?: string; meta: PodMeta; spec: JsonObject } => ({ name, controllerUid, meta: {}, spec: BARE });
  const priv = { name: 'p', meta: {}, spec: { containers: [{ name: 'x', image: 'i', securityContext: { privileged: true } }] } };
  const w = namespaceUpdateWarnings('ns1', {}, { [ENFORCE]: 'restricted' }, () => [pod('web-2', 'u1'), pod('web-1', 'u1'), pod('solo'), priv]);
  t.deepEqual(w, [
    'existing pods in namespace "ns1" violate the new PodSecurity enforce level "restricted:latest"',
    'p: privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile',
    'solo (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile',
  ]);
  t.deepEqual(namespaceUpdateWarnings('ns1', { [ENFORCE]: 'restricted' }, { [ENFORCE]: 'baseline' }, () => [pod('a')]), []);
  t.deepEqual(namespaceUpdateWarnings('ns1', {}, { [ENFORCE]: 'restricted' }, () => []), []);
});

test('isSignificantPodUpdate: images and container counts, not other fields', (t) => {
  const a: JsonObject = { containers: [{ name: 'x', image: 'i:1' }], activeDeadlineSeconds: 5 };
  t.false(isSignificantPodUpdate({ containers: [{ name: 'x', image: 'i:1' }], activeDeadlineSeconds: 9 }, a));
  t.true(isSignificantPodUpdate({ containers: [{ name: 'x', image: 'i:2' }] }, a));
  t.true(isSignificantPodUpdate({ containers: [{ name: 'x', image: 'i:1' }], ephemeralContainers: [{ name: 'dbg', image: 'busybox' }] }, a));
});

test('warningHeader: 299, agent "-", quotes and backslashes escaped', (t) => {
  t.is(warningHeader('would violate PodSecurity "restricted:latest": a (b\\c)'), '299 - "would violate PodSecurity \\"restricted:latest\\": a (b\\\\c)"');
});

// ---- through the API server: an in-process control plane on 127.0.0.1:0 with the fake data plane ----

interface Lab {
  cp: ControlPlane;
  dir: string;
  kubeconfig: string;
  server: string;
  token: string;
  ca: Buffer;
}

let apiLab: Lab | undefined;

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ktlab-psa-'));
  const { tokens } = await makeCredentials(dir);
  const cp = new ControlPlane({
    net: new FakeLabNet(),
    tokens,
    tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) },
    demo: false,
  });
  const { port } = await cp.start('127.0.0.1', 0);
  const server = `https://127.0.0.1:${port}`;
  const ca = fs.readFileSync(path.join(dir, FILES.caCert));
  const kubeconfig = path.join(dir, 'kubeconfig-local');
  fs.writeFileSync(kubeconfig, renderKubeconfig(ca, tokens, server), { mode: 0o600 });
  apiLab = { cp, dir, kubeconfig, server, token: tokens.admin, ca };
});

test.after.always(async () => {
  if (!apiLab) return;
  await apiLab.cp.stop();
  fs.rmSync(apiLab.dir, { recursive: true, force: true });
});

function uniq(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

function request(method: string, urlPath: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; json: JsonObject; warnings: string[] }> {
  const l = apiLab!;
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(urlPath, l.server),
      { method, ca: l.ca, headers: { Authorization: `Bearer ${l.token}`, 'Content-Type': contentType, Accept: 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          // one Warning header line per warning (node joins repeated headers in res.headers)
          const warnings = res.rawHeaders.filter((_, i) => i % 2 === 1 && res.rawHeaders[i - 1].toLowerCase() === 'warning');
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as JsonObject, warnings });
        });
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function kubectlLocal(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('kubectl', ['--kubeconfig', apiLab!.kubeconfig, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A namespace for one test, deleted afterwards (also on failure). */
async function namespace(t: ExecutionContext, labels: Record<string, string>): Promise<string> {
  const name = uniq('psa');
  const r = await request('POST', '/api/v1/namespaces', { metadata: { name, labels } });
  if (r.status !== 201) throw new Error(`namespace create: ${r.status} ${JSON.stringify(r.json)}`);
  t.teardown(async () => {
    await request('DELETE', `/api/v1/namespaces/${name}`);
  });
  return name;
}

const RESTRICTED_BARE = forbiddenDetail(evaluatePod('restricted', {}, { containers: [{ name: 'x', image: 'ktlab/echo' }] }));

test.serial('API: a pod in an enforce=restricted namespace is refused with 403 Forbidden and the real message', async (t) => {
  const ns = await namespace(t, { [ENFORCE]: 'restricted' });
  const r = await request('POST', `/api/v1/namespaces/${ns}/pods`, { metadata: { name: 'x' }, spec: { containers: [{ name: 'x', image: 'ktlab/echo' }] } });
  t.is(r.status, 403);
  t.like(r.json, {
    kind: 'Status',
    status: 'Failure',
    reason: 'Forbidden',
    code: 403,
    message: `pods "x" is forbidden: violates PodSecurity "restricted:latest": ${RESTRICTED_BARE}`,
    details: { name: 'x', kind: 'pods' },
  });
  t.deepEqual(r.warnings, []);
  const get = await request('GET', `/api/v1/namespaces/${ns}/pods/x`);
  t.is(get.status, 404);
  // the compliant pod is created
  const ok = await request('POST', `/api/v1/namespaces/${ns}/pods`, { metadata: { name: 'ok' }, spec: goodSpec() });
  t.is(ok.status, 201);
  t.deepEqual(ok.warnings, []);
});

test.serial('API: warn=restricted creates the pod and sends the Warning header', async (t) => {
  const ns = await namespace(t, { 'pod-security.kubernetes.io/warn': 'restricted' });
  const r = await request('POST', `/api/v1/namespaces/${ns}/pods`, { metadata: { name: 'x' }, spec: { containers: [{ name: 'x', image: 'ktlab/echo' }] } });
  t.is(r.status, 201);
  t.deepEqual(r.warnings, [warningHeader(`would violate PodSecurity "restricted:latest": ${RESTRICTED_BARE}`)]);
  t.true(r.warnings[0].startsWith('299 - "would violate PodSecurity \\"restricted:latest\\": allowPrivilegeEscalation != false'));
});

test.serial('API: bad namespace labels are refused with 422 (create)', async (t) => {
  const name = uniq('psa-bad');
  const r = await request('POST', '/api/v1/namespaces', { metadata: { name, labels: { [ENFORCE]: 'strict' } } });
  t.teardown(async () => {
    await request('DELETE', `/api/v1/namespaces/${name}`);
  });
  t.is(r.status, 422);
  t.is(r.json.message, `Namespace "${name}" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted`);
});

test.serial('API: a deployment in an enforce namespace gets only a warning; its pods are refused and the ReplicaSet records FailedCreate', async (t) => {
  const ns = await namespace(t, { [ENFORCE]: 'restricted' });
  const deploy = {
    metadata: { name: 'web' },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'web' } },
      template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'ktlab/echo' }] } },
    },
  };
  const r = await request('POST', `/apis/apps/v1/namespaces/${ns}/deployments`, deploy);
  t.is(r.status, 201);
  const detail = forbiddenDetail(evaluatePod('restricted', {}, { containers: [{ name: 'web', image: 'ktlab/echo' }] }));
  t.deepEqual(r.warnings, [warningHeader(`would violate PodSecurity "restricted:latest": ${detail}`)]);
  const event = await eventually(async () => {
    const evs = await request('GET', `/api/v1/namespaces/${ns}/events`);
    return (evs.json.items as JsonObject[]).find((e) => e.reason === 'FailedCreate');
  }, 'the FailedCreate event', 10_000, 100);
  t.like(event, { type: 'Warning', involvedObject: { kind: 'ReplicaSet' }, source: { component: 'replicaset-controller' } });
  t.regex(String(event.message), new RegExp(`^Error creating: pods "web-[a-z0-9]+-[a-z0-9]{5}" is forbidden: violates PodSecurity "restricted:latest": `));
  t.true(String(event.message).endsWith(detail));
  const pods = await request('GET', `/api/v1/namespaces/${ns}/pods`);
  t.deepEqual(pods.json.items, []);
  const rs = await eventually(async () => {
    const l = await request('GET', `/apis/apps/v1/namespaces/${ns}/replicasets`);
    const item = (l.json.items as JsonObject[])[0];
    const conds = ((item?.status as JsonObject | undefined)?.conditions ?? []) as JsonObject[];
    return conds.find((c) => c.type === 'ReplicaFailure');
  }, 'the ReplicaFailure condition', 10_000, 100);
  t.like(rs, { status: 'True', reason: 'FailedCreate' });
});

test.serial('API: relabelling a namespace to enforce=restricted warns about its pods; an image update is checked again', async (t) => {
  const ns = await namespace(t, {});
  const created = await request('POST', `/api/v1/namespaces/${ns}/pods`, { metadata: { name: 'old' }, spec: { containers: [{ name: 'x', image: 'ktlab/echo' }] } });
  t.is(created.status, 201);
  const r = await request('PATCH', `/api/v1/namespaces/${ns}`, { metadata: { labels: { [ENFORCE]: 'restricted' } } }, 'application/merge-patch+json');
  t.is(r.status, 200);
  t.deepEqual(r.warnings, [
    warningHeader(`existing pods in namespace "${ns}" violate the new PodSecurity enforce level "restricted:latest"`),
    warningHeader('old: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile'),
  ]);
  const img = await request('PATCH', `/api/v1/namespaces/${ns}/pods/old`, { spec: { containers: [{ name: 'x', image: 'ktlab/echo:2' }] } }, 'application/strategic-merge-patch+json');
  t.is(img.status, 403);
  t.is(img.json.message, `pods "old" is forbidden: violates PodSecurity "restricted:latest": ${RESTRICTED_BARE}`);
  const labels = await request('PATCH', `/api/v1/namespaces/${ns}/pods/old`, { metadata: { labels: { a: 'b' } } }, 'application/strategic-merge-patch+json');
  t.is(labels.status, 200);
});

test.serial('kubectl run in a restricted namespace: Error from server (Forbidden) with the real message', async (t) => {
  if (!(await kubectlLocal(['version', '--client'])).stdout) return t.pass('kubectl is not installed');
  const ns = await namespace(t, { [ENFORCE]: 'restricted' });
  const r = await kubectlLocal(['run', 'x', '--image=ktlab/echo', '-n', ns]);
  t.not(r.code, 0);
  t.is(r.stderr.trim(), `Error from server (Forbidden): pods "x" is forbidden: violates PodSecurity "restricted:latest": ${RESTRICTED_BARE}`);
  const warnNs = await namespace(t, { 'pod-security.kubernetes.io/warn': 'restricted' });
  const w = await kubectlLocal(['run', 'x', '--image=ktlab/echo', '-n', warnNs]);
  t.is(w.code, 0, w.stderr);
  t.is(w.stderr.trim(), `Warning: would violate PodSecurity "restricted:latest": ${RESTRICTED_BARE}`);
  t.is(w.stdout.trim(), 'pod/x created');
});
