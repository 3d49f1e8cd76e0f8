/**
 * What a long wait is waiting for: on a terminal a spinner line that is rewritten in place, else
 * one plain line each time the phase changes (logs stay readable in CI and in files).
 */
import type { Writable } from 'node:stream';

const FRAMES = ['|', '/', '-', '\\'];

export class Progress {
  readonly #out: Writable & { isTTY?: boolean };
  readonly #log: (line: string) => void;
  #text = '';
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(out: Writable & { isTTY?: boolean }, log: (line: string) => void) {
    this.#out = out;
    this.#log = log;
  }

  /** Shows `text` (a phase: "waiting for the image to be pulled"); repeated texts are ignored. */
  update(text: string): void {
    if (text === this.#text) return;
    this.#text = text;
    if (!this.#out.isTTY) {
      this.#log(text);
      return;
    }
    this.#draw();
    this.#timer ??= setInterval(() => this.#draw(), 120);
  }

  #draw(): void {
    this.#frame = (this.#frame + 1) % FRAMES.length;
    this.#out.write(`\r\x1b[2K${FRAMES[this.#frame]} ${this.#text}`);
  }

  /** Clears the spinner line (and prints `final` as a normal line if given). */
  done(final?: string): void {
    if (this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
    if (this.#out.isTTY && this.#text !== '') this.#out.write('\r\x1b[2K');
    this.#text = '';
    if (final) this.#log(final);
  }
}
