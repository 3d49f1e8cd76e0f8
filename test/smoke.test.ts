import test from 'ava';
import { DialError } from '../src/errors.js';

test('DialError carries a stable code and its reason', (t) => {
  const e = new DialError('refused', '198.18.0.5', 80, 'Connection refused');
  t.is(e.code, 'KTCTL_DIAL_REFUSED');
  t.is(e.reason, 'refused');
  t.is(e.name, 'DialError');
  t.regex(e.message, /198\.18\.0\.5:80/);
});
