/**
 * PendingDialer (src/dialer.ts): dials made before the real Dialer exists wait for it, with a
 * budget; they end at once when the start-up fails or the user stops, or when their own client
 * goes away; once ready, calls go straight through.
 */
import test from 'ava';
import { PassThrough, type Duplex } from 'node:stream';
import { PendingDialer, type Dialer } from '../src/dialer.js';
import { DialError, DnsQueryError } from '../src/errors.js';

/** A Dialer that records what it was asked and answers with a fresh PassThrough. */
function recording(): Dialer & { dials: string[] } {
  const dials: string[] = [];
  return {
    dials,
    dial: async (host, port) => {
      dials.push(`${host}:${port}`);
      return new PassThrough() as Duplex;
    },
  };
}

const settledWithin = async <T>(p: Promise<T>, ms: number): Promise<{ value?: T; error?: unknown } | 'pending'> => {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<'pending'>((r) => (timer = setTimeout(() => r('pending'), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value }), (error: unknown) => ({ error })), pending]);
  } finally {
    clearTimeout(timer);
  }
};

test('waiting_ready: a dial made before ready goes through once the dialer comes', async (t) => {
  const pending = new PendingDialer({ waitMs: 5000 });
  const real = recording();
  const dial = pending.dial('web', 80);
  t.is(await settledWithin(dial, 50), 'pending');
  pending.ready(real);
  t.truthy(await dial);
  t.deepEqual(real.dials, ['web:80']);
  // After ready: straight through, and fail() changes nothing.
  pending.fail('ktctl is stopping');
  await pending.dial('db', 5432);
  t.deepEqual(real.dials, ['web:80', 'db:5432']);
});

test('waiting_fail: start-up failure ends waiting and later dials at once, with the reason', async (t) => {
  const pending = new PendingDialer({ waitMs: 60_000 });
  const dial = pending.dial('web', 80);
  pending.fail('ktctl could not start: the host key changed');
  const r = await settledWithin(dial, 100);
  t.not(r, 'pending');
  const error = (r as { error: unknown }).error;
  t.true(error instanceof DialError);
  t.is((error as DialError).reason, 'tunnel');
  t.is((error as DialError).message, 'cannot reach web:80: ktctl could not start: the host key changed');
  await t.throwsAsync(pending.dial('web', 81), { instanceOf: DialError, message: /could not start/ });
  // A late ready() does not revive it.
  pending.ready(recording());
  await t.throwsAsync(pending.dial('web', 82), { instanceOf: DialError });
});

test('waiting_timeout: a dial gives up after waitMs, naming the wait', async (t) => {
  const pending = new PendingDialer({ waitMs: 100 });
  const started = Date.now();
  await t.throwsAsync(pending.dial('web', 80), { instanceOf: DialError, message: 'cannot reach web:80: the tunnel is not up yet (waited 0.1 s)' });
  t.true(Date.now() - started >= 95);
});

test('waiting_abort: the client going away ends its dial, not the others', async (t) => {
  const pending = new PendingDialer({ waitMs: 60_000 });
  const gone = new AbortController();
  const a = pending.dial('web', 80, { signal: gone.signal });
  const b = pending.dial('web', 81);
  gone.abort();
  await t.throwsAsync(a, { instanceOf: DialError, message: /client went away/ });
  const real = recording();
  pending.ready(real);
  await b;
  t.deepEqual(real.dials, ['web:81']);
});

test('dnsQuery waits too, and says when the far side has no resolver', async (t) => {
  const pending = new PendingDialer({ waitMs: 5000 });
  const q = pending.dnsQuery(Buffer.from('q'));
  pending.ready({ dial: () => Promise.reject(new Error('unused')), dnsQuery: async (m) => Buffer.concat([m, Buffer.from('!')]) });
  t.is((await q).toString(), 'q!');
  const none = new PendingDialer();
  none.ready(recording());
  await t.throwsAsync(none.dnsQuery(Buffer.from('q')), { instanceOf: DnsQueryError, message: /no resolver/ });
});
