/**
 * A deployment of the lab's `ktlab/echo` image (one pod, label app=echo, container port 8080
 * named `web`) and Services in front of it, for tests against the lab.
 */
import { AppsV1Api, CoreV1Api, type V1Pod, type V1ServicePort } from '@kubernetes/client-node';
import { kubeConfig, waitForReadyPods } from '../lab/fixture.js';

export const ECHO_LABELS = { app: 'echo' };

/** Creates the deployment and `services` (name -> ports), waits for the pod to be ready, returns it. */
export async function deployEcho(namespace: string, services: Record<string, V1ServicePort[]>): Promise<V1Pod> {
  const apps = kubeConfig().makeApiClient(AppsV1Api);
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await apps.createNamespacedDeployment({
    namespace,
    body: {
      metadata: { name: 'echo' },
      spec: {
        replicas: 1,
        selector: { matchLabels: ECHO_LABELS },
        template: { metadata: { labels: ECHO_LABELS }, spec: { containers: [{ name: 'echo', image: 'ktlab/echo', ports: [{ containerPort: 8080, name: 'web' }] }] } },
      },
    },
  });
  for (const [name, ports] of Object.entries(services)) {
    await core.createNamespacedService({ namespace, body: { metadata: { name }, spec: { selector: ECHO_LABELS, ports } } });
  }
  const [pod] = await waitForReadyPods(namespace, 'app=echo', 1);
  return pod!;
}
