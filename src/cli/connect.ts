import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT } from '../proxy/index.js';
import { serveTransport } from '../connect/serve.js';
import { TransportCommand } from './common/transport.js';
import { listenSocks } from '../connect/socks.js';
import { parseTunFlags } from '../connect/tun/flags.js';
import { connectTun } from '../connect/tun/session.js';
import { checkTunAccess } from '../tun/access.js';
import { parsePort } from './common/validators.js';

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

  mode = Option.String('--mode,-m', 'tun', { description: 'tun (default: every program, needs root) or socks (a local SOCKS5/HTTP proxy, no root)' });
  proxyAddr = Option.String('--proxyAddr,--proxy-addr', DEFAULT_PROXY_HOST, { description: 'address the proxy listens on (socks mode)' });
  proxyPort = Option.String('--proxyPort,--proxy-port', String(DEFAULT_PROXY_PORT), { description: 'port the proxy listens on (socks mode)' });
  dnsServer = Option.String('--dnsServer,--dns-server', { description: 'a DNS server on the far side (IP) for servers without ktctl\'s DNS subsystem' });

  // The --via and Kubernetes flags come from TransportCommand.

  // TUN mode.
  tunName = Option.String('--tunName,--tun-name', { description: 'TUN device name (default kt0, or the next free ktN)' });
  includeIps = Option.String('--includeIps,--include-ips', { description: 'extra CIDRs to route through the tunnel (comma separated)' });
  excludeIps = Option.String('--excludeIps,--exclude-ips', { description: 'CIDRs never to route through the tunnel (comma separated)' });
  dnsMode = Option.String('--dnsMode,--dns-mode', 'localDNS', { description: 'localDNS (default), hosts or podDNS' });
  dnsCacheTtl = Option.String('--dnsCacheTtl,--dns-cache-ttl', '60', { description: 'seconds to cache cluster DNS answers at most' });

  async run(): Promise<number> {
    if (this.mode !== 'socks' && this.mode !== 'tun') throw new UsageError(`--mode must be tun or socks (got "${this.mode}")`);
    if (this.mode === 'tun') {
      const flags = parseTunFlags({
        tunName: this.tunName, includeIps: this.includeIps, excludeIps: this.excludeIps, dnsMode: this.dnsMode,
        dnsCacheTtl: this.dnsCacheTtl, clusterDomain: this.clusterDomain, dnsServer: this.dnsServer, via: this.via !== undefined,
      });
      const buildTransport = this.transportBuilder({ mode: this.mode, dnsServer: this.dnsServer });
      checkTunAccess();
      return connectTun({ flags, buildTransport, stop: this.stop, stdout: this.context.stdout, log: (l) => this.log(l), debug: (l) => this.debugLog(l), debugEnabled: this.debug });
    }
    const proxyPort = parsePort(this.proxyPort, '--proxyPort');
    const buildTransport = this.transportBuilder({ mode: this.mode, proxy: `${this.proxyAddr}:${this.proxyPort}`, dnsServer: this.dnsServer });
    let socks: { announce(): void } | undefined;
    return serveTransport({
      buildTransport,
      stop: this.stop,
      log: (l) => this.log(l),
      debug: (l) => this.debugLog(l),
      // The proxy listens before the transport exists: a taken port fails before any network traffic,
      // and what it accepts meanwhile waits for the tunnel.
      prepare: async (ctx, dialer) => {
        socks = await listenSocks({ host: this.proxyAddr, port: proxyPort, stdout: this.context.stdout, log: ctx.log, debug: ctx.debug, undo: ctx.undo }, dialer);
      },
      start: async () => {
        socks?.announce();
      },
    });
  }
}
