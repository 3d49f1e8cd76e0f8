/**
 * UDP in the lab (test/kube-udp.test.ts, bench/udp-rtt.ts): a pod of the Node.js image that runs a
 * UDP echo server and a small DNS server on its pod IP, and a client program that runs with plain
 * `node` wherever the test puts it (a laptop namespace, another pod's namespace) and prints one
 * JSON line. Both are scripts in strings: a pod reads only its image, never the checkout.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { DEFAULT_SHADOW_IMAGE } from '../../src/kube/names.js';
import { kubeConfig, waitForReadyPods } from '../lab/fixture.js';

export { CLIENT_SCRIPT } from './udp-client.js';

export const UDP_ECHO_PORT = 7007;
/** What the pod's DNS server answers for every A question. */
export const UDP_DNS_ANSWER = '198.18.7.7';

/**
 * The pod's servers: echo on UDP_ECHO_PORT (every datagram back to its sender, as it came), and DNS
 * on 53 answering every A question with UDP_DNS_ANSWER (TTL 60), other types with no records, and
 * RFC 1035 §4.1.1's header rules (id, opcode and RD copied; QR, AA set).
 */
const SERVER_SCRIPT = String.raw`
const dgram = require('node:dgram');
const echo = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
echo.on('message', (m, r) => echo.send(m, r.port, r.address));
echo.bind(${UDP_ECHO_PORT});
const dns = dgram.createSocket('udp4');
dns.on('message', (q, r) => {
  if (q.length < 12) return;
  let off = 12;
  while (off < q.length && q[off] !== 0) off += q[off] + 1;
  if (off + 5 > q.length) return;
  const qend = off + 5;
  const qtype = q.readUInt16BE(off + 1);
  const a = qtype === 1;
  const out = Buffer.alloc(qend + (a ? 16 : 0));
  q.copy(out, 0, 0, qend);
  out.writeUInt16BE(0x8000 | 0x0400 | (q.readUInt16BE(2) & 0x7900), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(a ? 1 : 0, 6);
  out.writeUInt32BE(0, 8);
  if (a) {
    out.writeUInt16BE(0xc00c, qend);
    out.writeUInt16BE(1, qend + 2);
    out.writeUInt16BE(1, qend + 4);
    out.writeUInt32BE(60, qend + 6);
    out.writeUInt16BE(4, qend + 10);
    Buffer.from([${UDP_DNS_ANSWER.split('.').join(', ')}]).copy(out, qend + 12);
  }
  dns.send(out, r.port, r.address);
});
dns.bind(53);
setInterval(() => {}, 1 << 30);
`;

/** Creates the pod `name` in `namespace` and returns its IP once it is ready. */
export async function deployUdpTarget(namespace: string, name = 'udp-target'): Promise<string> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespacedPod({
    namespace,
    body: { metadata: { name, labels: { app: name } }, spec: { containers: [{ name: 'udp', image: DEFAULT_SHADOW_IMAGE, command: ['node', '-e', SERVER_SCRIPT] }] } },
  });
  const [pod] = await waitForReadyPods(namespace, `app=${name}`, 1);
  return pod!.status!.podIP!;
}
