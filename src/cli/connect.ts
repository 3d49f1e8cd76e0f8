import { Command, Option } from 'clipanion';
import type { CipherAlgorithm } from 'ssh2';
import { UsageError } from '../errors.js';
import { DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT } from '../proxy/index.js';
import { CIPHERS } from '../ssh/tunnel.js';
import { KtctlCommand } from './base.js';
import type { Transport, TransportContext } from './connect-transport.js';
import { listenSocks } from './frontend-socks.js';
import { checkTunAccess, connectTun, parseTunFlags } from './frontend-tun.js';
import { Undo, untilSignal } from './lifecycle.js';
import { viaTransport } from './transport-via.js';
import type { KubeTransportOptions } from './transport-kube.js';
import { DEFAULT_SHADOW_IMAGE, parseKeyValues } from '../kube/names.js';
import { defaultKnownHosts, loadIdentity, parsePort, parseVia } from './via.js';

export class ConnectCommand extends KtctlCommand {
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
  via = Option.String('--via', { description: 'user@host[:port] of an SSH server to tunnel through instead of a Kubernetes cluster' });
  identity = Option.String('--identity,-i', { description: 'private key file for --via (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)' });
  knownHosts = Option.String('--knownHosts,--known-hosts', { description: 'known_hosts file that holds the --via server\'s host key (default ~/.ssh/known_hosts)' });
  proxyAddr = Option.String('--proxyAddr,--proxy-addr', DEFAULT_PROXY_HOST, { description: 'address the proxy listens on (socks mode)' });
  proxyPort = Option.String('--proxyPort,--proxy-port', String(DEFAULT_PROXY_PORT), { description: 'port the proxy listens on (socks mode)' });
  dnsServer = Option.String('--dnsServer,--dns-server', { description: 'a DNS server on the far side (IP) for servers without ktctl\'s DNS subsystem' });
  sshCipher = Option.String('--sshCipher,--ssh-cipher', { description: `ssh cipher to prefer (default order: ${CIPHERS.join(', ')})` });

  // Kubernetes (KT Connect's global flags; kebab-case accepted).
  kubeconfig = Option.String('--kubeconfig,-c', { description: 'kubeconfig file(s) (default $KUBECONFIG, then ~/.kube/config)' });
  kubeContext = Option.String('--context', { description: 'kubeconfig context (default: the current one)' });
  namespace = Option.String('--namespace,-n', { description: 'namespace for the shadow and for short DNS names (default: the context\'s, else default)' });
  image = Option.String('--image', { description: 'shadow image' });
  imagePullSecret = Option.String('--imagePullSecret,--image-pull-secret', { description: 'image pull secret for the shadow pod' });
  nodeSelector = Option.String('--nodeSelector,--node-selector', { description: 'node selector for the shadow pod (key=value,...)' });
  withLabel = Option.String('--withLabel,--with-label', { description: 'extra labels on every object ktctl makes (key=value,...)' });
  withAnnotation = Option.String('--withAnnotation,--with-annotation', { description: 'extra annotations on every object ktctl makes (key=value,...)' });
  podCreationTimeout = Option.String('--podCreationTimeout,--pod-creation-timeout', '60', { description: 'seconds to wait for the shadow pod to be ready' });
  portForwardTimeout = Option.String('--portForwardTimeout,--port-forward-timeout', '10', { description: 'seconds to wait for the port-forward to the shadow' });
  shareShadow = Option.Boolean('--shareShadow,--share-shadow', false, { description: 'share one shadow pod among this user\'s connect processes in the namespace' });

  // TUN mode.
  tunName = Option.String('--tunName,--tun-name', { description: 'TUN device name (default kt0, or the next free ktN)' });
  includeIps = Option.String('--includeIps,--include-ips', { description: 'extra CIDRs to route through the tunnel (comma separated)' });
  excludeIps = Option.String('--excludeIps,--exclude-ips', { description: 'CIDRs never to route through the tunnel (comma separated)' });
  dnsMode = Option.String('--dnsMode,--dns-mode', 'localDNS', { description: 'localDNS (default), hosts or podDNS' });
  dnsCacheTtl = Option.String('--dnsCacheTtl,--dns-cache-ttl', '60', { description: 'seconds to cache cluster DNS answers at most' });
  clusterDomain = Option.String('--clusterDomain,--cluster-domain', 'cluster.local', { description: 'the cluster\'s DNS domain' });

