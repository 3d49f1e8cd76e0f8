/**
 * Pod Security Admission as kube-apiserver v1.32 runs it (k8s.io/pod-security-admission at
 * v0.32): the Pod Security Standards checks, the namespace labels that pick a level per mode,
 * and the words of the refusal and the warnings. The lab reports v1.32, so "latest" means the
 * v1.32 policy here: no hostProbesAndHostLifecycle check (1.34), no procMount_restricted or
 * user-namespace relaxations (1.35; in 1.32 the relaxation sits behind the alpha feature gate
 * UserNamespacesPodSecurityStandards, off by default), sysctls as allowed since 1.32, and the
 * `image` volume type still restricted.
 *
 * Pure: a pod (metadata + spec as JSON) and labels in, failed checks and sentences out. The
 * registry decides what to do with them (registry.ts).
 */
import { isObject, type Json, type JsonObject } from './json.js';

export type Level = 'privileged' | 'baseline' | 'restricted';

export interface LevelVersion {
  level: Level;
  /**
   * "latest" or "v1.N". Any v1.N is evaluated as latest (the lab keeps one policy version; a
   * pinned older version would relax a few checks on a real cluster), but it is printed as given,
   * like api.LevelVersion.String().
   */
  version: string;
}

export interface Policy {
  enforce: LevelVersion;
  audit: LevelVersion;
  warn: LevelVersion;
}

/** One failed check: ForbiddenReason and ForbiddenDetail of policy.CheckResult, and the check's ID. */
export interface CheckFailure {
  id: string;
  reason: string;
  detail: string;
}

/** The metadata the checks read (appArmor annotations). */
export interface PodMeta {
  annotations?: Record<string, string>;
}

// ---- small helpers, as policy/helpers.go ----

function obj(v: Json | undefined): JsonObject | undefined {
  return isObject(v) ? v : undefined;
}

function list(v: Json | undefined): Json[] {
  return Array.isArray(v) ? v : [];
}

function str(v: Json | undefined): string {
  return typeof v === 'string' ? v : '';
}

/** follows joinQuote (helpers.go): "a", "b" */
function joinQuote(items: string[]): string {
  return items.length === 0 ? '' : `"${items.join('", "')}"`;
}

/** follows pluralize (helpers.go) */
function pluralize(singular: string, plural: string, count: number): string {
  return count === 1 ? singular : plural;
}

/** Go's sort.Strings / sets.String.List(): byte order (same as UTF-16 order for ASCII names). */
function sorted(items: Iterable<string>): string[] {
  return [...new Set(items)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Go's %q for the strings the checks quote (printable text: JSON's escaping is the same). */
function goQuote(s: string): string {
  return JSON.stringify(s);
}

/** `container "a"` / `containers "a", "b"` */
function containers(names: string[]): string {
  return `${pluralize('container', 'containers', names.length)} ${joinQuote(names)}`;
}

interface Container {
  name: string;
  sc: JsonObject | undefined;
  raw: JsonObject;
}

/** follows visitContainers (visitor.go): initContainers, containers, ephemeralContainers. */
function visitContainers(spec: JsonObject, visit: (c: Container) => void): void {
  for (const key of ['initContainers', 'containers', 'ephemeralContainers']) {
    for (const c of list(spec[key])) {
      if (!isObject(c)) continue;
      visit({ name: str(c.name), sc: obj(c.securityContext), raw: c });
    }
  }
}

function podSc(spec: JsonObject): JsonObject | undefined {
  return obj(spec.securityContext);
}

function isWindows(spec: JsonObject): boolean {
  return obj(spec.os)?.name === 'windows';
}

type CheckFn = (meta: PodMeta, spec: JsonObject) => { reason: string; detail: string } | undefined;

// ---- baseline checks ----

/** follows policy.CheckAppArmorProfile, appArmorProfile_1_0 (check_appArmorProfile.go) */
const appArmorProfile: CheckFn = (meta, spec) => {
  const allowedType = (t: Json | undefined): boolean => t === 'RuntimeDefault' || t === 'Localhost';
  const allowedAnnotation = (v: string): boolean => v === '' || v === 'runtime/default' || v.startsWith('localhost/');
  const badSetters: string[] = [];
  const badValues = new Set<string>();
  const podProfile = obj(podSc(spec)?.appArmorProfile);
  if (podProfile && !allowedType(podProfile.type)) {
    badSetters.push('pod');
    badValues.add(str(podProfile.type));
  }
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    const p = obj(c.sc?.appArmorProfile);
    if (p && !allowedType(p.type)) {
      bad.push(c.name);
      badValues.add(str(p.type));
    }
  });
  if (bad.length > 0) badSetters.push(containers(bad));
  const forbiddenAnnotations: string[] = [];
  for (const [k, v] of Object.entries(meta.annotations ?? {})) {
    if (k.startsWith('container.apparmor.security.beta.kubernetes.io/') && !allowedAnnotation(v)) forbiddenAnnotations.push(`${k}=${goQuote(v)}`);
  }
  const badValueList = sorted(badValues);
  if (forbiddenAnnotations.length > 0) {
    badValueList.push(...sorted(forbiddenAnnotations));
    badSetters.push(pluralize('annotation', 'annotations', forbiddenAnnotations.length));
  }
  if (badSetters.length === 0) return undefined;
  return {
    reason: pluralize('forbidden AppArmor profile', 'forbidden AppArmor profiles', badValueList.length),
    detail: `${badSetters.join(' and ')} must not set AppArmor profile type to ${joinQuote(badValueList)}`,
  };
};

