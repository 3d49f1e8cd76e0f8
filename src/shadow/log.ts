/**
 * The shadow's log: one JSON object a line, `{"ts": "<RFC 3339>", "event": "<name>", ...fields}`,
 * so `kubectl logs` stays readable and a machine can follow it too.
 */
export type ShadowLogFields = Record<string, string | number | boolean | undefined>;

/** Where the shadow reports what happens. */
export type ShadowLogger = (event: string, fields?: ShadowLogFields) => void;

/** A logger that writes JSON lines to a stream (the process's stdout in the pod). */
export function jsonLineLogger(out: { write(line: string): unknown }): ShadowLogger {
  return (event, fields = {}) => {
    out.write(`${JSON.stringify({ ts: new Date().toISOString(), event, ...fields })}\n`);
  };
}

/** A logger that drops everything (the default of an in-process server). */
export const silentLogger: ShadowLogger = () => {};
