/**
 * The HTTPS front of the lab's API server: authentication, routing, discovery, the REST verbs,
 * watch, and the pod subresources (log, exec, portforward) handed to streams.ts.
 */
import https from 'node:https';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { ApiError, badRequest, methodNotAllowed, notFound, unauthorized, unknownResource } from './status.js';
import { isObject, type Json, type JsonObject, type ObjectMeta } from './json.js';
import { apiVersionOf, findResource, RESOURCES, REVIEW_KINDS, type ResourceInfo } from './resources.js';
import { apiGroup, apiGroupList, apiResourceList, apiVersions, versionInfo } from './discovery.js';
import { forbiddenMessage, type Attributes, type User } from './auth.js';
import type { ExecTokenVerifier } from './exec-token.js';
import { R, type DeleteOptions, type PatchType, type Registry, type WriteOptions } from './registry.js';
import { GROUPS, Rbac, RBAC_GROUP, roleRefOf, RuleResolutionError, rulesOf, type PolicyRule } from './rbac.js';
import { AuthzAudit } from './rbac-audit.js';
import { ServiceAccountTokens } from './rbac-tokens.js';
import { matchFields, matchRequirements, parseFieldSelector, parseLabelSelector, selectorString } from './selectors.js';
import { metaOf, type StoreEvent } from './store.js';
import { clockSkewSeconds, now, setClockSkewSeconds } from './clock.js';
import type { LabNet } from '../net/types.js';
import { cutPortForwards, defaultPortForwardSettings, handleExec, handlePortForward, handleLog, KubeletRefusal, negotiatePortForwardProtocol, type PortForwardSettings } from './streams.js';
import { toTable, wantsTable } from './table.js';
import { frozenJson, parseFreezeRequest, parsePodFilter, ShadowFreezer } from './freeze.js';
import { decodeK8sProtobuf, isProtobuf } from './proto.js';
import { openApiDocument, openApiIndex } from './openapi.js';
import { warningHeader } from './podsecurity.js';

export interface ApiServerOptions {
  registry: Registry;
  net: LabNet;
  /** bearer token -> user */
  users: Map<string, User>;
  /** tokens of the exec credential plugin, valid until they expire (exec-token.ts) */
  execTokens?: ExecTokenVerifier;
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** BOOKMARK / keep-alive interval on watches (ms) */
  bookmarkIntervalMs?: number;
  log?: (line: string) => void;
}

