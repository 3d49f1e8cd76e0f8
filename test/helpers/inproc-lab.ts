/**
 * The lab's control plane in this process, on 127.0.0.1:0 with a fake data plane (no namespaces,
 * never the shared lab): for tests of the API server's behaviour and of ktctl's Kubernetes code
 * against it. Pods' ports are local servers (test/lab/api/fake-net.ts).
 */
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ControlPlane } from '../lab/api/lab.js';
import type { FakeLabNet } from '../lab/api/fake-net.js';
import { FILES, makeCredentials, renderKubeconfig, type Tokens } from '../lab/api/pki.js';
import type { JsonObject } from '../lab/api/json.js';
import { eventually } from './poll.js';

export interface InProcessLab<N extends FakeLabNet> {
  cp: ControlPlane;
  net: N;
  dir: string;
  /** contexts `lab` (admin) and `lab-readonly`, server https://127.0.0.1:PORT */
  kubeconfig: string;
  server: string;
  tokens: Tokens;
  ca: Buffer;
  request(method: string, urlPath: string, body?: unknown, token?: string): Promise<{ status: number; json: JsonObject }>;
  /** creates pods (admin) and waits until those without a nodeSelector run */
  pods(namespace: string, pods: JsonObject[]): Promise<void>;
  stop(): Promise<void>;
}

export async function startInProcessLab<N extends FakeLabNet>(net: N, prefix: string): Promise<InProcessLab<N>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const { tokens } = await makeCredentials(dir);
  const cp = new ControlPlane({
    net,
    tokens,
    tls: { key: fs.readFileSync(path.join(dir, FILES.serverKey)), cert: fs.readFileSync(path.join(dir, FILES.serverCert)) },
    demo: false,
  });
  const { port } = await cp.start('127.0.0.1', 0);
  const server = `https://127.0.0.1:${port}`;
  const ca = fs.readFileSync(path.join(dir, FILES.caCert));
  const kubeconfig = path.join(dir, 'kubeconfig-local');
  fs.writeFileSync(kubeconfig, renderKubeconfig(ca, tokens, server), { mode: 0o600 });
  const request = (method: string, urlPath: string, body?: unknown, token = tokens.admin): Promise<{ status: number; json: JsonObject }> =>
    new Promise((resolve, reject) => {
      const req = https.request(
        new URL(urlPath, server),
        { method, ca, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: (text ? JSON.parse(text) : {}) as JsonObject }));
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  const pods = async (namespace: string, list: JsonObject[]): Promise<void> => {
    const ns = await request('POST', '/api/v1/namespaces', { metadata: { name: namespace } });
    if (ns.status !== 201 && ns.status !== 409) throw new Error(`creating namespace ${namespace}: ${ns.status} ${JSON.stringify(ns.json)}`);
    for (const body of list) {
      const r = await request('POST', `/api/v1/namespaces/${namespace}/pods`, body);
      if (r.status !== 201) throw new Error(`creating a pod: ${r.status} ${JSON.stringify(r.json)}`);
    }
    for (const body of list) {
      const spec = body.spec as JsonObject;
      const image = ((spec.containers as JsonObject[])[0]!.image as string) ?? '';
      if (spec.nodeSelector || !image.startsWith('ktlab/')) continue;
      const name = (body.metadata as JsonObject).name as string;
      await eventually(async () => {
        const r = await request('GET', `/api/v1/namespaces/${namespace}/pods/${name}`);
        return (r.json.status as { phase?: string } | undefined)?.phase === 'Running' ? true : undefined;
      }, `pod ${name} to run`);
    }
  };
  return {
    cp,
    net,
    dir,
    kubeconfig,
    server,
    tokens,
    ca,
    request,
    pods,
    stop: async () => {
      await cp.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Roles with one verb on pods/portforward each: `get` for lab-dev, `create` for the service account pf-create (its token returned). */
export async function grantPortForward(l: InProcessLab<FakeLabNet>, namespace: string): Promise<string> {
  const ok = (r: { status: number; json: JsonObject }, what: string): JsonObject => {
    if (r.status !== 201) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json;
  };
  const rbac = `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}`;
  for (const verb of ['get', 'create']) {
    ok(await l.request('POST', `${rbac}/roles`, { metadata: { name: `pf-${verb}` }, rules: [{ apiGroups: [''], resources: ['pods/portforward'], verbs: [verb] }] }), `role pf-${verb}`);
  }
  ok(await l.request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, { metadata: { name: 'pf-create' } }), 'service account');
  const subjects = { get: [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: 'lab-dev' }], create: [{ kind: 'ServiceAccount', name: 'pf-create', namespace }] };
  for (const verb of ['get', 'create'] as const) {
    ok(await l.request('POST', `${rbac}/rolebindings`, { metadata: { name: `pf-${verb}` }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `pf-${verb}` }, subjects: subjects[verb] }), `binding pf-${verb}`);
  }
  const tr = ok(await l.request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/pf-create/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: {} }), 'token');
  return (tr.status as { token: string }).token;
}
