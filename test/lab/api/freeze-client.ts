/**
 * The client side of the lab's fault `freeze-shadow` (api/freeze.ts), for the lab's command line
 * (`npm run lab -- fault freeze-shadow|thaw-shadow`) and for tests (fixture.ts `freezeShadow`):
 * one request each to the running lab's daemon, so it works while another process holds the lab.
 */
import { request, type LabEndpoint } from './client.js';
import type { FreezeRequest, FrozenPod, PodFilter } from './freeze.js';

export type { FrozenPod, PodFilter } from './freeze.js';
export { FREEZE_MAX_SECONDS } from './freeze.js';

const PATH = '/lab/v1/faults/freeze-shadow';

/** The lab refused the request (bad input, no such pod, nothing to freeze): its Status message. */
export class FaultRefused extends Error {
  override readonly name = 'FaultRefused';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface FreezeAnswer {
  seconds: number;
  /** when the daemon continues the pods (RFC 3339) */
  thawAt: string;
  frozen: FrozenPod[];
}

function query(filter: PodFilter): string {
  const q = new URLSearchParams();
  if (filter.namespace) q.set('namespace', filter.namespace);
  if (filter.pod) q.set('pod', filter.pod);
  const s = q.toString();
  return s ? `${PATH}?${s}` : PATH;
}

async function call<T>(ep: LabEndpoint, method: string, urlPath: string, body?: unknown): Promise<T> {
  // the daemon answers a freeze once every process reads T (at most ~2 s per call)
  const r = await request(ep, method, urlPath, body, 15_000);
  if (r.status === 200) return r.body as T;
  const message = typeof r.body === 'object' && r.body !== null && typeof (r.body as { message?: unknown }).message === 'string' ? (r.body as { message: string }).message : JSON.stringify(r.body);
  throw new FaultRefused(r.status, message);
}

/** Stops the ktctl pods chosen (of a namespace, or one pod by name) for `seconds`. */
export function postFreeze(ep: LabEndpoint, req: FreezeRequest): Promise<FreezeAnswer> {
  return call<FreezeAnswer>(ep, 'POST', PATH, req);
}

/** The pods frozen now. */
export async function getFrozen(ep: LabEndpoint, filter: PodFilter = {}): Promise<FrozenPod[]> {
  return (await call<{ frozen: FrozenPod[] }>(ep, 'GET', query(filter))).frozen;
}

/** Continues the frozen pods now; answers those it continued. */
export async function deleteFrozen(ep: LabEndpoint, filter: PodFilter = {}): Promise<FrozenPod[]> {
  return (await call<{ thawed: FrozenPod[] }>(ep, 'DELETE', query(filter))).thawed;
}