interface Route {
  kind: 'resource';
  info: ResourceInfo;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

const MAX_BODY = 3 * 1024 * 1024;

/**
 * Paths a request without credentials may ask for: the anonymous authenticator restricted to the
 * health and version endpoints (AuthenticationConfiguration anonymous.conditions), authorized by
 * system:public-info-viewer as system:anonymous. Anything else without a token is 401.
 */
const ANONYMOUS_PATHS = new Set(['/healthz', '/livez', '/readyz', '/version']);
const ANONYMOUS: User = { name: 'system:anonymous', groups: [GROUPS.unauthenticated] };

export class ApiServer {
  readonly server: https.Server | http.Server;
  readonly #opts: ApiServerOptions;
  readonly #wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  /** the subprotocol each port-forward upgrade was given ("" = none asked for) */
  readonly #pfProtocol = new WeakMap<http.IncomingMessage, string>();
  /**
   * Port-forward upgrades answer as x/net/websocket does: with the protocol wsstream's handshake
   * chose, and with an empty `Sec-WebSocket-Protocol:` header when the client asked for none
   * (wsstream sets config.Protocol to [""], and `hybiServerHandshaker.AcceptHandshake` writes
   * `Sec-WebSocket-Protocol: ` + Protocol[0] whenever Protocol is not empty).
   */
  readonly #pfWss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: 64 * 1024 * 1024,
    handleProtocols: (_offered, req) => this.#pfProtocol.get(req) || false,
  });
  /** the runtime's port-forward settings: cluster-wide, and per namespace (so concurrent test files do not meet each other's) */
  readonly #pfSettings: PortForwardSettings = defaultPortForwardSettings();
  readonly #pfByNamespace = new Map<string, PortForwardSettings>();
  readonly #freezer: ShadowFreezer;
  readonly #watches = new Set<() => void>();
  /** the authorizer, over the registry's Roles and bindings */
  readonly rbac: Rbac;
  /** every authorization decision per user (GET /lab/v1/audit) */
  readonly audit = new AuthzAudit();
  readonly #saTokens: ServiceAccountTokens;

  constructor(opts: ApiServerOptions) {
    this.#opts = opts;
    this.rbac = new Rbac(opts.registry.store);
    this.#freezer = new ShadowFreezer(opts.registry, opts.net, (line) => this.#log(line));
    this.#saTokens = new ServiceAccountTokens((namespace, name) => {
      const sa = opts.registry.tryGet(R.serviceaccounts, namespace, name);
      const uid = sa && isObject(sa.metadata) && typeof sa.metadata.uid === 'string' ? sa.metadata.uid : undefined;
      return uid ? { namespace, name, uid } : undefined;
    });
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.#handle(req, res).catch((e: unknown) => this.#fail(res, e));
    };
    // AES-128-GCM first: the cheapest AEAD with AES-NI, it raises the port-forward ceiling
    const tlsOptions: https.ServerOptions = opts.tls
      ? { key: opts.tls.key, cert: opts.tls.cert, honorCipherOrder: true, ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305' }
      : {};
    this.server = opts.tls ? https.createServer(tlsOptions, handler) : http.createServer(handler);
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      this.#upgrade(req, socket, head).catch((e: unknown) => {
        this.#log(`upgrade failed: ${String(e)}`);
        socket.destroy();
      });
    });
    this.server.on('clientError', (_e, socket) => socket.destroy());
    this.#wss.on('error', () => undefined);
    this.#pfWss.on('error', () => undefined);
    this.#pfWss.on('headers', (headers: string[], req: http.IncomingMessage) => {
      if (this.#pfProtocol.get(req) === '') headers.push('Sec-WebSocket-Protocol: ');
    });
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    this.#freezer.thawAll();
    for (const stop of [...this.#watches]) stop();
    for (const c of this.#wss.clients) c.terminate();
    for (const c of this.#pfWss.clients) c.terminate();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  #log(line: string): void {
    this.#opts.log?.(line);
  }

  #user(req: http.IncomingMessage): User | undefined {
    const h = req.headers.authorization;
    if (!h || !h.startsWith('Bearer ')) return undefined;
    const token = h.slice(7).trim();
    return this.#opts.users.get(token) ?? this.#saTokens.authenticate(token) ?? this.#opts.execTokens?.verify(token);
  }

  /** `warnings` become Warning headers (`299 - "..."`), as admission warnings do in kube-apiserver. */
  #send(res: http.ServerResponse, code: number, body: Json, warnings: string[] = []): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-cache, private',
      Date: now().toUTCString(),
      'Audit-Id': crypto.randomUUID(),
    };
    if (warnings.length > 0) headers.Warning = [...new Set(warnings)].map(warningHeader);
    res.writeHead(code, headers);
    res.end(text);
  }

  #fail(res: http.ServerResponse, e: unknown): void {
    if (e instanceof ApiError) {
      this.#send(res, e.code, e.toStatus());
      return;
    }
    this.#log(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    this.#send(res, 500, new ApiError(500, 'InternalError', `Internal error occurred: ${e instanceof Error ? e.message : String(e)}`).toStatus());
  }

  async #readBody(req: http.IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const b = c as Buffer;
      size += b.length;
      if (size > MAX_BODY) throw new ApiError(413, 'BadRequest', 'Request entity too large: limit is 3145728');
      chunks.push(b);
    }
    return Buffer.concat(chunks);
  }

  async #readJson(req: http.IncomingMessage, info: ResourceInfo | undefined): Promise<Json> {
    const ct = (req.headers['content-type'] ?? 'application/json').split(';')[0].trim();
    const raw = await this.#readBody(req);
    if (isProtobuf(ct)) return decodeK8sProtobuf(raw);
    if (ct !== 'application/json' && !ct.endsWith('+json') && ct !== 'application/apply-patch+yaml' && ct !== '') {
      throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf`);
    }
    try {
      return JSON.parse(raw.toString('utf8')) as Json;
    } catch (e) {
      const what = info ? `the object provided is unrecognized (must be of type ${info.kind}): ` : '';
      throw badRequest(`${what}couldn't get version/kind; json parse error: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Parses /api/v1/... and /apis/G/V/... into a resource route (undefined for discovery paths). */
  #route(parts: string[]): Route | undefined {
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api') {
      group = '';
      version = parts[1];
      rest = parts.slice(2);
    } else {
      group = parts[1];
      version = parts[2];
      rest = parts.slice(3);
    }
    if (rest.length === 0) return undefined;
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      const nsInfo = findResource(group, version, 'namespaces');
      // /api/v1/namespaces/NAME/status|finalize is the namespace's own subresource
      if (nsInfo && rest.length === 3 && (rest[2] === 'status' || rest[2] === 'finalize')) {
        return { kind: 'resource', info: nsInfo, namespace: undefined, name: rest[1], subresource: rest[2] };
      }
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const info = findResource(group, version, rest[0]);
    if (!info) throw unknownResource();
    if (namespace !== undefined && !info.namespaced) throw unknownResource();
    const name = rest[1];
    const subresource = rest[2];
    if (rest.length > 3) throw unknownResource();
    if (subresource !== undefined && !info.subresources.includes(subresource)) throw unknownResource();
    return { kind: 'resource', info, namespace, name, subresource };
  }

  /**
   * The name RBAC sees (RequestInfoFactory.NewRequestInfo): a list or watch with
   * `fieldSelector=metadata.name=X` is authorized for that name, as the real one does, so a rule
   * with resourceNames allows `kubectl get pod X --watch`.
   */
  #authzName(verb: string, route: Route, q: URLSearchParams): string | undefined {
    if ((verb !== 'list' && verb !== 'watch') || route.name !== undefined) return route.name;
    const m = /^metadata\.name==?([^,]+)$/.exec(q.get('fieldSelector') ?? '');
    return m ? m[1] : undefined;
  }

  /**
   * The verb from the HTTP method, for subresources too (apiserver/pkg/endpoints/request
   * requestinfo.go `NewRequestInfo`): a WebSocket upgrade of pods/exec|attach|portforward is a GET,
   * so `get`; SPDY's POST is `create`. See #authorizeConnectCreate for the second check of 1.35.
   */
  #verb(method: string, route: Route, watch: boolean): string {
    switch (method) {
      case 'GET':
      case 'HEAD':
        return route.name === undefined ? (watch ? 'watch' : 'list') : 'get';
      case 'POST':
        return 'create';
      case 'PUT':
        return 'update';
      case 'PATCH':
        return 'patch';
      case 'DELETE':
        return route.name === undefined ? 'deletecollection' : 'delete';
      default:
        return method.toLowerCase();
    }
  }

  /** RBAC for a resource request, recorded in the audit; 403 with the real message (responsewriters.Forbidden). */
  #authorize(user: User, route: Route, verb: string, path = '', name = route.name): void {
    const attrs: Attributes = {
      verb,
      group: route.info.group,
      resource: route.info.name,
      subresource: route.subresource,
      // /api/v1/namespaces/NAME is the namespace itself, with its name as the request's namespace
      // (RequestInfoFactory.NewRequestInfo), so a RoleBinding in NAME can grant reading it
      namespace: route.namespace ?? (route.info.kind === 'Namespace' && route.name !== undefined ? route.name : undefined),
      name,
      path,
    };
    const d = this.rbac.authorize(user, attrs);
    this.audit.record(user.name, attrs, d.allowed);
    if (!d.allowed) {
      throw new ApiError(403, 'Forbidden', forbiddenMessage(user, attrs, d.reason), {
        name: route.name,
        group: route.info.group || undefined,
        kind: route.info.name,
      });
    }
  }

  /** RBAC for a non-resource request (`/api`, `/version`, `/openapi/v3/...`): verb = the method in lower case. */
  #authorizeNonResource(user: User, method: string, path: string): void {
    const attrs: Attributes = { verb: method.toLowerCase(), group: '', resource: '', path, nonResource: true };
    const d = this.rbac.authorize(user, attrs);
    this.audit.record(user.name, attrs, d.allowed);
    if (!d.allowed) throw new ApiError(403, 'Forbidden', forbiddenMessage(user, attrs, d.reason), {});
  }

  /**
   * The escalation checks of the rbac storages (pkg/registry/rbac/{role,clusterrole,rolebinding,
   * clusterrolebinding}/policybased/storage.go): a Role or ClusterRole may grant only what the
   * writer holds (or has `escalate` on it); a binding may reference only a role whose rules the
   * writer holds (or has `bind` on it). system:masters passes (EscalationAllowed).
   */
  #escalationCheck(user: User, info: ResourceInfo, namespace: string, requestName: string | undefined): WriteOptions['admit'] {
    if (info.group !== RBAC_GROUP || this.rbac.escalationAllowed(user)) return undefined;
    const rbac = this.rbac;
    return (obj) => {
      const name = isObject(obj.metadata) && typeof obj.metadata.name === 'string' ? obj.metadata.name : '';
      const forbid = (msg: string): ApiError => new ApiError(403, 'Forbidden', `${info.name}.${RBAC_GROUP} "${name}" is forbidden: ${msg}`, { name, group: RBAC_GROUP, kind: info.name });
      if (info.kind === 'Role' || info.kind === 'ClusterRole') {
        if (rbac.roleEscalationAuthorized(user, info.name as 'roles' | 'clusterroles', namespace, requestName ?? '')) return;
        const msg = rbac.confirmNoEscalation(user, namespace, rulesOf(obj));
        if (msg) throw forbid(msg);
        return;
      }
      const ref = roleRefOf(obj);
      if (rbac.bindingAuthorized(user, ref, namespace)) return;
      let rules: PolicyRule[];
      try {
        rules = rbac.getRoleReferenceRules(ref, namespace);
      } catch (e) {
        // the role listers' NotFound (`role.rbac.authorization.k8s.io "x" not found`)
        if (e instanceof RuleResolutionError && ref.name !== '') throw notFound(RBAC_GROUP, ref.kind === 'Role' ? 'role' : 'clusterrole', ref.name);
        return; // an invalid roleRef: validation answers it
      }
      const msg = rbac.confirmNoEscalation(user, namespace, rules);
      if (msg) throw forbid(msg);
    };
  }

  /**
   * Kubernetes 1.35 (feature gate AuthorizePodWebsocketUpgradeCreatePermission, beta and on by
   * default; kubernetes PR 134577, KEP-4006): ExecREST, AttachREST and PortForwardREST `Connect`
   * (pkg/registry/core/pod/rest/subresources.go) first call `ensureAuthorizedForVerb(ctx,
   * authorizer, "create")` (pkg/registry/core/pod/rest/authorize.go): when the request's own verb
   * (already authorized by the filter) is not `create`, the same attributes are authorized again
   * with verb `create`. Its refusal is `apierrors.NewForbidden(pods, name, errors.New(reason))`
   * with the authorizer's reason, which RBAC leaves empty when no rule matches
   * (plugin/pkg/auth/authorizer/rbac/rbac.go `Authorize`): `pods "NAME" is forbidden: `. Unlike
   * the filter's refusal it names no user and no verb.
   */
  #authorizeConnectCreate(user: User, route: Route, verb: string, path: string): void {
    if (verb === 'create') return;
    const attrs: Attributes = { verb: 'create', group: route.info.group, resource: route.info.name, subresource: route.subresource, namespace: route.namespace, name: route.name, path };
    const d = this.rbac.authorize(user, attrs);
    this.audit.record(user.name, attrs, d.allowed);
    if (d.allowed) return;
    const gr = route.info.group ? `${route.info.name}.${route.info.group}` : route.info.name;
    throw new ApiError(403, 'Forbidden', `${gr} "${route.name ?? ''}" is forbidden: ${d.reason ?? ''}`, {
      name: route.name,
      group: route.info.group || undefined,
      kind: route.info.name,
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://lab');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const parts = path.split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));

    const hasCredentials = req.headers.authorization !== undefined;
    const user = this.#user(req) ?? (!hasCredentials && ANONYMOUS_PATHS.has(path) ? ANONYMOUS : undefined);
    if (!user) throw unauthorized();
    if (parts[0] === 'lab') return this.#lab(req, res, parts, user);
    const resourceRequest = (parts[0] === 'api' && parts.length >= 3) || (parts[0] === 'apis' && parts.length >= 4);
    if (!resourceRequest) this.#authorizeNonResource(user, method, url.pathname);

    if (path === '/healthz' || path === '/livez' || path === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
      return;
    }
    if (path === '/version') {
      this.#send(res, 200, versionInfo());
      return;
    }
    if (parts[0] === 'openapi') {
      if (parts[1] === 'v3' && parts.length === 2) return this.#send(res, 200, openApiIndex());
      if (parts[1] === 'v3') {
        const [kind, a, b] = parts.slice(2);
        const doc = kind === 'api' ? openApiDocument('', a) : kind === 'apis' ? openApiDocument(a, b) : undefined;
        if (doc) return this.#send(res, 200, doc);
      }
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    if (path === '/api') return this.#send(res, 200, apiVersions());
    if (path === '/apis') return this.#send(res, 200, apiGroupList());
    if (parts[0] === 'api' && parts.length === 2) {
      const l = apiResourceList('', parts[1]);
      if (!l) throw unknownResource();
      return this.#send(res, 200, l);
    }
    if (parts[0] === 'apis' && parts.length === 2) {
      const g = apiGroup(parts[1]);
      if (!g) throw unknownResource();
      return this.#send(res, 200, g);
    }
    if (parts[0] === 'apis' && parts.length === 3) {
      const l = apiResourceList(parts[1], parts[2]);
      if (!l) throw unknownResource();
      return this.#send(res, 200, l);
    }
    if ((parts[0] !== 'api' && parts[0] !== 'apis') || parts.length < 3) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('404 page not found\n');
      return;
    }
    const route = this.#route(parts);
    if (!route) throw unknownResource();
    const q = url.searchParams;
    const watch = q.get('watch') === 'true' || q.get('watch') === '1';
    const verb = this.#verb(method, route, watch);
    this.#authorize(user, route, verb, url.pathname, this.#authzName(verb, route, q));
    if (route.info.kind === 'SelfSubjectAccessReview') return this.#accessReview(req, res, user, method);
    if (route.info.kind === 'SelfSubjectRulesReview') return this.#rulesReview(req, res, user, method);
    if (route.info.kind === 'SelfSubjectReview') return this.#selfReview(req, res, user, method);
    if (REVIEW_KINDS.has(route.info.kind)) throw methodNotAllowed();
    const reg = this.#opts.registry;
    const { info } = route;
    const ns = route.namespace ?? '';
    const dryRun = q.getAll('dryRun').includes('All');

    if (route.subresource === 'log') {
      if (method !== 'GET') throw methodNotAllowed();
      return handleLog(this.#opts.net, reg.get(info, ns, route.name!), q, res);
    }
    if (route.subresource === 'exec' || route.subresource === 'portforward' || route.subresource === 'attach') {
      throw new ApiError(400, 'BadRequest', 'Upgrade request required');
    }
    if (route.subresource === 'scale') return this.#scale(req, res, route, method, dryRun);
    if (route.subresource === 'token') return this.#tokenRequest(req, res, route, method);
    const admit = this.#escalationCheck(user, info, ns, route.name);

    if (route.name === undefined) {
      if (info.namespaced && route.namespace === undefined && method !== 'GET') throw methodNotAllowed();
      switch (method) {
        case 'GET':
          if (watch) return this.#watch(req, res, route, q);
          return this.#list(req, res, route, q);
        case 'POST': {
          const body = await this.#readJson(req, info);
          if (!isObject(body)) throw badRequest(`the object provided is unrecognized (must be of type ${info.kind})`);
          const warnings: string[] = [];
          const created = reg.create(info, ns, body, { dryRun, warnings, admit });
          return this.#send(res, 201, created, warnings);
        }
        case 'DELETE': {
          const opts = await this.#deleteOptions(req, q);
          const items = this.#select(route, q);
          for (const o of items) reg.delete(info, metaOf(o).namespace ?? '', metaOf(o).name!, opts);
          return this.#send(res, 200, { kind: `${info.kind}List`, apiVersion: apiVersionOf(info), metadata: { resourceVersion: reg.store.resourceVersion }, items });
        }
        default:
          throw methodNotAllowed();
      }
    }

    const name = route.name;
    const sub = route.subresource === 'status' ? ('status' as const) : undefined;
    const warnings: string[] = [];
    if (route.subresource !== undefined && route.subresource !== 'status') throw methodNotAllowed();
    switch (method) {
      case 'GET': {
        const o = reg.get(info, ns, name);
        return this.#send(res, 200, wantsTable(req.headers.accept) ? toTable(info, [o], reg.store.resourceVersion) : o);
      }
      case 'PUT': {
        const body = await this.#readJson(req, info);
        if (!isObject(body)) throw badRequest(`the object provided is unrecognized (must be of type ${info.kind})`);
        return this.#send(res, 200, reg.update(info, ns, name, body, { subresource: sub, dryRun, warnings, admit }), warnings);
      }
      case 'PATCH': {
        const type = this.#patchType(req, info);
        const body = await this.#readJson(req, info);
        if (type === 'apply') {
          if (!isObject(body)) throw badRequest('apply patches must be objects');
          if (!reg.tryGet(info, ns, name)) {
            const withName = { ...body, metadata: { ...(isObject(body.metadata) ? body.metadata : {}), name } };
            const created = reg.create(info, ns, withName, { dryRun, warnings, admit });
            return this.#send(res, 201, created, warnings);
          }
          const patched = reg.patch(info, ns, name, info.group === 'networking.istio.io' ? 'merge' : 'strategic', body, { subresource: sub, dryRun, warnings, admit });
          return this.#send(res, 200, patched, warnings);
        }
        const patched = reg.patch(info, ns, name, type, body, { subresource: sub, dryRun, warnings, admit });
        return this.#send(res, 200, patched, warnings);
      }
      case 'DELETE': {
        const opts = await this.#deleteOptions(req, q);
        const { object, finished } = reg.delete(info, ns, name, { ...opts, dryRun });
        if (!finished || info.kind === 'Pod') return this.#send(res, opts.propagationPolicy === 'Foreground' && !finished ? 202 : 200, object);
        const m = object.metadata as ObjectMeta;
        return this.#send(res, 200, {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Success',
          details: { name, group: info.group || undefined, kind: info.name, uid: m.uid } as JsonObject,
        } as JsonObject);
      }
      default:
        throw methodNotAllowed();
    }
  }

  #patchType(req: http.IncomingMessage, info: ResourceInfo): PatchType | 'apply' {
    const ct = (req.headers['content-type'] ?? '').split(';')[0].trim();
    const accepted = 'application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml';
    switch (ct) {
      case 'application/merge-patch+json':
        return 'merge';
      case 'application/json-patch+json':
        return 'json';
      case 'application/apply-patch+yaml':
        return 'apply';
      case 'application/strategic-merge-patch+json':
        if (info.group === 'networking.istio.io') break;
        return 'strategic';
    }
    throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${info.group === 'networking.istio.io' ? accepted : `${accepted}, application/strategic-merge-patch+json`}`);
  }

  async #deleteOptions(req: http.IncomingMessage, q: URLSearchParams): Promise<DeleteOptions> {
    const opts: DeleteOptions = {};
    const raw = await this.#readBody(req);
    if (raw.length > 0) {
      let body: Json;
      try {
        body = isProtobuf(req.headers['content-type']) ? decodeK8sProtobuf(raw) : (JSON.parse(raw.toString('utf8')) as Json);
      } catch (e) {
        throw badRequest(`json parse error: ${e instanceof Error ? e.message : String(e)}`);
      }
      if (isObject(body)) {
        if (typeof body.gracePeriodSeconds === 'number') opts.gracePeriodSeconds = body.gracePeriodSeconds;
        if (typeof body.propagationPolicy === 'string') opts.propagationPolicy = body.propagationPolicy as DeleteOptions['propagationPolicy'];
        if (body.orphanDependents === true) opts.propagationPolicy = 'Orphan';
        if (isObject(body.preconditions)) opts.preconditions = body.preconditions as DeleteOptions['preconditions'];
        if (Array.isArray(body.dryRun) && body.dryRun.includes('All')) opts.dryRun = true;
      }
    }
    const g = q.get('gracePeriodSeconds');
    if (g !== null && g !== '') opts.gracePeriodSeconds = Number(g);
    const p = q.get('propagationPolicy');
    if (p) opts.propagationPolicy = p as DeleteOptions['propagationPolicy'];
    if (q.get('orphanDependents') === 'true') opts.propagationPolicy = 'Orphan';
    if (q.getAll('dryRun').includes('All')) opts.dryRun = true;
    if (opts.propagationPolicy && !['Background', 'Foreground', 'Orphan'].includes(opts.propagationPolicy)) {
      throw new ApiError(422, 'Invalid', `DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "${opts.propagationPolicy}": supported values: "Foreground", "Background", "Orphan", "nil"`);
    }
    return opts;
  }

  #filters(q: URLSearchParams): (o: JsonObject) => boolean {
    const ls = q.get('labelSelector');
    const fs = q.get('fieldSelector');
    const lreqs = ls ? parseLabelSelector(ls) : [];
    const freqs = fs ? parseFieldSelector(fs) : [];
    return (o) => matchRequirements(lreqs, metaOf(o).labels) && matchFields(freqs, o);
  }

  #select(route: Route, q: URLSearchParams): JsonObject[] {
    const match = this.#filters(q);
    return this.#opts.registry.store.list(route.info, route.info.namespaced ? route.namespace : undefined).filter(match);
  }

  #list(req: http.IncomingMessage, res: http.ServerResponse, route: Route, q: URLSearchParams): void {
    const items = this.#select(route, q);
    const rv = this.#opts.registry.store.resourceVersion;
    if (wantsTable(req.headers.accept)) return this.#send(res, 200, toTable(route.info, items, rv));
    this.#send(res, 200, {
      kind: `${route.info.kind}List`,
      apiVersion: apiVersionOf(route.info),
      metadata: { resourceVersion: rv },
      items,
    });
  }

  #watch(req: http.IncomingMessage, res: http.ServerResponse, route: Route, q: URLSearchParams): void {
    const store = this.#opts.registry.store;
    const match = this.#filters(q);
    const { info } = route;
    const ns = info.namespaced ? route.namespace : undefined;
    const table = wantsTable(req.headers.accept);
    const inScope = (o: JsonObject): boolean => ns === undefined || metaOf(o).namespace === ns;
    const bookmarks = q.get('allowWatchBookmarks') === 'true';
    const rvParam = q.get('resourceVersion');
    const sendInitial = q.get('sendInitialEvents') === 'true';

    let backlog: StoreEvent[] = [];
    if (rvParam && rvParam !== '0' && !sendInitial) {
      const rv = Number(rvParam);
      if (!Number.isFinite(rv)) throw badRequest(`invalid resource version "${rvParam}"`);
      try {
        backlog = store.since(info, rv);
      } catch (e) {
        if (e instanceof ApiError && e.code === 410) {
          res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', Date: now().toUTCString() });
          res.end(JSON.stringify({ type: 'ERROR', object: e.toStatus() }) + '\n');
          return;
        }
        throw e;
      }
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private', Date: now().toUTCString() });
    res.socket?.setNoDelay(true);
    const write = (type: string, object: JsonObject): void => {
      const obj = table && type !== 'BOOKMARK' ? toTable(info, [object], metaOf(object).resourceVersion ?? '', true) : object;
      res.write(JSON.stringify({ type, object: obj }) + '\n');
    };
    const bookmark = (): void => {
      write('BOOKMARK', { kind: info.kind, apiVersion: apiVersionOf(info), metadata: { resourceVersion: store.resourceVersion } });
    };
    if (!rvParam || rvParam === '0' || sendInitial) {
      for (const o of store.list(info, ns)) if (match(o)) write('ADDED', o);
      if (sendInitial && bookmarks) {
        write('BOOKMARK', { kind: info.kind, apiVersion: apiVersionOf(info), metadata: { resourceVersion: store.resourceVersion, annotations: { 'k8s.io/initial-events-end': 'true' } } });
      }
    }
    const onEvent = (ev: StoreEvent): void => {
      if (ev.resource !== `${info.group}/${info.name}` || !inScope(ev.object)) return;
      const now = match(ev.object);
      const before = ev.old ? match(ev.old) : false;
      if (ev.type === 'ADDED') {
        if (now) write('ADDED', ev.object);
      } else if (ev.type === 'MODIFIED') {
        if (now && before) write('MODIFIED', ev.object);
        else if (now) write('ADDED', ev.object);
        else if (before) write('DELETED', ev.object);
      } else if (now || before) write('DELETED', ev.object);
    };
    for (const ev of backlog) onEvent(ev);
    store.events.on('event', onEvent);
    const interval = this.#opts.bookmarkIntervalMs ?? 5000;
    const ticker = setInterval(() => {
      if (bookmarks) bookmark();
      else res.write('\n');
    }, interval);
    let timeout: NodeJS.Timeout | undefined;
    const t = Number(q.get('timeoutSeconds') ?? '0');
    const stop = (): void => {
      store.events.off('event', onEvent);
      clearInterval(ticker);
      if (timeout) clearTimeout(timeout);
      this.#watches.delete(stop);
      if (!res.writableEnded) res.end();
    };
    if (t > 0) timeout = setTimeout(stop, t * 1000);
    this.#watches.add(stop);
    res.on('close', stop);
  }

  async #scale(req: http.IncomingMessage, res: http.ServerResponse, route: Route, method: string, dryRun: boolean): Promise<void> {
    const reg = this.#opts.registry;
    const { info } = route;
    const ns = route.namespace ?? '';
    const name = route.name!;
    const toScale = (o: JsonObject): JsonObject => {
      const m = o.metadata as ObjectMeta;
      const spec = isObject(o.spec) ? o.spec : {};
      const status = isObject(o.status) ? o.status : {};
      return {
        kind: 'Scale',
        apiVersion: 'autoscaling/v1',
        metadata: { name: m.name!, namespace: m.namespace!, uid: m.uid!, resourceVersion: m.resourceVersion!, creationTimestamp: m.creationTimestamp! },
        spec: { replicas: typeof spec.replicas === 'number' ? spec.replicas : 1 },
        status: { replicas: typeof status.replicas === 'number' ? status.replicas : 0, selector: selectorString(spec.selector as never) },
      };
    };
    const cur = reg.get(info, ns, name);
    if (method === 'GET') return this.#send(res, 200, toScale(cur));
    let scale: Json;
    if (method === 'PUT') scale = await this.#readJson(req, info);
    else if (method === 'PATCH') {
      const type = this.#patchType(req, info);
      const body = await this.#readJson(req, info);
      const { jsonPatch, mergePatch, strategicMergePatch } = await import('./patch.js');
      const base = toScale(cur);
      scale = type === 'json' ? jsonPatch(base, body) : type === 'merge' ? mergePatch(base, body) : strategicMergePatch(base, body);
    } else throw methodNotAllowed();
    if (!isObject(scale) || !isObject(scale.spec) || typeof scale.spec.replicas !== 'number' || scale.spec.replicas < 0) {
      const v = isObject(scale) && isObject(scale.spec) ? (scale.spec.replicas ?? null) : null;
      throw new ApiError(422, 'Invalid', `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value: ${JSON.stringify(v)}: must be greater than or equal to 0`, {
        name,
        group: 'autoscaling',
        kind: 'Scale',
        causes: [{ reason: 'FieldValueInvalid', message: 'Invalid value', field: 'spec.replicas' }],
      });
    }
    const sm = isObject(scale.metadata) ? scale.metadata : {};
    const next: JsonObject = { ...cur, spec: { ...(cur.spec as JsonObject), replicas: scale.spec.replicas } };
    const nm = { ...(cur.metadata as JsonObject) };
    if (typeof sm.resourceVersion === 'string' && sm.resourceVersion !== '') nm.resourceVersion = sm.resourceVersion;
    next.metadata = nm;
    const updated = reg.update(info, ns, name, next, { dryRun });
    this.#send(res, 200, toScale(updated));
  }

  /**
   * SelfSubjectAccessReview (pkg/registry/authorization/selfsubjectaccessreview/rest.go): the
   * same decision a request would get, with RBAC's reason (`RBAC: allowed by ClusterRoleBinding
   * "x" of ClusterRole "y" to Group "z"`); a denial is `allowed: false` with no reason (or the
   * rule resolution errors). Resource and non-resource attributes.
   */
  async #accessReview(req: http.IncomingMessage, res: http.ServerResponse, user: User, method: string): Promise<void> {
    if (method !== 'POST') throw methodNotAllowed();
    const body = await this.#readJson(req, undefined);
    const spec = isObject(body) && isObject(body.spec) ? body.spec : {};
    const ra = isObject(spec.resourceAttributes) ? spec.resourceAttributes : undefined;
    const nra = isObject(spec.nonResourceAttributes) ? spec.nonResourceAttributes : undefined;
    if (ra && nra) {
      throw new ApiError(422, 'Invalid', `SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.nonResourceAttributes: Invalid value: "${'{'}${String(nra.path ?? '')} ${String(nra.verb ?? '')}${'}'}": cannot be specified in combination with resourceAttributes`);
    }
    if (!ra && !nra) {
      throw new ApiError(422, 'Invalid', 'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must be specified');
    }
    const str = (o: JsonObject, k: string): string => (typeof o[k] === 'string' ? (o[k] as string) : '');
    // ResourceAttributesFrom / NonResourceAttributesFrom
    const attrs: Attributes = ra
      ? { verb: str(ra, 'verb'), group: str(ra, 'group'), resource: str(ra, 'resource'), subresource: str(ra, 'subresource') || undefined, namespace: str(ra, 'namespace') || undefined, name: str(ra, 'name') || undefined }
      : { verb: str(nra!, 'verb'), group: '', resource: '', path: str(nra!, 'path'), nonResource: true };
    const d = this.rbac.authorize(user, attrs);
    const status: JsonObject = { allowed: d.allowed };
    if (d.reason) status.reason = d.reason;
    this.#send(res, 201, {
      kind: 'SelfSubjectAccessReview',
      apiVersion: 'authorization.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec,
      status,
    });
  }

  /**
   * SelfSubjectRulesReview (`kubectl auth can-i --list`): RBACAuthorizer.RulesFor in the namespace,
   * resource and non-resource rules apart, as pkg/registry/authorization/selfsubjectrulesreview does.
   */
  async #rulesReview(req: http.IncomingMessage, res: http.ServerResponse, user: User, method: string): Promise<void> {
    if (method !== 'POST') throw methodNotAllowed();
    const body = await this.#readJson(req, undefined);
    const spec = isObject(body) && isObject(body.spec) ? body.spec : {};
    const namespace = typeof spec.namespace === 'string' ? spec.namespace : '';
    const { rules, errors } = this.rbac.rulesFor(user, namespace);
    const resourceRules: JsonObject[] = [];
    const nonResourceRules: JsonObject[] = [];
    for (const r of rules) {
      if ((r.resources ?? []).length > 0) {
        const rr: JsonObject = { verbs: r.verbs, apiGroups: r.apiGroups ?? [], resources: r.resources ?? [] };
        if ((r.resourceNames ?? []).length > 0) rr.resourceNames = r.resourceNames!;
        resourceRules.push(rr);
      }
      if ((r.nonResourceURLs ?? []).length > 0) nonResourceRules.push({ verbs: r.verbs, nonResourceURLs: r.nonResourceURLs! });
    }
    const status: JsonObject = { resourceRules, nonResourceRules, incomplete: false };
    if (errors.length > 0) status.evaluationError = errors.length === 1 ? errors[0] : `[${errors.join(', ')}]`;
    this.#send(res, 201, { kind: 'SelfSubjectRulesReview', apiVersion: 'authorization.k8s.io/v1', metadata: { creationTimestamp: null }, spec: { namespace }, status });
  }

  /** SelfSubjectReview (`kubectl auth whoami`, pkg/registry/authentication/selfsubjectreview): the user as authenticated. */
  async #selfReview(req: http.IncomingMessage, res: http.ServerResponse, user: User, method: string): Promise<void> {
    if (method !== 'POST') throw methodNotAllowed();
    await this.#readBody(req);
    const userInfo: JsonObject = { username: user.name, groups: user.groups };
    if (user.uid) userInfo.uid = user.uid;
    this.#send(res, 201, { kind: 'SelfSubjectReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, status: { userInfo } });
  }

  /** POST serviceaccounts/NAME/token (TokenRequest, `kubectl create token`): rbac-tokens.ts. */
  async #tokenRequest(req: http.IncomingMessage, res: http.ServerResponse, route: Route, method: string): Promise<void> {
    if (method !== 'POST') throw methodNotAllowed();
    const body = await this.#readJson(req, undefined);
    const sa = this.#opts.registry.get(R.serviceaccounts, route.namespace ?? '', route.name ?? '');
    const meta = sa.metadata as ObjectMeta;
    const answer = this.#saTokens.request({ namespace: meta.namespace ?? '', name: meta.name ?? '', uid: meta.uid ?? '' }, isObject(body) ? body : {});
    this.#send(res, 201, answer);
  }

  async #lab(req: http.IncomingMessage, res: http.ServerResponse, parts: string[], user: User): Promise<void> {
    const admin = user.groups.includes(GROUPS.masters);
    // lab-only endpoints: /lab/v1/clock (GET, PUT {skewSeconds})
    if (parts[1] === 'v1' && parts[2] === 'clock' && parts.length === 3) {
      if (req.method === 'PUT') {
        if (!admin) throw new ApiError(403, 'Forbidden', `User "${user.name}" cannot change the lab clock`);
        const body = await this.#readJson(req, undefined);
        if (!isObject(body) || typeof body.skewSeconds !== 'number') throw badRequest('expected {"skewSeconds": number}');
        setClockSkewSeconds(body.skewSeconds);
      }
      return this.#send(res, 200, { skewSeconds: clockSkewSeconds(), now: now().toISOString() });
    }
    // lab-only: POST /lab/v1/faults/cut-portforward {"abrupt": bool, "namespace"?: string}
    if (parts[1] === 'v1' && parts[2] === 'faults' && parts[3] === 'cut-portforward' && parts.length === 4) {
      if (req.method !== 'POST') throw methodNotAllowed();
      if (!admin) throw new ApiError(403, 'Forbidden', `User "${user.name}" cannot inject lab faults`);
      const body = await this.#readJson(req, undefined);
      const abrupt = isObject(body) && body.abrupt === true;
      const namespace = isObject(body) && typeof body.namespace === 'string' ? body.namespace : undefined;
      return this.#send(res, 200, { cut: cutPortForwards(abrupt ? 'abrupt' : 'close', namespace), how: abrupt ? 'abrupt' : 'close' });
    }
    // lab-only: POST /lab/v1/faults/freeze-shadow {"seconds": N, "namespace"?, "pod"?} stops ktctl's pods
    // (SIGSTOP) and continues them after N s; GET lists the frozen ones, DELETE continues them now
    // (?namespace=NS&pod=NAME): api/freeze.ts
    if (parts[1] === 'v1' && parts[2] === 'faults' && parts[3] === 'freeze-shadow' && parts.length === 4) {
      if (!admin) throw new ApiError(403, 'Forbidden', `User "${user.name}" cannot inject lab faults`);
      const q = new URL(req.url ?? '/', 'https://lab').searchParams;
      if (req.method === 'POST') {
        const r = await this.#freezer.freeze(parseFreezeRequest(await this.#readJson(req, undefined)));
        return this.#send(res, 200, { seconds: r.seconds, thawAt: r.thawAt, frozen: frozenJson(r.frozen) });
      }
      if (req.method === 'GET') return this.#send(res, 200, { frozen: frozenJson(this.#freezer.list(parsePodFilter(q))) });
      if (req.method === 'DELETE') return this.#send(res, 200, { thawed: frozenJson(this.#freezer.thaw(parsePodFilter(q))) });
      throw methodNotAllowed();
    }
    // lab-only: GET|DELETE /lab/v1/audit?user=NAME, every authorization decision for that user in order
    if (parts[1] === 'v1' && parts[2] === 'audit' && parts.length === 3) {
      if (!admin) throw new ApiError(403, 'Forbidden', `User "${user.name}" cannot read the lab's authorization audit`);
      const who = new URL(req.url ?? '/', 'https://lab').searchParams.get('user');
      if (!who) throw badRequest('expected ?user=NAME');
      if (req.method === 'GET') return this.#send(res, 200, { user: who, items: this.audit.entries(who) as unknown as JsonObject[] });
      if (req.method === 'DELETE') {
        this.audit.clear(who);
        return this.#send(res, 200, { user: who, items: [] });
      }
      throw methodNotAllowed();
    }
    // lab-only: GET, PUT /lab/v1/portforward[?namespace=NS] {"idleTimeoutMs": N, "refuseProtocols": [...]}:
    // the runtime's stream idle timeout (0 = none) and the subprotocols it refuses, for new streams,
    // cluster-wide or for the pods of one namespace
    if (parts[1] === 'v1' && parts[2] === 'portforward' && parts.length === 3) {
      const namespace = new URL(req.url ?? '/', 'https://lab').searchParams.get('namespace') ?? '';
      const current = (namespace ? this.#pfByNamespace.get(namespace) : undefined) ?? this.#pfSettings;
      if (req.method === 'PUT') {
        if (!admin) throw new ApiError(403, 'Forbidden', `User "${user.name}" cannot change the lab's port-forward settings`);
        const body = await this.#readJson(req, undefined);
        if (!isObject(body)) throw badRequest('expected {"idleTimeoutMs": number, "refuseProtocols": [string]}');
        const next: PortForwardSettings = { ...current };
        if (body.idleTimeoutMs !== undefined) {
          if (typeof body.idleTimeoutMs !== 'number' || !Number.isInteger(body.idleTimeoutMs) || body.idleTimeoutMs < 0 || body.idleTimeoutMs > 2 ** 31 - 1) {
            throw badRequest('idleTimeoutMs must be a whole number of milliseconds from 0 (none) to 2147483647');
          }
          next.idleTimeoutMs = body.idleTimeoutMs;
        }
        if (body.refuseProtocols !== undefined) {
          if (!Array.isArray(body.refuseProtocols) || !body.refuseProtocols.every((p) => typeof p === 'string')) throw badRequest('refuseProtocols must be a list of subprotocol names');
          next.refuseProtocols = body.refuseProtocols as string[];
        }
        if (namespace) this.#pfByNamespace.set(namespace, next);
        else Object.assign(this.#pfSettings, next);
        return this.#send(res, 200, { ...next });
      }
      if (req.method !== 'GET') throw methodNotAllowed();
      return this.#send(res, 200, { ...current });
    }
    throw unknownResource();
  }

  /** The lab's streams speak WebSocket only; a SPDY upgrade (kubectl's fallback) is refused with 400. */
  #checkWebSocket(req: http.IncomingMessage): void {
    const upgradeHeader = String(req.headers.upgrade ?? '').toLowerCase();
    if (upgradeHeader !== 'websocket') {
      throw new ApiError(400, 'BadRequest', `unable to upgrade connection: ${upgradeHeader || 'no upgrade header'} is not supported by the lab (use WebSocket)`);
    }
  }

  async #upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const reject = (e: ApiError): void => {
      const text = JSON.stringify(e.toStatus());
      socket.end(
        `HTTP/1.1 ${e.code} ${http.STATUS_CODES[e.code] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      );
    };
    try {
      const user = this.#user(req);
      if (!user) throw unauthorized();
      const url = new URL(req.url ?? '/', 'https://lab');
      const parts = url.pathname.split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));
      if ((parts[0] !== 'api' && parts[0] !== 'apis') || parts.length < 3) throw unknownResource();
      const route = this.#route(parts);
      if (!route || route.info.kind !== 'Pod' || !route.name || !route.subresource) {
        if (route && !route.subresource && route.name === undefined) {
          throw badRequest('watch over websocket is not supported by the lab');
        }
        throw badRequest('Upgrade request required only for pods/exec, pods/attach, pods/portforward');
      }
      const verb = this.#verb(req.method ?? 'GET', route, false);
      this.#authorize(user, route, verb, url.pathname);
      if (route.subresource === 'exec' || route.subresource === 'attach' || route.subresource === 'portforward') this.#authorizeConnectCreate(user, route, verb, url.pathname);
      const pod = this.#opts.registry.get(R.pods, route.namespace ?? '', route.name);
      const protocols = String(req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '');
      if (route.subresource === 'portforward') {
        handlePortForward.requireNode(pod);
        this.#checkWebSocket(req);
        const settings = this.#pfByNamespace.get(route.namespace ?? '') ?? this.#pfSettings;
        const prep = handlePortForward.prepare(this.#opts.net, pod, url.searchParams, settings);
        // The runtime's wsstream handshake; a protocol it does not know gets x/net/websocket's bare
        // 403 (no body). kubectl's first try, `SPDY/3.1+portforward.k8s.io` (the tunnel that
        // kube-apiserver's PortForwardWebsockets handler would serve itself), is one of those: the
        // lab answers as an API server without that tunnel, so kubectl falls back to SPDY.
        const proto = negotiatePortForwardProtocol(protocols, settings.refuseProtocols);
        if (proto === undefined) {
          socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
          return;
        }
        this.#pfProtocol.set(req, proto);
        if ('setNoDelay' in socket && typeof socket.setNoDelay === 'function') socket.setNoDelay(true);
        this.#pfWss.handleUpgrade(req, socket, head, (ws) => prep.run(ws, socket, proto));
        return;
      }
      this.#checkWebSocket(req);
      if (route.subresource === 'exec' || route.subresource === 'attach') {
        if (route.subresource === 'attach') throw badRequest('attach is not supported by the lab');
        const proto = ['v5.channel.k8s.io', 'v4.channel.k8s.io'].find((p) => protocols.includes(p));
        if (!proto) throw badRequest(`unable to upgrade connection: requested protocols ${JSON.stringify(protocols)} are not supported (v5.channel.k8s.io, v4.channel.k8s.io)`);
        const prep = handleExec.prepare(this.#opts.net, pod, url.searchParams);
        this.#wss.handleUpgrade(req, socket, head, (ws) => prep.run(ws, proto));
        return;
      }
      throw badRequest('Upgrade request required');
    } catch (e) {
      if (e instanceof ApiError) reject(e);
      else if (e instanceof KubeletRefusal) {
        socket.end(`HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(e.message)}\r\nConnection: close\r\n\r\n${e.message}`);
      } else {
        this.#log(`upgrade error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        reject(new ApiError(500, 'InternalError', `Internal error occurred: ${String(e)}`));
      }
    }
  }
}

export function resourceList(): ResourceInfo[] {
  return RESOURCES;
}
