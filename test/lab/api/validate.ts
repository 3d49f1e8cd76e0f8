/**
 * Defaults and validation per kind, enough of kube-apiserver's to give the same 422s for the
 * mistakes people and programs actually make.
 */
import { invalid, type FieldError, type ApiError } from './status.js';
import { isObject, type Container, type Json, type JsonObject, type PodSpec } from './json.js';
import type { ResourceInfo } from './resources.js';
import { matchesSelector } from './selectors.js';
import { validateRbac } from './rbac-validate.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

export function nameRule(info: ResourceInfo): 'subdomain' | 'label' | 'dns1035' {
  if (info.kind === 'Namespace') return 'label';
  if (info.kind === 'Service') return 'dns1035';
  return 'subdomain';
}

export function checkName(info: ResourceInfo, name: string, field = 'metadata.name'): FieldError[] {
  const rule = nameRule(info);
  if (rule === 'label' && (!DNS1123_LABEL.test(name) || name.length > 63)) {
    return [{ field, type: 'Invalid', value: name, detail: name.length > 63 ? 'must be no more than 63 characters' : LABEL_MSG }];
  }
  if (rule === 'dns1035' && (!DNS1035_LABEL.test(name) || name.length > 63)) {
    return [{ field, type: 'Invalid', value: name, detail: name.length > 63 ? 'must be no more than 63 characters' : DNS1035_MSG }];
  }
  if (rule === 'subdomain' && (!DNS1123_SUBDOMAIN.test(name) || name.length > 253)) {
    return [{ field, type: 'Invalid', value: name, detail: name.length > 253 ? 'must be no more than 253 characters' : SUBDOMAIN_MSG }];
  }
  return [];
}

function checkLabels(labels: Json | undefined, field: string): FieldError[] {
  if (labels === undefined || labels === null) return [];
  if (!isObject(labels)) return [{ field, type: 'Invalid', value: labels, detail: 'must be a map of strings' }];
  const errs: FieldError[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (!QUALIFIED_NAME.test(k) || k.split('/').pop()!.length > 63) {
      errs.push({ field, type: 'Invalid', value: k, detail: "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character" });
    }
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
      errs.push({
        field,
        type: 'Invalid',
        value: v,
        detail: "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
      });
    }
  }
  return errs;
}

function checkContainers(list: unknown, field: string, required: boolean): FieldError[] {
  if (!Array.isArray(list) || list.length === 0) return required ? [{ field, type: 'Required' }] : [];
  const errs: FieldError[] = [];
  const names = new Set<string>();
  list.forEach((c: unknown, i: number) => {
    const f = `${field}[${i}]`;
    if (!isObject(c)) {
      errs.push({ field: f, type: 'Invalid', value: c as Json, detail: 'must be an object' });
      return;
    }
    if (typeof c.name !== 'string' || c.name === '') errs.push({ field: `${f}.name`, type: 'Required' });
    else if (!DNS1123_LABEL.test(c.name)) errs.push({ field: `${f}.name`, type: 'Invalid', value: c.name, detail: LABEL_MSG });
    else if (names.has(c.name)) errs.push({ field: `${f}.name`, type: 'Duplicate', value: c.name });
    else names.add(c.name);
    if (typeof c.image !== 'string' || c.image === '') errs.push({ field: `${f}.image`, type: 'Required' });
    if (Array.isArray(c.ports)) {
      c.ports.forEach((p, j) => {
        const port = isObject(p) ? p.containerPort : undefined;
        if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
          errs.push({ field: `${f}.ports[${j}].containerPort`, type: port === undefined ? 'Required' : 'Invalid', value: port ?? null, detail: port === undefined ? undefined : 'must be between 1 and 65535, inclusive' });
        }
      });
    }
  });
  return errs;
}

function checkPodSpec(spec: unknown, field: string): FieldError[] {
  if (!isObject(spec)) return [{ field: `${field}.containers`, type: 'Required' }];
  const errs = checkContainers(spec.containers, `${field}.containers`, true);
  errs.push(...checkContainers(spec.initContainers, `${field}.initContainers`, false));
  const rp = spec.restartPolicy;
  if (rp !== undefined && rp !== 'Always' && rp !== 'OnFailure' && rp !== 'Never') {
    errs.push({ field: `${field}.restartPolicy`, type: 'NotSupported', value: rp, detail: 'supported values: "Always", "OnFailure", "Never"' });
  }
  return errs;
}

function checkPort(v: Json | undefined, field: string): FieldError[] {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    return [{ field, type: v === undefined ? 'Required' : 'Invalid', value: v ?? null, detail: v === undefined ? undefined : 'must be between 1 and 65535, inclusive' }];
  }
  return [];
}

