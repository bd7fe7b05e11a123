//! `iptables-restore --noflush` input: Istio's rule text, with each of Istio's chains
//! declared `:CHAIN - [0:0]` (created, or emptied when it exists) where Istio writes `-N`,
//! so that applying twice leaves one copy.

use std::fmt::Write;

use crate::rules::{self, Match, Position, Rule, Table, Target};

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

/// `iptables-restore --noflush` input deleting one copy of `rule`, for a rule of a built-in
/// chain (which declaring a chain does not empty); it fails when there is none.
pub fn deletion(rule: &Rule) -> String {
    let table = table_name(rule.table);
    let spec = spec(rule);
    format!("*{table}\n-D {} {spec}\nCOMMIT\n", rule.chain.name())
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
        });
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
    });
    words.join(" ")
}
