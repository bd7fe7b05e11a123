//! `iptables-restore --noflush` input: Istio's rule text, with each of Istio's chains
//! declared `:CHAIN - [0:0]` where Istio writes `-N`. A rule in a built-in chain also carries
//! `-m comment --comment sextant`: the built-in chains are shared, and the comment is how a
//! later run tells Sextant's rules there from others' ([`leftovers`]).

use std::fmt::Write;

use crate::rules::{self, Match, Position, Rule, Table, Target};

/// The comment on every rule Sextant adds to a built-in chain.
pub const COMMENT: &str = "sextant";

/// The prefix of Istio's chain names, which Sextant's chains share.
const ISTIO_CHAIN_PREFIX: &str = "ISTIO_";

fn table_name(table: Table) -> &'static str {
    match table {
        Table::Mangle => "mangle",
        Table::Nat => "nat",
    }
}

/// The whole ruleset as `iptables-restore --noflush` (or `ip6tables-restore`) input.
pub fn restore(rules: &[Rule]) -> String {
    let mut text = String::new();
    for table in rules::tables(rules) {
        let _ = writeln!(text, "*{}", table_name(table));
        for chain in rules::chains(rules, table) {
            let _ = writeln!(text, ":{} - [0:0]", chain.name());
        }
        for rule in rules.iter().filter(|r| r.table == table) {
            let _ = writeln!(text, "{}", line(rule));
        }
        text.push_str("COMMIT\n");
    }
    text
}

/// `iptables-restore --noflush` input deleting what an earlier run left in the nat and mangle
/// tables of `saved` (`iptables-save` output): every rule outside Istio's chains that jumps to
/// one of them or carries [`COMMENT`], then Istio's chains themselves. `None` when there is
/// nothing. Istio's own leftovers go too, as Sextant declares the same chains.
pub fn leftovers(saved: &str) -> Option<String> {
    let mut text = String::new();
    let mut table: Option<&str> = None;
    let mut rules: Vec<&str> = Vec::new();
    let mut chains: Vec<&str> = Vec::new();
    for line in saved.lines().map(str::trim_end) {
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name).filter(|t| matches!(*t, "nat" | "mangle"));
            continue;
        }
        let Some(name) = table else { continue };
        if let Some(chain) = line.strip_prefix(':').and_then(|l| l.split(' ').next()) {
            if chain.starts_with(ISTIO_CHAIN_PREFIX) {
                chains.push(chain);
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let words: Vec<&str> = rule.split(' ').collect();
            let jumps_to_istio = words.windows(2).any(|pair| {
                matches!(pair[0], "-j" | "-g") && pair[1].starts_with(ISTIO_CHAIN_PREFIX)
            });
            let commented = words.windows(2).any(|pair| pair == ["--comment", COMMENT]);
            let in_istio_chain = words[0].starts_with(ISTIO_CHAIN_PREFIX);
            if !in_istio_chain && (jumps_to_istio || commented) {
                rules.push(rule);
            }
        } else if line == "COMMIT" {
            if !rules.is_empty() || !chains.is_empty() {
                let _ = writeln!(text, "*{name}");
                for rule in rules.drain(..) {
                    let _ = writeln!(text, "-D {rule}");
                }
                // Emptied first: Istio's chains jump to one another.
                for chain in &chains {
                    let _ = writeln!(text, "-F {chain}");
                }
                for chain in chains.drain(..) {
                    let _ = writeln!(text, "-X {chain}");
                }
                text.push_str("COMMIT\n");
            }
            table = None;
        }
    }
    Some(text).filter(|t| !t.is_empty())
}

/// `-A CHAIN SPEC` or `-I CHAIN N SPEC`.
fn line(rule: &Rule) -> String {
    let chain = rule.chain.name();
    let spec = spec(rule);
    match rule.position {
        Position::Append => format!("-A {chain} {spec}"),
        Position::Insert(at) => format!("-I {chain} {at} {spec}"),
    }
}

