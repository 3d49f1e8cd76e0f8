/**
 * Discovery documents: /version, /api, /apis, /api/v1, /apis/GROUP[/VERSION].
 */
import type { JsonObject } from './json.js';
import { apiVersionOf, GROUP_VERSIONS, RESOURCES, verbsOf, type ResourceInfo } from './resources.js';

export const SERVER_ADDRESS = '198.18.255.2:6443';

/**
 * The lab says it is Kubernetes 1.35: the first release that also asks for `create` on the WebSocket
 * upgrade of pods/exec|attach|portforward (server.ts `#authorizeConnectCreate`). Pod Security
 * (podsecurity.ts) still follows the v1.32 policy.
 */
export function versionInfo(): JsonObject {
  return {
    major: '1',
    minor: '35',
    emulationMajor: '1',
    emulationMinor: '35',
    minCompatibilityMajor: '1',
    minCompatibilityMinor: '34',
    gitVersion: 'v1.35.0-ktlab',
    gitCommit: '0000000000000000000000000000000000000000',
    gitTreeState: 'clean',
    buildDate: '2025-12-17T00:00:00Z',
    goVersion: 'go1.25.5',
    compiler: 'gc',
    platform: 'linux/amd64',
  };
}

export function apiVersions(): JsonObject {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: SERVER_ADDRESS }],
  };
}

function groupEntry(group: string): JsonObject {
  const versions = GROUP_VERSIONS.filter((g) => g.group === group).map((g) => ({ groupVersion: `${g.group}/${g.version}`, version: g.version }));
  return { name: group, versions, preferredVersion: versions[0] };
}

export function apiGroupList(): JsonObject {
  const groups = [...new Set(GROUP_VERSIONS.map((g) => g.group).filter((g) => g !== ''))];
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupEntry) };
}

export function apiGroup(group: string): JsonObject | undefined {
  if (!GROUP_VERSIONS.some((g) => g.group === group && group !== '')) return undefined;
  return { kind: 'APIGroup', apiVersion: 'v1', ...groupEntry(group) };
}

function resourceEntries(info: ResourceInfo): JsonObject[] {
  const main: JsonObject = {
    name: info.name,
    singularName: info.singularName,
    namespaced: info.namespaced,
    kind: info.kind,
    verbs: verbsOf(info),
  };
  if (info.shortNames) main.shortNames = info.shortNames;
  if (info.categories) main.categories = info.categories;
  const out: JsonObject[] = [main];
  for (const sub of info.subresources) {
    const e: JsonObject = { name: `${info.name}/${sub}`, singularName: '', namespaced: info.namespaced, kind: info.kind, verbs: ['get', 'patch', 'update'] };
    if (sub === 'scale') {
      e.group = 'autoscaling';
      e.version = 'v1';
      e.kind = 'Scale';
    } else if (sub === 'exec' || sub === 'portforward' || sub === 'attach') {
      e.kind = sub === 'exec' ? 'PodExecOptions' : sub === 'portforward' ? 'PodPortForwardOptions' : 'PodAttachOptions';
      e.verbs = ['create', 'get'];
    } else if (sub === 'log') {
      e.kind = 'Pod';
      e.verbs = ['get'];
    } else if (sub === 'proxy') {
      e.kind = info.kind === 'Node' ? 'NodeProxyOptions' : info.kind === 'Pod' ? 'PodProxyOptions' : 'ServiceProxyOptions';
      e.verbs = ['create', 'delete', 'get', 'patch', 'update'];
    } else if (sub === 'binding') {
      e.kind = 'Binding';
      e.verbs = ['create'];
    } else if (sub === 'eviction') {
      e.group = 'policy';
      e.version = 'v1';
      e.kind = 'Eviction';
      e.verbs = ['create'];
    } else if (sub === 'token') {
      e.group = 'authentication.k8s.io';
      e.version = 'v1';
      e.kind = 'TokenRequest';
      e.verbs = ['create'];
    } else if (sub === 'finalize') {
      e.verbs = ['update'];
    }
    out.push(e);
  }
  return out;
}

export function apiResourceList(group: string, version: string): JsonObject | undefined {
  if (!GROUP_VERSIONS.some((g) => g.group === group && g.version === version)) return undefined;
  const resources = RESOURCES.filter((r) => r.group === group && r.version === version).flatMap(resourceEntries);
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf({ group, version }), resources };
}
