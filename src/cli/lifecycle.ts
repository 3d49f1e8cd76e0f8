/**
 * Undo on exit: every change a command makes registers how to take it back, before it is made;
 * on SIGINT, SIGTERM or an error the undo steps run in reverse order, once. A second Ctrl-C while
 * undoing is refused with a message, so a person cannot leave half-removed state behind.
 */
export type Logger = (line: string) => void;

export class Undo {
  readonly #steps: Array<{ label: string; fn: () => Promise<void> | void }> = [];
  #running: Promise<void> | undefined;

  /** Registers a step; returns a function that removes it again (when the change was undone early). */
  add(label: string, fn: () => Promise<void> | void): () => void {
    const step = { label, fn };
    this.#steps.push(step);
    return () => {
      const i = this.#steps.indexOf(step);
      if (i >= 0) this.#steps.splice(i, 1);
    };
  }

  get size(): number {
    return this.#steps.length;
  }

  /** Runs every step, newest first; failures are reported and do not stop the others. Idempotent. */
  run(log: Logger): Promise<void> {
    this.#running ??= (async () => {
      while (this.#steps.length > 0) {
        const step = this.#steps.pop()!;
        try {
          await step.fn();
          log(`removed ${step.label}`);
        } catch (error) {
          log(`could not remove ${step.label}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    })();
    return this.#running;
  }
}

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
