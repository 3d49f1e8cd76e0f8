/**
 * The shadow program as this installation ships it: dist/shadow.mjs, the one bundled ES module
 * `npm run build` makes (shadow-image/bundle.ts), its hash and the name of the ConfigMap that carries
 * it (src/kube/program.ts). Light on purpose (no client-node): commands check it is there before
 * they make anything in a cluster.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { KubeError } from '../errors.js';

/** Where `npm run build` puts the bundle (relative to this file in dist/kube/). */
export const BUNDLE_URL = new URL('../shadow.mjs', import.meta.url);
/** The key in the ConfigMap, and the file name in the pod. */
export const PROGRAM_FILE = 'shadow.mjs';
/** Where the pod mounts the ConfigMap (read-only); the container runs `node PROGRAM_DIR/PROGRAM_FILE`. */
export const PROGRAM_DIR = '/opt/ktctl';
/** A ConfigMap holds at most 1 MiB over all its keys (kube-apiserver's ValidateConfigMap, core.MaxSecretSize). */
export const CONFIGMAP_MAX_BYTES = 1024 * 1024;

/** The shadow program is missing from this installation, or too large for a ConfigMap. */
export class ShadowProgramError extends KubeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KTCTL_SHADOW_PROGRAM', message, options);
  }
}

export interface ShadowProgram {
  /** the bundle's text */
  text: string;
  /** hex SHA-256 of the text */
  sha256: string;
  /** the ConfigMap's name: `ktctl-shadow-` and the first 12 hex digits of the hash */
  configMap: string;
}

let loaded: ShadowProgram | undefined;

/** Reads (once) the bundle this installation ships. */
export function shadowProgram(url: URL = BUNDLE_URL): ShadowProgram {
  if (loaded && url === BUNDLE_URL) return loaded;
  let text: string;
  try {
    text = readFileSync(url, 'utf8');
  } catch (error) {
    throw new ShadowProgramError(
      `the shadow program ${fileURLToPath(url)} is missing from this installation: build it with npm run build (it bundles it with shadow-image/bundle.ts after tsc)`,
      { cause: error },
    );
  }
  const bytes = Buffer.byteLength(text);
  if (bytes >= CONFIGMAP_MAX_BYTES) {
    throw new ShadowProgramError(`the shadow program ${fileURLToPath(url)} has ${bytes} bytes, more than a ConfigMap holds (1 MiB): it must be built minified by npm run build`);
  }
  const sha256 = createHash('sha256').update(text).digest('hex');
  const program = { text, sha256, configMap: `ktctl-shadow-${sha256.slice(0, 12)}` };
  if (url === BUNDLE_URL) loaded = program;
  return program;
}