  async run(): Promise<number> {
    if (this.mode !== 'socks' && this.mode !== 'tun') throw new UsageError(`--mode must be tun or socks (got "${this.mode}")`);
    if (this.mode === 'tun') {
      const flags = parseTunFlags({
        tunName: this.tunName, includeIps: this.includeIps, excludeIps: this.excludeIps, dnsMode: this.dnsMode,
        dnsCacheTtl: this.dnsCacheTtl, clusterDomain: this.clusterDomain, dnsServer: this.dnsServer, via: this.via !== undefined,
      });
      const buildTransport = this.#transportBuilder();
      checkTunAccess();
      return connectTun({ flags, buildTransport, stdout: this.context.stdout, log: (l) => this.log(l), debug: (l) => this.debugLog(l), debugEnabled: this.debug });
    }
    const proxyPort = parsePort(this.proxyPort, '--proxyPort');
    const buildTransport = this.#transportBuilder();

    const undo = new Undo();
    const stop = untilSignal((l) => this.log(l));
    const aborted = new AbortController();
    void stop.signal.then(() => aborted.abort());
    const ctx: TransportContext = { undo, log: (l) => this.log(l), debug: (l) => this.debugLog(l), signal: aborted.signal };
    try {
      let transport: Transport | undefined;
      const socks = await listenSocks({ host: this.proxyAddr, port: proxyPort, stdout: this.context.stdout, log: ctx.log, debug: ctx.debug, undo }, () => transport);
      transport = await buildTransport(ctx);
      if (!aborted.signal.aborted) socks.announce();
      const outcome = await Promise.race([stop.signal.then((signal) => ({ signal })), transport.fatal.then((error) => ({ error }))]);
      if ('signal' in outcome) this.log(`got ${outcome.signal}; stopping`);
      await undo.run(ctx.log);
      if ('error' in outcome) throw outcome.error;
      return 0;
    } catch (error) {
      await undo.run(ctx.log);
      throw error;
    } finally {
      stop.release();
    }
  }

  /** Checks the flags of the transport asked for and returns how to build it. */
  #transportBuilder(): (ctx: TransportContext) => Promise<Transport> {
    let ciphers: CipherAlgorithm[] | undefined;
    if (this.sshCipher !== undefined) {
      if (!CIPHERS.includes(this.sshCipher as CipherAlgorithm)) throw new UsageError(`--sshCipher must be one of ${CIPHERS.join(', ')} (got "${this.sshCipher}")`);
      ciphers = [this.sshCipher as CipherAlgorithm, ...CIPHERS.filter((c) => c !== this.sshCipher)];
    }
    if (this.via === undefined) {
      const seconds = (text: string, flag: string): number => {
        const n = Number(text);
        if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} takes a number of seconds greater than 0 (got "${text}")`);
        return n * 1000;
      };
      const keyValues = (text: string | undefined, flag: string): Record<string, string> => {
        try {
          return parseKeyValues(text, flag);
        } catch (error) {
          throw new UsageError(error instanceof Error ? error.message : String(error));
        }
      };
      const options: KubeTransportOptions = {
        kubeconfig: this.kubeconfig,
        context: this.kubeContext,
        namespace: this.namespace,
        image: this.image ?? DEFAULT_SHADOW_IMAGE,
        imagePullSecret: this.imagePullSecret,
        nodeSelector: keyValues(this.nodeSelector, '--nodeSelector'),
        labels: keyValues(this.withLabel, '--withLabel'),
        annotations: keyValues(this.withAnnotation, '--withAnnotation'),
        podCreationTimeoutMs: seconds(this.podCreationTimeout, '--podCreationTimeout'),
        portForwardTimeoutMs: seconds(this.portForwardTimeout, '--portForwardTimeout'),
        shareShadow: this.shareShadow,
        clusterDomain: this.clusterDomain,
        ciphers,
        mode: this.mode,
        proxy: this.mode === 'socks' ? `${this.proxyAddr}:${this.proxyPort}` : undefined,
        stderr: this.context.stderr,
      };
      // Loaded only when needed: @kubernetes/client-node alone is ~90 MiB of RSS, which a --via run
      // (and the TUN engine's memory budget) should not carry.
      return async (ctx) => (await import('./transport-kube.js')).kubeTransport(options, ctx);
    }
    const target = parseVia(this.via);
    const identity = loadIdentity(this.identity);
    const knownHostsFile = this.knownHosts ?? defaultKnownHosts();
    return (ctx) => viaTransport({ target, identity, knownHostsFile, dnsServer: this.dnsServer, ciphers }, ctx);
  }
}
