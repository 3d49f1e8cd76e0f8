/**
 * Finding the kubeconfig the way kubectl does: `--kubeconfig` (one file), else `$KUBECONFIG`
 * (several files, ':'-separated, merged: the first file that sets a value wins, missing files are
 * skipped), else `~/.kube/config`. Then `--context` (default: the current one) and the namespace:
 * `-n`, else the context's, else `default`.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { InputFileError } from '../errors.js';
import { installExecCredentials } from './credentials.js';
import { KubeConfigError } from './errors.js';

export interface KubeTarget {
  kc: KubeConfig;
  /** The context in use. */
  context: string;
  namespace: string;
  /** The API server's URL. */
  server: string;
  /** The files the configuration came from. */
  files: string[];
}

export interface KubeConfigOptions {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  /** Overrides for tests: the environment and the home directory. */
  env?: NodeJS.ProcessEnv;
  home?: string;
}

/** The kubeconfig files to read, in kubectl's order; throws when there is none. */
export function kubeconfigFiles(o: KubeConfigOptions): string[] {
  const env = o.env ?? process.env;
  if (o.kubeconfig !== undefined && o.kubeconfig !== '') {
    if (!existsSync(o.kubeconfig)) throw new InputFileError(`the kubeconfig ${o.kubeconfig} given with --kubeconfig does not exist`);
    return [o.kubeconfig];
  }
  const fromEnv = (env.KUBECONFIG ?? '').split(path.delimiter).filter((f) => f !== '');
  if (fromEnv.length > 0) {
    const present = fromEnv.filter((f) => existsSync(f));
    if (present.length > 0) return present;
  }
  const home = path.join(o.home ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return [home];
  const envText = fromEnv.length > 0 ? `$KUBECONFIG (${fromEnv.join(path.delimiter)}: no such file)` : '$KUBECONFIG (not set)';
  throw new KubeConfigError(`no kubeconfig found: looked at --kubeconfig (not given), ${envText} and ${home} (missing); point --kubeconfig at one, e.g. --kubeconfig .lab/kubeconfig`);
}

export function loadKubeConfig(o: KubeConfigOptions): KubeTarget {
  const files = kubeconfigFiles(o);
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(files[0]!);
    for (const f of files.slice(1)) {
      const more = new KubeConfig();
      more.loadFromFile(f);
      mergeFirstWins(kc, more);
    }
  } catch (error) {
    if (error instanceof KubeConfigError) throw error;
    throw new InputFileError(`the kubeconfig ${files.join(path.delimiter)} cannot be read: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  if (o.context !== undefined && o.context !== '') {
    if (!kc.getContextObject(o.context)) {
      const known = kc.getContexts().map((c) => c.name);
      throw new KubeConfigError(`the context "${o.context}" is not in ${files.join(path.delimiter)} (it has: ${known.join(', ') || 'none'})`);
    }
    kc.setCurrentContext(o.context);
  }
  const context = kc.getCurrentContext();
  const ctx = context ? kc.getContextObject(context) : null;
  if (!ctx) {
    throw new KubeConfigError(`the kubeconfig ${files.join(path.delimiter)} names no current context; pick one with --context (it has: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new KubeConfigError(`the context "${context}" refers to a cluster that is not in ${files.join(path.delimiter)}`);
  const namespace = o.namespace || ctx.namespace || 'default';
  // exec plugins (EKS, GKE, AKS) run by ktctl: renewed before expiry and after a 401, one run at a time
  installExecCredentials(kc);
  return { kc, context, namespace, server: cluster.server, files };
}

/** kubectl's merge: entries of later files are added only when their name is new. */
function mergeFirstWins(into: KubeConfig, more: KubeConfig): void {
  const clusters = new Set(into.clusters.map((c) => c.name));
  const users = new Set(into.users.map((u) => u.name));
  const contexts = new Set(into.contexts.map((c) => c.name));
  into.clusters = [...into.clusters, ...more.clusters.filter((c) => !clusters.has(c.name))];
  into.users = [...into.users, ...more.users.filter((u) => !users.has(u.name))];
  into.contexts = [...into.contexts, ...more.contexts.filter((c) => !contexts.has(c.name))];
  if (!into.currentContext && more.currentContext) into.currentContext = more.currentContext;
}
