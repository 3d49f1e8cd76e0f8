/**
 * A minimal OpenAPI v3 surface: `GET /openapi/v3` (the index of group versions) and one document
 * per group version with a PATCH operation per resource that names its kind and accepts the
 * `fieldValidation` query parameter. That is what kubectl checks before it leaves validation to
 * the server, so `kubectl apply -f` / `kubectl create -f` work without `--validate=false`.
 * No schemas are served (`kubectl explain` has nothing to show).
 */
import { createHash } from 'node:crypto';
import type { JsonObject } from './json.js';
import { apiVersionOf, GROUP_VERSIONS, RESOURCES } from './resources.js';

function gvPath(group: string, version: string): string {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

export function openApiDocument(group: string, version: string): JsonObject | undefined {
  if (!GROUP_VERSIONS.some((g) => g.group === group && g.version === version)) return undefined;
  const paths: JsonObject = {};
  for (const r of RESOURCES.filter((x) => x.group === group && x.version === version)) {
    const base = `/${gvPath(group, version)}${r.namespaced ? '/namespaces/{namespace}' : ''}/${r.name}/{name}`;
    paths[base] = {
      patch: {
        description: `partially update the specified ${r.kind}`,
        operationId: `patch${r.kind}`,
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': { group, version, kind: r.kind },
        parameters: [
          { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'force', in: 'query', schema: { type: 'boolean', uniqueItems: true } },
        ],
        responses: { '200': { description: 'OK' } },
      },
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.35.0-ktlab' },
    paths,
    components: { schemas: {} },
  };
}

export function openApiIndex(): JsonObject {
  const paths: JsonObject = {};
  for (const { group, version } of GROUP_VERSIONS) {
    const doc = openApiDocument(group, version);
    const hash = createHash('sha512').update(JSON.stringify(doc)).digest('hex').slice(0, 128).toUpperCase();
    paths[gvPath(group, version)] = { serverRelativeURL: `/openapi/v3/${gvPath(group, version)}?hash=${hash}` };
  }
  return { paths };
}

export { apiVersionOf };
