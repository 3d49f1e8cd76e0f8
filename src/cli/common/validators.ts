/**
 * The flag validators of every command: typanion validators for clipanion's `validator:` option,
 * so a field holds the checked value (a port number, milliseconds, CIDRs) and `run()` checks only
 * what involves several flags.
 *
 * A bad value fails with ktctl's `UsageError` and its one sentence (`ktctl: --proxyPort must be a
 * port number between 0 and 65535 (got "x")`), not with clipanion's "Invalid value for" list: the
 * sentences are part of the interface. The validator throws it while clipanion parses, and
 * `KtctlCli` (cli.ts) prints it as `execute()` prints every other failure.
 */
import { isIP } from 'node:net';
import type { CipherAlgorithm } from 'ssh2';
import * as t from 'typanion';
import { parseDnsModeSpec, type DnsModeSpec } from '../../dns/mode.js';
import { UsageError } from '../../errors.js';
import { parseKeyValues } from '../../kube/names.js';
import { parsePodQuota, type PodSettings } from '../../kube/pod-settings.js';
import { CIPHERS } from '../../ssh/tunnel.js';
import { parseVia, type ViaTarget } from '../../ssh/via.js';
import { tryParseCidr, type Cidr } from '../../tun/cidr.js';

/** The text a parsed object (a label map, a DNS mode) came from, for `ktctl config show` and help. */
const RAW = new WeakMap<object, string>();

export function rawText(value: unknown): string | undefined {
  return typeof value === 'object' && value !== null ? RAW.get(value) : undefined;
}

/** A validator from a parse function that throws a UsageError; clipanion stores what it returns. */
export function flag<T>(parse: (text: string) => T): t.StrictValidator<unknown, T> {
  return t.makeValidator<unknown, T>({
    test: (value, state): value is T => {
      if (typeof value !== 'string') {
        state?.errors?.push(`${state.p ?? '.'}: expected a string (got ${typeof value})`);
        return false;
      }
      const parsed = parse(value);
      if (typeof parsed === 'object' && parsed !== null) RAW.set(parsed, value);
      if (state?.coercions !== undefined && state.coercion !== undefined) state.coercions.push([state.p ?? '.', state.coercion.bind(null, parsed)]);
      return true;
    },
  });
}

// --- numbers: ports and durations, one rule each for every command

/** A port number from `min` to 65535 (at most 5 digits), else undefined. */
export function portNumber(text: string, min: 0 | 1 = 0): number | undefined {
  const n = Number(text);
  return /^\d{1,5}$/.test(text) && n <= 65535 && n >= min ? n : undefined;
}

/** Throws `${what} must be a port number between min and 65535 (got "text")`. */
export function parsePort(text: string, what: string, min: 0 | 1 = 0): number {
  const n = portNumber(text, min);
  if (n === undefined) throw new UsageError(`${what} must be a port number between ${min} and 65535 (got "${text}")`);
  return n;
}

/** `--proxyPort`-like flags: a port, 0 for any free one. */
export const port = (name: string): t.StrictValidator<unknown, number> => flag((text) => parsePort(text, name));

export interface DurationRule {
  unit: 'seconds' | 'minutes';
  /** whether 0 is allowed */
  zero: boolean;
}

/**
 * A duration flag, in its unit: `--podCreationTimeout 60` (seconds, more than 0),
 * `--recoverWaitTime 0` (seconds, 0 or more), `--thresholdInMinus 0` (minutes, 0 or more);
 * fractions allowed.
 */
export function duration(name: string, rule: DurationRule): t.StrictValidator<unknown, number> {
  return flag((text) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !rule.zero)) {
      throw new UsageError(`${name} takes a number of ${rule.unit}${rule.zero ? ', 0 or more' : ' greater than 0'} (got "${text}")`);
    }
    return n;
  });
}

/**
 * A size in bytes: `4M`, `4MiB`, `512K`, `1G` (powers of 1024) or plain bytes, between `min` and
 * `max` (`--resumeBuffer`, `--resumeBufferTotal`).
 */
export function byteSize(name: string, min: number, max: number): t.StrictValidator<unknown, number> {
  return flag((text) => {
    const m = /^(\d+(?:\.\d+)?)\s*(?:([KMG])(?:i?B)?|B)?$/i.exec(text.trim());
    const scale = { K: 1 << 10, M: 1 << 20, G: 1 << 30 } as const;
    const n = m ? Math.round(Number(m[1]) * (m[2] ? scale[m[2].toUpperCase() as keyof typeof scale] : 1)) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new UsageError(`${name} takes a size between ${formatSize(min)} and ${formatSize(max)}, like 4M or 512K (got "${text}")`);
    }
    return n;
  });
}

/** Bytes as the size flags write them: 4M, 512K, 1G. */
export function formatSize(n: number): string {
  for (const [unit, k] of [['G', 1 << 30], ['M', 1 << 20], ['K', 1 << 10]] as const) if (n % k === 0) return `${n / k}${unit}`;
  return String(n);
}

/** `--dnsCacheTtl`: whole seconds (0 allowed), kept in seconds. */
export const wholeSeconds = (name: string): t.StrictValidator<unknown, number> =>
  flag((text) => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n)) throw new UsageError(`${name} must be a number of seconds (got "${text}")`);
    return n;
  });

