/**
 * How ktctl's pods run (user, resources, service account, pull policy): what the shadow flags of
 * connect, forward, exchange, mesh and preview decide. Kept apart from shadow.ts so that the CLI
 * can check these flags without loading @kubernetes/client-node (a --via run never does).
 */

/**
 * The shadow runs as this non-root user: `node` (uid 1000) of the official Node.js image, the
 * default image (DEFAULT_SHADOW_IMAGE). A kubelet refuses `runAsNonRoot` without a numeric user
 * when the image's own user is root (as the Node image's is), so ktctl names one the image has.
 */
export const SHADOW_UID = 1000;

/**
 * How every pod ktctl makes is run (the shadow flags of connect, forward, exchange, mesh, preview):
 * `runAsUser: 'auto'` leaves the user to the cluster (OpenShift's restricted SCC assigns one from
 * the namespace's range and refuses any other).
 */
export interface PodSettings {
  runAsUser: number | 'auto';
  /** --podQuota: requests = limits = these */
  resources?: { cpu?: string; memory?: string };
  /** --serviceAccount (its token is still not mounted: the shadow needs no API access) */
  serviceAccount?: string;
  /** --forceUpdate: Always */
  pullPolicy: 'IfNotPresent' | 'Always';
  /** the user's --withLabel alone: for what runs share (the program ConfigMap), not a run's own labels */
  userLabels: Record<string, string>;
}

export const DEFAULT_POD_SETTINGS: PodSettings = { runAsUser: SHADOW_UID, pullPolicy: 'IfNotPresent', userLabels: {} };

/**
 * `--podQuota CPU,MEM` in KT Connect's form (`0.5c,512m`: cores with `c`, megabytes with `m`, as its
 * documentation writes them) or as Kubernetes quantities (`500m,512Mi`); either half may be empty.
 * Returns the quantities for requests and limits; throws RangeError with the reason.
 */
export function parsePodQuota(text: string): { cpu?: string; memory?: string } {
  const parts = text.split(',');
  if (parts.length > 2) throw new RangeError('takes CPU,MEMORY (e.g. 0.5c,512m or 500m,512Mi)');
  const [cpuText = '', memText = ''] = parts.map((x) => x.trim());
  const out: { cpu?: string; memory?: string } = {};
  if (cpuText !== '') {
    const kt = /^(\d+(?:\.\d+)?)c$/.exec(cpuText);
    // as the API server writes a quantity back (canonical form): 0.5 cores -> 500m, 2 -> 2
    if (kt) out.cpu = Number.isInteger(Number(kt[1])) ? String(Number(kt[1])) : `${Math.round(Number(kt[1]) * 1000)}m`;
    else if (/^\d+(?:\.\d+)?m?$/.test(cpuText)) out.cpu = cpuText;
    else throw new RangeError(`CPU "${cpuText}" is neither cores (0.5c, 1) nor millicores (500m)`);
  }
  if (memText !== '') {
    const kt = /^(\d+)([mg])$/i.exec(memText);
    if (kt) out.memory = `${kt[1]}${kt[2]!.toLowerCase() === 'm' ? 'Mi' : 'Gi'}`;
    else if (/^\d+(?:Ki|Mi|Gi|Ti|K|M|G|T)?$/.test(memText)) out.memory = memText;
    else throw new RangeError(`memory "${memText}" is neither megabytes (512m) nor a Kubernetes quantity (512Mi, 1Gi)`);
  }
  if (out.cpu === undefined && out.memory === undefined) throw new RangeError('takes CPU,MEMORY (e.g. 0.5c,512m or 500m,512Mi)');
  return out;
}
