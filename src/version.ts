/**
 * ktctl's version, from package.json: the CLI's `--version` and the debug line every serving command
 * starts with. Here, at the root of src, so that no layer has to reach up into src/cli for it.
 */
import { readFileSync } from 'node:fs';

/** The version in package.json (dist/version.js -> ../package.json). */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
