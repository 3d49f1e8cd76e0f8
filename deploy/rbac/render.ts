/**
 * `npm run rbac`: writes deploy/rbac/*.yaml from the permission table (src/kube/permissions.ts,
 * rendered by src/kube/rbac-yaml.ts). test/permissions.test.ts fails when the committed files differ.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderRbac } from '../../src/kube/rbac-yaml.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
for (const [file, text] of Object.entries(renderRbac().files)) {
  fs.writeFileSync(path.join(repo, file), text);
  process.stdout.write(`wrote ${file}\n`);
}