const CAPABILITIES_ALLOWED_1_0 = new Set(['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT']);

/** follows policy.CheckCapabilitiesBaseline, capabilitiesBaseline_1_0 (check_capabilities_baseline.go) */
const capabilitiesBaseline: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  const nonDefault = new Set<string>();
  visitContainers(spec, (c) => {
    const caps = obj(c.sc?.capabilities);
    if (!caps) return;
    let valid = true;
    for (const cap of list(caps.add)) {
      if (!CAPABILITIES_ALLOWED_1_0.has(str(cap))) {
        valid = false;
        nonDefault.add(str(cap));
      }
    }
    if (!valid) bad.push(c.name);
  });
  if (bad.length === 0) return undefined;
  return { reason: 'non-default capabilities', detail: `${containers(bad)} must not include ${joinQuote(sorted(nonDefault))} in securityContext.capabilities.add` };
};

/** follows policy.CheckHostNamespaces, hostNamespaces_1_0 (check_hostNamespaces.go) */
const hostNamespaces: CheckFn = (_meta, spec) => {
  const found: string[] = [];
  if (spec.hostNetwork === true) found.push('hostNetwork=true');
  if (spec.hostPID === true) found.push('hostPID=true');
  if (spec.hostIPC === true) found.push('hostIPC=true');
  if (found.length === 0) return undefined;
  return { reason: 'host namespaces', detail: found.join(', ') };
};

/** follows policy.CheckHostPathVolumes, hostPathVolumes_1_0 (check_hostPathVolumes.go) */
const hostPathVolumes: CheckFn = (_meta, spec) => {
  const names: string[] = [];
  for (const v of list(spec.volumes)) if (isObject(v) && isObject(v.hostPath)) names.push(str(v.name));
  if (names.length === 0) return undefined;
  return { reason: 'hostPath volumes', detail: `${pluralize('volume', 'volumes', names.length)} ${joinQuote(names)}` };
};

/** follows policy.CheckHostPorts, hostPorts_1_0 (check_hostPorts.go) */
const hostPorts: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  const ports = new Set<string>();
  visitContainers(spec, (c) => {
    let valid = true;
    for (const p of list(c.raw.ports)) {
      if (isObject(p) && typeof p.hostPort === 'number' && p.hostPort !== 0) {
        valid = false;
        ports.add(String(p.hostPort));
      }
    }
    if (!valid) bad.push(c.name);
  });
  if (bad.length === 0) return undefined;
  const portList = sorted(ports);
  return {
    reason: 'hostPort',
    detail: `${containers(bad)} ${pluralize('uses', 'use', bad.length)} ${pluralize('hostPort', 'hostPorts', portList.length)} ${portList.join(', ')}`,
  };
};

/** follows policy.CheckPrivileged, privileged_1_0 (check_privileged.go) */
const privileged: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    if (c.sc?.privileged === true) bad.push(c.name);
  });
  if (bad.length === 0) return undefined;
  return { reason: 'privileged', detail: `${containers(bad)} must not set securityContext.privileged=true` };
};

/** follows policy.CheckProcMount, procMount_1_0 (check_procMount.go, v1.32; no user-namespace relaxation: its gate is off) */
const procMount: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  const types = new Set<string>();
  visitContainers(spec, (c) => {
    const pm = c.sc?.procMount;
    if (pm === undefined || pm === null) return;
    if (pm !== 'Default') {
      bad.push(c.name);
      types.add(str(pm));
    }
  });
  if (bad.length === 0) return undefined;
  return { reason: 'procMount', detail: `${containers(bad)} must not set securityContext.procMount to ${joinQuote(sorted(types))}` };
};

const SELINUX_ALLOWED_TYPES_1_31 = new Set(['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t']);