// --- words

/** `--mode`: one of a command's modes, exactly as written. */
export function oneOf<const V extends string>(name: string, values: readonly V[]): t.StrictValidator<unknown, V> {
  return flag((text) => {
    const v = values.find((x) => x === text);
    if (v === undefined) throw new UsageError(`${name} must be ${values.join(' or ')} (got "${text}")`);
    return v;
  });
}

/** `--dnsMode`, any letter case, with KT Connect's `hosts:ns1,ns2` and `localDNS:cluster,upstream` (src/dns/mode.ts). */
export const dnsMode = flag<DnsModeSpec>(parseDnsModeSpec);

/** `--mode` of connect with KT Connect's two names for what ktctl's TUN mode does (see connect.ts). */
export const connectMode = flag<'tun' | 'socks'>((text) => {
  if (text === 'tun' || text === 'socks') return text;
  // KT Connect's modes (pkg/kt/command/connect.go): tun2socks makes a TUN device (and a socks proxy
  // beside it), sshuttle runs sshuttle over ssh; both give every program the cluster's addresses and
  // names through routes and DNS, which is ktctl's TUN mode.
  if (text === 'tun2socks' || text === 'sshuttle') return 'tun';
  throw new UsageError(`--mode must be tun or socks, or KT Connect's tun2socks or sshuttle (both are ktctl's tun) (got "${text}")`);
});

/** `--includeDomains`: DNS suffixes, comma separated, without their dots at either end. */
export const domainList = flag((text) => {
  const out: string[] = [];
  for (const part of text.split(',')) {
    const d = part.trim().replace(/^\.+|\.+$/g, '').toLowerCase();
    if (d === '') continue;
    if (!/^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/.test(d) || d.length > 253) {
      throw new UsageError(`--includeDomains takes DNS suffixes separated by commas, e.g. corp.example,internal ("${part.trim()}" is not one)`);
    }
    out.push(d);
  }
  if (out.length === 0) throw new UsageError('--includeDomains needs at least one DNS suffix, e.g. --includeDomains corp.example');
  return out;
});

/** `--tunName`: an interface name the kernel takes. */
export const tunName = flag((text) => {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(text)) throw new UsageError(`--tunName must be an interface name of at most 15 letters, digits, '.', '_' or '-' (got "${text}")`);
  return text;
});

/**
 * `--clusterDomain` as TUN mode needs it: a DNS domain, without its trailing dots. (Checked in
 * `connect --mode tun` only: the other commands pass the flag on as given.)
 */
export function parseClusterDomain(text: string): string {
  const domain = text.replace(/\.+$/, '');
  if (!/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(domain)) throw new UsageError(`--clusterDomain must be a DNS domain (got "${text}")`);
  return domain;
}

/** `--includeIps`/`--excludeIps`: CIDRs or addresses, comma separated (empty parts skipped). */
export const cidrList = (name: string): t.StrictValidator<unknown, Cidr[]> =>
  flag((text) => {
    const out: Cidr[] = [];
    for (const part of text.split(',')) {
      if (part.trim() === '') continue;
      const c = tryParseCidr(part);
      if (!c) throw new UsageError(`${name} takes IP addresses or CIDRs separated by commas ("${part.trim()}" is neither)`);
      out.push(c);
    }
    return out;
  });

/** `--withLabel k=v,...` and its kind. */
export const keyValues = (name: string): t.StrictValidator<unknown, Record<string, string>> =>
  flag((text) => {
    try {
      return parseKeyValues(text, name);
    } catch (error) {
      throw new UsageError(error instanceof Error ? error.message : String(error));
    }
  });

/** `--runAsUser UID|auto`. */
export const runAsUser = flag<PodSettings['runAsUser']>((text) => {
  if (text === 'auto') return 'auto';
  if (!/^\d+$/.test(text) || Number(text) === 0 || Number(text) > 2 ** 31 - 1) {
    throw new UsageError(`--runAsUser takes a user id other than 0 (the pods run as non-root) or auto (got "${text}")`);
  }
  return Number(text);
});

/** `--podQuota CPU,MEM`. */
export const podQuota = flag((text) => {
  try {
    return parsePodQuota(text);
  } catch (error) {
    throw new UsageError(`--podQuota ${(error as Error).message} (got "${text}")`);
  }
});

/** `--sshCipher NAME`: the cipher list with that one first. */
export const sshCipher = flag<CipherAlgorithm[]>((text) => {
  if (!CIPHERS.includes(text as CipherAlgorithm)) throw new UsageError(`--sshCipher must be one of ${CIPHERS.join(', ')} (got "${text}")`);
  return [text as CipherAlgorithm, ...CIPHERS.filter((c) => c !== text)];
});

/** `--via user@host[:port]`. */
export const via = flag<ViaTarget>(parseVia);

/** `--address`: an IP address of this machine, or localhost. */
export const listenAddress = flag((text) => {
  if (isIP(text) === 0 && text !== 'localhost') throw new UsageError(`--address must be an IP address of this machine (got "${text}")`);
  return text;
});
