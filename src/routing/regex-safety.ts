/**
 * A load-time check that a configured regular expression cannot backtrack
 * catastrophically. Recipient regexes run on attacker-chosen input at RCPT
 * time, inside the event loop: one `(a+)+$` against a 60-character local part
 * would stall every SMTP session of the process for minutes (ReDoS).
 *
 * The check parses the JavaScript regex syntax (with the `u` flag) into a
 * small tree and refuses the three shapes behind exponential backtracking:
 *
 * - a nested quantifier: a repeated group that contains a variable-length
 *   quantifier, `(a+)+`, `(a*b?)*`, `(\w{1,3})+`;
 * - an overlapping alternation under a repetition: `(a|ab)+`, `(\w|\d)*`,
 *   where one input can be split between the branches in many ways;
 * - two adjacent unbounded quantifiers that can consume the same character,
 *   `\d+\d+`, `.*.*` (polynomial, but a sign of a mistake);
 *
 * plus back-references (`\1`, `\k<name>`: matching with them is NP-hard) and
 * patterns longer than MAX_PATTERN_LENGTH. The approximation errs on the side
 * of refusing: character sets that are hard to compare count as overlapping.
 * Polynomial patterns that pass (`.*-.*-.*`) stay cheap because the routing
 * module only runs regexes on local parts of at most MAX_REGEX_INPUT characters.
 *
 * Pure: no I/O.
 */

export const MAX_PATTERN_LENGTH = 200;

interface CharSet {
  any: boolean;
  chars: Set<string>;
  classes: Set<'d' | 'w' | 's'>;
}

type Node =
  | { t: 'char'; set: CharSet; literal: string | null }
  | { t: 'seq'; items: Node[] }
  | { t: 'alt'; alts: Node[] }
  | { t: 'group'; body: Node; name: string | null }
  | { t: 'look'; body: Node }
  | { t: 'anchor' }
  | { t: 'quant'; body: Node; min: number; max: number };

const emptySet = (): CharSet => ({ any: false, chars: new Set(), classes: new Set() });
const anySet = (): CharSet => ({ any: true, chars: new Set(), classes: new Set() });

function union(a: CharSet, b: CharSet): CharSet {
  return { any: a.any || b.any, chars: new Set([...a.chars, ...b.chars]), classes: new Set([...a.classes, ...b.classes]) };
}

function inClass(c: string, k: 'd' | 'w' | 's'): boolean {
  if (k === 'd') return /\d/.test(c);
  if (k === 'w') return /\w/.test(c);
  return /\s/.test(c);
}

function overlaps(a: CharSet, b: CharSet): boolean {
  const aEmpty = !a.any && a.chars.size === 0 && a.classes.size === 0;
  const bEmpty = !b.any && b.chars.size === 0 && b.classes.size === 0;
  if (aEmpty || bEmpty) return false;
  if (a.any || b.any) return true;
  for (const c of a.chars) if (b.chars.has(c) || [...b.classes].some((k) => inClass(c, k))) return true;
  for (const c of b.chars) if ([...a.classes].some((k) => inClass(c, k))) return true;
  for (const k of a.classes) {
    for (const l of b.classes) {
      // \d ⊂ \w; \s is disjoint from both.
      if (k === l || (k !== 's' && l !== 's')) return true;
    }
  }
  return false;
}

class RegexSyntaxProblem extends Error {}

/** Parses the pattern; throws RegexSyntaxProblem for what the check refuses outright. */
class Parser {
  private i = 0;
  constructor(private readonly src: string) {}

  parse(): Node {
    const node = this.alternation();
    if (this.i < this.src.length) throw new RegexSyntaxProblem(`unexpected "${this.src[this.i]}" at ${this.i}`);
    return node;
  }

  private peek(): string | undefined {
    return this.src[this.i];
  }

  private alternation(): Node {
    const alts = [this.sequence()];
    while (this.peek() === '|') {
      this.i++;
      alts.push(this.sequence());
    }
    return alts.length === 1 ? alts[0]! : { t: 'alt', alts };
  }

  private sequence(): Node {
    const items: Node[] = [];
    while (this.i < this.src.length && this.peek() !== '|' && this.peek() !== ')') {
      const atom = this.atom();
      items.push(this.quantifier(atom));
    }
    return { t: 'seq', items };
  }

