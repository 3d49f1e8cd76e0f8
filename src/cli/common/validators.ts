import { UsageError } from '../../errors.js';

export function parsePort(value: string, flag: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new UsageError(`${flag} must be a port number between 0 and 65535 (got "${value}")`);
  }
  return Number(value);
}
