/**
 * Signals that come while Node is still loading ktctl (the imports take a few hundred ms, before any
 * command runs): caught here, from the first module main.ts evaluates, instead of killing the
 * process. A command that serves until a signal (connect, forward, exchange, mesh, preview) takes
 * them over once its own watch is in place, so a Ctrl-C at its very start still ends in its clean
 * exit (0). For every other command the signal is raised again with the default handling, as if
 * nothing had caught it.
 *
 * Node dispatches a signal to JavaScript on a later turn of its loop, and forgets one that is still
 * undispatched when the last listener goes: so these listeners stay until another one is in place
 * (`takeEarlySignals`), or turn into "raise it again" (`releaseEarlySignals`) rather than go.
 */
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

let pending: NodeJS.Signals | undefined;
let mode: 'record' | 'raise' | 'off' = 'record';

function raise(s: NodeJS.Signals): void {
  for (const x of SIGNALS) process.off(x, handler);
  mode = 'off';
  process.kill(process.pid, s);
}

function handler(s: NodeJS.Signals): void {
  if (mode === 'record') pending ??= s;
  else if (mode === 'raise') raise(s);
}
for (const s of SIGNALS) process.on(s, handler);

/**
 * For a command that serves until a signal, called once its own listeners are installed: the signal
 * that came before, if any; from now on its listeners alone get them.
 */
export function takeEarlySignals(): NodeJS.Signals | undefined {
  if (mode === 'record') {
    mode = 'off';
    for (const s of SIGNALS) process.off(s, handler);
  }
  const s = pending;
  pending = undefined;
  return s;
}

/** For every other command: a signal recorded, or coming from now on, ends the process as by default. */
export function releaseEarlySignals(): void {
  if (mode !== 'record') return;
  mode = 'raise';
  const s = pending;
  pending = undefined;
  if (s !== undefined) raise(s);
}
