/**
 * The TUN device as a link: its name, its addresses, its MTU.
 *
 * Addresses: the device gets `169.254.77.(4k+1)/32` and ktctl's DNS answers on `169.254.77.(4k+2)`
 * (routed into the device as a /32), for the first k in 0..63 whose /30 no existing route or
 * address touches. 169.254.0.0/16 is link-local (RFC 3927): never routed beyond a link, so a /32
 * from it cannot shadow anything the machine reaches, and a more specific /32 wins over a
 * 169.254.0.0/16 route a cloud image may have.
 */
import { TunError, UsageError } from '../../errors.js';
import { defaultStateDir, recordOwnerAlive } from '../../state-records.js';
import { formatCidr, makeCidr, overlaps, tryParseCidr } from '../../tun/cidr.js';
import { linkInfo, type RouteEntry } from '../../tun/ip.js';
import { listRecords } from '../../tun/device-record.js';

/**
 * The TUN device's MTU. With TSO offloads both directions move 64 KiB super-segments whatever the
 * MTU (it only sets the MSS inside them), so 1500 keeps packets that leave by other paths (ICMP
 * quotes, UDP answers) at the common size. `KTCTL_TUN_MTU` overrides it (for measurements).
 */
export const TUN_MTU = tunMtuFromEnv(process.env.KTCTL_TUN_MTU) ?? 1500;

function tunMtuFromEnv(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  const n = Number(v);
  return n >= 1280 && n <= 65535 ? n : undefined;
}
/** Where the device's own address and ktctl's DNS address come from (see the module comment). */
export const TUN_LINK_NET = '169.254.77.0/24';

/** The first /30 of TUN_LINK_NET that no existing route or local address touches. */
export function pickLinkAddresses(existing: readonly RouteEntry[]): { local: string; dns: string } {
  const net = tryParseCidr(TUN_LINK_NET)!;
  for (let k = 0; k < 64; k++) {
    const block = makeCidr(4, net.base + BigInt(4 * k), 30);
    if (existing.some((r) => r.dst.prefix > 0 && r.dst.prefix > 16 && overlaps(r.dst, block))) continue;
    const at = (i: number): string => formatCidr(makeCidr(4, block.base + BigInt(i), 32)).replace(/\/32$/, '');
    return { local: at(1), dns: at(2) };
  }
  throw new UsageError(`no free address for the TUN device in ${TUN_LINK_NET} (64 ktctl devices already?)`);
}

/**
 * `--tunName` naming an interface that exists is refused with what holds it (the kernel would say
 * only EBUSY or EINVAL). Taking the next free name instead would surprise whoever asked for this
 * one; without `--tunName` the kernel picks the next free ktN.
 */
export async function refuseTakenName(name: string, stateDir: string | undefined): Promise<void> {
  const info = await linkInfo(name);
  if (!info.exists) return;
  let what = info.kind === 'tun' ? 'a TUN device' : info.kind !== undefined ? `a ${info.kind} interface` : 'an interface';
  const owner = listRecords(stateDir ?? defaultStateDir()).find((r) => r.record.device === name && recordOwnerAlive(r.record));
  if (owner) what += `, used by ktctl process ${owner.record.pid}`;
  throw new TunError(`the interface ${name} already exists (${what}): pick another --tunName, or leave it out to take the next free ktN`, 'EEXIST');
}