  private quantifier(atom: Node): Node {
    const c = this.peek();
    let min: number;
    let max: number;
    if (c === '*') [min, max] = [0, Infinity];
    else if (c === '+') [min, max] = [1, Infinity];
    else if (c === '?') [min, max] = [0, 1];
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i));
      if (!m) return atom;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      this.i += m[0].length - 1;
    } else return atom;
    this.i++;
    if (this.peek() === '?') this.i++; // lazy: backtracks just the same
    if (atom.t === 'anchor' || atom.t === 'look') return atom;
    return { t: 'quant', body: atom, min, max };
  }

  private atom(): Node {
    const c = this.src[this.i++]!;
    switch (c) {
      case '^':
      case '$':
        return { t: 'anchor' };
      case '.':
        return { t: 'char', set: anySet(), literal: null };
      case '[':
        return { t: 'char', set: this.charClass(), literal: null };
      case '(':
        return this.group();
      case '\\':
        if (this.peek() === 'b' || this.peek() === 'B') {
          this.i++;
          return { t: 'anchor' }; // word boundary: zero-width
        }
        return this.escape(false);
      default: {
        const lc = c.toLowerCase();
        return { t: 'char', set: { any: false, chars: new Set([lc, c.toUpperCase()]), classes: new Set() }, literal: lc };
      }
    }
  }

  private group(): Node {
    let name: string | null = null;
    let look = false;
    if (this.src.startsWith('?:', this.i)) this.i += 2;
    else if (this.src.startsWith('?=', this.i) || this.src.startsWith('?!', this.i)) {
      this.i += 2;
      look = true;
    } else if (this.src.startsWith('?<=', this.i) || this.src.startsWith('?<!', this.i)) {
      this.i += 3;
      look = true;
    } else if (this.src.startsWith('?<', this.i)) {
      const m = /^\?<([A-Za-z_$][\w$]*)>/.exec(this.src.slice(this.i));
      if (!m) throw new RegexSyntaxProblem('bad group name');
      name = m[1]!;
      this.i += m[0].length;
    } else if (this.peek() === '?') throw new RegexSyntaxProblem(`unsupported group "(?${this.src[this.i + 1] ?? ''}"`);
    const body = this.alternation();
    if (this.peek() !== ')') throw new RegexSyntaxProblem('unclosed group');
    this.i++;
    return look ? { t: 'look', body } : { t: 'group', body, name };
  }

  private escape(inClassBody: boolean): Node & { t: 'char' } {
    const c = this.src[this.i++];
    if (c === undefined) throw new RegexSyntaxProblem('pattern ends with "\\"');
    const set = emptySet();
    if (/[dws]/.test(c)) {
      set.classes.add(c as 'd' | 'w' | 's');
      return { t: 'char', set, literal: null };
    }
    if (/[DWSpP]/.test(c)) {
      if ((c === 'p' || c === 'P') && this.peek() === '{') this.i = this.src.indexOf('}', this.i) + 1 || this.src.length;
      return { t: 'char', set: anySet(), literal: null };
    }
    if (!inClassBody && /[1-9]/.test(c)) throw new RegexSyntaxProblem('back-references (\\1) are not allowed');
    if (!inClassBody && c === 'k') throw new RegexSyntaxProblem('back-references (\\k<name>) are not allowed');
    let ch = c;
    const hex = (n: number) => {
      const h = this.src.slice(this.i, this.i + n);
      this.i += n;
      return String.fromCodePoint(parseInt(h, 16) || 0);
    };
    if (c === 'x') ch = hex(2);
    else if (c === 'u' && this.peek() === '{') {
      const end = this.src.indexOf('}', this.i);
      ch = String.fromCodePoint(parseInt(this.src.slice(this.i + 1, end), 16) || 0);
      this.i = end + 1;
    } else if (c === 'u') ch = hex(4);
    else if (c === 'c') ch = String.fromCharCode((this.src.charCodeAt(this.i++) || 0) % 32);
    else if (c === 'n') ch = '\n';
    else if (c === 't') ch = '\t';
    else if (c === 'r') ch = '\r';
    else if (c === '0') ch = '\0';
    const lc = ch.toLowerCase();
    return { t: 'char', set: { any: false, chars: new Set([lc, ch.toUpperCase()]), classes: new Set() }, literal: lc };
  }

  private charClass(): CharSet {
    let set = emptySet();
    let negated = false;
    if (this.peek() === '^') {
      negated = true;
      this.i++;
    }
    let prev: string | null = null;
    while (this.i < this.src.length && this.peek() !== ']') {
      let ch: string | null;
      if (this.peek() === '\\') {
        this.i++;
        const e = this.escape(true);
        set = union(set, e.set);
        ch = e.literal;
      } else if (this.peek() === '-' && prev !== null && this.src[this.i + 1] !== ']') {
        this.i++;
        let hi = this.src[this.i++]!;
        if (hi === '\\') hi = this.escape(true).literal ?? hi;
        const lo = prev.codePointAt(0)!;
        const top = hi.codePointAt(0)!;
        // Big ranges are compared as "anything": overlapping is the safe guess.
        if (top - lo > 256) set.any = true;
        else for (let cp = lo; cp <= top; cp++) {
          const s = String.fromCodePoint(cp);
          set.chars.add(s.toLowerCase());
          set.chars.add(s.toUpperCase());
        }
        prev = null;
        continue;
      } else {
        ch = this.src[this.i++]!;
        set.chars.add(ch.toLowerCase());
        set.chars.add(ch.toUpperCase());
      }
      prev = ch;
    }
    if (this.peek() !== ']') throw new RegexSyntaxProblem('unclosed character class');
    this.i++;
    return negated ? anySet() : set;
  }
}

function nullable(n: Node): boolean {
  switch (n.t) {
    case 'char':
      return false;
    case 'seq':
      return n.items.every(nullable);
    case 'alt':
      return n.alts.some(nullable);
    case 'group':
      return nullable(n.body);
    case 'look':
    case 'anchor':
      return true;
    case 'quant':
      return n.min === 0 || nullable(n.body);
  }
}