/** All validation errors of an object of the given kind (name already final). */
export function validate(info: ResourceInfo, obj: JsonObject): ApiError | undefined {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : '';
  if (info.group === 'rbac.authorization.k8s.io') {
    const labelErrors = checkLabels(meta.labels, 'metadata.labels').map((e) => ({ field: e.field, type: 'Invalid' as const, value: JSON.stringify(e.value ?? null), detail: e.detail }));
    return validateRbac(info, obj, labelErrors);
  }
  const errs: FieldError[] = [];
  if (name === '') errs.push({ field: 'metadata.name', type: 'Required', detail: 'name or generateName is required' });
  else errs.push(...checkName(info, name));
  errs.push(...checkLabels(meta.labels, 'metadata.labels'));
  const spec = isObject(obj.spec) ? obj.spec : undefined;
  switch (info.kind) {
    case 'Pod':
      errs.push(...checkPodSpec(obj.spec, 'spec'));
      break;
    case 'Deployment':
    case 'ReplicaSet': {
      if (!spec) {
        errs.push({ field: 'spec.selector', type: 'Required' }, { field: 'spec.template.spec.containers', type: 'Required' });
        break;
      }
      const sel = spec.selector;
      const tmpl = isObject(spec.template) ? spec.template : {};
      const tmeta = isObject(tmpl.metadata) ? tmpl.metadata : {};
      const labels = isObject(tmeta.labels) ? (tmeta.labels as Record<string, string>) : {};
      if (!isObject(sel) || (!isObject(sel.matchLabels) && !Array.isArray(sel.matchExpressions))) {
        errs.push({ field: 'spec.selector', type: 'Required' });
      } else if (!matchesSelector(sel as never, labels)) {
        errs.push({ field: 'spec.template.metadata.labels', type: 'Invalid', value: labels, detail: '`selector` does not match template `labels`' });
      }
      errs.push(...checkLabels(tmeta.labels, 'spec.template.metadata.labels'));
      errs.push(...checkPodSpec(tmpl.spec, 'spec.template.spec'));
      const rp = isObject(tmpl.spec) ? tmpl.spec.restartPolicy : undefined;
      if (rp !== undefined && rp !== 'Always') {
        errs.push({ field: 'spec.template.spec.restartPolicy', type: 'NotSupported', value: rp, detail: 'supported values: "Always"' });
      }
      if (spec.replicas !== undefined && (typeof spec.replicas !== 'number' || spec.replicas < 0)) {
        errs.push({ field: 'spec.replicas', type: 'Invalid', value: spec.replicas, detail: 'must be greater than or equal to 0' });
      }
      break;
    }
    case 'Service': {
      const ports = spec?.ports;
      const headless = spec?.clusterIP === 'None';
      const type = spec?.type ?? 'ClusterIP';
      if (type !== 'ClusterIP' && type !== 'NodePort' && type !== 'LoadBalancer' && type !== 'ExternalName') {
        errs.push({ field: 'spec.type', type: 'NotSupported', value: type, detail: 'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"' });
      }
      if (!Array.isArray(ports) || ports.length === 0) {
        if (!headless && type !== 'ExternalName') errs.push({ field: 'spec.ports', type: 'Required' });
      } else {
        const seen = new Set<string>();
        ports.forEach((p, i) => {
          const po = isObject(p) ? p : {};
          errs.push(...checkPort(po.port, `spec.ports[${i}].port`));
          if (ports.length > 1 && (typeof po.name !== 'string' || po.name === '')) errs.push({ field: `spec.ports[${i}].name`, type: 'Required' });
          const key = `${String(po.port)}/${String(po.protocol ?? 'TCP')}`;
          if (seen.has(key)) errs.push({ field: `spec.ports[${i}]`, type: 'Duplicate', value: po as Json });
          seen.add(key);
          if (typeof po.targetPort === 'number') errs.push(...checkPort(po.targetPort, `spec.ports[${i}].targetPort`));
        });
      }
      break;
    }
    case 'Secret':
    case 'ConfigMap': {
      const data = obj.data;
      if (data !== undefined && data !== null) {
        if (!isObject(data)) errs.push({ field: 'data', type: 'Invalid', value: data, detail: 'must be a map' });
        else
          for (const [k, v] of Object.entries(data)) {
            if (!/^[-._a-zA-Z0-9]+$/.test(k)) errs.push({ field: `data[${k}]`, type: 'Invalid', value: k, detail: "a valid config key must consist of alphanumeric characters, '-', '_' or '.'" });
            if (typeof v !== 'string') errs.push({ field: `data[${k}]`, type: 'Invalid', value: v, detail: 'must be a string' });
            else if (info.kind === 'Secret' && !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
              errs.push({ field: `data[${k}]`, type: 'Invalid', value: '<secret contents redacted>', detail: 'illegal base64 data' });
            }
          }
      }
      break;
    }
  }
  if (errs.length === 0) return undefined;
  return invalid(info.group, info.kind, name, errs);
}

