/**
 * Label selectors (string form as in `?labelSelector=`, and the LabelSelector object of
 * deployments) and field selectors.
 */
import { badRequest } from './status.js';
import { isObject, type Json, type JsonObject, type LabelSelector } from './json.js';

type Op = 'eq' | 'neq' | 'in' | 'notin' | 'exists' | 'notexists';
export interface Requirement {
  key: string;
  op: Op;
  values: string[];
}

/** Split at commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x !== '');
}

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkKey(key: string, whole: string): void {
  if (!KEY.test(key)) throw badRequest(`unable to parse requirement: found '${key}', expected: identifier (in selector "${whole}")`);
}
function checkValue(v: string): void {
  if (v.length > 63 || !VALUE.test(v)) throw badRequest(`unable to parse requirement: invalid label value: "${v}"`);
}

export function parseLabelSelector(s: string): Requirement[] {
  const reqs: Requirement[] = [];
  for (const part of splitTop(s)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^!\s*(\S+)$/))) {
      checkKey(m[1], s);
      reqs.push({ key: m[1], op: 'notexists', values: [] });
    } else if ((m = part.match(/^(\S+)\s+(in|notin)\s*\((.*)\)$/))) {
      checkKey(m[1], s);
      const values = m[3].split(',').map((x) => x.trim());
      values.forEach(checkValue);
      reqs.push({ key: m[1], op: m[2] === 'in' ? 'in' : 'notin', values });
    } else if ((m = part.match(/^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      checkKey(m[1], s);
      checkValue(m[3]);
      reqs.push({ key: m[1], op: m[2] === '!=' ? 'neq' : 'eq', values: [m[3]] });
    } else if ((m = part.match(/^([^=!\s()]+)$/))) {
      checkKey(m[1], s);
      reqs.push({ key: m[1], op: 'exists', values: [] });
    } else {
      throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`);
    }
  }
  return reqs;
}

export function matchRequirements(reqs: Requirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case 'eq':
        return has && v === r.values[0];
      case 'neq':
        return !has || v !== r.values[0];
      case 'in':
        return has && r.values.includes(v);
      case 'notin':
        return !has || !r.values.includes(v);
      case 'exists':
        return has;
      case 'notexists':
        return !has;
    }
  });
}

/** The LabelSelector object (matchLabels + matchExpressions) as requirements. */
export function selectorRequirements(sel: LabelSelector | undefined): Requirement[] {
  const reqs: Requirement[] = [];
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) reqs.push({ key: k, op: 'eq', values: [v] });
  for (const e of sel?.matchExpressions ?? []) {
    const op: Op = e.operator === 'In' ? 'in' : e.operator === 'NotIn' ? 'notin' : e.operator === 'Exists' ? 'exists' : 'notexists';
    reqs.push({ key: e.key, op, values: e.values ?? [] });
  }
  return reqs;
}

export function matchesSelector(sel: LabelSelector | undefined, labels: Record<string, string> | undefined): boolean {
  const reqs = selectorRequirements(sel);
  return reqs.length > 0 && matchRequirements(reqs, labels);
}

/** Serialised form (`app=web,pod-template-hash=abc`) for status.selector of the scale subresource. */
export function selectorString(sel: LabelSelector | undefined): string {
  return selectorRequirements(sel)
    .map((r) => {
      switch (r.op) {
        case 'eq':
          return `${r.key}=${r.values[0]}`;
        case 'neq':
          return `${r.key}!=${r.values[0]}`;
        case 'in':
          return `${r.key} in (${r.values.join(',')})`;
        case 'notin':
          return `${r.key} notin (${r.values.join(',')})`;
        case 'exists':
          return r.key;
        case 'notexists':
          return `!${r.key}`;
      }
    })
    .join(',');
}

export interface FieldRequirement {
  path: string;
  neq: boolean;
  value: string;
}

export function parseFieldSelector(s: string): FieldRequirement[] {
  const out: FieldRequirement[] = [];
  for (const part of splitTop(s)) {
    const m = part.match(/^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${s}'; can't understand '${part}'`);
    out.push({ path: m[1], neq: m[2] === '!=', value: m[3] });
  }
  return out;
}

function lookup(obj: JsonObject, path: string): Json | undefined {
  let cur: Json | undefined = obj;
  for (const seg of path.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[seg];
  }
  return cur;
}

export function matchFields(reqs: FieldRequirement[], obj: JsonObject): boolean {
  return reqs.every((r) => {
    const v = lookup(obj, r.path);
    const s = v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return r.neq ? s !== r.value : s === r.value;
  });
}
