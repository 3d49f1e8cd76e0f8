/**
 * The API server's clock. `KTLAB_CLOCK_SKEW_SECONDS` (or the lab-only endpoint PUT /lab/v1/clock)
 * moves it, so tests can see what ktctl does when the cluster's time differs from the laptop's:
 * every timestamp the server writes and its `Date` header follow it.
 */
let skewMs = Number(process.env.KTLAB_CLOCK_SKEW_SECONDS ?? '0') * 1000 || 0;

export function setClockSkewSeconds(seconds: number): void {
  skewMs = seconds * 1000;
}
export function clockSkewSeconds(): number {
  return skewMs / 1000;
}
export function now(): Date {
  return new Date(Date.now() + skewMs);
}
/** RFC 3339 with second precision, as the API server writes metav1.Time. */
export function timestamp(d: Date = now()): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
