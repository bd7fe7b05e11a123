//! RE2's factoring of alternations, which the estimate repeats: branches that start with the
//! same literal bytes share them.

use regex_syntax::hir::{Hir, HirKind};

/// A branch of an alternation as its leading literal bytes and the rest.
pub(super) fn split_literal(h: &Hir) -> (Vec<u8>, Vec<Hir>) {
    match h.kind() {
        HirKind::Literal(l) => (l.0.to_vec(), vec![]),
        HirKind::Concat(subs) => match subs.first().map(Hir::kind) {
            Some(HirKind::Literal(l)) => (l.0.to_vec(), subs[1..].to_vec()),
            _ => (vec![], subs.clone()),
        },
        _ => (vec![], vec![h.clone()]),
    }
}

/// RE2's factoring of alternations: consecutive branches starting with the same byte share
/// their common literal prefix (`v1|v2|v3` is `v(1|2|3)`, then `v[1-3]`).
pub(super) fn factor(branches: Vec<(Vec<u8>, Vec<Hir>)>) -> Hir {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < branches.len() {
        let first = branches[i].0.first().copied();
        let mut j = i + 1;
        while first.is_some() && j < branches.len() && branches[j].0.first().copied() == first {
            j += 1;
        }
        let group = &branches[i..j];
        if group.len() == 1 {
            let (lit, rest) = &group[0];
            parts.push(branch(lit, rest));
        } else {
            let common = group
                .iter()
                .map(|(l, _)| l.len())
                .min()
                .map_or(0, |shortest| {
                    (0..shortest)
                        .take_while(|&k| group.iter().all(|(l, _)| l[k] == group[0].0[k]))
                        .count()
                });
            let prefix = Hir::literal(group[0].0[..common].to_vec());
            let rests = group
                .iter()
                .map(|(l, rest)| (l[common..].to_vec(), rest.clone()))
                .collect();
            parts.push(Hir::concat(vec![prefix, factor(rests)]));
        }
        i = j;
    }
    Hir::alternation(parts)
}

/// A branch from its leading literal and the rest.
fn branch(lit: &[u8], rest: &[Hir]) -> Hir {
    let mut subs = Vec::with_capacity(rest.len() + 1);
    if !lit.is_empty() {
        subs.push(Hir::literal(lit.to_vec()));
    }
    subs.extend(rest.iter().cloned());
    Hir::concat(subs)
}
