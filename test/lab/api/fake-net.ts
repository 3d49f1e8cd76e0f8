/**
 * DEVELOPMENT ONLY: an in-process stand-in for the data plane (LabNet) so the API server can be
 * worked on without network namespaces (`tsx test/lab/daemon.ts --fake-net --listen 127.0.0.1:0`).
 * The lab itself and every test use the real data plane (test/lab/net).
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { PassThrough, Readable } from 'node:stream';
import type { LabNet, LabNetEvents, PodRuntimeSpec, ServiceRuntimeSpec } from '../net/types.js';

interface FakePod {
  spec: PodRuntimeSpec;
  ip: string;
  servers: Map<number, http.Server>;
  log: string[];
}

export class FakeLabNet implements LabNet {
  readonly events = new EventEmitter<LabNetEvents>();
  readonly pods = new Map<string, FakePod>();
  services: ServiceRuntimeSpec[] = [];
  dns: Parameters<LabNet['setDnsRecords']>[0] = { services: [], pods: [] };
  #next = 2;

  async up(): Promise<void> {}
  async down(): Promise<void> {
    for (const uid of [...this.pods.keys()]) await this.deletePod(uid);
  }

  async createPod(spec: PodRuntimeSpec): Promise<{ podIP: string }> {
    const ip = `198.18.${Math.floor(this.#next / 256)}.${this.#next % 256}`;
    this.#next++;
    const pod: FakePod = { spec, ip, servers: new Map(), log: [] };
    this.pods.set(spec.uid, pod);
    setTimeout(() => {
      for (const c of spec.containers) {
        if (c.image !== 'ktlab/echo' && !c.image.startsWith('ktlab/')) {
          this.events.emit('imagePullFailed', spec.uid, c.name, c.image, `rpc error: code = NotFound desc = failed to pull and unpack image "${c.image}"`);
          continue;
        }
        for (const p of c.ports) {
          const srv = http.createServer((req, res) => {
            res.setHeader('Content-Type', 'application/json');
            res.end(JSON.stringify({ pod: spec.name, namespace: spec.namespace, ip, path: req.url }));
          });
          srv.listen(0, '127.0.0.1');
          pod.servers.set(p.containerPort, srv);
        }
        pod.log.push(`listening on ${c.ports[0]?.containerPort ?? 8080}`);
        this.events.emit('containerStarted', spec.uid, c.name, new Date(), 0);
        setTimeout(() => this.events.emit('containerReady', spec.uid, c.name, true), 20);
      }
    }, 20);
    return { podIP: ip };
  }

  async deletePod(uid: string): Promise<void> {
    const p = this.pods.get(uid);
    if (!p) return;
    this.pods.delete(uid);
    for (const s of p.servers.values()) {
      s.closeAllConnections();
      s.close();
    }
  }

  logs(uid: string, _container: string, options: { follow: boolean; tailLines?: number }): Readable {
    const p = this.pods.get(uid);
    const lines = p?.log ?? [];
    const text = lines.slice(options.tailLines !== undefined ? -options.tailLines : 0).map((l) => `${l}\n`).join('');
    if (!options.follow) return Readable.from([Buffer.from(text)]);
    const out = new PassThrough();
    out.write(text);
    return out;
  }

  exec(_uid: string, _container: string, command: string[]): ChildProcessWithoutNullStreams {
    return spawn(command[0], command.slice(1), { stdio: 'pipe' });
  }

  connect(uid: string, port: number): Promise<net.Socket> {
    const p = this.pods.get(uid);
    const srv = p?.servers.get(port);
    const addr = srv?.address();
    const realPort = addr && typeof addr === 'object' ? addr.port : 1;
    return new Promise((resolve, reject) => {
      const s = net.connect(realPort, '127.0.0.1');
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  }

  setServices(services: ServiceRuntimeSpec[]): void {
    this.services = services;
  }
  setDnsRecords(records: Parameters<LabNet['setDnsRecords']>[0]): void {
    this.dns = records;
  }
  async createLaptop(): Promise<void> {}
  async deleteLaptop(): Promise<void> {}
}
