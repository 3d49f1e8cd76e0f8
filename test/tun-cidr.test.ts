import test from 'ava';
import {
  aggregate,
  containsCidr,
  containsIp,
  cover,
  formatCidr,
  formatIp,
  overlaps,
  parseCidr,
  parseIp,
  subtract,
  tryParseCidr,
} from '../src/tun/cidr.js';
import { findOverlaps, planRoutes, type RouteEntry } from '../src/tun/ip.js';

const c = parseCidr;
const fmt = (list: ReturnType<typeof aggregate>): string[] => list.map(formatCidr);

test('parse and format IPv4', (t) => {
  t.is(formatCidr(c('10.1.2.3/16')), '10.1.0.0/16', 'host bits cleared');
  t.is(formatCidr(c('198.18.0.5')), '198.18.0.5/32', 'a bare address is a /32');
  t.is(formatCidr(c('0.0.0.0/0')), '0.0.0.0/0');
  t.is(formatCidr(c(' 255.255.255.255/32 ')), '255.255.255.255/32');
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.4/33', '1.2.3.4/', '01.2.3.4', 'a.b.c.d', '1.2.3.4/-1', '1.2.3.4/3x']) {
    t.is(tryParseCidr(bad), undefined, bad);
  }
  t.throws(() => c('10.0.0.0/40'), { instanceOf: RangeError, message: /10\.0\.0\.0\/40/ });
});

test('parse and format IPv6 (RFC 5952 form)', (t) => {
  t.is(formatCidr(c('2001:db8::1/64')), '2001:db8::/64');
  t.is(formatCidr(c('::1')), '::1/128');
  t.is(formatCidr(c('::/0')), '::/0');
  t.is(formatCidr(c('fd00:0:0:0:0:0:0:10/128')), 'fd00::10/128');
  t.is(formatIp(6, parseIp('2001:db8:0:1:0:0:0:1')!.value), '2001:db8:0:1::1', 'longest zero run');
  t.is(formatIp(6, parseIp('1:0:1:1:1:1:1:1')!.value), '1:0:1:1:1:1:1:1', 'a single zero group stays');
  t.is(formatIp(6, parseIp('::ffff:198.18.0.1')!.value), '::ffff:c612:1');
  for (const bad of ['1::2::3', ':::', '1:2:3:4:5:6:7:8:9', 'g::1', '12345::', '::1/129', '1:2:3:4:5:6:7::8:9']) {
    t.is(tryParseCidr(bad), undefined, bad);
  }
});

test('containment and overlap', (t) => {
  t.true(containsIp(c('198.18.0.0/17'), parseIp('198.18.127.255')!));
  t.false(containsIp(c('198.18.0.0/17'), parseIp('198.18.128.0')!));
  t.false(containsIp(c('0.0.0.0/0'), parseIp('::1')!), 'families never mix');
  t.true(containsCidr(c('10.0.0.0/8'), c('10.2.0.0/16')));
  t.false(containsCidr(c('10.2.0.0/16'), c('10.0.0.0/8')));
  t.true(overlaps(c('10.2.0.0/16'), c('10.0.0.0/8')));
  t.true(overlaps(c('10.0.0.0/8'), c('10.2.3.4/32')));
  t.false(overlaps(c('10.0.0.0/16'), c('10.1.0.0/16')));
  t.false(overlaps(c('::/0'), c('10.0.0.0/8')));
});

