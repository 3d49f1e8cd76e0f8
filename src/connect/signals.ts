/**
 * The process side of undo-on-exit (src/undo.ts): the first SIGINT/SIGTERM/SIGHUP starts the undo,
 * a second Ctrl-C while undoing is refused with a message, so a person cannot leave half-removed
 * state behind. Commands that serve until a signal watch from their first moment (ShadowCommand's
 * `execute`), so a Ctrl-C during start-up also ends in the undo and exit 0, not in death by signal.
 */
import type { Logger } from '../undo.js';

/** The first SIGINT/SIGTERM/SIGHUP, as a promise (to wait on) and as an AbortSignal (to check and to pass down). */
export interface SignalWatch {
  readonly signal: Promise<NodeJS.Signals>;
  /** Aborted when the first signal came (its reason is the signal's name). */
  readonly aborted: AbortSignal;
  /** Counts `s` as received (one that came while the process was still loading). */
  received(s: NodeJS.Signals): void;
  /** Stops watching: the process's default handling comes back. */
  release(): void;
}

/**
 * Watches for the first SIGINT/SIGTERM/SIGHUP. Later signals print `message` instead of killing the
 * process, until `release()` is called.
 */
export function untilSignal(log: Logger, message = 'cleaning up, please wait (this removes what ktctl made)'): SignalWatch {
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const aborted = new AbortController();
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handler = (s: NodeJS.Signals): void => {
    if (!aborted.signal.aborted) {
      aborted.abort(s);
      resolve(s);
    } else {
      log(message);
    }
  };
  for (const s of signals) process.on(s, handler);
  return {
    signal,
    aborted: aborted.signal,
    received: handler,
    release() {
      for (const s of signals) process.off(s, handler);
    },
  };
}
