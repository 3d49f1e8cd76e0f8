import { Command, Option } from 'clipanion';
import { connectSocks } from '../connect/socks.js';
import { checkDnsFlags } from '../connect/tun/dns-plan.js';
import { connectTun } from '../connect/tun/session.js';
import { DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT } from '../proxy/index.js';
import { checkTunAccess } from '../tun/access.js';
import { TransportCommand } from './common/transport.js';
import { cidrList, dnsMode, oneOf, parseClusterDomain, port, tunName, wholeSeconds } from './common/validators.js';
import { useProfile } from '../kube/permissions.js';

export class ConnectCommand extends TransportCommand {
  static override paths = [['connect']];

  static override usage = Command.Usage({
    description: 'join this machine to a cluster\'s network (or to the network behind an ssh server)',
    details: `
      Without \`--via\`, ktctl creates a shadow pod (and a Secret with its keys) in the namespace of your
      kubeconfig and reaches it through the API server's port-forward; see \`ktctl check\` for what it needs.
      With \`--via user@host[:port]\` any SSH server that allows TCP forwarding serves instead (an OpenSSH
      bastion); its host key must be in \`--knownHosts\` (default ~/.ssh/known_hosts): ktctl never trusts an
      unknown key, it prints the key's SHA256 fingerprint instead.

      The default \`--mode tun\` (needs root) gives every program on this machine the cluster's pod and
      service addresses and DNS names, through a TUN device and ktctl's own TCP engine. \`--mode socks\`
      (no root) serves one local port that speaks SOCKS5 and HTTP proxying, with names resolved in the
      cluster (socks5h), and prints an \`export ALL_PROXY=...\` line to paste into a shell.

      ktctl runs until SIGINT/SIGTERM, then removes everything it made and exits 0.
    `,
    examples: [
      ['Every program reaches the cluster (root)', 'sudo -E $0 connect -n dev'],
      ['A SOCKS5/HTTP proxy into the cluster, no root', '$0 connect --mode socks'],
      ['Proxy through an OpenSSH bastion', '$0 connect --mode socks --via alice@bastion.example.test'],
      ['TUN mode through a bastion, with its ranges and resolver', 'sudo $0 connect --via root@bastion --includeIps 10.20.0.0/16 --dnsServer 10.20.0.2 --clusterDomain corp.internal'],
    ],
  });

  mode = Option.String('--mode,-m', 'tun', { description: 'tun (default: every program, needs root) or socks (a local SOCKS5/HTTP proxy, no root)', validator: oneOf('--mode', ['tun', 'socks']) });
  proxyAddr = Option.String('--proxyAddr,--proxy-addr', DEFAULT_PROXY_HOST, { description: 'address the proxy listens on (socks mode)' });
  proxyPort = Option.String('--proxyPort,--proxy-port', String(DEFAULT_PROXY_PORT), { description: 'port the proxy listens on (socks mode)', validator: port('--proxyPort') });
  dnsServer = Option.String('--dnsServer,--dns-server', { description: 'a DNS server on the far side (IP) for servers without ktctl\'s DNS subsystem' });

  // The --via and Kubernetes flags come from TransportCommand.

  // TUN mode (src/connect/tun/).
  tunName = Option.String('--tunName,--tun-name', { description: 'TUN device name (default kt0, or the next free ktN)', validator: tunName });
  includeIps = Option.String('--includeIps,--include-ips', { description: 'extra CIDRs to route through the tunnel (comma separated)', validator: cidrList('--includeIps') });
  excludeIps = Option.String('--excludeIps,--exclude-ips', { description: 'CIDRs never to route through the tunnel (comma separated)', validator: cidrList('--excludeIps') });
  dnsMode = Option.String('--dnsMode,--dns-mode', 'localDNS', { description: 'localDNS (default), hosts or podDNS', validator: dnsMode });
  dnsCacheTtl = Option.String('--dnsCacheTtl,--dns-cache-ttl', '60', { description: 'seconds to cache cluster DNS answers at most', validator: wholeSeconds('--dnsCacheTtl') });

  async run(): Promise<number> {
    useProfile({ command: 'connect', flags: { mode: this.mode, dnsMode: this.dnsMode, shareShadow: this.shareShadow } }, (l) => this.debugLog(l));
    const io = this.io();
    if (this.mode === 'socks') {
      const buildTransport = this.transportBuilder({ mode: this.mode, proxy: `${this.proxyAddr}:${this.proxyPort}`, dnsServer: this.dnsServer });
      return connectSocks({ ...io, host: this.proxyAddr, port: this.proxyPort, buildTransport, via: this.via !== undefined });
    }
    const via = this.via !== undefined;
    checkDnsFlags({ dnsMode: this.dnsMode, via });
    const flags = {
      tunName: this.tunName, include: this.includeIps ?? [], exclude: this.excludeIps ?? [], dnsMode: this.dnsMode,
      dnsCacheTtl: this.dnsCacheTtl, clusterDomain: parseClusterDomain(this.clusterDomain), dnsServer: this.dnsServer, via,
    };
    const buildTransport = this.transportBuilder({ mode: this.mode, dnsServer: this.dnsServer });
    checkTunAccess();
    return connectTun({ ...io, flags, buildTransport, debugEnabled: this.debug });
  }
}
