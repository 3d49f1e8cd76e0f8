/**
 * The `--via` flags beside the Kubernetes ones (`connect`, `forward`), and which transport they ask for.
 */
import { Option } from 'clipanion';
import { kubeTransport, viaTransport } from '../../connect/transports.js';
import { defaultKnownHosts, loadIdentity } from '../../ssh/via.js';
import { CIPHERS } from '../../ssh/tunnel.js';
import type { TransportBuilder } from '../../transport.js';
import { UsageError } from '../../errors.js';
import { ShadowCommand } from './shadow.js';
import { sshCipher, via } from './validators.js';

/**
 * What every command that needs a tunnel shares (`connect`, `forward`): the `--via` flags beside
 * the Kubernetes ones, checked, and how to build the transport they ask for. Subclasses declare
 * their own flags and call `transportBuilder()` before anything is made, so bad flags fail first.
 */
export abstract class TransportCommand extends ShadowCommand {
  via = Option.String('--via', { description: 'user@host[:port] of an SSH server to tunnel through instead of a Kubernetes cluster', validator: via });
  identity = Option.String('--identity,-i', { description: 'private key file for --via (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)' });
  knownHosts = Option.String('--knownHosts,--known-hosts', { description: 'known_hosts file that holds the --via server\'s host key (default ~/.ssh/known_hosts)' });
  sshCipher = Option.String('--sshCipher,--ssh-cipher', { description: `ssh cipher to prefer (default order: ${CIPHERS.join(', ')})`, validator: sshCipher });
  shareShadow = Option.Boolean('--shareShadow,--share-shadow', false, { description: 'share one shadow pod among this user\'s ktctl processes in the namespace' });

  /**
   * `-i` is ssh's (`--identity`), not KT Connect's (`--image`): given on the command line without
   * --via it is a KT Connect user's image, refused with what to use. (From the environment or the
   * config file it waits for a --via run.)
   */
  protected override checkFlags(): void {
    super.checkFlags();
    if (this.via === undefined && this.identity !== undefined && this.typed('--identity')) {
      throw new UsageError('-i is --identity in ktctl, as in ssh: the private key for --via; for the shadow image (KT Connect\'s -i) use --image');
    }
  }

  /**
   * How to build the transport the flags ask for (the --via key is read here, before anything is
   * made). `mode` and `proxy` go into the local state record (`ktctl status`); `dnsServer` is the
   * --via server's resolver.
   */
  protected transportBuilder(run: { mode: string; proxy?: string; dnsServer?: string; podRoutes?: boolean; cleanAtStart?: boolean }): TransportBuilder {
    const ciphers = this.sshCipher;
    if (this.via === undefined) {
      const options = this.kubeTransportOptions({ mode: run.mode, proxy: run.proxy, shareShadow: this.shareShadow, ciphers, podRoutes: run.podRoutes, cleanAtStart: run.cleanAtStart });
      return (ctx) => kubeTransport(options, ctx);
    }
    const target = this.via;
    const identity = loadIdentity(this.identity);
    const knownHostsFile = this.knownHosts ?? defaultKnownHosts();
    return (ctx) => viaTransport({ target, identity, knownHostsFile, dnsServer: run.dnsServer, ciphers, resume: this.resumeLimits() }, ctx);
  }
}
