/**
 * Where --shareShadow keeps the shared client key on this machine (0600, in the state directory,
 * keyed by namespace and shadow), so that the user's other processes can use the shadow without
 * the key ever being in the cluster.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultStateDir, writeStateFile } from '../state-records.js';

export interface SharedKeyFile {
  clientPrivate: string;
  clientPublic: string;
  hostPublic: string;
}

function sharedKeyPath(dir: string, namespace: string, shadow: string): string {
  return join(dir, `shared-${namespace}-${shadow}.key.json`);
}

export function readSharedKey(namespace: string, shadow: string, dir: string = defaultStateDir()): SharedKeyFile | undefined {
  try {
    const k = JSON.parse(readFileSync(sharedKeyPath(dir, namespace, shadow), 'utf8')) as SharedKeyFile;
    if (typeof k.clientPrivate === 'string' && typeof k.clientPublic === 'string' && typeof k.hostPublic === 'string') return k;
  } catch {
    /* none */
  }
  return undefined;
}

export function writeSharedKey(namespace: string, shadow: string, key: SharedKeyFile, dir: string = defaultStateDir()): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = sharedKeyPath(dir, namespace, shadow);
  writeStateFile(path, JSON.stringify(key));
  return path;
}

export function removeSharedKey(namespace: string, shadow: string, dir: string = defaultStateDir()): void {
  rmSync(sharedKeyPath(dir, namespace, shadow), { force: true });
}
