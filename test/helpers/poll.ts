/**
 * Waiting in tests, in one place: poll a check every `intervalMs` until it holds, and give up after
 * `timeoutMs` (every wait has an end). `until` for a condition, `eventually` for a value (errors
 * count as "not yet"), `eventuallyTrue` for a condition whose timeout is the test's to judge.
 */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface PollOptions {
  /** default 10 s */
  timeoutMs?: number;
  /** default 50 ms */
  intervalMs?: number;
  /** what is waited for, for the timeout's message */
  what?: string | (() => string);
}

function describe(what: PollOptions['what']): string {
  return typeof what === 'function' ? what() : (what ?? 'condition not met');
}

/** Polls `check` until it returns true; throws `timed out waiting: <what>` after the timeout. */
export async function until(check: () => boolean | Promise<boolean>, o: PollOptions = {}): Promise<void> {
  const deadline = Date.now() + (o.timeoutMs ?? 10_000);
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${describe(o.what)}`);
    await sleep(o.intervalMs ?? 50);
  }
}

/** Polls `check` until it returns true or the timeout passes; resolves with whether it did. */
export async function eventuallyTrue(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
}

/**
 * Polls `fn` until it returns a value other than undefined (a throw counts as not yet); throws
 * `timed out waiting for <what>` with the last error after the timeout.
 */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 20_000, intervalMs = 150): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      lastError = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}
