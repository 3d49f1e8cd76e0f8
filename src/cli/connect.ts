import { Command, Option } from 'clipanion';
import { connectSocks } from '../connect/socks.js';
import { checkDnsFlags } from '../connect/tun/dns-plan.js';
import { connectTun } from '../connect/tun/session.js';
import { DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT } from '../proxy/index.js';
import { checkTunAccess } from '../tun/access.js';
import { TransportCommand } from './common/transport.js';
import { UsageError } from '../errors.js';
import { cidrList, connectMode, dnsMode, domainList, parseClusterDomain, port, tunName, wholeSeconds } from './common/validators.js';
import { useProfile } from '../kube/permissions.js';

export class ConnectCommand extends TransportCommand {
  static override paths = [['connect']];

  static override usage = Command.Usage({
    category: 'Reach the cluster',
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
      ['TUN mode through a bastion, with its ranges and resolver', 'sudo $0 connect --via root@bastion --includeIps 10.20.0.0/16 --dnsServer 10.20.0.2 --clusterDomain corp.internal'],
    ],
  });

  mode = Option.String('--mode,-m', 'tun', { description: 'tun (default: every program, needs root; KT Connect\'s tun2socks and sshuttle mean it too) or socks (a local SOCKS5/HTTP proxy, no root)', validator: connectMode });
  proxyAddr = Option.String('--proxyAddr,--proxy-addr', DEFAULT_PROXY_HOST, { description: 'address the proxy listens on (socks mode)' });
  proxyPort = Option.String('--proxyPort,--proxy-port', String(DEFAULT_PROXY_PORT), { description: 'port the proxy listens on (socks mode)', validator: port('--proxyPort') });
  dnsServer = Option.String('--dnsServer,--dns-server', { description: 'a DNS server on the far side (IP) for servers without ktctl\'s DNS subsystem' });

  // The --via and Kubernetes flags come from TransportCommand.

  // TUN mode (src/connect/tun/).
  tunName = Option.String('--tunName,--tun-name', { description: 'TUN device name (default kt0, or the next free ktN)', validator: tunName });
  includeIps = Option.String('--includeIps,--include-ips', { description: 'extra CIDRs to route through the tunnel (comma separated)', validator: cidrList('--includeIps') });
  excludeIps = Option.String('--excludeIps,--exclude-ips', { description: 'CIDRs never to route through the tunnel (comma separated)', validator: cidrList('--excludeIps') });
  dnsMode = Option.String('--dnsMode,--dns-mode', 'localDNS', { description: 'localDNS (default), hosts, hosts:NS1,NS2 (only those namespaces\' services) or podDNS', validator: dnsMode });
  dnsCacheTtl = Option.String('--dnsCacheTtl,--dns-cache-ttl', '60', { description: 'seconds to cache cluster DNS answers at most', validator: wholeSeconds('--dnsCacheTtl') });
  includeDomains = Option.String('--includeDomains,--include-domains', { description: 'DNS suffixes (comma separated) whose names are asked of the cluster too (localDNS)', validator: domainList });
  disablePodIp = Option.Boolean('--disablePodIp,--disable-pod-ip', false, { description: 'route only the services\' addresses, not the pods\'' });
  skipCleanup = Option.Boolean('--skipCleanup,--skip-cleanup', false, { description: 'leave the objects of crashed ktctl runs in the namespace at the start (ktctl clean removes them)' });

  // KT Connect's connect flags ktctl has no counterpart for: refused in one sentence each (README "Coming from KT Connect").
  disableTunDevice = Option.Boolean('--disableTunDevice,--disable-tun-device', false, { hidden: true });
  disableTunRoute = Option.Boolean('--disableTunRoute,--disable-tun-route', false, { hidden: true });
  dnsPort = Option.String('--dnsPort,--dns-port', { hidden: true });
  ingressIp = Option.String('--ingressIp,--ingress-ip', { hidden: true });

  /** KT Connect's flags that ktctl refuses, with what to use instead. */
  protected override checkFlags(): void {
    super.checkFlags();
    if (this.disableTunDevice) throw new UsageError('--disableTunDevice is KT Connect\'s socks proxy without a TUN device: that is --mode socks in ktctl');
    if (this.disableTunRoute) throw new UsageError('--disableTunRoute (a TUN device with no routes) has no counterpart in ktctl: route only what you need with --excludeIps/--includeIps, or use --mode socks');
    if (this.dnsPort !== undefined) throw new UsageError('--dnsPort is KT Connect\'s local DNS port on macOS; ktctl\'s resolver answers on its own link address (port 53) and takes no port');
    // TUN mode's KT forms that need another flag
    const dns = this.dnsMode;
    if (this.mode === 'tun' && this.includeDomains !== undefined && dns.mode !== 'localDNS') {
      throw new UsageError(`--includeDomains picks the names localDNS asks of the cluster; with --dnsMode ${dns.mode} ${dns.mode === 'podDNS' ? 'every name goes to the cluster\'s DNS already' : 'there is no resolver (only /etc/hosts)'}`);
    }
    if (this.mode === 'tun' && this.disablePodIp && this.via !== undefined) throw new UsageError('--disablePodIp leaves out the cluster\'s pod ranges; with --via there is no cluster, and the routes are only those of --includeIps');
    if (this.ingressIp !== undefined) throw new UsageError('--ingressIp (every ingress host name resolves to one IP) has no counterpart in ktctl: add the names to /etc/hosts, or reach the ingress controller\'s service by its cluster name');
  }

  async run(): Promise<number> {
    const dns = this.dnsMode;
    useProfile({ command: 'connect', flags: { mode: this.mode, dnsMode: dns.mode, shareShadow: this.shareShadow } }, (l) => this.debugLog(l));
    const io = this.io();
    if (this.mode === 'socks') {
      // TUN mode's flags mean nothing here (as --dnsMode did before): said, not refused, so a config file's defaults for TUN mode do not break socks mode
      if (this.includeDomains !== undefined) this.log('--includeDomains is for TUN mode: in socks mode every name is resolved in the cluster already');
      if (this.disablePodIp) this.log('--disablePodIp is for TUN mode: socks mode has no routes');
      const buildTransport = this.transportBuilder({ mode: this.mode, proxy: `${this.proxyAddr}:${this.proxyPort}`, dnsServer: this.dnsServer, cleanAtStart: !this.skipCleanup });
      return connectSocks({ ...io, host: this.proxyAddr, port: this.proxyPort, buildTransport, via: this.via !== undefined });
    }
    const via = this.via !== undefined;
    checkDnsFlags({ dnsMode: dns.mode, via });
    const flags = {
      tunName: this.tunName, include: this.includeIps ?? [], exclude: this.excludeIps ?? [], dnsMode: dns.mode,
      dnsCacheTtl: this.dnsCacheTtl, clusterDomain: parseClusterDomain(this.clusterDomain), dnsServer: this.dnsServer, via,
      ...(dns.hostsNamespaces !== undefined ? { hostsNamespaces: dns.hostsNamespaces } : {}),
      ...(this.includeDomains !== undefined ? { includeDomains: this.includeDomains } : {}),
    };
    const buildTransport = this.transportBuilder({ mode: this.mode, dnsServer: this.dnsServer, podRoutes: !this.disablePodIp, cleanAtStart: !this.skipCleanup });
    checkTunAccess();
    return connectTun({ ...io, flags, buildTransport, debugEnabled: this.debug });
  }
}
