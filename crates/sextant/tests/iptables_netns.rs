//! `sextant iptables` against the kernel: each test makes a fresh network namespace
//! (`ip netns add`, which needs root), runs the built binary inside it with `ip netns exec`,
//! and reads back what the kernel holds (`iptables-save`, `nft list ruleset`, `ip rule`).
//! Without the right to make a namespace, or without a tool, a test fails under `CI=true`
//! and is skipped elsewhere with a note. The `--dry-run` tests need neither.
//!
//! A run first removes what earlier runs left: the switching tests run one configuration
//! after another in a namespace and compare what it holds with a fresh namespace given only
//! the second.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

use sextant_capture::apply::find_program;
use sextant_testing::tools::sextant_bin;

#[path = "iptables_netns/switching.rs"]
mod switching;

/// Istio's injected init-container arguments for a Pod without annotations.
const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

/// A network namespace of this test process, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace, or why there cannot be one: a failure under `CI=true`, else `None`
    /// with a note.
    fn create(tools: &[&str]) -> Option<Netns> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::var_os("PATH").unwrap_or_default();
        for tool in tools.iter().copied().chain(["ip"]) {
            if find_program(tool, &path).is_none() {
                return unavailable(&format!(
                    "{tool} is required (iptables, nftables, iproute2)"
                ));
            }
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sxt-ipt-{}-{n}", std::process::id());
        let added = Command::new("ip").args(["netns", "add", &name]).output();
        match added {
            Ok(out) if out.status.success() => Some(Netns { name }),
            Ok(out) => unavailable(&format!(
                "`ip netns add` is not permitted (these tests need root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => unavailable(&format!("running ip: {e}")),
        }
    }

    /// `program args` inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Standard output of `program args`, which must succeed.
    fn read(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Brings the loopback interface up, as it is in a Pod (a new namespace's is down, and
    /// IPv6 routes through it are refused then).
    fn loopback_up(&self) {
        self.read("ip", &["link", "set", "lo", "up"]);
    }

    /// `sextant iptables ARGS` inside the namespace, which must succeed; its standard output.
    fn capture(&self, args: &[&str]) -> String {
        let bin = sextant_bin();
        let bin = bin.to_str().expect("a UTF-8 path");
        let out = self.exec(bin, &[&["iptables"], args].concat());
        assert!(
            out.status.success(),
            "sextant iptables {args:?} failed:\n{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn unavailable<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true: {why}"
    );
    eprintln!("warning: {why}; skipping");
    None
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The rules of one table as `iptables-save` prints them, without comments or counters.
fn saved_rules(ns: &Netns, program: &str, table: &str) -> Vec<String> {
    ns.read(program, &["-t", table])
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(String::from)
        .collect()
}

/// `sextant iptables ARGS` outside any namespace, with `--dry-run`.
fn dry_run(args: &[&str]) -> Output {
    Command::new(sextant_bin())
        .arg("iptables")
        .args(args)
        .output()
        .expect("run sextant")
}

#[test]
fn dry_run_prints_istio_rules_for_the_injected_arguments() {
    let args = [
        INJECTED,
        &["--dry-run", "--backend", "iptables", "--ipv6", "off"],
    ]
    .concat();
    let out = dry_run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "# iptables-restore --noflush",
        ":ISTIO_OUTPUT - [0:0]",
        "-A PREROUTING -p tcp -m comment --comment sextant -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    let ip6 = stdout.lines().any(|l| l == "# ip6tables-restore --noflush");
    assert!(!ip6, "IPv6 is off:\n{stdout}");

    let args = [INJECTED, &["--dry-run", "--backend", "nft", "--ipv6", "on"]].concat();
    let out = dry_run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "table ip sextant {",
        "table ip6 sextant {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tmeta l4proto tcp redirect to :15001",
        "\t\toifname \"lo\" ip6 saddr ::6/128 return",
        "# ip -6 addr replace ::6/128 dev lo",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn a_bad_flag_value_is_refused_naming_the_flag() {
    let out = dry_run(&["--dry-run", "-d", "15090,99999"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("-d/--istio-local-exclude-ports: \"99999\" is not a port"),
        "{stderr}"
    );
    for (args, named) in [
        (&["-i", "10.0.0.0/40"][..], "-i/--istio-service-cidr"),
        (
            &["--native-nftables", "--backend", "iptables"],
            "--native-nftables",
        ),
        (
            &["--network-namespace", "/proc/1/ns/net"],
            "--network-namespace",
        ),
        (
            &["--force-iptables-binary", "iptables-legacy"],
            "--force-iptables-binary",
        ),
    ] {
        let out = dry_run(&[&["--dry-run"], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("error: {named}")), "{stderr}");
    }
}

/// Istio's flags Sextant accepts without doing what they ask.
const UNIMPLEMENTED: [&str; 7] = [
    "--redirect-dns",
    "--capture-all-dns",
    "--run-validation",
    "--iptables-probe-port",
    "--probe-timeout",
    "--cni-mode",
    "--force-iptables-binary",
];

#[test]
fn every_istio_iptables_flag_is_accepted_and_the_unimplemented_ones_are_named() {
    let istio = [
        "--native-nftables",
        "--force-apply",
        "--dual-stack",
        "--redirect-dns",
        "--capture-all-dns",
        "--drop-invalid",
        "--run-validation",
        "--skip-rule-apply",
        "--probe-timeout=5s",
        "--iptables-probe-port=15002",
        "--reconcile",
        "--cni-mode=true",
        "--force-iptables-binary=nft",
        "--log_as_json",
        "--log_target=stdout",
        "--log_caller=default",
        "--log_stacktrace_level=default:none",
    ];
    let out = dry_run(&[INJECTED, &istio, &["--dry-run"]].concat());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "# backend nft (--native-nftables), IPv6 on (--dual-stack)"
    );
    assert!(stdout.contains("table ip6 sextant {\n"), "{stdout}");
    assert!(
        stdout.contains("\t\tct state invalid jump mangle-istio-drop\n"),
        "{stdout}"
    );
    for flag in UNIMPLEMENTED {
        let warning = format!("warning: {flag} is not implemented: ");
        assert!(stderr.contains(&warning), "no {warning:?} in:\n{stderr}");
    }
    let warnings = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .count();
    assert_eq!(warnings, UNIMPLEMENTED.len(), "{stderr}");

    // Istio's variables (a Pod's ProxyMetadata reaches istio-init as its environment).
    let out = Command::new(sextant_bin())
        .args(
            [
                &["iptables"],
                INJECTED,
                &["--dry-run", "--backend", "iptables"],
            ]
            .concat(),
        )
        .envs([("ISTIO_META_DNS_CAPTURE", "true"), ("INVALID_DROP", "true")])
        .envs([
            ("ISTIO_DUAL_STACK", "true"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "1000"),
        ])
        .output()
        .expect("run sextant");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("# backend iptables (--backend iptables), IPv6 on (--dual-stack)\n")
    );
    assert!(stdout.contains(
        "-A PREROUTING -m conntrack --ctstate INVALID -m comment --comment sextant -j ISTIO_DROP\n"
    ));
    for warning in [
        "--redirect-dns is not",
        "$ISTIO_OUTBOUND_OWNER_GROUPS (\"1000\") is not",
    ] {
        assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");
    }
}

#[test]
fn dry_run_first_line_says_which_backend_and_ipv6_were_chosen_and_why() {
    let out = dry_run(&["--dry-run", "--backend", "iptables", "--ipv6", "on"]);
    let first = text(&out.stdout).lines().next().map(String::from);
    let expected = "# backend iptables (--backend iptables), IPv6 on (--ipv6 on)";
    assert_eq!(first.as_deref(), Some(expected), "{}", text(&out.stderr));

    let dir = fake_tools("auto", &[("nft", "exit 0")]);
    let out = Command::new(sextant_bin())
        .args(["iptables", "--dry-run", "--ipv6", "off", "--dual-stack"])
        .env("PATH", &dir)
        .output()
        .expect("run sextant");
    let _ = std::fs::remove_dir_all(&dir);
    let first = text(&out.stdout).lines().next().map(String::from);
    let expected = format!(
        "# backend nft (--backend auto: no iptables-restore on PATH, {}/nft is), \
         IPv6 off (--ipv6 off, over --dual-stack)",
        dir.display()
    );
    assert_eq!(first, Some(expected), "{}", text(&out.stderr));
}

#[test]
fn automatic_ipv6_names_the_address_it_found_or_says_there_is_none() {
    let Some(ns) = Netns::create(&[]) else {
        return;
    };
    let first_line = |ns: &Netns| {
        let stdout = ns.capture(&["--dry-run", "--backend", "nft"]);
        stdout.lines().next().unwrap_or_default().to_string()
    };
    let none = "# backend nft (--backend nft), \
                IPv6 off (--ipv6 auto: no IPv6 address here but loopback and link-local)";
    assert_eq!(first_line(&ns), none);
    ns.read(
        "ip",
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    ns.read(
        "ip",
        &["-6", "addr", "add", "fd00::10/64", "dev", "v0", "nodad"],
    );
    let found = "# backend nft (--backend nft), IPv6 on (--ipv6 auto: fd00::10 on v0)";
    assert_eq!(first_line(&ns), found);
}

#[test]
fn automatic_backend_without_either_tool_names_both() {
    let empty = fake_tools("empty-path", &[]);
    let out = Command::new(sextant_bin())
        .args(["iptables", "--dry-run"])
        .env("PATH", &empty)
        .output()
        .expect("run sextant");
    let _ = std::fs::remove_dir(&empty);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("neither iptables-restore nor nft"),
        "{stderr}"
    );
}

/// A directory of shell scripts (name, body), for `PATH`.
fn fake_tools(name: &str, tools: &[(&str, &str)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("sxt-ipt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    for (tool, body) in tools {
        let fake = dir.join(tool);
        std::fs::write(&fake, format!("#!/bin/sh\n{body}\n")).expect("write the fake tool");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// An `iptables-restore` that exits without reading its input, as a tool that fails early
/// may.
const FAILING_RESTORE: (&str, &str) = (
    "iptables-restore",
    "echo 'iptables-restore: line 7 failed' >&2\nexit 1",
);

#[test]
fn skipping_rule_apply_checks_the_flags_and_runs_no_tool() {
    let dir = fake_tools("skip", &[FAILING_RESTORE]);
    let run = |extra: &[&str]| {
        Command::new(sextant_bin())
            .args([&["iptables", "--backend", "iptables"], extra].concat())
            .env("PATH", &dir)
            .output()
            .expect("run sextant")
    };
    // As Istio's injection writes them when istio-cni sets the rules.
    let out = run(&["--run-validation", "--skip-rule-apply"]);
    let bad = run(&["--skip-rule-apply", "-p", "0"]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--skip-rule-apply: the rules are computed, none applied"));
    assert!(stderr.contains("warning: --run-validation is not implemented"));
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[test]
fn a_failing_tool_stops_the_run_with_its_error_and_input() {
    let bin = sextant_bin();
    let dir = fake_tools("failing", &[FAILING_RESTORE]);
    let out = Command::new(bin)
        .args(["iptables", "--backend", "iptables", "--ipv6", "off"])
        .env("PATH", &dir)
        .output()
        .expect("run sextant");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: iptables-restore --noflush failed (exit status: 1): iptables-restore: line 7 failed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("its input was:\n   1  *nat\n"), "{stderr}");
}

#[test]
fn iptables_backend_puts_istio_rules_in_the_namespace_once() {
    let Some(ns) = Netns::create(&["iptables-save", "iptables-restore"]) else {
        return;
    };
    let args = [INJECTED, &["--backend", "iptables", "--ipv6", "auto"]].concat();
    ns.capture(&args);
    let nat = saved_rules(&ns, "iptables-save", "nat");
    // As iptables-save prints Istio's rules: conditions in its own order, `-m tcp` added.
    let expected = [
        "-A PREROUTING -p tcp -m comment --comment sextant -j ISTIO_INBOUND",
        "-A OUTPUT -m comment --comment sextant -j ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ];
    assert_eq!(nat, expected, "the kernel's nat table");
    // A fresh namespace has no IPv6 address but loopback: no IPv6 rules.
    let v6 = ns.read("ip6tables-save", &[]);
    assert!(
        !v6.contains("ISTIO"),
        "IPv6 rules in a namespace without IPv6:\n{v6}"
    );

    ns.capture(&args);
    assert_eq!(
        saved_rules(&ns, "iptables-save", "nat"),
        expected,
        "after a second run"
    );
}

#[test]
fn iptables_backend_with_ipv6_uses_v6_loopback_and_adds_the_passthrough_address() {
    let Some(ns) = Netns::create(&["iptables-save", "ip6tables-save", "ip6tables-restore"]) else {
        return;
    };
    let args = [INJECTED, &["--backend", "iptables", "--ipv6", "on"]].concat();
    ns.capture(&args);
    let first = saved_rules(&ns, "ip6tables-save", "nat");
    ns.capture(&args);
    let nat6 = saved_rules(&ns, "ip6tables-save", "nat");
    assert_eq!(nat6, first, "the IPv6 nat table after a second run");
    for rule in [
        "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN",
        "-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert!(nat6.iter().any(|r| r == rule), "no {rule:?} in {nat6:#?}");
    }
    let jump = "-A OUTPUT -m comment --comment sextant -j ISTIO_OUTPUT";
    let jumps = nat6.iter().filter(|r| *r == jump).count();
    assert_eq!(jumps, 1, "one jump after two runs: {nat6:#?}");
    let lo = ns.read("ip", &["-6", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("inet6 ::6/128"), "no ::6 on lo:\n{lo}");
    assert!(saved_rules(&ns, "iptables-save", "nat").contains(&jump.into()));
}

#[test]
fn tproxy_marks_inbound_and_routes_it_to_loopback_once() {
    let tools = [
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "ip6tables-restore",
    ];
    let Some(ns) = Netns::create(&tools) else {
        return;
    };
    ns.loopback_up();
    let args = [
        INJECTED,
        &["-m", "TPROXY", "--backend", "iptables", "--ipv6", "on"],
    ]
    .concat();
    ns.capture(&args);
    let first = saved_rules(&ns, "iptables-save", "mangle");
    ns.capture(&args);
    let mangle = saved_rules(&ns, "iptables-save", "mangle");
    assert_eq!(mangle, first, "the mangle table after a second run");
    for rule in [
        "-A PREROUTING -p tcp -m comment --comment sextant -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp -m mark --mark 0x539 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY",
        "-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff",
        "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff",
    ] {
        assert!(
            mangle.iter().any(|r| r == rule),
            "no {rule:?} in {mangle:#?}"
        );
    }
    let marks = [
        "-A PREROUTING -p tcp -m mark --mark 0x539 -m comment --comment sextant -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        "-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -m comment --comment sextant -j RETURN",
        "-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -m comment --comment sextant -j MARK --set-xmark 0x53a/0xffffffff",
        "-A OUTPUT -p tcp -m connmark --mark 0x539 -m comment --comment sextant -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
    ];
    for rule in marks {
        let copies = mangle.iter().filter(|r| *r == rule).count();
        assert_eq!(copies, 1, "{rule:?} in {mangle:#?}");
    }
    let mangle6 = saved_rules(&ns, "ip6tables-save", "mangle");
    let tproxy6 = "-A ISTIO_TPROXY ! -d ::1/128 -p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff";
    assert!(
        mangle6.iter().any(|r| r == tproxy6),
        "no {tproxy6:?} in {mangle6:#?}"
    );
    assert_policy_routing_once(&ns);
}

/// One `fwmark 1337 lookup 133` rule per family, and table 133 delivering locally.
fn assert_policy_routing_once(ns: &Netns) {
    for family in ["-4", "-6"] {
        let rules = ns.read("ip", &[family, "rule", "show"]);
        let marked = rules
            .lines()
            .filter(|l| l.contains("fwmark 0x539 lookup 133"))
            .count();
        assert_eq!(marked, 1, "one policy rule after two runs:\n{rules}");
        let routes = ns.read("ip", &[family, "route", "show", "table", "133"]);
        assert!(routes.contains("local default dev lo"), "{routes}");
    }
}

#[test]
fn nft_backend_with_tproxy_and_ipv6_is_accepted_once() {
    let Some(ns) = Netns::create(&["nft"]) else {
        return;
    };
    ns.loopback_up();
    let args = [
        INJECTED,
        &["-m", "TPROXY", "--backend", "nft", "--ipv6", "on"],
    ]
    .concat();
    ns.capture(&args);
    let first = ns.read("nft", &["list", "ruleset"]);
    for line in [
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        "\t\ttype route hook output priority mangle; policy accept;",
        "\t\tmeta l4proto tcp jump mangle-istio-inbound",
        "\t\tip daddr != 127.0.0.1 meta l4proto tcp tproxy to :15006 meta mark set 0x00000539 accept",
        "\t\tip6 daddr != ::1 meta l4proto tcp tproxy to :15006 meta mark set 0x00000539 accept",
        "\t\tmeta l4proto tcp ct state established,related jump mangle-istio-divert",
    ] {
        assert!(first.lines().any(|l| l == line), "no {line:?} in:\n{first}");
    }
    ns.capture(&args);
    assert_eq!(
        ns.read("nft", &["list", "ruleset"]),
        first,
        "after a second run"
    );
    assert_policy_routing_once(&ns);
}

#[test]
fn nft_backend_puts_a_table_of_its_own_in_the_namespace_once() {
    let Some(ns) = Netns::create(&["nft"]) else {
        return;
    };
    let args = [INJECTED, &["--backend", "nft", "--ipv6", "on"]].concat();
    ns.capture(&args);
    let first = ns.read("nft", &["list", "ruleset"]);
    for line in [
        "table ip sextant {",
        "table ip6 sextant {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tmeta l4proto tcp jump istio-inbound",
        "\t\tjump istio-output",
        "\t\tmeta l4proto tcp redirect to :15001",
        "\t\tmeta l4proto tcp redirect to :15006",
        "\t\ttcp dport 15090 return",
        "\t\toifname \"lo\" ip saddr 127.0.0.6 return",
        "\t\toifname \"lo\" ip daddr != 127.0.0.1 tcp dport != 15008 meta skuid 1337 jump istio-in-redirect",
        "\t\tmeta skuid 1337 return",
        "\t\tip daddr 127.0.0.1 return",
        "\t\toifname \"lo\" ip6 saddr ::6 return",
        "\t\tip6 daddr ::1 return",
    ] {
        assert!(first.lines().any(|l| l == line), "no {line:?} in:\n{first}");
    }
    ns.capture(&args);
    assert_eq!(
        ns.read("nft", &["list", "ruleset"]),
        first,
        "after a second run"
    );
}
