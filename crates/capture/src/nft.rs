//! The ruleset as an `nft -f` script: a table of Sextant's own per family (`table ip
//! sextant`, `table ip6 sextant`) whose base chains hook where iptables' nat and mangle
//! chains do. The script first deletes the table, so applying it twice leaves one copy and
//! touches no other table.

use std::fmt::Write;

use crate::rules::{self, Chain, Family, Match, Rule, Table, Target};

/// Sextant's table, in each family.
pub const TABLE: &str = "sextant";

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// A chain's name in the table: iptables' name in lower case with dashes, prefixed `mangle-`
/// for the mangle table's chains (one table holds both).
fn chain_name(table: Table, chain: Chain) -> String {
    let name = chain.name().to_ascii_lowercase().replace('_', "-");
    match table {
        Table::Nat => name,
        Table::Mangle => format!("mangle-{name}"),
    }
}

/// The hook of a built-in chain, at the priority of iptables' table (nat -100, mangle -150;
/// the mangle output chain is of type `route`, so that a new mark re-routes the packet).
fn base_chain(table: Table, chain: Chain) -> Option<&'static str> {
    Some(match (table, chain) {
        (Table::Nat, Chain::Prerouting) => "type nat hook prerouting priority -100; policy accept;",
        (Table::Nat, Chain::Output) => "type nat hook output priority -100; policy accept;",
        (Table::Mangle, Chain::Prerouting) => {
            "type filter hook prerouting priority -150; policy accept;"
        }
        (Table::Mangle, Chain::Output) => "type route hook output priority -150; policy accept;",
        _ => return None,
    })
}

/// The script for the rulesets of the families given.
pub fn script(rulesets: &[(Family, Vec<Rule>)]) -> String {
    let mut text = String::new();
    for (family, rules) in rulesets {
        let family = *family;
        let fam = family_name(family);
        // Deleting a table that does not exist fails; adding one that does is a no-op.
        let _ = writeln!(text, "add table {fam} {TABLE}\ndelete table {fam} {TABLE}");
        let _ = writeln!(text, "table {fam} {TABLE} {{");
        let mut first = true;
        for (table, chain) in chain_order(rules) {
            if !std::mem::take(&mut first) {
                text.push('\n');
            }
            let _ = writeln!(text, "\tchain {} {{", chain_name(table, chain));
            if let Some(hook) = base_chain(table, chain) {
                let _ = writeln!(text, "\t\t{hook}");
            }
            for rule in rules::in_final_order(rules, table, chain) {
                let _ = writeln!(text, "\t\t{}", statement(family, rule));
            }
            text.push_str("\t}\n");
        }
        text.push_str("}\n");
    }
    text
}

/// Istio's chains table by table, then the base chains that use them.
fn chain_order(rules: &[Rule]) -> Vec<(Table, Chain)> {
    let tables = rules::tables(rules);
    let own = tables
        .iter()
        .flat_map(|&t| rules::chains(rules, t).into_iter().map(move |c| (t, c)));
    let base = tables.iter().flat_map(|&t| {
        [Chain::Prerouting, Chain::Output]
            .into_iter()
            .filter(move |&c| rules.iter().any(|r| r.table == t && r.chain == c))
            .map(move |c| (t, c))
    });
    own.chain(base).collect()
}

fn statement(family: Family, rule: &Rule) -> String {
    let ip = family_name(family);
    let protocol = rule.protocol();
    let has_port = rule
        .matches
        .iter()
        .any(|m| matches!(m, Match::DestinationPort(_) | Match::NotDestinationPort(_)));
    let proto = protocol.map_or("tcp", |p| p.name());
    let mut words: Vec<String> = Vec::new();
    for m in &rule.matches {
        words.push(match m {
            // A port condition says its protocol.
            Match::Protocol(_) if has_port => continue,
            Match::Protocol(p) => format!("meta l4proto {}", p.name()),
            Match::InInterface(name) => format!("iifname \"{name}\""),
            Match::OutInterface(name) => format!("oifname \"{name}\""),
            Match::Source(cidr) => format!("{ip} saddr {cidr}"),
            Match::Destination(cidr) => format!("{ip} daddr {cidr}"),
            Match::NotDestination(cidr) => format!("{ip} daddr != {cidr}"),
            Match::DestinationPort(port) => format!("{proto} dport {port}"),
            Match::NotDestinationPort(port) => format!("{proto} dport != {port}"),
            Match::Uid(id) => format!("meta skuid {id}"),
            Match::NotUid(id) => format!("meta skuid != {id}"),
            Match::Gid(id) => format!("meta skgid {id}"),
            Match::NotGid(id) => format!("meta skgid != {id}"),
            Match::Mark(mark) => format!("meta mark {mark}"),
            Match::NotMark(mark) => format!("meta mark != {mark}"),
            Match::ConnMark(mark) => format!("ct mark {mark}"),
            Match::Established => "ct state related,established".into(),
            Match::Invalid => "ct state invalid".into(),
        });
    }
    words.push(match rule.target {
        Target::Return => "return".into(),
        Target::Accept => "accept".into(),
        Target::Jump(chain) => format!("jump {}", chain_name(rule.table, chain)),
        Target::Redirect(port) => format!("redirect to :{port}"),
        Target::Tproxy { port, mark } => format!("tproxy to :{port} meta mark set {mark} accept"),
        Target::SetMark(mark) => format!("meta mark set {mark}"),
        Target::SaveMark => "ct mark set meta mark".into(),
        Target::RestoreMark => "meta mark set ct mark".into(),
        Target::Drop => "drop".into(),
    });
    words.join(" ")
}
