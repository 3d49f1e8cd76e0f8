/**
 * A session's figures in words, for `ktctl status` (and the same units the dashboard shows).
 */
import type { SessionFigures } from './meter.js';

/** 1536 -> "1.5 KiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Two lines: what runs and through what; then its traffic. */
export function describeFigures(f: SessionFigures, now: number = Date.now()): string[] {
  const what = [f.command, f.mode ? `--mode ${f.mode}` : '', f.target].filter(Boolean).join(' ');
  const since = Math.max(0, Math.round((now - Date.parse(f.startedAt)) / 1000));
  return [
    `pid ${f.pid}  ${what}  through ${f.transport}${f.via ? ' (--via)' : ''}  since ${f.startedAt} (${since} s)`,
    `    flows ${f.flows.open} open (${f.flows.opened} in all)  in ${bytes(f.bytes.in)} (${bytes(f.rates.in)}/s)  out ${bytes(f.bytes.out)} (${bytes(f.rates.out)}/s)  ` +
      `dns ${f.dns.queries} queries ${f.dns.answers} answers  reconnects ${f.reconnects}  ${f.streams ? `resumed ${f.streams.resumed} lost ${f.streams.lost}` : 'resume off'}  rtt ${f.rttMs === null ? '-' : `${f.rttMs} ms`}`,
  ];
}