/** follows policy.CheckSELinuxOptions, seLinuxOptions1_31 -> seLinuxOptions (check_seLinuxOptions.go) */
const seLinuxOptions: CheckFn = (_meta, spec) => {
  const badSetters: string[] = [];
  const badTypes = new Set<string>();
  let setUser = false;
  let setRole = false;
  const valid = (o: JsonObject): boolean => {
    let ok = true;
    if (!SELINUX_ALLOWED_TYPES_1_31.has(str(o.type))) {
      ok = false;
      badTypes.add(str(o.type));
    }
    if (str(o.user) !== '') {
      ok = false;
      setUser = true;
    }
    if (str(o.role) !== '') {
      ok = false;
      setRole = true;
    }
    return ok;
  };
  const podOpts = obj(podSc(spec)?.seLinuxOptions);
  if (podOpts && !valid(podOpts)) badSetters.push('pod');
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    const o = obj(c.sc?.seLinuxOptions);
    if (o && !valid(o)) bad.push(c.name);
  });
  if (bad.length > 0) badSetters.push(containers(bad));
  if (badSetters.length === 0) return undefined;
  const badData: string[] = [];
  if (badTypes.size > 0) badData.push(`${pluralize('type', 'types', badTypes.size)} ${joinQuote(sorted(badTypes))}`);
  if (setUser) badData.push('user may not be set');
  if (setRole) badData.push('role may not be set');
  return { reason: 'seLinuxOptions', detail: `${badSetters.join(' and ')} set forbidden securityContext.seLinuxOptions: ${badData.join('; ')}` };
};

function validSeccomp(t: Json | undefined): boolean {
  return t === 'Localhost' || t === 'RuntimeDefault';
}

/** follows policy.CheckSeccompBaseline, seccompProfileBaseline_1_19 (check_seccompProfile_baseline.go) */
const seccompProfileBaseline: CheckFn = (_meta, spec) => {
  const badSetters: string[] = [];
  const badValues = new Set<string>();
  const podProfile = obj(podSc(spec)?.seccompProfile);
  if (podProfile && !validSeccomp(podProfile.type)) {
    badSetters.push('pod');
    badValues.add(str(podProfile.type));
  }
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    const p = obj(c.sc?.seccompProfile);
    if (p && !validSeccomp(p.type)) {
      bad.push(c.name);
      badValues.add(str(p.type));
    }
  });
  if (bad.length > 0) badSetters.push(containers(bad));
  if (badSetters.length === 0) return undefined;
  return { reason: 'seccompProfile', detail: `${badSetters.join(' and ')} must not set securityContext.seccompProfile.type to ${joinQuote(sorted(badValues))}` };
};

/** The baseline allowed-sysctls list of v1.32 (sysctlsAllowedV1Dot32 in check_sysctls.go). */
export const SYSCTLS_ALLOWED_1_32: ReadonlySet<string> = new Set([
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
  'net.ipv4.tcp_rmem',
  'net.ipv4.tcp_wmem',
]);

/** follows policy.CheckSysctls, sysctlsV1Dot32 -> sysctls (check_sysctls.go) */
const sysctls: CheckFn = (_meta, spec) => {
  const forbidden: string[] = [];
  for (const s of list(podSc(spec)?.sysctls)) {
    if (isObject(s) && !SYSCTLS_ALLOWED_1_32.has(str(s.name))) forbidden.push(str(s.name));
  }
  if (forbidden.length === 0) return undefined;
  return { reason: 'forbidden sysctls', detail: forbidden.join(', ') };
};

/** follows policy.CheckWindowsHostProcess, windowsHostProcess_1_0 (check_windowsHostProcess.go) */
const windowsHostProcess: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    if (obj(c.sc?.windowsOptions)?.hostProcess === true) bad.push(c.name);
  });
  const setters: string[] = [];
  if (obj(podSc(spec)?.windowsOptions)?.hostProcess === true) setters.push('pod');
  if (bad.length > 0) setters.push(containers(bad));
  if (setters.length === 0) return undefined;
  return { reason: 'hostProcess', detail: `${setters.join(' and ')} must not set securityContext.windowsOptions.hostProcess=true` };
};

// ---- restricted checks ----

/** follows policy.CheckAllowPrivilegeEscalation, allowPrivilegeEscalation_1_25 -> _1_8 (check_allowPrivilegeEscalation.go) */
const allowPrivilegeEscalation: CheckFn = (_meta, spec) => {
  if (isWindows(spec)) return undefined;
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    if (c.sc?.allowPrivilegeEscalation !== false) bad.push(c.name);
  });
  if (bad.length === 0) return undefined;
  return { reason: 'allowPrivilegeEscalation != false', detail: `${containers(bad)} must set securityContext.allowPrivilegeEscalation=false` };
};

