/**
 * `planDns` and friends (src/connect/tun/dns-plan.ts): every DNS decision of `connect --mode tun`,
 * tested without root, a device or a cluster.
 */
import test from 'ava';
import { checkDnsFlags, dnsAddress, planDns, type DnsFlags } from '../src/connect/tun/dns-plan.js';
import { UsageError } from '../src/errors.js';
import { formatCidr, parseCidr } from '../src/tun/cidr.js';

const flags = (over: Partial<DnsFlags> = {}): DnsFlags => ({ dnsMode: 'localDNS', clusterDomain: 'cluster.local', dnsServer: undefined, via: false, ...over });
const cluster = { cluster: { domain: 'cluster.local', namespace: 'dev', dnsServiceIp: '198.19.0.10' } };
const kube = { label: 'shadow pod dev/ktctl-ab12', services: async () => ({ scope: 'cluster' as const, stop: async () => undefined }) };
const via = { label: 'root@198.18.0.9:22' };
const link = { local: '169.254.77.1', dns: '169.254.77.2' };

test('localDNS through a cluster: cluster names and the short forms of the connected namespace', (t) => {
  const plan = planDns(flags(), cluster, kube);
  t.like(plan, { mode: 'localDNS', namespace: 'dev', clusterDomain: 'cluster.local', names: '*.cluster.local, svc and svc.dev' });
});

test('the cluster\'s domain wins over --clusterDomain; without a cluster the flag\'s is used and the namespace is default', (t) => {
  t.is(planDns(flags({ clusterDomain: 'other.local' }), { cluster: { ...cluster.cluster, domain: 'k8s.internal' } }, kube).clusterDomain, 'k8s.internal');
  t.like(planDns(flags({ via: true, dnsServer: '10.20.0.2', clusterDomain: 'corp.internal' }), {}, via), { mode: 'localDNS', namespace: 'default', names: '*.corp.internal' });
});

test('--via without --dnsServer leaves DNS alone, whatever the mode', (t) => {
  for (const dnsMode of ['localDNS', 'podDNS', 'hosts'] as const) {
    t.like(planDns(flags({ via: true, dnsMode }), {}, via), {
      mode: 'off',
      reason: 'untouched (with --via ktctl handles DNS only when --dnsServer IP names a resolver on the far side)',
    });
  }
});

test('hosts needs a transport that lists services', (t) => {
  t.like(planDns(flags({ dnsMode: 'hosts' }), cluster, kube), { mode: 'hosts' });
  t.like(planDns(flags({ dnsMode: 'hosts' }), cluster, { label: 'x' }), { mode: 'off', reason: 'untouched (hosts: x cannot list services)' });
});

test('podDNS asks the cluster DNS service, else --dnsServer, else leaves DNS alone', (t) => {
  t.like(planDns(flags({ dnsMode: 'podDNS' }), cluster, kube), { mode: 'podDNS', server: '198.19.0.10' });
  t.like(planDns(flags({ dnsMode: 'podDNS', via: true, dnsServer: '10.20.0.2' }), {}, via), { mode: 'podDNS', server: '10.20.0.2' });
  t.like(planDns(flags({ dnsMode: 'podDNS' }), { cluster: { domain: 'cluster.local', namespace: 'dev' } }, kube), {
    mode: 'off',
    reason: 'untouched (podDNS: the cluster\'s DNS service IP is unknown)',
  });
});

test('checkDnsFlags refuses hosts with --via before anything is made, in one sentence', (t) => {
  const error = t.throws(() => checkDnsFlags({ dnsMode: 'hosts', via: true }), { instanceOf: UsageError });
  t.is(error?.message, '--dnsMode hosts lists the cluster\'s services and needs a cluster; with --via use --dnsMode localDNS (default) and --dnsServer IP');
  t.notThrows(() => checkDnsFlags({ dnsMode: 'hosts', via: false }));
  t.notThrows(() => checkDnsFlags({ dnsMode: 'podDNS', via: true }));
});

test('dnsAddress: localDNS answers on the link\'s DNS address, routed as a /32', (t) => {
  const at = dnsAddress(planDns(flags(), cluster, kube), link, []);
  t.is(at?.address, '169.254.77.2');
  t.is(at?.route && formatCidr(at.route), '169.254.77.2/32');
});

test('dnsAddress: podDNS gets a host route only when no planned route covers it', (t) => {
  const plan = planDns(flags({ dnsMode: 'podDNS' }), cluster, kube);
  t.is(formatCidr(dnsAddress(plan, link, [parseCidr('198.18.0.0/17')])!.route!), '198.19.0.10/32');
  const covered = dnsAddress(plan, link, [parseCidr('198.19.0.0/16')]);
  t.is(covered?.address, '198.19.0.10');
  t.is(covered?.route, undefined);
});

test('dnsAddress: hosts and off have none', (t) => {
  t.is(dnsAddress(planDns(flags({ dnsMode: 'hosts' }), cluster, kube), link, []), undefined);
  t.is(dnsAddress(planDns(flags({ via: true }), {}, via), link, []), undefined);
});