test('aggregate merges duplicates, nested and adjacent ranges into the fewest CIDRs', (t) => {
  t.deepEqual(fmt(aggregate([c('10.0.0.0/24'), c('10.0.1.0/24')])), ['10.0.0.0/23']);
  t.deepEqual(fmt(aggregate([c('10.0.1.0/24'), c('10.0.2.0/24')])), ['10.0.1.0/24', '10.0.2.0/24'], 'not aligned: two');
  t.deepEqual(fmt(aggregate([c('10.0.0.0/16'), c('10.0.5.0/24'), c('10.0.0.0/16')])), ['10.0.0.0/16']);
  t.deepEqual(
    fmt(aggregate([c('198.19.0.1'), c('198.19.0.0'), c('198.19.0.2'), c('198.19.0.3'), c('fd00::1'), c('fd00::')])),
    ['198.19.0.0/30', 'fd00::/127'],
  );
  t.deepEqual(fmt(aggregate([])), []);
  t.deepEqual(fmt(aggregate([c('0.0.0.0/1'), c('128.0.0.0/1')])), ['0.0.0.0/0']);
  t.deepEqual(fmt(aggregate([c('255.255.255.255')])), ['255.255.255.255/32']);
});

test('subtract splits ranges around what is removed', (t) => {
  t.deepEqual(fmt(subtract([c('10.0.0.0/24')], [c('10.0.0.0/25')])), ['10.0.0.128/25']);
  t.deepEqual(fmt(subtract([c('10.0.0.0/30')], [c('10.0.0.1')])), ['10.0.0.0/32', '10.0.0.2/31']);
  t.deepEqual(fmt(subtract([c('10.0.0.0/24')], [c('10.0.0.0/16')])), [], 'removed entirely');
  t.deepEqual(fmt(subtract([c('10.0.0.0/24')], [c('192.168.0.0/16'), c('::/0')])), ['10.0.0.0/24'], 'disjoint');
  // The API server's own address punched out of a service range.
  const r = subtract([c('198.18.0.0/15')], [c('198.18.255.2')]);
  t.is(r.length, 17, 'one CIDR per prefix length /16../32');
  t.false(r.some((x) => containsIp(x, parseIp('198.18.255.2')!)));
  t.true(r.some((x) => containsIp(x, parseIp('198.18.255.3')!)));
  t.true(r.some((x) => containsIp(x, parseIp('198.19.255.255')!)));
  // Several cuts in one range, one of them touching the end.
  t.deepEqual(fmt(subtract([c('10.0.0.0/29')], [c('10.0.0.2/31'), c('10.0.0.7')])), ['10.0.0.0/31', '10.0.0.4/31', '10.0.0.6/32']);
});

test('cover merges pod and service IPs into covering CIDRs, one per /16', (t) => {
  const ips = ['198.18.0.5', '198.18.0.9', '198.18.3.7', '198.19.0.10', '198.19.0.1', '10.200.1.1'].map(c);
  t.deepEqual(fmt(cover(ips)), ['10.200.1.1/32', '198.18.0.0/22', '198.19.0.0/28']);
  t.deepEqual(fmt(cover(ips, { 4: 8 })), ['10.200.1.1/32', '198.18.0.0/15']);
  t.deepEqual(fmt(cover([c('198.18.0.0/24'), c('198.18.1.0/24')])), ['198.18.0.0/23']);
  t.deepEqual(fmt(cover([c('fd00::1'), c('fd00::ff')])), ['fd00::/120']);
  t.deepEqual(fmt(cover([c('10.0.0.0/8'), c('10.1.2.3')])), ['10.0.0.0/8'], 'a wider range swallows addresses inside it');
});

function route(text: string, dev: string, table = 'main'): RouteEntry {
  return { dst: text === 'default' ? c('0.0.0.0/0') : c(text), text, dev, table, type: 'unicast' };
}

test('findOverlaps ignores default routes, our own device and link-local IPv6', (t) => {
  const existing = [route('default', 'eth0'), route('10.0.0.0/8', 'eth1'), route('198.18.0.0/17', 'kt0'), route('fe80::/64', 'eth0')];
  const hits = findOverlaps([c('10.1.0.0/16'), c('198.18.0.0/24'), c('172.16.0.0/12'), c('fe80::/10')], existing, { ownDev: 'kt0' });
  t.deepEqual(hits.map((h) => `${formatCidr(h.cidr)} ${h.route.text}`), ['10.1.0.0/16 10.0.0.0/8']);
});

