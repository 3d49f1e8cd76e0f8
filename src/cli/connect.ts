import { Command, Option } from 'clipanion';
import { UsageError } from '../errors.js';
import { DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT } from '../proxy/index.js';
import { CIPHERS } from '../ssh/tunnel.js';
import { KtctlCommand } from './base.js';
import { runSocksVia } from './connect-socks.js';
import { defaultKnownHosts, loadIdentity, parsePort, parseVia } from './via.js';
import type { CipherAlgorithm } from 'ssh2';

export class ConnectCommand extends KtctlCommand {
  static override paths = [['connect']];

  static override usage = Command.Usage({
    description: 'join this machine to the network behind an ssh server (or a cluster\'s shadow pod)',
    details: `
      With \`--mode socks\` ktctl serves one local port that speaks SOCKS5 and HTTP proxying; every stream
      is carried over one ssh connection and opened on the far side, and host names are resolved there
      (socks5h). It needs no root. It prints an \`export ALL_PROXY=...\` line to paste into a shell.

      \`--via user@host[:port]\` uses any SSH server that allows TCP forwarding (an OpenSSH bastion, or
      ktctl's shadow). Its host key must be in \`--knownHosts\` (default ~/.ssh/known_hosts): ktctl never
      trusts an unknown key, it prints the key's SHA256 fingerprint instead.

      The TUN mode (the default, \`--mode tun\`) and connecting through a Kubernetes cluster are not
      available in this version: use \`--mode socks --via\`.
    `,
    examples: [
      ['Proxy through an OpenSSH bastion', '$0 connect --mode socks --via alice@bastion.example.test'],
      ['Pick the key, the known_hosts file and the proxy port', '$0 connect --mode socks --via root@198.18.255.9:2222 --identity ./id_ed25519 --knownHosts ./known_hosts --proxyPort 1080'],
    ],
  });

  mode = Option.String('--mode,-m', 'tun', { description: 'tun (default: every program, needs root) or socks (a local SOCKS5/HTTP proxy, no root)' });
  via = Option.String('--via', { description: 'user@host[:port] of an SSH server to tunnel through' });
  identity = Option.String('--identity,-i', { description: 'private key file (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)' });
  knownHosts = Option.String('--knownHosts,--known-hosts', { description: 'known_hosts file that holds the server\'s host key (default ~/.ssh/known_hosts)' });
  proxyAddr = Option.String('--proxyAddr,--proxy-addr', DEFAULT_PROXY_HOST, { description: 'address the proxy listens on (socks mode)' });
  proxyPort = Option.String('--proxyPort,--proxy-port', String(DEFAULT_PROXY_PORT), { description: 'port the proxy listens on (socks mode)' });
  dnsServer = Option.String('--dnsServer,--dns-server', { description: 'a DNS server on the far side (IP) for servers without ktctl\'s DNS subsystem' });
  sshCipher = Option.String('--sshCipher,--ssh-cipher', { description: `ssh cipher to prefer (default order: ${CIPHERS.join(', ')})` });

  async run(): Promise<number> {
    if (this.mode !== 'socks' && this.mode !== 'tun') throw new UsageError(`--mode must be tun or socks (got "${this.mode}")`);
    if (this.mode === 'tun') {
      throw new UsageError('--mode tun is not available in this version of ktctl; use --mode socks (a local SOCKS5/HTTP proxy, no root needed)');
    }
    if (this.via === undefined) {
      throw new UsageError('connecting through a Kubernetes cluster is not available in this version of ktctl; give an SSH server with --via user@host[:port]');
    }
    const target = parseVia(this.via);
    const proxyPort = parsePort(this.proxyPort, '--proxyPort');
    let ciphers: CipherAlgorithm[] | undefined;
    if (this.sshCipher !== undefined) {
      if (!CIPHERS.includes(this.sshCipher as CipherAlgorithm)) throw new UsageError(`--sshCipher must be one of ${CIPHERS.join(', ')} (got "${this.sshCipher}")`);
      ciphers = [this.sshCipher as CipherAlgorithm, ...CIPHERS.filter((c) => c !== this.sshCipher)];
    }
    const identity = loadIdentity(this.identity);
    return runSocksVia({
      target,
      identity,
      knownHostsFile: this.knownHosts ?? defaultKnownHosts(),
      proxyHost: this.proxyAddr,
      proxyPort,
      dnsServer: this.dnsServer,
      ciphers,
      stdout: this.context.stdout,
      log: (line) => this.log(line),
      debug: (line) => this.debugLog(line),
    });
  }
}