function defaultContainer(c: JsonObject): void {
  const image = typeof c.image === 'string' ? c.image : '';
  const tag = image.includes('@') ? 'digest' : (image.split('/').pop() ?? '').split(':')[1];
  c.imagePullPolicy ??= tag === undefined || tag === 'latest' ? 'Always' : 'IfNotPresent';
  c.terminationMessagePath ??= '/dev/termination-log';
  c.terminationMessagePolicy ??= 'File';
  c.resources ??= {};
  if (Array.isArray(c.ports)) for (const p of c.ports) if (isObject(p)) p.protocol ??= 'TCP';
  if (Array.isArray(c.env)) {
    for (const e of c.env) {
      if (isObject(e) && isObject(e.valueFrom) && isObject(e.valueFrom.fieldRef)) e.valueFrom.fieldRef.apiVersion ??= 'v1';
    }
  }
}

export function defaultPodSpec(spec: JsonObject): void {
  spec.restartPolicy ??= 'Always';
  spec.terminationGracePeriodSeconds ??= 30;
  spec.dnsPolicy ??= 'ClusterFirst';
  spec.securityContext ??= {};
  spec.schedulerName ??= 'default-scheduler';
  spec.serviceAccountName ??= typeof spec.serviceAccount === 'string' ? spec.serviceAccount : 'default';
  spec.serviceAccount ??= spec.serviceAccountName;
  spec.enableServiceLinks ??= true;
  for (const list of [spec.containers, spec.initContainers]) {
    if (Array.isArray(list)) for (const c of list) if (isObject(c)) defaultContainer(c);
  }
  if (Array.isArray(spec.volumes)) {
    for (const v of spec.volumes) {
      if (!isObject(v)) continue;
      if (isObject(v.secret)) v.secret.defaultMode ??= 420;
      if (isObject(v.configMap)) v.configMap.defaultMode ??= 420;
    }
  }
}

/** Fills defaults in place (after validation succeeded). */
export function applyDefaults(info: ResourceInfo, obj: JsonObject): void {
  const spec = isObject(obj.spec) ? obj.spec : undefined;
  switch (info.kind) {
    case 'Namespace': {
      const meta = obj.metadata as JsonObject;
      const labels = isObject(meta.labels) ? meta.labels : {};
      labels['kubernetes.io/metadata.name'] = meta.name as string;
      meta.labels = labels;
      obj.spec = { finalizers: ['kubernetes'] };
      obj.status = { phase: 'Active' };
      break;
    }
    case 'Pod':
      if (spec) defaultPodSpec(spec);
      obj.status = { phase: 'Pending', qosClass: 'BestEffort' };
      break;
    case 'Deployment':
    case 'ReplicaSet':
      if (!spec) break;
      spec.replicas ??= 1;
      if (info.kind === 'Deployment') {
        spec.revisionHistoryLimit ??= 10;
        spec.progressDeadlineSeconds ??= 600;
        spec.strategy ??= { type: 'RollingUpdate', rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' } };
      }
      if (isObject(spec.template)) {
        spec.template.metadata ??= {};
        if (isObject(spec.template.spec)) defaultPodSpec(spec.template.spec);
      }
      obj.status ??= {};
      break;
    case 'Service':
      if (!spec) break;
      spec.type ??= 'ClusterIP';
      spec.sessionAffinity ??= 'None';
      if (spec.type !== 'ExternalName') {
        spec.internalTrafficPolicy ??= 'Cluster';
        spec.ipFamilies ??= ['IPv4'];
        spec.ipFamilyPolicy ??= 'SingleStack';
      }
      if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') spec.externalTrafficPolicy ??= 'Cluster';
      if (Array.isArray(spec.ports)) {
        for (const p of spec.ports) {
          if (!isObject(p)) continue;
          p.protocol ??= 'TCP';
          p.targetPort ??= p.port;
        }
      }
      obj.status ??= { loadBalancer: {} };
      break;
    case 'Secret': {
      obj.type ??= 'Opaque';
      if (isObject(obj.stringData)) {
        const data = isObject(obj.data) ? obj.data : {};
        for (const [k, v] of Object.entries(obj.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
        obj.data = data;
      }
      delete obj.stringData;
      break;
    }
  }
}

/** PodSpec typed view for the kubelet side. */
export function podSpecOf(o: JsonObject): PodSpec {
  return o.spec as unknown as PodSpec;
}
export type { Container };