test('planRoutes skips overlaps unless included, removes excludes and the never-routed addresses', (t) => {
  const existing = [route('default', 'eth0'), route('10.0.0.0/8', 'eth1'), route('192.168.1.0/24', 'wlan0'), route('127.0.0.0/8', 'lo', 'local')];
  const plan = planRoutes({
    discovered: [c('10.96.0.0/12'), c('198.18.0.0/17'), c('198.19.0.0/16'), c('192.168.1.0/24'), c('127.0.0.0/16')],
    include: [c('192.168.1.0/24'), c('172.30.0.0/16')],
    exclude: [c('198.19.128.0/17')],
    never: [c('198.18.0.2')],
    existing,
  });
  t.deepEqual(fmt(plan.routes), [
    '172.30.0.0/16',
    '192.168.1.0/24',
    '198.18.0.0/31',
    '198.18.0.3/32',
    '198.18.0.4/30',
    '198.18.0.8/29',
    '198.18.0.16/28',
    '198.18.0.32/27',
    '198.18.0.64/26',
    '198.18.0.128/25',
    '198.18.1.0/24',
    '198.18.2.0/23',
    '198.18.4.0/22',
    '198.18.8.0/21',
    '198.18.16.0/20',
    '198.18.32.0/19',
    '198.18.64.0/18',
    '198.19.0.0/17',
  ]);
  const skipped = plan.skipped.map((s) => `${formatCidr(s.cidr)}: ${s.reason}`);
  t.is(skipped.length, 2);
  t.regex(skipped[0]!, /^10\.96\.0\.0\/12: overlaps the existing route 10\.0\.0\.0\/8 dev eth1; add it to --includeIps/);
  t.regex(skipped[1]!, /^127\.0\.0\.0\/16: overlaps the existing route 127\.0\.0\.0\/8 dev lo \(table local\)/);
  t.deepEqual(plan.keptOut.map((k) => [formatCidr(k.cidr), formatCidr(k.range), k.included]), [['198.18.0.2/32', '198.18.0.0/17', false]]);
});

test('planRoutes keeps never-routed addresses out of included and discovered ranges (v4 and v6) and names the range they were in', (t) => {
  const never = [c('198.18.255.2'), c('fd00:77::1'), c('10.96.0.1'), c('192.0.2.7'), c('10.100.0.9')];
  const plan = planRoutes({
    discovered: [c('10.96.0.0/12')],
    include: [c('198.18.255.0/30'), c('fd00:77::/126')],
    never,
    exclude: [c('10.100.0.0/16')],
    existing: [route('default', 'eth0')],
  });
  // No route holds a never-routed address, and the routes with those addresses give back what was asked.
  for (const n of never) t.false(plan.routes.some((r) => containsCidr(r, n)), formatCidr(n));
  t.deepEqual(fmt(aggregate([...plan.routes, ...never.slice(0, 3), c('10.100.0.0/16')])), ['10.96.0.0/12', '198.18.255.0/30', 'fd00:77::/126']);
  t.true(fmt(plan.routes).includes('198.18.255.3/32'));
  t.true(fmt(plan.routes).includes('fd00:77::2/127'));
  // The cut costs at most one route per bit below the range's prefix.
  t.is(plan.routes.filter((r) => r.family === 4 && containsCidr(c('198.18.255.0/30'), r)).length, 2);
  // Said for the addresses inside a routed range, not for one outside all of them (192.0.2.7) nor an excluded one.
  t.deepEqual(plan.keptOut.map((k) => [formatCidr(k.cidr), formatCidr(k.range), k.included]), [
    ['198.18.255.2/32', '198.18.255.0/30', true],
    ['fd00:77::1/128', 'fd00:77::/126', true],
    ['10.96.0.1/32', '10.96.0.0/12', false],
  ]);
  t.deepEqual(plan.skipped, []);
});