/// The conditions and the target.
fn spec(rule: &Rule) -> String {
    let mut words: Vec<String> = Vec::new();
    for m in &rule.matches {
        words.push(match m {
            Match::Protocol(p) => format!("-p {}", p.name()),
            Match::InInterface(name) => format!("-i {name}"),
            Match::OutInterface(name) => format!("-o {name}"),
            Match::Source(cidr) => format!("-s {cidr}"),
            Match::Destination(cidr) => format!("-d {cidr}"),
            Match::NotDestination(cidr) => format!("! -d {cidr}"),
            Match::DestinationPort(port) => format!("--dport {port}"),
            Match::NotDestinationPort(port) => format!("! --dport {port}"),
            Match::Uid(id) => format!("-m owner --uid-owner {id}"),
            Match::NotUid(id) => format!("-m owner ! --uid-owner {id}"),
            Match::Gid(id) => format!("-m owner --gid-owner {id}"),
            Match::NotGid(id) => format!("-m owner ! --gid-owner {id}"),
            Match::Mark(mark) => format!("-m mark --mark {mark}"),
            Match::NotMark(mark) => format!("-m mark ! --mark {mark}"),
            Match::ConnMark(mark) => format!("-m connmark --mark {mark}"),
            Match::Established => "-m conntrack --ctstate RELATED,ESTABLISHED".into(),
            Match::Invalid => "-m conntrack --ctstate INVALID".into(),
        });
    }
    if rule.chain.is_builtin() {
        words.push(format!("-m comment --comment {COMMENT}"));
    }
    words.push(match rule.target {
        Target::Return => "-j RETURN".into(),
        Target::Accept => "-j ACCEPT".into(),
        Target::Jump(chain) => format!("-j {}", chain.name()),
        Target::Redirect(port) => format!("-j REDIRECT --to-ports {port}"),
        Target::Tproxy { port, mark } => {
            format!("-j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}")
        }
        Target::SetMark(mark) => format!("-j MARK --set-mark {mark}"),
        Target::SaveMark => "-j CONNMARK --save-mark".into(),
        Target::RestoreMark => "-j CONNMARK --restore-mark".into(),
        Target::Drop => "-j DROP".into(),
    });
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::leftovers;

    /// `iptables-save` after a TPROXY run with `--drop-invalid`, beside others' rules and a
    /// filter table that is never touched.
    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
:ISTIO_DROP - [0:0]
-A PREROUTING -m conntrack --ctstate INVALID -m comment --comment sextant -j ISTIO_DROP
-A PREROUTING -p tcp -m mark --mark 0x539 -m comment --comment sextant -j CONNMARK --save-mark
-A PREROUTING -i eth1 -j RETURN
-A OUTPUT -p tcp -m comment --comment \"sextant rule\" -j RETURN
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
-A ISTIO_DROP -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:ISTIO_X - [0:0]
-A INPUT -j ISTIO_X
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:KUBE_X - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A KUBE_X -g ISTIO_OUTPUT
-A ISTIO_OUTPUT -j RETURN
COMMIT
";

    #[test]
    fn leftovers_are_sextant_rules_jumps_to_istio_chains_and_the_chains_in_nat_and_mangle() {
        let expected = "\
*mangle
-D PREROUTING -m conntrack --ctstate INVALID -m comment --comment sextant -j ISTIO_DROP
-D PREROUTING -p tcp -m mark --mark 0x539 -m comment --comment sextant -j CONNMARK --save-mark
-F ISTIO_DIVERT
-F ISTIO_DROP
-X ISTIO_DIVERT
-X ISTIO_DROP
COMMIT
*nat
-D OUTPUT -j ISTIO_OUTPUT
-D KUBE_X -g ISTIO_OUTPUT
-F ISTIO_OUTPUT
-X ISTIO_OUTPUT
COMMIT
";
        assert_eq!(leftovers(SAVED).as_deref(), Some(expected));
    }

    #[test]
    fn a_namespace_without_istio_chains_or_sextant_rules_has_no_leftovers() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i eth1 -j RETURN\nCOMMIT\n";
        assert_eq!(leftovers(saved), None);
        assert_eq!(leftovers(""), None);
    }
}
