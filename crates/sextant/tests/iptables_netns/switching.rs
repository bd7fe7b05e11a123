//! Runs that change mode, backend, IPv6 or other flags in a namespace an earlier run set up:
//! each must leave what it would leave in a fresh namespace.

use super::{INJECTED, Netns};

/// Everything a run can leave in `ns`: the nat and mangle rules and Istio's chains of both
/// families, Sextant's nft tables, the policy rules, every route and `lo`'s IPv6 addresses.
fn state(ns: &Netns) -> Vec<String> {
    let mut state = Vec::new();
    for save in ["iptables-save", "ip6tables-save"] {
        for table in ["nat", "mangle"] {
            let rules = ns.read(save, &["-t", table]);
            let ours = rules
                .lines()
                .filter(|l| l.starts_with("-A ") || l.starts_with(":ISTIO"));
            state.extend(ours.map(|l| format!("{save} -t {table}: {l}")));
        }
    }
    for table in ns.read("nft", &["list", "tables"]).lines() {
        if let ["table", family, "sextant"] = table.split(' ').collect::<Vec<_>>()[..] {
            let listed = ns.read("nft", &["list", "table", family, "sextant"]);
            state.extend(listed.lines().map(|l| format!("nft: {l}")));
        }
    }
    for family in ["-4", "-6"] {
        for show in [&["rule", "show"][..], &["route", "show", "table", "all"]] {
            let shown = ns.read("ip", &[&[family][..], show].concat());
            state.extend(
                shown
                    .lines()
                    .map(|l| format!("ip {family} {}: {l}", show[0])),
            );
        }
    }
    let lo = ns.read("ip", &["-6", "addr", "show", "dev", "lo"]);
    state.extend(lo.lines().filter(|l| l.contains("inet6")).map(String::from));
    state
}

/// `first` then `second` in one namespace leaves what `second` alone leaves in another, which
/// differs from what `first` leaves (else the comparison would prove nothing).
fn assert_second_run_replaces_first(first: &[&str], second: &[&str]) {
    let tools = ["iptables-save", "ip6tables-save", "iptables-restore", "nft"];
    let (Some(switched), Some(fresh)) = (Netns::create(&tools), Netns::create(&tools)) else {
        return;
    };
    for ns in [&switched, &fresh] {
        ns.loopback_up();
    }
    switched.capture(&[INJECTED, first].concat());
    let after_first = state(&switched);
    switched.capture(&[INJECTED, second].concat());
    fresh.capture(&[INJECTED, second].concat());
    let expected = state(&fresh);
    assert_ne!(
        after_first, expected,
        "{first:?} and {second:?} leave the same"
    );
    let after = state(&switched);
    let left: Vec<&String> = after.iter().filter(|l| !expected.contains(l)).collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !after.contains(l)).collect();
    assert!(
        after == expected,
        "{first:?} then {second:?} left {left:#?}\nand lacks {missing:#?}"
    );
}

#[test]
fn redirect_after_tproxy_leaves_no_mangle_rules_or_policy_routing() {
    let tproxy = ["-m", "TPROXY", "--backend", "iptables", "--ipv6", "on"];
    assert_second_run_replaces_first(&tproxy, &["--backend", "iptables", "--ipv6", "on"]);
}

#[test]
fn nft_redirect_after_tproxy_leaves_no_policy_routing() {
    let tproxy = ["-m", "TPROXY", "--backend", "nft", "--ipv6", "on"];
    assert_second_run_replaces_first(&tproxy, &["--backend", "nft", "--ipv6", "on"]);
}

#[test]
fn nft_after_iptables_leaves_no_istio_chains() {
    let iptables = ["-m", "TPROXY", "--backend", "iptables", "--ipv6", "on"];
    assert_second_run_replaces_first(&iptables, &["--backend", "nft", "--ipv6", "off"]);
}

#[test]
fn iptables_after_nft_leaves_no_sextant_tables() {
    let nft = ["-m", "TPROXY", "--backend", "nft", "--ipv6", "on"];
    assert_second_run_replaces_first(&nft, &["--backend", "iptables", "--ipv6", "off"]);
}

#[test]
fn ipv6_off_after_on_leaves_no_ipv6_table_or_passthrough_address() {
    let on = ["--backend", "nft", "--ipv6", "on"];
    assert_second_run_replaces_first(&on, &["--backend", "nft", "--ipv6", "off"]);
}

#[test]
fn other_flags_leave_none_of_the_earlier_runs_rules_in_built_in_chains() {
    let first = [
        "-m",
        "TPROXY",
        "-c",
        "eth9",
        "-k",
        "vm0",
        "-i",
        "10.0.0.0/8",
        "-t",
        "7",
        "-r",
        "70",
        "--drop-invalid",
        "--backend",
        "iptables",
        "--ipv6",
        "on",
    ];
    assert_second_run_replaces_first(&first, &["-c", "eth8", "--backend", "iptables"]);
}

#[test]
fn cleanup_only_removes_everything_earlier_runs_added() {
    let iptables = ["-m", "TPROXY", "--backend", "iptables", "--ipv6", "on"];
    assert_second_run_replaces_first(&iptables, &["--cleanup-only"]);
    let nft = ["-m", "TPROXY", "--backend", "nft", "--ipv6", "on"];
    assert_second_run_replaces_first(&nft, &["--cleanup-only"]);
}
