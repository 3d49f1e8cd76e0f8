/**
 * The names ktctl writes on cluster objects (DESIGN.md, "Nothing is left behind"): what `clean`,
 * `status` and every command that creates something agree on.
 */
import { hostname, userInfo } from 'node:os';

export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'ktctl';
/** `connect`, `exchange`, `mesh`, `preview`, `router`. */
export const LABEL_ROLE = 'ktctl/role';
/** Which run made the object (the shadow's name): lets a run find its own Secret and Pod. */
export const LABEL_RUN = 'ktctl/run';
/**
 * The Service an exchange/mesh/preview shadow, a router or a stuntman belongs to (its name):
 * what `recover <svc>` and `clean` look objects up by.
 */
export const LABEL_SERVICE = 'ktctl/service';

/** The API server's time of the last sign of life, RFC 3339. */
export const ANNOTATION_HEARTBEAT = 'ktctl/heartbeat';
/** `user@host pid`. */
export const ANNOTATION_OWNER = 'ktctl/owner';
/** Originals of what ktctl changed in place; `clean` restores them. */
export const ANNOTATION_ORIGINAL_REPLICAS = 'ktctl/original-replicas';
export const ANNOTATION_ORIGINAL_SELECTOR = 'ktctl/original-selector';
/** --shareShadow: how many connect processes use this shadow (a decimal count). */
export const ANNOTATION_USERS = 'ktctl/users';
/** --shareShadow: who shares it (`user@host`); only processes of that user join. */
export const ANNOTATION_SHARED_BY = 'ktctl/shared-by';

export type Role = 'connect' | 'exchange' | 'mesh' | 'preview' | 'router';
/** The `ktctl/role` of the ConfigMap that holds the shadow program (src/kube/program.ts). */
export const ROLE_PROGRAM = 'program';

export const MANAGED_SELECTOR = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;

/**
 * The image every shadow, router and exchange pod runs: the official Node.js image, by an exact tag,
 * fully qualified (CRI-O refuses short names in enforcing mode). ktctl's program comes in a
 * ConfigMap (src/kube/program.ts), so nothing of ours has to be published. Node 24 is an LTS line
 * (supported until April 2028); Alpine is its smallest variant (the bundle is pure JavaScript, so
 * musl does not matter). The image runs as root by default and has the user `node`, uid 1000, which
 * ktctl asks for (SHADOW_UID).
 */
export const DEFAULT_SHADOW_IMAGE = 'docker.io/library/node:24.14.1-alpine3.23';

/** `user@host`. */
export function userAtHost(): string {
  let user = process.env.USER ?? '';
  try {
    user = userInfo().username;
  } catch {
    /* no passwd entry */
  }
  return `${user || 'unknown'}@${hostname()}`;
}

/** The `ktctl/owner` of this process: `user@host pid`. */
export function ownerOf(pid: number = process.pid): string {
  return `${userAtHost()} ${pid}`;
}

/** Kubernetes names are DNS labels: lower case, digits and '-', at most 63 characters. */
export function dnsLabel(text: string): string {
  const s = text
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return s.slice(0, 63).replace(/-+$/, '') || 'x';
}

/** Parses `k=v,k2=v2` (--withLabel, --withAnnotation, --nodeSelector). */
export function parseKeyValues(text: string | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (text === undefined || text.trim() === '') return out;
  for (const part of text.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new KeyValueError(`${flag} takes key=value pairs separated by commas (got "${p}")`);
    out[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
  }
  return out;
}

export class KeyValueError extends Error {}

/**
 * Locks on a Service (src/kube/lock.ts): the role that holds it (`exchange` alone, or `mesh`
 * shared among meshes) and who holds it (a JSON array of owners); `ktctl/owner` and
 * `ktctl/heartbeat` on the Service belong to the lock too.
 */
export const ANNOTATION_LOCKED_BY = 'ktctl/locked-by';
export const ANNOTATION_LOCK_HOLDERS = 'ktctl/lock-holders';
/**
 * The label a Service's selector points at when ktctl replaces its backends with a shadow
 * (exchange --mode selector, preview): unique per run, so nothing else matches it.
 */
export const LABEL_BACKEND = 'ktctl/backend';
/** Minutes without a heartbeat after which a ktctl object is a leftover (`clean`'s default, stale locks). */
export const STALE_AFTER_MINUTES = 5;
