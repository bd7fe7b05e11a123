//! Syntax the `regex` crate accepts and RE2 (Envoy's engine) and Go's `regexp/syntax` (Istio's
//! validation) refuse, so that such a regex is refused here rather than NACKed by Envoy:
//! - counted repetition past 1000, nested counts multiplied (`RepetitionWalker` in RE2's
//!   `parse.cc`, `repeatIsValid` in Go);
//! - a repetition of a repetition (`a**`, `a{2}{3}`): "bad repetition operator";
//! - flags other than `i`, `m`, `s` and `U` (`(?x)`, `(?u)`, `(?R)`);
//! - `\u` and `\U` escapes.

use regex_syntax::ast::{
    self, Ast, ClassSet, ClassSetItem, Flag, HexLiteralKind, LiteralKind, RepetitionKind,
    RepetitionRange,
};

/// RE2's largest repetition count, for one repetition or nested ones multiplied.
pub const MAX_REPEAT: u32 = 1000;

/// Why RE2 would refuse `pattern`, if it would for one of the reasons above; `None` also when
/// the pattern does not parse (the compile that follows reports that).
pub fn refused_by_re2(pattern: &str) -> Option<String> {
    let ast = ast::parse::Parser::new().parse(pattern).ok()?;
    walk(&ast, MAX_REPEAT, pattern)
}

fn text(pattern: &str, span: &ast::Span) -> String {
    pattern
        .get(span.start.offset..span.end.offset)
        .unwrap_or_default()
        .to_owned()
}

/// Go's `repeatIsValid` for counts: a count (its maximum, or its minimum when unbounded)
/// above `left` fails, and each count divides what its operand may still repeat.
fn walk(node: &Ast, left: u32, pattern: &str) -> Option<String> {
    match node {
        Ast::Repetition(r) => {
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Some(format!(
                    "bad repetition operator {}",
                    text(pattern, &r.span)
                ));
            }
            let mut left = left;
            if let RepetitionKind::Range(range) = &r.op.kind {
                let count = match *range {
                    // `{0}` matches nothing: Go does not look inside.
                    RepetitionRange::Exactly(0) | RepetitionRange::Bounded(_, 0) => return None,
                    RepetitionRange::Exactly(n)
                    | RepetitionRange::AtLeast(n)
                    | RepetitionRange::Bounded(_, n) => n,
                };
                if count > left {
                    return Some(format!(
                        "invalid repeat count {}: RE2 allows at most {MAX_REPEAT} repetitions, nested counts multiplied",
                        text(pattern, &r.op.span)
                    ));
                }
                left = left.checked_div(count).unwrap_or(left);
            }
            walk(&r.ast, left, pattern)
        }
        Ast::Group(g) => {
            if let ast::GroupKind::NonCapturing(flags) = &g.kind
                && let Some(refused) = flags_refused(flags, pattern)
            {
                return Some(refused);
            }
            walk(&g.ast, left, pattern)
        }
        Ast::Flags(f) => flags_refused(&f.flags, pattern),
        Ast::Literal(l) => literal_refused(l, pattern),
        Ast::ClassBracketed(c) => class_refused(&c.kind, pattern),
        Ast::Alternation(a) => a.asts.iter().find_map(|a| walk(a, left, pattern)),
        Ast::Concat(c) => c.asts.iter().find_map(|a| walk(a, left, pattern)),
        _ => None,
    }
}

fn flags_refused(flags: &ast::Flags, pattern: &str) -> Option<String> {
    flags.items.iter().find_map(|item| match item.kind {
        ast::FlagsItemKind::Flag(Flag::Unicode | Flag::CRLF | Flag::IgnoreWhitespace) => {
            Some(format!(
                "invalid or unsupported Perl syntax {}: RE2 knows the flags i, m, s and U",
                text(pattern, &item.span)
            ))
        }
        _ => None,
    })
}

fn literal_refused(l: &ast::Literal, pattern: &str) -> Option<String> {
    match l.kind {
        LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => {
            Some(format!(
                "invalid escape sequence {}: RE2 writes code points as \\x{{...}}",
                text(pattern, &l.span)
            ))
        }
        _ => None,
    }
}

fn class_refused(set: &ClassSet, pattern: &str) -> Option<String> {
    match set {
        ClassSet::Item(item) => item_refused(item, pattern),
        ClassSet::BinaryOp(op) => {
            class_refused(&op.lhs, pattern).or_else(|| class_refused(&op.rhs, pattern))
        }
    }
}

fn item_refused(item: &ClassSetItem, pattern: &str) -> Option<String> {
    match item {
        ClassSetItem::Literal(l) => literal_refused(l, pattern),
        ClassSetItem::Range(r) => {
            literal_refused(&r.start, pattern).or_else(|| literal_refused(&r.end, pattern))
        }
        ClassSetItem::Bracketed(b) => class_refused(&b.kind, pattern),
        ClassSetItem::Union(u) => u.items.iter().find_map(|i| item_refused(i, pattern)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::refused_by_re2;

    fn refused(p: &str) -> bool {
        refused_by_re2(p).is_some()
    }

    #[test]
    fn counts_and_nested_products_past_1000_are_refused_as_re2_does() {
        assert!(!refused("x{1000}"));
        assert!(refused_by_re2("x{1001}").is_some_and(|e| e.contains("{1001}")));
        assert!(refused("x{2,1001}"));
        assert!(refused("x{1001,}"));
        assert!(!refused("(a|b){10}(c{100})"));
        // 40 × 30 = 1200: the inner count exceeds 1000 / 40 = 25.
        assert!(refused_by_re2("((a|b){30}){40}").is_some_and(|e| e.contains("{30}")));
        assert!(!refused("((a|b){25}){40}"));
        assert!(!refused("(x*){1000}"));
        assert!(!refused("(x{2000}){0}"));
        assert!(!refused("(("));
    }

    #[test]
    fn syntax_re2_lacks_is_refused() {
        for p in [
            "a**", "a++", "a?*", "a{2}*", "a{2}{3}", "(?x)a", "(?u)a", "(?R)a", r"\u0041",
        ] {
            assert!(refused(p), "{p}");
        }
        for p in [
            "a*?",
            "(?i)a",
            "(?s:.)",
            "(?U)a+",
            "(a*)*",
            r"\x{41}",
            r"[\x41-\x5A]",
            r"\pL",
        ] {
            assert!(!refused(p), "{p}");
        }
        assert!(refused(r"[\u0041]"));
    }
}
