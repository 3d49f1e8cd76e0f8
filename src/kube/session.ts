/** The kubeconfig flags every Kubernetes command shares, turned into a `Kube`. */
import { Kube } from './api.js';
import { loadKubeConfig } from './config.js';

export interface KubeFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

export function openKube(f: KubeFlags): Kube {
  return new Kube(loadKubeConfig({ kubeconfig: f.kubeconfig, context: f.context, namespace: f.namespace }));
}