/** follows policy.CheckCapabilitiesRestricted, capabilitiesRestricted_1_25 -> _1_22 (check_capabilities_restricted.go) */
const capabilitiesRestricted: CheckFn = (_meta, spec) => {
  if (isWindows(spec)) return undefined;
  const missingDropAll: string[] = [];
  const addingForbidden: string[] = [];
  const forbidden = new Set<string>();
  visitContainers(spec, (c) => {
    const caps = obj(c.sc?.capabilities);
    if (!caps) {
      missingDropAll.push(c.name);
      return;
    }
    if (!list(caps.drop).includes('ALL')) missingDropAll.push(c.name);
    let added = false;
    for (const cap of list(caps.add)) {
      if (cap !== 'NET_BIND_SERVICE') {
        added = true;
        forbidden.add(str(cap));
      }
    }
    if (added) addingForbidden.push(c.name);
  });
  const details: string[] = [];
  if (missingDropAll.length > 0) details.push(`${containers(missingDropAll)} must set securityContext.capabilities.drop=["ALL"]`);
  if (addingForbidden.length > 0) details.push(`${containers(addingForbidden)} must not include ${joinQuote(sorted(forbidden))} in securityContext.capabilities.add`);
  if (details.length === 0) return undefined;
  return { reason: 'unrestricted capabilities', detail: details.join('; ') };
};

/** The volume sources restricted allows in v1.32 (`image` joined them in v1.33). */
const ALLOWED_VOLUME_SOURCES = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret'];
/** In the order the Go switch tests them: the first one set names the volume's type. */
const RESTRICTED_VOLUME_SOURCES = [
  'hostPath', 'gcePersistentDisk', 'awsElasticBlockStore', 'gitRepo', 'nfs', 'iscsi', 'glusterfs', 'rbd', 'flexVolume', 'cinder',
  'cephfs', 'flocker', 'fc', 'azureFile', 'vsphereVolume', 'quobyte', 'azureDisk', 'photonPersistentDisk', 'portworxVolume', 'scaleIO', 'storageos',
];

/** follows policy.CheckRestrictedVolumes, restrictedVolumes_1_0 (check_restrictedVolumes.go, v1.32) */
const restrictedVolumes: CheckFn = (_meta, spec) => {
  const bad: string[] = [];
  const types = new Set<string>();
  for (const v of list(spec.volumes)) {
    if (!isObject(v)) continue;
    const set = (k: string): boolean => v[k] !== undefined && v[k] !== null;
    if (ALLOWED_VOLUME_SOURCES.some(set)) continue;
    bad.push(str(v.name));
    types.add(RESTRICTED_VOLUME_SOURCES.find(set) ?? 'unknown');
  }
  if (bad.length === 0) return undefined;
  const typeList = sorted(types);
  return {
    reason: 'restricted volume types',
    detail: `${pluralize('volume', 'volumes', bad.length)} ${joinQuote(bad)} ${pluralize('uses', 'use', bad.length)} ${pluralize('restricted volume type', 'restricted volume types', typeList.length)} ${joinQuote(typeList)}`,
  };
};

/** follows policy.CheckRunAsNonRoot, runAsNonRoot_1_0 (check_runAsNonRoot.go, v1.32; no user-namespace relaxation: its gate is off) */
const runAsNonRoot: CheckFn = (_meta, spec) => {
  const badSetters: string[] = [];
  let podRunAsNonRoot = false;
  const podValue = podSc(spec)?.runAsNonRoot;
  if (typeof podValue === 'boolean') {
    if (!podValue) badSetters.push('pod');
    else podRunAsNonRoot = true;
  }
  const explicitlyBad: string[] = [];
  const implicitlyBad: string[] = [];
  visitContainers(spec, (c) => {
    const v = c.sc?.runAsNonRoot;
    if (typeof v === 'boolean') {
      if (!v) explicitlyBad.push(c.name);
    } else if (!podRunAsNonRoot) implicitlyBad.push(c.name);
  });
  if (explicitlyBad.length > 0) badSetters.push(containers(explicitlyBad));
  if (badSetters.length > 0) return { reason: 'runAsNonRoot != true', detail: `${badSetters.join(' and ')} must not set securityContext.runAsNonRoot=false` };
  if (implicitlyBad.length > 0) return { reason: 'runAsNonRoot != true', detail: `pod or ${containers(implicitlyBad)} must set securityContext.runAsNonRoot=true` };
  return undefined;
};

