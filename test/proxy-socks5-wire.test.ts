import test from 'ava';
import {
  AddressType,
  Command,
  Reply,
  encodeReply,
  parseGreeting,
  parseRequest,
} from '../src/proxy/socks5-wire.js';
import { REPLY_FOR_FAILURE, replyForError } from '../src/proxy/socks5.js';
import { DialError } from '../src/errors.js';

function request(atyp: number, addr: number[], port: number, cmd: number = Command.connect): Buffer {
  return Buffer.from([0x05, cmd, 0x00, atyp, ...addr, port >> 8, port & 0xff]);
}

test('greeting: incomplete until every method byte is there, then ok with its length', (t) => {
  const g = Buffer.from([0x05, 0x02, 0x00, 0x02, 0xaa]);
  for (let n = 0; n < 4; n++) t.is(parseGreeting(g.subarray(0, n)).kind, 'incomplete');
  const r = parseGreeting(g);
  t.is(r.kind, 'ok');
  if (r.kind === 'ok') {
    t.is(r.length, 4);
    t.deepEqual([...r.value.methods], [0x00, 0x02]);
  }
});

test('greeting: wrong version and an empty method list are invalid', (t) => {
  t.is(parseGreeting(Buffer.from([0x04, 0x01, 0x00])).kind, 'invalid');
  t.is(parseGreeting(Buffer.from([0x05, 0x00])).kind, 'invalid');
});

test('request: IPv4, fed one byte at a time', (t) => {
  const buf = request(AddressType.ipv4, [198, 18, 0, 5], 8080);
  for (let n = 0; n < buf.length; n++) t.is(parseRequest(buf.subarray(0, n)).kind, 'incomplete', `at ${n}`);
  const r = parseRequest(Buffer.concat([buf, Buffer.from('extra')]));
  t.like(r, { kind: 'ok', length: 10, value: { command: 1, addressType: 1, host: '198.18.0.5', port: 8080 } });
});

test('request: IPv6 bytes become canonical RFC 5952 text (socksv5 0.0.6 gets this wrong)', (t) => {
  const addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
  t.like(parseRequest(request(AddressType.ipv6, addr, 443)), { kind: 'ok', length: 22, value: { host: '2001:db8::100', port: 443 } });
  const loop = [...new Array<number>(15).fill(0), 1];
  t.like(parseRequest(request(AddressType.ipv6, loop, 1)), { kind: 'ok', value: { host: '::1' } });
});

test('request: a domain name is passed through as sent, unresolved', (t) => {
  const name = Buffer.from('web.default.svc.cluster.local');
  const buf = request(AddressType.domain, [name.length, ...name], 80);
  for (let n = 0; n < buf.length; n++) t.is(parseRequest(buf.subarray(0, n)).kind, 'incomplete');
  t.like(parseRequest(buf), { kind: 'ok', length: buf.length, value: { host: 'web.default.svc.cluster.local', port: 80 } });
});

test('request: unknown address type fails with reply 8, unknown command still parses', (t) => {
  t.like(parseRequest(request(0x09, [1, 2, 3, 4], 80)), { kind: 'invalid', reply: Reply.addressTypeNotSupported });
  t.like(parseRequest(request(AddressType.ipv4, [1, 2, 3, 4], 80, 0x7f)), { kind: 'ok', value: { command: 0x7f } });
  t.is(parseRequest(Buffer.from([0x04, 0x01, 0x00, 0x01])).kind, 'invalid');
});

test('reply: full RFC 1928 §6 message, BND 0.0.0.0:0 by default', (t) => {
  t.deepEqual([...encodeReply(Reply.connectionRefused)], [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
  t.deepEqual([...encodeReply(Reply.succeeded, '10.1.2.3', 0x1234)], [5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]);
  const v6 = encodeReply(Reply.succeeded, '2001:db8::1', 1);
  t.is(v6.length, 22);
  t.is(v6[3], AddressType.ipv6);
  t.deepEqual([...v6.subarray(4, 8)], [0x20, 0x01, 0x0d, 0xb8]);
  t.is(v6[19], 1);
});

test('DialError reasons map to RFC 1928 replies', (t) => {
  t.deepEqual(REPLY_FOR_FAILURE, { refused: 5, unresolvable: 4, unreachable: 4, prohibited: 2, tunnel: 1 });
  t.is(replyForError(new DialError('refused', 'h', 1, 'x')), 5);
  t.is(replyForError(new Error('something else')), 1);
});
