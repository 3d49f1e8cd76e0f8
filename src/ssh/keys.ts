import ssh2 from 'ssh2';

export interface KeyPair {
  /** OpenSSH private key text */
  private: string;
  /** authorized_keys line */
  public: string;
}

/** Length of an ssh-ed25519 public key blob: string "ssh-ed25519" (4 + 11) and the 32-byte key (4 + 32). */
const ED25519_BLOB_LENGTH = 51;

/**
 * A fresh ed25519 key pair in OpenSSH format. ssh2 1.17's `generateKeyPairSync` drops leading zero
 * bytes of the public key (measured here: 14 keys in 3000), and then refuses its own private key as
 * "Malformed OpenSSH private key"; such a pair is simply made again.
 */
export function generateEd25519(comment?: string): KeyPair {
  for (let attempt = 0; attempt < 32; attempt++) {
    const k = ssh2.utils.generateKeyPairSync('ed25519', comment === undefined ? undefined : { comment });
    const priv = ssh2.utils.parseKey(k.private);
    const pub = ssh2.utils.parseKey(k.public);
    if (priv instanceof Error || pub instanceof Error) continue;
    if (pub.getPublicSSH().length !== ED25519_BLOB_LENGTH) continue;
    return { private: k.private, public: k.public };
  }
  throw new Error('ssh2 produced no usable ed25519 key in 32 attempts');
}