/** follows policy.CheckRunAsUser, runAsUser_1_23 (check_runAsUser.go, v1.32; no user-namespace relaxation: its gate is off) */
const runAsUser: CheckFn = (_meta, spec) => {
  const badSetters: string[] = [];
  if (podSc(spec)?.runAsUser === 0) badSetters.push('pod');
  const bad: string[] = [];
  visitContainers(spec, (c) => {
    if (c.sc?.runAsUser === 0) bad.push(c.name);
  });
  if (bad.length > 0) badSetters.push(containers(bad));
  if (badSetters.length === 0) return undefined;
  return { reason: 'runAsUser=0', detail: `${badSetters.join(' and ')} must not set runAsUser=0` };
};

/** follows policy.CheckSeccompProfileRestricted, seccompProfileRestricted_1_25 -> _1_19 (check_seccompProfile_restricted.go) */
const seccompProfileRestricted: CheckFn = (_meta, spec) => {
  if (isWindows(spec)) return undefined;
  const badSetters: string[] = [];
  const badValues = new Set<string>();
  let podSet = false;
  const podProfile = obj(podSc(spec)?.seccompProfile);
  if (podProfile) {
    if (!validSeccomp(podProfile.type)) {
      badSetters.push('pod');
      badValues.add(str(podProfile.type));
    } else podSet = true;
  }
  const explicitlyBad: string[] = [];
  const implicitlyBad: string[] = [];
  visitContainers(spec, (c) => {
    const p = obj(c.sc?.seccompProfile);
    if (p) {
      if (!validSeccomp(p.type)) {
        explicitlyBad.push(c.name);
        badValues.add(str(p.type));
      }
    } else if (!podSet) implicitlyBad.push(c.name);
  });
  if (explicitlyBad.length > 0) badSetters.push(containers(explicitlyBad));
  if (badSetters.length > 0) {
    return { reason: 'seccompProfile', detail: `${badSetters.join(' and ')} must not set securityContext.seccompProfile.type to ${joinQuote(sorted(badValues))}` };
  }
  if (implicitlyBad.length > 0) {
    return { reason: 'seccompProfile', detail: `pod or ${containers(implicitlyBad)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"` };
  }
  return undefined;
};

// ---- the registry ----

interface Check {
  id: string;
  level: 'baseline' | 'restricted';
  /** baseline check IDs this restricted check replaces (VersionedCheck.OverrideCheckIDs) */
  overrides?: string[];
  fn: CheckFn;
}

const CHECKS: Check[] = [
  { id: 'allowPrivilegeEscalation', level: 'restricted', fn: allowPrivilegeEscalation },
  { id: 'appArmorProfile', level: 'baseline', fn: appArmorProfile },
  { id: 'capabilities_baseline', level: 'baseline', fn: capabilitiesBaseline },
  { id: 'capabilities_restricted', level: 'restricted', overrides: ['capabilities_baseline'], fn: capabilitiesRestricted },
  { id: 'hostNamespaces', level: 'baseline', fn: hostNamespaces },
  { id: 'hostPathVolumes', level: 'baseline', fn: hostPathVolumes },
  { id: 'hostPorts', level: 'baseline', fn: hostPorts },
  { id: 'privileged', level: 'baseline', fn: privileged },
  { id: 'procMount', level: 'baseline', fn: procMount },
  { id: 'restrictedVolumes', level: 'restricted', overrides: ['hostPathVolumes'], fn: restrictedVolumes },
  { id: 'runAsNonRoot', level: 'restricted', fn: runAsNonRoot },
  { id: 'runAsUser', level: 'restricted', fn: runAsUser },
  { id: 'seLinuxOptions', level: 'baseline', fn: seLinuxOptions },
  { id: 'seccompProfile_baseline', level: 'baseline', fn: seccompProfileBaseline },
  { id: 'seccompProfile_restricted', level: 'restricted', overrides: ['seccompProfile_baseline'], fn: seccompProfileRestricted },
  { id: 'sysctls', level: 'baseline', fn: sysctls },
  { id: 'windowsHostProcess', level: 'baseline', fn: windowsHostProcess },
];

/**
 * The checks of each level in the order their results are reported: follows policy populate
 * (registry.go): baseline IDs sorted, then restricted IDs sorted; restricted runs the baseline
 * checks that no restricted check overrides.
 */
const ORDER: Record<'baseline' | 'restricted', Check[]> = (() => {
  const byId = (a: Check, b: Check): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const baseline = CHECKS.filter((c) => c.level === 'baseline').sort(byId);
  const restricted = CHECKS.filter((c) => c.level === 'restricted').sort(byId);
  const overridden = new Set(restricted.flatMap((c) => c.overrides ?? []));
  return { baseline, restricted: [...baseline.filter((c) => !overridden.has(c.id)), ...restricted] };
})();

