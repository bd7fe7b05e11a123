//! An estimate of the size of the program RE2 compiles a regex to, the figure Envoy checks
//! against its runtime `re2.max_program_size.error_level` (100 by default) before it accepts
//! a route. Envoy rejects the whole RouteConfiguration over one such regex, so validation
//! refuses it ahead.
//!
//! The estimate follows what RE2 does: it simplifies counted repetition into copies
//! (`x{2,4}` is `xx(x(x)?)?`), builds a Thompson program (one instruction per byte range,
//! empty-width assertion and alternative; two per capture; a `.*?` loop in front unless
//! anchored at the start; a match at the end; a fail instruction first; Latin-1 classes, as
//! Envoy's RE2 reports them), and then flattens it: every instruction that consumes input starts a
//! list of the instructions reachable from it without consuming input, so alternatives are
//! counted once per list they appear in. It agrees with Envoy on the regexes the tests check
//! (see `re2_tests.rs`). Syntax it does not model (Unicode classes) is not estimated.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::atomic::{AtomicUsize, Ordering},
};

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Envoy's `re2.max_program_size.error_level` as Istio's bootstrap and `sextant bootstrap` set
/// it (Envoy's own default is 100).
pub const ENVOY_MAX_PROGRAM_SIZE: usize = 32768;

/// The limit validation applies: one per process, set at start from
/// `--max-regex-program-size` (parsers run in many places that share no configuration).
static MAX_PROGRAM_SIZE: AtomicUsize = AtomicUsize::new(ENVOY_MAX_PROGRAM_SIZE);

/// Sets the largest RE2 program validation accepts (Envoy's `error_level` across the fleet).
pub fn set_max_program_size(limit: usize) {
    MAX_PROGRAM_SIZE.store(limit, Ordering::Relaxed);
}

/// The largest RE2 program validation accepts.
pub fn max_program_size() -> usize {
    MAX_PROGRAM_SIZE.load(Ordering::Relaxed)
}

/// Instructions built before the estimate gives up (the regex is far over any limit):
/// [`Estimate::Beyond`].
pub const MAX_INSTRUCTIONS: usize = 100_000;

/// The estimated size of RE2's program for `pattern`; `None` when it cannot be estimated
/// (syntax this estimate does not model, such as Unicode classes) or is beyond
/// `MAX_INSTRUCTIONS`.
pub fn program_size(pattern: &str) -> Option<usize> {
    match estimate(pattern) {
        Estimate::Size(n) => Some(n),
        Estimate::Beyond | Estimate::Unknown => None,
    }
}

/// What the estimate found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimate {
    /// RE2's program has this many instructions.
    Size(usize),
    /// More than `MAX_INSTRUCTIONS`: far beyond any limit.
    Beyond,
    /// Syntax the estimate does not model (Unicode classes).
    Unknown,
}

/// Estimates RE2's program size for `pattern`.
pub fn estimate(pattern: &str) -> Estimate {
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&re2_perl_space(pattern))
    else {
        return Estimate::Unknown;
    };
    match sized(hir) {
        Some(n) => Estimate::Size(n),
        None => Estimate::Beyond,
    }
}

fn sized(hir: Hir) -> Option<usize> {
    let (hir, anchored) = strip_anchors(hir);
    let mut p = Program::default();
    let all = p.compile(&hir)?;
    let matched = p.push(Op::Match);
    let all = p.cat(all, Frag::single(matched, false, false));
    let start = all.begin;
    let unanchored = if anchored {
        start
    } else {
        let any = p.push(Op::Byte(0x00, 0xff));
        let dot_star = p.star(Frag::single(any, false, false));
        p.cat(dot_star, all).begin
    };
    if p.insts.len() > MAX_INSTRUCTIONS {
        return None;
    }
    if start == 0 && unanchored == 0 {
        return Some(1);
    }
    Some(p.flat_size(unanchored, start))
}

