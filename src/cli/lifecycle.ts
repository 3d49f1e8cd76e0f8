/**
 * The process side of undo-on-exit (src/undo.ts): the first SIGINT/SIGTERM/SIGHUP starts the undo,
 * a second Ctrl-C while undoing is refused with a message, so a person cannot leave half-removed
 * state behind.
 */
import type { Logger } from '../undo.js';

/**
 * Resolves with the first SIGINT/SIGTERM/SIGHUP. Later signals print `message` instead of killing the
 * process, until `release()` is called.
 */
export function untilSignal(log: Logger, message = 'cleaning up, please wait (this removes what ktctl made)'): {
  signal: Promise<NodeJS.Signals>;
  release(): void;
} {
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  let first = true;
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handler = (s: NodeJS.Signals): void => {
    if (first) {
      first = false;
      resolve(s);
    } else {
      log(message);
    }
  };
  for (const s of signals) process.on(s, handler);
  return {
    signal,
    release() {
      for (const s of signals) process.off(s, handler);
    },
  };
}