/** The IDs the level runs, in report order. */
export function checkIds(level: Level): string[] {
  return level === 'privileged' ? [] : ORDER[level].map((c) => c.id);
}

/** follows checkRegistry.EvaluatePod (registry.go), keeping only the failures (AggregateCheckResults). */
export function evaluatePod(level: Level, meta: PodMeta, spec: JsonObject): CheckFailure[] {
  if (level === 'privileged') return [];
  const out: CheckFailure[] = [];
  for (const c of ORDER[level]) {
    const r = c.fn(meta, spec);
    if (r) out.push({ id: c.id, reason: r.reason || 'unknown forbidden reason', detail: r.detail });
  }
  return out;
}

/** follows AggregateCheckResult.ForbiddenDetail (checks.go): `reason (detail), reason (detail)` */
export function forbiddenDetail(failures: CheckFailure[]): string {
  return failures.map((f) => (f.detail !== '' ? `${f.reason} (${f.detail})` : f.reason)).join(', ');
}

/** follows AggregateCheckResult.ForbiddenReason (checks.go): `reason, reason` */
export function forbiddenReason(failures: CheckFailure[]): string {
  return failures.map((f) => f.reason).join(', ');
}

/** follows api.LevelVersion.String (api/helpers.go) */
export function levelVersionString(lv: LevelVersion): string {
  return `${lv.level}:${lv.version}`;
}

// ---- namespace labels (api/helpers.go PolicyToEvaluate) ----

export const LABELS = {
  enforce: 'pod-security.kubernetes.io/enforce',
  enforceVersion: 'pod-security.kubernetes.io/enforce-version',
  audit: 'pod-security.kubernetes.io/audit',
  auditVersion: 'pod-security.kubernetes.io/audit-version',
  warn: 'pod-security.kubernetes.io/warn',
  warnVersion: 'pod-security.kubernetes.io/warn-version',
} as const;

/** A label that does not parse: becomes field.Invalid(metadata.labels[label], value, detail). */
export interface LabelError {
  label: string;
  value: string;
  detail: string;
}

/** kube-apiserver's default PodSecurityConfiguration: privileged:latest for every mode. */
export function defaultPolicy(): Policy {
  return {
    enforce: { level: 'privileged', version: 'latest' },
    audit: { level: 'privileged', version: 'latest' },
    warn: { level: 'privileged', version: 'latest' },
  };
}

/** follows api.ParseLevel: an unknown level is "restricted" plus an error. */
function parseLevel(v: string): { level: Level; error?: string } {
  if (v === 'privileged' || v === 'baseline' || v === 'restricted') return { level: v };
  return { level: 'restricted', error: 'must be one of privileged, baseline, restricted' };
}

/** follows api.ParseVersion: "latest" or v1.N; anything else is latest plus an error. */
function parseVersion(v: string): { version: string; error?: string } {
  if (v === 'latest' || /^v1\.([0-9]|[1-9][0-9]*)$/.test(v)) return { version: v };
  return { version: 'latest', error: 'must be "latest" or "v1.x"' };
}

function compareLevels(a: Level, b: Level): number {
  const rank: Record<Level, number> = { privileged: 0, baseline: 1, restricted: 2 };
  return Math.sign(rank[a] - rank[b]);
}

/**
 * follows api.PolicyToEvaluate (api/helpers.go): bad enforce levels fail closed (restricted), bad
 * audit and warn levels fail open (privileged), bad versions mean latest; warn follows enforce
 * when only enforce is set to something stricter.
 */
export function policyToEvaluate(labels: Record<string, string> | undefined): { policy: Policy; errors: LabelError[] } {
  const p = defaultPolicy();
  const errors: LabelError[] = [];
  if (!labels || Object.keys(labels).length === 0) return { policy: p, errors };
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(labels, k);
  const note = (label: string, value: string, error: string | undefined): void => {
    if (error) errors.push({ label, value, detail: error });
  };
  let hasEnforceLevel = false;
  if (has(LABELS.enforce)) {
    const r = parseLevel(labels[LABELS.enforce]);
    p.enforce.level = r.level;
    hasEnforceLevel = !r.error;
    note(LABELS.enforce, labels[LABELS.enforce], r.error);
  }
  if (has(LABELS.enforceVersion)) {
    const r = parseVersion(labels[LABELS.enforceVersion]);
    p.enforce.version = r.version;
    note(LABELS.enforceVersion, labels[LABELS.enforceVersion], r.error);
  }
  if (has(LABELS.audit)) {
    const r = parseLevel(labels[LABELS.audit]);
    p.audit.level = r.error ? 'privileged' : r.level;
    note(LABELS.audit, labels[LABELS.audit], r.error);
  }
  if (has(LABELS.auditVersion)) {
    const r = parseVersion(labels[LABELS.auditVersion]);
    p.audit.version = r.version;
    note(LABELS.auditVersion, labels[LABELS.auditVersion], r.error);
  }
  const hasWarnLevel = has(LABELS.warn);
  const hasWarnVersion = has(LABELS.warnVersion);
  if (hasWarnLevel) {
    const r = parseLevel(labels[LABELS.warn]);
    p.warn.level = r.error ? 'privileged' : r.level;
    note(LABELS.warn, labels[LABELS.warn], r.error);
  }
  if (hasWarnVersion) {
    const r = parseVersion(labels[LABELS.warnVersion]);
    p.warn.version = r.version;
    note(LABELS.warnVersion, labels[LABELS.warnVersion], r.error);
  }
  if (!hasWarnLevel && hasEnforceLevel && compareLevels(p.enforce.level, p.warn.level) > 0) {
    p.warn.level = p.enforce.level;
    if (!hasWarnVersion) p.warn.version = p.enforce.version;
  }
  return { policy: p, errors };
}

