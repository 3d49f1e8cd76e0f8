/**
 * The lab's two DNS servers, built on dns-packet:
 *  - the cluster DNS (198.19.0.10 in the node namespace): `svc.ns.svc.cluster.local`,
 *    `a-b-c-d.ns.pod.cluster.local`, NXDOMAIN for other cluster names, everything else forwarded
 *    to the upstream;
 *  - the upstream DNS (198.18.255.3 on the outside segment), the lab's "internet": it answers
 *    names under example.test and NXDOMAIN for everything else, never forwarding anywhere.
 * Both serve UDP and TCP (2-byte length prefix, RFC 1035 4.2.2). TTL 5 s.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { LAB } from './types.js';

export const DNS_TTL = 5;

export interface ClusterDnsRecords {
  services: Array<{ namespace: string; name: string; clusterIP: string }>;
  pods: Array<{ namespace: string; ip: string }>;
}

const FLAG_AA = 0x400;
const FLAG_RD = 0x100;
const FLAG_RA = 0x80;
const RCODE_NOERROR = 0;
const RCODE_FORMERR = 1;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;

/** What a name resolves to in one zone: an address, an existing name without A data, or nothing. */
type Lookup = { kind: 'a'; ip: string } | { kind: 'nodata' } | { kind: 'nxdomain' };

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function soa(zone: string): dnsPacket.Answer {
  return {
    type: 'SOA',
    name: zone,
    ttl: DNS_TTL,
    class: 'IN',
    data: {
      mname: `ns.dns.${zone}`,
      rname: `hostmaster.${zone}`,
      serial: 1,
      refresh: 7200,
      retry: 1800,
      expire: 86400,
      minimum: DNS_TTL,
    },
  };
}

function respond(query: dnsPacket.Packet, rcode: number, answers: dnsPacket.Answer[], authorities: dnsPacket.Answer[] = []): Buffer {
  const rd = (query.flags ?? 0) & FLAG_RD;
  return dnsPacket.encode({
    id: query.id ?? 0,
    type: 'response',
    flags: FLAG_AA | rd | FLAG_RA | rcode,
    questions: query.questions ?? [],
    answers,
    authorities,
  });
}

/** Answer a query from a lookup function for one zone. */
function answerFromZone(query: dnsPacket.Packet, zone: string, lookup: (name: string) => Lookup): Buffer {
  const q = query.questions?.[0];
  if (!q) return respond(query, RCODE_FORMERR, []);
  const name = normalize(q.name);
  const r = lookup(name);
  if (r.kind === 'nxdomain') return respond(query, RCODE_NXDOMAIN, [], [soa(zone)]);
  if (r.kind === 'a' && (q.type === 'A' || String(q.type) === 'ANY')) {
    return respond(query, RCODE_NOERROR, [{ type: 'A', name: q.name, ttl: DNS_TTL, class: 'IN', data: r.ip }]);
  }
  return respond(query, RCODE_NOERROR, [], [soa(zone)]);
}

/** The cluster zone's content, indexed for lookups. */
export class ClusterZone {
  readonly domain: string;
  #services = new Map<string, string>();
  #pods = new Set<string>();

  constructor(domain: string = LAB.clusterDomain) {
    this.domain = domain;
  }

  set(records: ClusterDnsRecords): void {
    const services = new Map<string, string>();
    for (const s of records.services) {
      if (s.clusterIP && s.clusterIP !== 'None') services.set(`${s.name}.${s.namespace}`.toLowerCase(), s.clusterIP);
    }
    const pods = new Set<string>();
    for (const p of records.pods) pods.add(`${p.ip.replaceAll('.', '-')}.${p.namespace}`.toLowerCase());
    this.#services = services;
    this.#pods = pods;
  }

  /** true when the name is inside the cluster domain (answered here, never forwarded) */
  owns(name: string): boolean {
    const n = normalize(name);
    return n === this.domain || n.endsWith(`.${this.domain}`);
  }