/// `pattern` with `\s` and `\S` spelled as RE2 reads them: RE2's `\s` is `[\t\n\f\r ]`, three
/// byte ranges, while regex-syntax's also takes `\v` (two ranges). Inside a class they become
/// nested classes, which regex-syntax reads the same way.
fn re2_perl_space(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains("\\s") && !pattern.contains("\\S") {
        return std::borrow::Cow::Borrowed(pattern);
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push_str(r"[\x09\x0A\x0C\x0D\x20]"),
            Some('S') => out.push_str(r"[^\x09\x0A\x0C\x0D\x20]"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The regex RE2 compiles, and whether the program is anchored at the start. RE2 matches a
/// required literal prefix (`^/api/...`) before running the program, so the program is the
/// rest, unanchored; otherwise a leading `^` anchors it. Both drop a trailing `$`.
fn strip_anchors(hir: Hir) -> (Hir, bool) {
    let mut subs = match hir.kind() {
        HirKind::Concat(subs) => subs.clone(),
        _ => vec![hir],
    };
    if matches!(subs.last().map(Hir::kind), Some(HirKind::Look(Look::End))) {
        subs.pop();
    }
    let anchors = subs
        .iter()
        .take_while(|h| matches!(h.kind(), HirKind::Look(Look::Start)))
        .count();
    if anchors == 0 {
        return (Hir::concat(subs), false);
    }
    let prefix = subs[anchors..].iter().take_while(|h| is_literal(h)).count();
    if prefix > 0 {
        return (Hir::concat(subs.split_off(anchors + prefix)), false);
    }
    (Hir::concat(subs.split_off(anchors)), true)
}

/// A literal, or a class of one ASCII letter in both cases (a case-insensitive literal).
fn is_literal(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Literal(_) => true,
        HirKind::Class(Class::Bytes(c)) => {
            let r = c.ranges();
            r.len() == 2
                && r[0].start() == r[0].end()
                && r[1].start() == r[1].end()
                && r[0].start().is_ascii_uppercase()
                && r[1].start() == r[0].start().to_ascii_lowercase()
        }
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Fail,
    Match,
    Byte(u8, u8),
    Alt,
    Empty,
    Capture,
    Nop,
}

#[derive(Clone, Copy, Debug)]
struct Inst {
    op: Op,
    out: usize,
    out1: usize,
}

/// A fragment: its first instruction (0, the fail instruction, when it cannot match), the
/// outs still to be patched (`true`: the second out of an alternative), and whether it can
/// match the empty string.
#[derive(Clone, Debug)]
struct Frag {
    begin: usize,
    ends: Vec<(usize, bool)>,
    nullable: bool,
}

impl Frag {
    fn single(id: usize, open: bool, nullable: bool) -> Frag {
        Frag {
            begin: id,
            ends: if open { vec![(id, false)] } else { vec![] },
            nullable,
        }
    }

    fn no_match() -> Frag {
        Frag {
            begin: 0,
            ends: vec![],
            nullable: false,
        }
    }
}

struct Program {
    insts: Vec<Inst>,
}

impl Default for Program {
    fn default() -> Self {
        Program {
            insts: vec![Inst {
                op: Op::Fail,
                out: 0,
                out1: 0,
            }],
        }
    }
}

impl Program {
    fn push(&mut self, op: Op) -> usize {
        self.insts.push(Inst {
            op,
            out: 0,
            out1: 0,
        });
        self.insts.len() - 1
    }

    fn patch(&mut self, ends: &[(usize, bool)], to: usize) {
        for &(id, second) in ends {
            if second {
                self.insts[id].out1 = to;
            } else {
                self.insts[id].out = to;
            }
        }
    }

    fn cat(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 || b.begin == 0 {
            return Frag::no_match();
        }
        self.patch(&a.ends, b.begin);
        Frag {
            begin: a.begin,
            ends: b.ends,
            nullable: a.nullable && b.nullable,
        }
    }

    fn alt(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 {
            return b;
        }
        if b.begin == 0 {
            return a;
        }
        let id = self.push(Op::Alt);
        self.insts[id].out = a.begin;
        self.insts[id].out1 = b.begin;
        let mut ends = a.ends;
        ends.extend(b.ends);
        Frag {
            begin: id,
            ends,
            nullable: a.nullable || b.nullable,
        }
    }

    fn plus(&mut self, a: Frag) -> Frag {
        if a.begin == 0 {
            return a;
        }
        let id = self.push(Op::Alt);
        self.insts[id].out = a.begin;
        self.patch(&a.ends, id);
        Frag {
            begin: a.begin,
            ends: vec![(id, true)],
            nullable: a.nullable,
        }
    }

    fn star(&mut self, a: Frag) -> Frag {
        if a.nullable {
            // RE2 compiles a nullable loop as (x+)? to keep priorities right.
            let plus = self.plus(a);
            return self.quest(plus);
        }
        if a.begin == 0 {
            return self.nop();
        }
        let id = self.push(Op::Alt);
        self.insts[id].out = a.begin;
        self.patch(&a.ends, id);
        Frag {
            begin: id,
            ends: vec![(id, true)],
            nullable: true,
        }
    }

    fn quest(&mut self, a: Frag) -> Frag {
        if a.begin == 0 {
            return self.nop();
        }
        let id = self.push(Op::Alt);
        self.insts[id].out = a.begin;
        let mut ends = a.ends;
        ends.push((id, true));
        Frag {
            begin: id,
            ends,
            nullable: true,
        }
    }

    fn nop(&mut self) -> Frag {
        let id = self.push(Op::Nop);
        Frag::single(id, true, true)
    }

    fn byte(&mut self, lo: u8, hi: u8) -> Frag {
        let id = self.push(Op::Byte(lo, hi));
        Frag::single(id, true, false)
    }

    fn capture(&mut self, a: Frag) -> Frag {
        if a.begin == 0 {
            return a;
        }
        let open = self.push(Op::Capture);
        self.insts[open].out = a.begin;
        let close = self.push(Op::Capture);
        self.patch(&a.ends, close);
        Frag {
            begin: open,
            ends: vec![(close, false)],
            nullable: a.nullable,
        }
    }

    /// The fragment for `hir`, with RE2's simplifications; `None` past `MAX_INSTRUCTIONS`.
    fn compile(&mut self, hir: &Hir) -> Option<Frag> {
        if self.insts.len() > MAX_INSTRUCTIONS {
            return None;
        }
        Some(match hir.kind() {
            HirKind::Empty => self.nop(),
            HirKind::Literal(lit) => {
                let mut f: Option<Frag> = None;
                for b in lit.0.iter() {
                    let next = self.byte(*b, *b);
                    f = Some(match f {
                        None => next,
                        Some(f) => self.cat(f, next),
                    });
                }
                f.unwrap_or_else(|| self.nop())
            }
            HirKind::Class(class) => self.class(class),
            HirKind::Look(_) => {
                let id = self.push(Op::Empty);
                Frag::single(id, true, true)
            }
            HirKind::Capture(c) => {
                let sub = self.compile(&c.sub)?;
                self.capture(sub)
            }
            HirKind::Concat(subs) => {
                let mut f: Option<Frag> = None;
                for sub in subs {
                    let next = self.compile(sub)?;
                    f = Some(match f {
                        None => next,
                        Some(f) => self.cat(f, next),
                    });
                }
                f.unwrap_or_else(|| self.nop())
            }
            HirKind::Alternation(subs) => {
                let factored = factor::factor(subs.iter().map(factor::split_literal).collect());
                if !matches!(factored.kind(), HirKind::Alternation(_)) {
                    return self.compile(&factored);
                }
                let subs = match factored.into_kind() {
                    HirKind::Alternation(subs) => subs,
                    _ => return None,
                };
                let mut f: Option<Frag> = None;
                for sub in &subs {
                    let next = self.compile(sub)?;
                    f = Some(match f {
                        None => next,
                        Some(f) => self.alt(f, next),
                    });
                }
                f.unwrap_or_else(Frag::no_match)
            }
            HirKind::Repetition(r) => self.repeat(&r.sub, r.min, r.max)?,
        })
    }

    /// `sub{min,max}` as RE2 simplifies it: copies, then `+` or nested `?`s.
    fn repeat(&mut self, sub: &Hir, min: u32, max: Option<u32>) -> Option<Frag> {
        let mut f: Option<Frag> = None;
        let append = |p: &mut Program, next: Frag, f: &mut Option<Frag>| {
            *f = Some(match f.take() {
                None => next,
                Some(prev) => p.cat(prev, next),
            });
        };
        match max {
            None => {
                for _ in 1..min {
                    let copy = self.compile(sub)?;
                    append(self, copy, &mut f);
                }
                let last = self.compile(sub)?;
                let looped = if min == 0 {
                    self.star(last)
                } else {
                    self.plus(last)
                };
                append(self, looped, &mut f);
            }
            Some(max) => {
                for _ in 0..min {
                    let copy = self.compile(sub)?;
                    append(self, copy, &mut f);
                }
                if max > min {
                    // (x(x(x)?)?)?: built innermost first.
                    let mut nested: Option<Frag> = None;
                    for _ in min..max {
                        let x = self.compile(sub)?;
                        let inner = match nested.take() {
                            None => x,
                            Some(n) => self.cat(x, n),
                        };
                        nested = Some(self.quest(inner));
                    }
                    if let Some(n) = nested {
                        append(self, n, &mut f);
                    }
                }
            }
        }
        Some(f.unwrap_or_else(|| self.nop()))
    }

    /// A class as RE2 compiles it in Latin-1 (as Envoy's RE2 runs): one byte range per range
    /// (ranges within A-Z dropped when the class folds case), alternatives chained.
    fn class(&mut self, class: &Class) -> Frag {
        let ranges: Vec<(u8, u8)> = match class {
            Class::Bytes(c) => c.ranges().iter().map(|r| (r.start(), r.end())).collect(),
            Class::Unicode(c) => c
                .ranges()
                .iter()
                .filter(|r| u32::from(r.start()) <= 0xff)
                .map(|r| (latin1(r.start()), latin1(r.end())))
                .collect(),
        };
        let contains = |b: u8| ranges.iter().any(|(lo, hi)| *lo <= b && b <= *hi);
        let folds = (b'a'..=b'z').all(|c| contains(c) == contains(c - 32));
        let mut f: Option<Frag> = None;
        for &(lo, hi) in &ranges {
            if folds && b'A' <= lo && hi <= b'Z' {
                continue;
            }
            let next = self.byte(lo, hi);
            f = Some(match f {
                None => next,
                Some(f) => self.alt(f, next),
            });
        }
        f.unwrap_or_else(Frag::no_match)
    }

    /// The size of the program RE2 flattens this one to.
    fn flat_size(&mut self, unanchored: usize, start: usize) -> usize {
        self.skip_nops();
        let alt_match = self.alt_matches();
        let (mut roots, preds) = self.successors(unanchored, start);
        let mut candidates: Vec<usize> = roots
            .iter()
            .copied()
            .filter(|&r| r != 0 && r != unanchored && r != start)
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for root in candidates {
            self.mark_dominator(root, &mut roots, &preds);
        }
        roots
            .iter()
            .map(|&r| self.list_size(r, &roots, &alt_match))
            .sum()
    }

    /// RE2's `Optimize`: outs point past no-ops.
    fn skip_nops(&mut self) {
        let resolve = |insts: &[Inst], mut j: usize| {
            let mut steps = 0;
            while j != 0 && insts[j].op == Op::Nop && steps < insts.len() {
                j = insts[j].out;
                steps += 1;
            }
            j
        };
        for i in 0..self.insts.len() {
            let out = resolve(&self.insts, self.insts[i].out);
            let out1 = resolve(&self.insts, self.insts[i].out1);
            self.insts[i].out = out;
            self.insts[i].out1 = out1;
        }
    }

    /// Alternatives RE2 turns into `AltMatch` (a `.*` loop beside the match), which the
    /// flat program keeps as an instruction.
    fn alt_matches(&self) -> BTreeSet<usize> {
        let is_any_loop = |j: usize, id: usize| {
            self.insts[j].op == Op::Byte(0x00, 0xff) && self.insts[j].out == id
        };
        let is_match = |j: usize| self.insts[j].op == Op::Match;
        (0..self.insts.len())
            .filter(|&id| {
                let i = self.insts[id];
                i.op == Op::Alt
                    && ((is_any_loop(i.out, id) && is_match(i.out1))
                        || (is_match(i.out) && is_any_loop(i.out1, id)))
            })
            .collect()
    }

    /// Roots (the fail instruction, both starts, every out of an instruction that is not an
    /// alternative) and the alternatives leading to each instruction.
    fn successors(
        &self,
        unanchored: usize,
        start: usize,
    ) -> (BTreeSet<usize>, HashMap<usize, Vec<usize>>) {
        let mut roots = BTreeSet::from([0, unanchored, start]);
        let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![unanchored];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let i = self.insts[id];
            match i.op {
                Op::Alt => {
                    preds.entry(i.out).or_default().push(id);
                    preds.entry(i.out1).or_default().push(id);
                    stack.push(i.out1);
                    stack.push(i.out);
                }
                Op::Byte(..) | Op::Capture | Op::Empty => {
                    roots.insert(i.out);
                    stack.push(i.out);
                }
                Op::Nop => stack.push(i.out),
                Op::Match | Op::Fail => {}
            }
        }
        (roots, preds)
    }

    /// Instructions reachable from `root` without consuming input, stopping at other roots.
    fn closure(&self, root: usize, roots: &BTreeSet<usize>) -> (Vec<usize>, Vec<usize>) {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut others = Vec::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if id != root && roots.contains(&id) {
                others.push(id);
                continue;
            }
            order.push(id);
            let i = self.insts[id];
            match i.op {
                Op::Alt => {
                    stack.push(i.out1);
                    stack.push(i.out);
                }
                Op::Nop => stack.push(i.out),
                _ => {}
            }
        }
        (order, others)
    }

    /// RE2's `MarkDominator`: an instruction reachable from `root` that an alternative from
    /// elsewhere also leads to becomes a root of its own.
    fn mark_dominator(
        &self,
        root: usize,
        roots: &mut BTreeSet<usize>,
        preds: &HashMap<usize, Vec<usize>>,
    ) {
        let (reached, others) = self.closure(root, roots);
        let reached_set: BTreeSet<usize> = reached.iter().chain(&others).copied().collect();
        let mut stops: BTreeMap<usize, ()> = BTreeMap::new();
        for id in reached {
            if let Some(ps) = preds.get(&id)
                && ps.iter().any(|p| !reached_set.contains(p))
            {
                stops.insert(id, ());
            }
        }
        roots.extend(stops.into_keys());
    }

    /// The flat list emitted for `root`: its non-alternative instructions, one no-op per
    /// other root it reaches, one `AltMatch` per such alternative.
    fn list_size(
        &self,
        root: usize,
        roots: &BTreeSet<usize>,
        alt_match: &BTreeSet<usize>,
    ) -> usize {
        let (reached, others) = self.closure(root, roots);
        others.len()
            + reached
                .iter()
                .filter(|&&id| match self.insts[id].op {
                    Op::Alt => alt_match.contains(&id),
                    Op::Nop => false,
                    _ => true,
                })
                .count()
    }
}

fn latin1(c: char) -> u8 {
    u8::try_from(u32::from(c)).unwrap_or(0xff)
}

#[path = "re2_factor.rs"]
mod factor;

#[path = "re2_syntax.rs"]
mod syntax;
pub use syntax::{MAX_REPEAT, refused_by_re2};

#[cfg(test)]
#[path = "re2_tests.rs"]
mod tests;