// ---- the admission decision (admission/admission.go) ----

export interface Decision {
  /** set when enforce refuses: the error that apierrors.NewForbidden wraps (`violates PodSecurity ...`) */
  violation?: string;
  /** the Warning texts (without the `299 - "..."` framing) */
  warnings: string[];
  /** what audit would log (audit-violations annotation); the lab keeps no audit log */
  auditViolation?: string;
}

function sameLevelVersion(a: LevelVersion, b: LevelVersion): boolean {
  return a.level === b.level && a.version === b.version;
}

/**
 * follows Admission.EvaluatePod (admission.go). `enforce` is true for pods (ValidatePod) and
 * false for objects with pod templates (ValidatePodController: warn and audit only).
 */
export function evaluate(policy: Policy, meta: PodMeta, spec: JsonObject, enforce: boolean): Decision {
  const cache: Array<{ lv: LevelVersion; failures: CheckFailure[] }> = [];
  const run = (lv: LevelVersion): CheckFailure[] => {
    const hit = cache.find((c) => sameLevelVersion(c.lv, lv));
    if (hit) return hit.failures;
    const failures = evaluatePod(lv.level, meta, spec);
    cache.push({ lv, failures });
    return failures;
  };
  const out: Decision = { warnings: [] };
  if (enforce) {
    const f = run(policy.enforce);
    if (f.length > 0) out.violation = `violates PodSecurity ${goQuote(levelVersionString(policy.enforce))}: ${forbiddenDetail(f)}`;
  }
  const a = run(policy.audit);
  if (a.length > 0) out.auditViolation = `would violate PodSecurity ${goQuote(levelVersionString(policy.audit))}: ${forbiddenDetail(a)}`;
  if (!out.violation) {
    const w = run(policy.warn);
    if (w.length > 0) out.warnings.push(`would violate PodSecurity ${goQuote(levelVersionString(policy.warn))}: ${forbiddenDetail(w)}`);
  }
  return out;
}

function fullyPrivileged(p: Policy): boolean {
  return p.enforce.level === 'privileged' && p.audit.level === 'privileged' && p.warn.level === 'privileged';
}

/** follows Admission.ValidatePod (admission.go) once the namespace is read: pods are enforced. */
export function admitPod(nsLabels: Record<string, string> | undefined, meta: PodMeta, spec: JsonObject): Decision {
  const { policy, errors } = policyToEvaluate(nsLabels);
  if (errors.length === 0 && fullyPrivileged(policy)) return { warnings: [] };
  return evaluate(policy, meta, spec, true);
}

/** follows Admission.ValidatePodController (admission.go): pod templates only warn (and audit). */
export function admitPodTemplate(nsLabels: Record<string, string> | undefined, meta: PodMeta, spec: JsonObject): Decision {
  const { policy, errors } = policyToEvaluate(nsLabels);
  if (errors.length === 0 && policy.warn.level === 'privileged' && policy.audit.level === 'privileged') return { warnings: [] };
  return evaluate(policy, meta, spec, false);
}

/**
 * follows isSignificantPodUpdate (admission.go): an update is checked again only when it changes
 * an image, the number of (init) containers, or adds or changes an ephemeral container's image.
 */