/** Characters a match of n can start with. */
function first(n: Node): CharSet {
  switch (n.t) {
    case 'char':
      return n.set;
    case 'seq': {
      let s = emptySet();
      for (const item of n.items) {
        s = union(s, first(item));
        if (!nullable(item)) break;
      }
      return s;
    }
    case 'alt':
      return n.alts.map(first).reduce(union, emptySet());
    case 'group':
    case 'quant':
      return first(n.body);
    case 'look':
    case 'anchor':
      return emptySet();
  }
}

/** Every character a match of n can consume. */
function consumed(n: Node): CharSet {
  switch (n.t) {
    case 'char':
      return n.set;
    case 'seq':
      return n.items.map(consumed).reduce(union, emptySet());
    case 'alt':
      return n.alts.map(consumed).reduce(union, emptySet());
    case 'group':
    case 'quant':
      return consumed(n.body);
    case 'look':
    case 'anchor':
      return emptySet();
  }
}

function walk(n: Node, fn: (n: Node) => void): void {
  fn(n);
  if (n.t === 'seq') n.items.forEach((c) => walk(c, fn));
  else if (n.t === 'alt') n.alts.forEach((c) => walk(c, fn));
  else if (n.t === 'group' || n.t === 'look' || n.t === 'quant') walk(n.body, fn);
}

const isVariable = (q: Node & { t: 'quant' }) => q.min !== q.max;

function problemOf(root: Node): string | null {
  let problem: string | null = null;
  walk(root, (n) => {
    if (problem) return;
    if (n.t === 'quant' && n.max > 1) {
      let inner = false;
      let overlapAlt = false;
      walk(n.body, (m) => {
        if (m.t === 'quant' && isVariable(m)) inner = true;
        if (m.t === 'alt') {
          const firsts = m.alts.map(first);
          for (let i = 0; i < firsts.length; i++) {
            for (let j = i + 1; j < firsts.length; j++) if (overlaps(firsts[i]!, firsts[j]!)) overlapAlt = true;
          }
          if (m.alts.filter(nullable).length > 1) overlapAlt = true;
        }
      });
      if (inner) problem = 'nested quantifiers (a repeated group containing a variable-length quantifier, like "(a+)+") can backtrack catastrophically';
      else if (overlapAlt) problem = 'alternatives that can match the same text under a repetition (like "(a|ab)+") can backtrack catastrophically';
      else if (n.max === Infinity && nullable(n.body)) problem = 'a repeated group that can match the empty string (like "(a?)*") can backtrack catastrophically';
    }
    if (n.t === 'seq') {
      const unbounded = (m: Node | undefined): m is Node & { t: 'quant' } => m?.t === 'quant' && m.max === Infinity;
      for (let i = 0; i < n.items.length && !problem; i++) {
        const a = n.items[i];
        if (!unbounded(a)) continue;
        // the next item that must consume something, skipping zero-width ones
        for (let j = i + 1; j < n.items.length; j++) {
          const b = n.items[j]!;
          if (unbounded(b) && overlaps(consumed(a.body), first(b.body))) {
            problem = 'adjacent unbounded quantifiers over the same characters (like "\\d+\\d+" or ".*.*") backtrack needlessly';
            break;
          }
          if (!nullable(b) || b.t === 'quant') break;
        }
      }
    }
  });
  return problem;
}

export interface RegexInfo {
  /** Named capture groups, in pattern order. */
  names: string[];
  /** Literal characters every match must contain (a specificity measure). */
  literals: number;
}

function literalCount(n: Node): number {
  switch (n.t) {
    case 'char':
      return n.literal !== null ? 1 : 0;
    case 'seq':
      return n.items.reduce((s, c) => s + literalCount(c), 0);
    case 'alt':
      return Math.min(...n.alts.map(literalCount));
    case 'group':
      return literalCount(n.body);
    case 'quant':
      return n.min >= 1 ? literalCount(n.body) : 0;
    default:
      return 0;
  }
}

/**
 * Checks a pattern for use with the flags `iu`. Returns either a problem
 * (a sentence, for a config error) or what routing needs to know about it.
 */
export function checkRegex(source: string): { problem: string } | { info: RegexInfo } {
  if (source.length > MAX_PATTERN_LENGTH) return { problem: `regex longer than ${MAX_PATTERN_LENGTH} characters` };
  try {
    new RegExp(source, 'iu');
  } catch (err) {
    return { problem: `not a valid regular expression (${(err as Error).message})` };
  }
  let root: Node;
  try {
    root = new Parser(source).parse();
  } catch (err) {
    if (err instanceof RegexSyntaxProblem) return { problem: err.message };
    throw err;
  }
  const problem = problemOf(root);
  if (problem) return { problem: `refused: ${problem}` };
  const names: string[] = [];
  walk(root, (n) => {
    if (n.t === 'group' && n.name) names.push(n.name);
  });
  return { info: { names, literals: literalCount(root) } };
}
