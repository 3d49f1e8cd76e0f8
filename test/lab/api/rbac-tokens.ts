/**
 * ServiceAccount tokens (TokenRequest, `kubectl create token`): what
 * pkg/registry/core/serviceaccount/storage/token.go (TokenREST.Create) issues and
 * pkg/serviceaccount/jwt.go + claims.go (validator.Validate) accept. A token is a JWT with the
 * real claims (iss, sub, aud, exp, iat, nbf, kubernetes.io.namespace/serviceaccount{name,uid});
 * it authenticates as `system:serviceaccount:NS:NAME` while it has not expired (by the lab's
 * clock, so tests move the clock instead of waiting), its audience includes the API server's, and
 * the ServiceAccount still exists with the same uid. Simplified: signed HS256 with a key made when
 * the control plane starts (the real issuer signs RS256/ES256 and publishes its keys), so tokens do
 * not survive a restart; bound object references (`--bound-object-kind`) are refused.
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { isObject, type Json, type JsonObject } from './json.js';
import { now, timestamp } from './clock.js';
import type { User } from './auth.js';
import { serviceAccountUserInfo } from './rbac.js';
import { rbacInvalid } from './rbac-validate.js';
import type { ApiError } from './status.js';

/** kube-apiserver's --api-audiences default (= the issuer) on kubeadm clusters. */
export const API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';
const ISSUER = API_AUDIENCE;
/** SetDefaults_TokenRequestSpec */
export const DEFAULT_EXPIRATION_SECONDS = 3600;
/** ValidateTokenRequest: at least 10 minutes, at most 2^32 seconds */
const MIN_EXPIRATION_SECONDS = 600;
const MAX_EXPIRATION_SECONDS = 2 ** 32;

export interface ServiceAccountRef {
  namespace: string;
  name: string;
  uid: string;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export class ServiceAccountTokens {
  readonly #key = randomBytes(32);
  /** looks the ServiceAccount up as it is now (undefined once deleted) */
  readonly #lookup: (namespace: string, name: string) => ServiceAccountRef | undefined;

  constructor(lookup: (namespace: string, name: string) => ServiceAccountRef | undefined) {
    this.#lookup = lookup;
  }

  /**
   * TokenREST.Create for an existing ServiceAccount: validates the TokenRequest (422 with the real
   * message), defaults it, and answers it with status.token and status.expirationTimestamp.
   */
  request(sa: ServiceAccountRef, body: JsonObject): JsonObject {
    const spec = isObject(body.spec) ? body.spec : {};
    const exp = typeof spec.expirationSeconds === 'number' ? spec.expirationSeconds : DEFAULT_EXPIRATION_SECONDS;
    const audiences = Array.isArray(spec.audiences) && spec.audiences.length > 0 ? spec.audiences.filter((a): a is string => typeof a === 'string') : [API_AUDIENCE];
    const invalid = validateTokenRequest(exp, spec.boundObjectRef);
    if (invalid) throw invalid;
    const iat = Math.floor(now().getTime() / 1000);
    const claims = {
      aud: audiences,
      exp: iat + exp,
      iat,
      iss: ISSUER,
      jti: randomUUID(),
      'kubernetes.io': { namespace: sa.namespace, serviceaccount: { name: sa.name, uid: sa.uid } },
      nbf: iat,
      sub: `system:serviceaccount:${sa.namespace}:${sa.name}`,
    };
    const head = `${b64url(JSON.stringify({ alg: 'HS256', kid: 'ktlab' }))}.${b64url(JSON.stringify(claims))}`;
    const token = `${head}.${this.#sign(head)}`;
    const meta = isObject(body.metadata) ? body.metadata : {};
    return {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { ...meta, name: sa.name, namespace: sa.namespace, creationTimestamp: timestamp() },
      spec: { audiences, expirationSeconds: exp, boundObjectRef: null } as JsonObject,
      status: { token, expirationTimestamp: timestamp(new Date(claims.exp * 1000)) },
    };
  }

  /** validator.Validate: the user a token stands for, or undefined (the caller answers 401). */
  authenticate(token: string): User | undefined {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    const sig = Buffer.from(parts[2], 'base64url');
    const want = Buffer.from(this.#sign(`${parts[0]}.${parts[1]}`), 'base64url');
    if (sig.length !== want.length || !timingSafeEqual(sig, want)) return undefined;
    let claims: Json;
    try {
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as Json;
    } catch {
      return undefined;
    }
    if (!isObject(claims) || typeof claims.exp !== 'number' || !Array.isArray(claims.aud)) return undefined;
    const t = now().getTime() / 1000;
    if (t >= claims.exp || (typeof claims.nbf === 'number' && t < claims.nbf - 60)) return undefined;
    if (!claims.aud.includes(API_AUDIENCE)) return undefined;
    const k = isObject(claims['kubernetes.io']) ? claims['kubernetes.io'] : {};
    const sa = isObject(k.serviceaccount) ? k.serviceaccount : {};
    if (typeof k.namespace !== 'string' || typeof sa.name !== 'string') return undefined;
    const live = this.#lookup(k.namespace, sa.name);
    if (!live || live.uid !== sa.uid) return undefined;
    return serviceAccountUserInfo(live.namespace, live.name, live.uid);
  }

  #sign(data: string): string {
    return createHmac('sha256', this.#key).update(data).digest('base64url');
  }
}

/** ValidateTokenRequest (pkg/apis/authentication/validation), plus the lab's refusal of bound objects. */
function validateTokenRequest(exp: number, bound: Json | undefined): ApiError | undefined {
  if (exp < MIN_EXPIRATION_SECONDS) {
    return rbacInvalid('TokenRequest', '', [{ field: 'spec.expirationSeconds', type: 'Invalid', value: String(exp), detail: 'may not specify a duration less than 10 minutes' }], 'authentication.k8s.io');
  }
  if (exp > MAX_EXPIRATION_SECONDS) {
    return rbacInvalid('TokenRequest', '', [{ field: 'spec.expirationSeconds', type: 'Invalid', value: String(exp), detail: 'may not specify a duration larger than 2^32 seconds' }], 'authentication.k8s.io');
  }
  if (isObject(bound)) {
    return rbacInvalid('TokenRequest', '', [{ field: 'spec.boundObjectRef', type: 'Forbidden', detail: 'the lab does not bind tokens to objects' }], 'authentication.k8s.io');
  }
  return undefined;
}