export function isSignificantPodUpdate(next: JsonObject, old: JsonObject): boolean {
  const images = (s: JsonObject, key: string): string[] => list(s[key]).map((c) => (isObject(c) ? str(c.image) : ''));
  for (const key of ['containers', 'initContainers']) {
    const a = images(next, key);
    const b = images(old, key);
    if (a.length !== b.length || a.some((img, i) => img !== b[i])) return true;
  }
  const oldEphemeral = new Map<string, string>();
  for (const c of list(old.ephemeralContainers)) if (isObject(c)) oldEphemeral.set(str(c.name), str(c.image));
  for (const c of list(next.ephemeralContainers)) {
    if (!isObject(c)) continue;
    const before = oldEphemeral.get(str(c.name));
    if (before === undefined || before !== str(c.image)) return true;
  }
  return false;
}

/**
 * follows NewWarningHeader and makeQuotedString (k8s.io/apimachinery/pkg/util/net/http.go):
 * `299 - "text"` with `"` and `\` escaped by a backslash.
 */
export function warningHeader(text: string): string {
  return `299 - "${text.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

// ---- namespaces (Admission.ValidateNamespace) ----

/**
 * follows Admission.ValidateNamespace (admission.go) for its refusals: a create with labels that
 * do not parse is refused; an update only when it brings new label errors (unchanged bad labels
 * of an old namespace still let it be updated).
 */
export function namespaceLabelErrors(next: Record<string, string> | undefined, old: Record<string, string> | undefined, isUpdate: boolean): LabelError[] {
  const newErrs = policyToEvaluate(next).errors;
  if (newErrs.length === 0 || !isUpdate) return newErrs;
  const oldErrs = policyToEvaluate(old).errors;
  const same = oldErrs.length === newErrs.length && oldErrs.every((e, i) => e.label === newErrs[i].label && e.value === newErrs[i].value && e.detail === newErrs[i].detail);
  return oldErrs.length === 0 || !same ? newErrs : [];
}

/** A pod already in the namespace, as EvaluatePodsInNamespace reads it. */
export interface ExistingPod {
  name: string;
  /** uid of the controller ownerReference */
  controllerUid?: string;
  meta: PodMeta;
  spec: JsonObject;
}

/** defaultNamespaceMaxPodsToCheck (admission.go) */
const NAMESPACE_MAX_PODS_TO_CHECK = 3000;

/**
 * follows Admission.ValidateNamespace (update) and EvaluatePodsInNamespace, prioritizePods and
 * decoratePodWarnings (admission.go): when the enforce level gets stricter, the existing pods are
 * checked (one per controller first) and each distinct set of reasons is one warning, named by
 * its first pod in name order. The pods are listed only when the level got stricter. The 1 s
 * time limit of the real check is not needed here.
 */
export function namespaceUpdateWarnings(
  namespace: string,
  oldLabels: Record<string, string> | undefined,
  newLabels: Record<string, string> | undefined,
  listPods: () => ExistingPod[],
): string[] {
  const next = policyToEvaluate(newLabels).policy.enforce;
  const old = policyToEvaluate(oldLabels).policy.enforce;
  if (sameLevelVersion(next, old)) return [];
  if (next.level === 'privileged') return [];
  if (next.version === old.version && compareLevels(next.level, old.level) < 1) return [];

  const seen = new Set<string>();
  const first: ExistingPod[] = [];
  const duplicates: ExistingPod[] = [];
  for (const p of listPods()) {
    if (p.controllerUid === undefined) first.push(p);
    else if (seen.has(p.controllerUid)) duplicates.push(p);
    else {
      seen.add(p.controllerUid);
      first.push(p);
    }
  }
  const prioritized = [...first, ...duplicates];
  const checked = prioritized.slice(0, NAMESPACE_MAX_PODS_TO_CHECK);
  const counts = new Map<string, { podName: string; count: number }>();
  const reasons: string[] = [];
  for (const p of checked) {
    const f = evaluatePod(next.level, p.meta, p.spec);
    if (f.length === 0) continue;
    const reason = forbiddenReason(f);
    const c = counts.get(reason);
    if (!c) {
      counts.set(reason, { podName: p.name, count: 1 });
      reasons.push(reason);
    } else {
      if (p.name < c.podName) c.podName = p.name;
      c.count++;
    }
  }
  const warnings: string[] = [];
  if (checked.length < prioritized.length) warnings.push(`new PodSecurity enforce level only checked against the first ${checked.length} of ${prioritized.length} existing pods`);
  if (reasons.length > 0) warnings.push(`existing pods in namespace ${goQuote(namespace)} violate the new PodSecurity enforce level ${goQuote(levelVersionString(next))}`);
  const decorated = reasons.map((r) => {
    const c = counts.get(r)!;
    if (c.count === 1) return `${c.podName}: ${r}`;
    if (c.count === 2) return `${c.podName} (and 1 other pod): ${r}`;
    return `${c.podName} (and ${c.count - 1} other pods): ${r}`;
  });
  return [...warnings, ...decorated.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))];
}
