/**
 * Undo on exit: every change a command makes (a pod, a selector, a route, a resolver entry)
 * registers how to take it back, before it is made; on SIGINT, SIGTERM or an error the steps run
 * in reverse order, once. Shared by the CLI and the layers below it (src/kube registers its
 * changes here), so it lives beside errors.ts rather than in src/cli.
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