  lookup(name: string): Lookup {
    const n = normalize(name);
    const rel = n === this.domain ? '' : n.slice(0, -(this.domain.length + 1));
    const labels = rel === '' ? [] : rel.split('.');
    if (labels.length === 3 && labels[2] === 'svc') {
      const ip = this.#services.get(`${labels[0]}.${labels[1]}`);
      return ip ? { kind: 'a', ip } : { kind: 'nxdomain' };
    }
    if (labels.length === 3 && labels[2] === 'pod') {
      const dashed = labels[0]!;
      if (this.#pods.has(`${dashed}.${labels[1]}`)) return { kind: 'a', ip: dashed.replaceAll('-', '.') };
      return { kind: 'nxdomain' };
    }
    // the zone apex and the svc/pod branches exist (empty non-terminals): NODATA, not NXDOMAIN
    if (labels.length === 0 || (labels.length === 1 && (labels[0] === 'svc' || labels[0] === 'pod'))) return { kind: 'nodata' };
    return { kind: 'nxdomain' };
  }
}

/** The upstream's fixed zone: the lab's "internet". */
export const UPSTREAM_ZONE = 'example.test';
export const UPSTREAM_RECORDS: Readonly<Record<string, string>> = {
  'example.test': LAB.wwwIp,
  'www.example.test': LAB.wwwIp,
  'dns.example.test': LAB.upstreamDnsIp,
  'api.example.test': LAB.apiServerIp,
  'gateway.example.test': LAB.hostIp,
};

export function upstreamLookup(name: string): Lookup {
  const n = normalize(name);
  const ip = UPSTREAM_RECORDS[n];
  if (ip) return { kind: 'a', ip };
  return { kind: 'nxdomain' };
}

function opcode(p: dnsPacket.Packet): number {
  return ((p.flags ?? 0) >> 11) & 0xf;
}

function parse(msg: Buffer): dnsPacket.Packet | undefined {
  try {
    return dnsPacket.decode(msg);
  } catch {
    return undefined;
  }
}

/** A FORMERR reply for a message that does not decode (id copied when there is one). */
function formErr(msg: Buffer): Buffer | undefined {
  if (msg.length < 2) return undefined;
  return dnsPacket.encode({ id: msg.readUInt16BE(0), type: 'response', flags: RCODE_FORMERR, questions: [] });
}

export type DnsHandler = (msg: Buffer, transport: 'udp' | 'tcp') => Promise<Buffer | undefined>;

/** The upstream DNS: answers example.test, NXDOMAIN otherwise. */
export function upstreamHandler(): DnsHandler {
  return async (msg) => {
    const query = parse(msg);
    if (!query) return formErr(msg);
    if (query.type !== 'query' || opcode(query) !== 0) return respond(query, RCODE_NOTIMP, []);
    const q = query.questions?.[0];
    const zone = q && (normalize(q.name) === UPSTREAM_ZONE || normalize(q.name).endsWith(`.${UPSTREAM_ZONE}`)) ? UPSTREAM_ZONE : '';
    return answerFromZone(query, zone, upstreamLookup);
  };
}

/** The cluster DNS: answers the cluster zone, forwards everything else to `upstream`. */
export function clusterHandler(zone: ClusterZone, upstream: { host: string; port: number }): DnsHandler {
  return async (msg, transport) => {
    const query = parse(msg);
    if (!query) return formErr(msg);
    if (query.type !== 'query' || opcode(query) !== 0) return respond(query, RCODE_NOTIMP, []);
    const q = query.questions?.[0];
    if (!q) return respond(query, RCODE_FORMERR, []);
    if (zone.owns(q.name)) return answerFromZone(query, zone.domain, (n) => zone.lookup(n));
    try {
      return await forward(msg, upstream, transport);
    } catch {
      return respond(query, RCODE_SERVFAIL, []);
    }
  };
}

/** Send one query to a server and return its reply (UDP, or TCP when asked or when truncated). */
export async function forward(msg: Buffer, server: { host: string; port: number }, transport: 'udp' | 'tcp', timeoutMs = 2000): Promise<Buffer> {
  if (transport === 'udp') {
    const reply = await queryUdp(msg, server, timeoutMs);
    if (reply.length >= 4 && (reply.readUInt16BE(2) & 0x200) === 0) return reply;
  }
  return queryTcp(msg, server, timeoutMs);
}

export function queryUdp(msg: Buffer, server: { host: string; port: number }, timeoutMs = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    const id = msg.readUInt16BE(0);
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error(`DNS query to ${server.host}:${server.port} timed out`));
    }, timeoutMs);
    sock.on('error', (e) => {
      clearTimeout(timer);
      sock.close();
      reject(e);
    });
    sock.on('message', (reply) => {
      if (reply.length < 2 || reply.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      sock.close();
      resolve(reply);
    });
    sock.send(msg, server.port, server.host);
  });
}

export function queryTcp(msg: Buffer, server: { host: string; port: number }, timeoutMs = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, server.host);
    let buf = Buffer.alloc(0);
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`DNS query to ${server.host}:${server.port} timed out`)));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(msg.length);
      sock.write(Buffer.concat([len, msg]));
    });
    sock.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        sock.destroy();
      }
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error('DNS TCP connection closed before a reply')));
  });
}

export interface DnsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serve `handler` on host:port over UDP and TCP. port 0 picks one free for both. */
export async function startDnsServer(host: string, port: number, handler: DnsHandler): Promise<DnsServer> {
  const tcp = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        void handler(msg, 'tcp').then((reply) => {
          if (!reply || sock.destroyed) return;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(reply.length);
          sock.write(Buffer.concat([len, reply]));
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, host, () => resolve());
  });
  const address = tcp.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    void handler(msg, 'udp').then((reply) => {
      if (!reply) return;
      // RFC 1035 4.2.1: UDP replies are limited to 512 bytes unless EDNS says more; truncate with TC.
      if (reply.length > 512) {
        const q = parse(msg);
        if (q) {
          const flags = (reply.readUInt16BE(2) | 0x200) & 0x7fff;
          reply = dnsPacket.encode({ id: q.id ?? 0, type: 'response', flags, questions: q.questions ?? [] });
        }
      }
      udp.send(reply, rinfo.port, rinfo.address);
    });
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(actualPort, host, () => resolve());
  });
  return {
    port: actualPort,
    close: () =>
      new Promise<void>((resolve) => {
        udp.close(() => tcp.close(() => resolve()));
        for (const c of [tcp]) c.unref();
      }),
  };
}
