/**
 * The lab's registry: the images a pod of the lab can run, under every name a real registry
 * answers to, with the user each image runs as. The control plane asks it for the image's user (a
 * kubelet's runAsNonRoot check) and the data plane for the program to start; an image that is not
 * here fails to pull with containerd's words, as on a real node.
 *
 * - `ktlab/echo`: the lab's own HTTP echo server (test/lab/images/echo.ts), any tag.
 * - the official Node.js image at the tag ktctl runs its shadow on (src/kube/names.ts
 *   DEFAULT_SHADOW_IMAGE): it runs the container's command with this machine's node binary, as the
 *   user the pod asks for, or as root, the image's own user.
 *
 * Programs read only the image (the host's node binary, the bundled echo in the lab's image store,
 * a directory every user can read) and the pod's volumes, never the checkout.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { DEFAULT_SHADOW_IMAGE } from '../../../src/kube/names.js';

export interface ImageRef {
  /** normalised name: docker.io/library/node */
  repository: string;
  tag?: string;
  digest?: string;
  /** the whole normalised reference, as containerd prints it */
  full: string;
}

/**
 * A reference normalised as Docker and containerd do (github.com/distribution/reference,
 * normalize.go: ParseNormalizedNamed and splitDockerDomain): no domain means docker.io, the
 * legacy index.docker.io is docker.io, and an official image (one path component) lives in
 * `library/`. A reference without tag or digest means `latest`.
 */
export function normaliseImage(image: string): ImageRef {
  let rest = image.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  // splitDockerDomain: the first component is a domain when it has a '.' or ':' or is localhost
  let domain = 'docker.io';
  let remainder = rest;
  const first = rest.indexOf('/');
  if (first >= 0) {
    const head = rest.slice(0, first);
    if (head.includes('.') || head.includes(':') || head === 'localhost' || head !== head.toLowerCase()) {
      domain = head;
      remainder = rest.slice(first + 1);
    }
  }
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && !remainder.includes('/')) remainder = `library/${remainder}`;
  if (tag === undefined && digest === undefined) tag = 'latest';
  const repository = `${domain}/${remainder}`;
  return { repository, tag, digest, full: `${repository}${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}` };
}

export interface LabImage {
  repository: string;
  /** tags the lab's registry holds; undefined: any tag */
  tags?: readonly string[];
  /** digests the lab's registry holds (the lab's own: it cannot know the real ones offline) */
  digests: readonly string[];
  /** the image's USER: its uid (root is 0) */
  uid: number;
  /** the image's /etc/passwd */
  users: Readonly<Record<string, number>>;
}

const shadowRef = normaliseImage(DEFAULT_SHADOW_IMAGE);

export const ECHO_IMAGE: LabImage = { repository: 'docker.io/ktlab/echo', digests: [], uid: 0, users: { root: 0, nobody: 65534 } };

/** The official Node.js image, as ktctl names it and its other spellings of the same version. */
export const NODE_IMAGE: LabImage = {
  repository: 'docker.io/library/node',
  tags: [shadowRef.tag ?? '', (shadowRef.tag ?? '').replace(/-alpine[\d.]+$/, '-alpine')],
  // the lab's own digest (it cannot know Docker Hub's offline): sha256 of "ktlab node image <tag>"
  digests: [`sha256:${createHash('sha256').update(`ktlab node image ${shadowRef.tag ?? ''}`).digest('hex')}`],
  uid: 0,
  users: { root: 0, node: 1000, nobody: 65534 },
};

const IMAGES: readonly LabImage[] = [ECHO_IMAGE, NODE_IMAGE];

/** The image `image` names, or the reason a pull fails (containerd's message, as a kubelet shows it). */
export function lookupImage(image: string): { image: LabImage; ref: ImageRef } | { pullError: string } {
  const ref = normaliseImage(image);
  const found = IMAGES.find((i) => i.repository === ref.repository);
  // containerd: pkg/cri/server/image_pull.go PullImage wraps the resolver's error as "failed to pull
  // and unpack image %q: %w"; remotes/docker/resolver.go Resolve says "pull access denied,
  // repository does not exist or may require authorization" for an unknown repository and
  // "%s: not found" for an unknown tag or digest.
  const prefix = `rpc error: code = NotFound desc = failed to pull and unpack image "${ref.full}": failed to resolve reference "${ref.full}"`;
  if (!found) {
    return {
      pullError: `rpc error: code = Unknown desc = failed to pull and unpack image "${ref.full}": failed to resolve reference "${ref.full}": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed`,
    };
  }
  if (ref.digest !== undefined && !found.digests.includes(ref.digest)) return { pullError: `${prefix}: ${ref.full}: not found` };
  if (ref.digest === undefined && found.tags !== undefined && !found.tags.includes(ref.tag ?? '')) return { pullError: `${prefix}: ${ref.full}: not found` };
  return { image: found, ref };
}

/** Where the lab keeps the files of its images (the bundled echo server), readable by every user. */
export function echoProgramPath(imagesDir: string): string {
  return path.join(imagesDir, 'echo.mjs');
}
