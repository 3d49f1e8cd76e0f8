/**
 * Host key checks of the tunnel client: a pinned key (the shadow, whose key ktctl made) or an
 * OpenSSH known_hosts file (a bastion given with --via). Parsed only as far as needed (sshd(8),
 * "SSH_KNOWN_HOSTS FILE FORMAT"): plain and wildcard host patterns, `!` negation, `[host]:port`,
 * comma lists, hashed `|1|salt|hash` entries; `@cert-authority` lines are ignored, `@revoked`
 * lines refuse their key.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { ServerHostKeyAlgorithm } from 'ssh2';

/** A public key as it travels in SSH (RFC 4253 §6.6): its type and its blob. */
export interface PublicKeyBlob {
  type: string;
  blob: Buffer;
}

/** OpenSSH's fingerprint: `SHA256:` and the unpadded base64 of SHA-256 over the key blob. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named inside a blob (its first SSH string). */
export function blobType(blob: Buffer): string {
  if (blob.length < 4) return '';
  const len = blob.readUInt32BE(0);
  return blob.length >= 4 + len ? blob.toString('latin1', 4, 4 + len) : '';
}

/**
 * Parses an OpenSSH public key line ("ssh-ed25519 AAAA... comment", options not allowed). Returns
 * undefined when the line is not one.
 */
export function parsePublicKeyLine(line: string): PublicKeyBlob | undefined {
  const fields = line.trim().split(/\s+/);
  if (fields.length < 2) return undefined;
  const [type, b64] = fields as [string, string];
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, 'base64');
  if (blobType(blob) !== type) return undefined;
  return { type, blob };
}

/** How known_hosts names a server: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsLabel(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

export type KnownHostsStatus =
  | 'match' // a line for this host has this key
  | 'mismatch' // lines for this host exist, none with this key
  | 'unknown' // no line names this host
  | 'revoked'; // the key is listed under @revoked

export interface KnownHostsResult {
  status: KnownHostsStatus;
  /** 1-based line of the matching (or revoking, or first conflicting) entry */
  line?: number;
}

interface Entry {
  line: number;
  marker: '' | '@revoked' | '@cert-authority';
  hosts: string;
  key: PublicKeyBlob;
}

function parseEntries(text: string): Entry[] {
  const out: Entry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '' || raw.startsWith('#')) continue;
    let fields = raw.split(/\s+/);
    let marker: Entry['marker'] = '';
    if (fields[0]!.startsWith('@')) {
      if (fields[0] !== '@revoked' && fields[0] !== '@cert-authority') continue;
      marker = fields[0];
      fields = fields.slice(1);
    }
    if (fields.length < 3) continue;
    const key = parsePublicKeyLine(`${fields[1]} ${fields[2]}`);
    if (key === undefined) continue;
    out.push({ line: i + 1, marker, hosts: fields[0]!, key });
  }
  return out;
}

/** Whether one known_hosts host field (comma list, maybe hashed) names `label`. */
export function hostFieldMatches(field: string, label: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (salt === undefined || hash === undefined) return false;
    const want = Buffer.from(hash, 'base64');
    const got = createHmac('sha1', Buffer.from(salt, 'base64')).update(label).digest();
    return want.length === got.length && timingSafeEqual(want, got);
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    if (pattern === '') continue;
    const negated = pattern.startsWith('!');
    if (globMatches(negated ? pattern.slice(1) : pattern, label)) {
      if (negated) return false; // a negated match wins over everything (sshd(8))
      matched = true;
    }
  }
  return matched;
}

function globMatches(pattern: string, label: string): boolean {
  if (!/[*?]/.test(pattern)) return pattern.toLowerCase() === label.toLowerCase();
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i').test(label);
}

/** The labels a server may be listed under: `[h]:22` is also written as plain `h`. */
function labelsFor(label: string): string[] {
  const m = /^\[(.+)\]:22$/.exec(label);
  return m ? [label, m[1]!] : [label];
}

/** Looks `blob` up for `label` in the text of a known_hosts file. */
export function checkKnownHosts(text: string, label: string, blob: Buffer): KnownHostsResult {
  const labels = labelsFor(label);
  const entries = parseEntries(text).filter((e) => labels.some((l) => hostFieldMatches(e.hosts, l)));
  const revoked = entries.find((e) => e.marker === '@revoked' && e.key.blob.equals(blob));
  if (revoked) return { status: 'revoked', line: revoked.line };
  const plain = entries.filter((e) => e.marker === '');
  const hit = plain.find((e) => e.key.blob.equals(blob));
  if (hit) return { status: 'match', line: hit.line };
  if (plain.length > 0) return { status: 'mismatch', line: plain[0]!.line };
  return { status: 'unknown' };
}

/** The key types known_hosts lists for `label`, in file order (to ask the server for those first). */
export function knownKeyTypes(text: string, label: string): string[] {
  const labels = labelsFor(label);
  const types: string[] = [];
  for (const e of parseEntries(text)) {
    if (e.marker === '' && labels.some((l) => hostFieldMatches(e.hosts, l)) && !types.includes(e.key.type)) types.push(e.key.type);
  }
  return types;
}

/** ssh2's host key algorithms, default order (lib/protocol/constants.js). */
const HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

/**
 * Host key algorithms to offer, the known key types first: a server with several host keys then
 * shows the one we can check, as OpenSSH's client does (ssh_config(5), HostKeyAlgorithms).
 */
export function hostKeyAlgorithmsFor(knownTypes: string[]): ServerHostKeyAlgorithm[] {
  const first: ServerHostKeyAlgorithm[] = [];
  for (const type of knownTypes) {
    const algos = type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [type];
    for (const name of algos) {
      const a = HOST_KEY_ALGORITHMS.find((x) => x === name);
      if (a !== undefined && !first.includes(a)) first.push(a);
    }
  }
  return [...first, ...HOST_KEY_ALGORITHMS.filter((a) => !first.includes(a))];
}
