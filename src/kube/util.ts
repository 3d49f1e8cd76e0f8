/**
 * Small pieces every src/kube module uses: a pause between retries, and the parsing of the JSON
 * that ktctl keeps in annotations (an unreadable annotation reads as missing, never as an error).
 */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The parsed JSON of an annotation, or undefined when it is missing or not JSON. */
export function jsonAnnotation(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** A JSON object's entries that `narrow` accepts, or undefined when `value` is not an object. */
export function recordOf<T>(value: unknown, narrow: (v: unknown) => T | undefined): Record<string, T> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const out: Record<string, T> = {};
  for (const [k, v] of Object.entries(value)) {
    const n = narrow(v);
    if (n !== undefined) out[k] = n;
  }
  return out;
}

/** A JSON array's items that `narrow` accepts, or undefined when `value` is not an array. */
export function listOf<T>(value: unknown, narrow: (v: unknown) => T | undefined): T[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const out: T[] = [];
  for (const v of value as unknown[]) {
    const n = narrow(v);
    if (n !== undefined) out.push(n);
  }
  return out;
}

export const asString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
