//! `sextant iptables`: a Pod's init step, as Istio's `istio-iptables`. Removes what earlier
//! runs left and sets up the capture rules in the current network namespace
//! (`sextant-capture`), or prints them.
//!
//! Every flag of `istio-iptables` (tools/istio-iptables/pkg/cmd/root.go) is accepted, with its
//! environment variables. Those Sextant does not implement (DNS capture, validation, owner
//! groups, the CNI's) print a warning naming them and change nothing else, so that Istio's
//! init arguments run unchanged and nobody mistakes them for done; `--network-namespace` is
//! refused, as applying the rules here instead would capture the wrong namespace.

use std::process::ExitCode;

use clap::{ValueEnum, builder::BoolishValueParser};
use sextant_capture::{
    Backend, CaptureConfig, Family, Flags, InterceptionMode, Plan,
    apply::{self, ApplyError, NamespaceIpv6},
    defaults,
};

/// Arguments of `sextant iptables`: `istio-iptables`' flags and environment variables, so
/// that the arguments Istio's injection gives its init container work unchanged, and
/// Sextant's own `--backend` and `--ipv6`. Lists are comma-separated. A flag given twice
/// takes its last value, and a boolean flag takes `--flag=false`, as with `istio-iptables`.
/// (Declared here rather than in `cli.rs`, which is at its size limit.)
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct IptablesArgs {
    /// Envoy's outbound listener, where outbound TCP is redirected.
    #[arg(short = 'p', long, default_value = defaults::ENVOY_PORT)]
    pub envoy_port: String,
    /// Envoy's inbound listener, where inbound TCP is redirected.
    #[arg(short = 'z', long, env = "INBOUND_CAPTURE_PORT", default_value = defaults::INBOUND_CAPTURE_PORT)]
    pub inbound_capture_port: String,
    /// The tunnel port, never redirected inbound.
    #[arg(short = 'e', long, env = "INBOUND_TUNNEL_PORT", default_value = defaults::INBOUND_TUNNEL_PORT)]
    pub inbound_tunnel_port: String,
    /// The proxy's users (their traffic is never captured again).
    #[arg(short = 'u', long, env = "PROXY_UID", default_value = defaults::PROXY_UID)]
    pub proxy_uid: String,
    /// The proxy's groups (default: the users' ids).
    #[arg(short = 'g', long, env = "PROXY_GID", default_value = "")]
    pub proxy_gid: String,
    /// How inbound connections are captured: REDIRECT or TPROXY.
    #[arg(short = 'm', long = "istio-inbound-interception-mode", env = "ISTIO_INBOUND_INTERCEPTION_MODE", default_value = defaults::INBOUND_INTERCEPTION_MODE)]
    pub inbound_interception_mode: String,
    /// The packet mark of TPROXY-captured connections.
    #[arg(short = 't', long = "istio-inbound-tproxy-mark", env = "ISTIO_INBOUND_TPROXY_MARK", default_value = defaults::INBOUND_TPROXY_MARK)]
    pub inbound_tproxy_mark: String,
    /// The routing table TPROXY's marked packets are looked up in.
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table", env = "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", default_value = defaults::INBOUND_TPROXY_ROUTE_TABLE)]
    pub inbound_tproxy_route_table: String,
    /// Outbound ranges (CIDR) captured: `*` for all, empty for none.
    #[arg(short = 'i', long = "istio-service-cidr", env = "ISTIO_SERVICE_CIDR", default_value = defaults::SERVICE_CIDR)]
    pub service_cidr: String,
    /// Outbound ranges (CIDR) never captured.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub service_exclude_cidr: String,
    /// Inbound ports captured: `*` for all, empty for none.
    #[arg(short = 'b', long = "istio-inbound-ports", env = "ISTIO_INBOUND_PORTS", default_value = defaults::INBOUND_PORTS)]
    pub inbound_ports: String,
    /// Inbound ports never captured, when all are (`-b '*'`).
    #[arg(short = 'd', long = "istio-local-exclude-ports", env = "ISTIO_LOCAL_EXCLUDE_PORTS", default_value = defaults::LOCAL_EXCLUDE_PORTS)]
    pub local_exclude_ports: String,
    /// Outbound ports captured whatever the destination.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        visible_alias = "istio-include-outbound-ports",
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub outbound_ports: String,
    /// Outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub local_outbound_ports_exclude: String,
    /// Interfaces whose traffic is never captured.
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        env = "ISTIO_EXCLUDE_INTERFACES",
        default_value = ""
    )]
    pub exclude_interfaces: String,
    /// Interfaces whose inbound traffic is captured as outbound (a VM's, on KubeVirt).
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        env = "KUBE_VIRT_INTERFACES",
        default_value = ""
    )]
    pub kube_virt_interfaces: String,
    /// Print what would run (the first line says which backend and IPv6 choice were made
    /// and why), and change nothing.
    #[arg(short = 'n', long, env = "DRY_RUN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub dry_run: Option<bool>,
    /// How the rules are applied: `iptables-restore` (Istio's chains), `nft` (a table
    /// `sextant` per family), or `auto`: iptables-restore if it is on PATH, else nft.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Istio's nftables mode: the same as `--backend nft`.
    #[arg(long, env = "NATIVE_NFTABLES", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub native_nftables: Option<bool>,
    /// Whether IPv6 rules are applied too; `auto`: when the namespace has an IPv6 address
    /// other than loopback and link-local on an interface other than `lo`, or with
    /// `--dual-stack`.
    #[arg(long, value_enum, default_value_t = Ipv6Arg::Auto)]
    pub ipv6: Ipv6Arg,
    /// IPv6 rules beside IPv4 ones (`--ipv6 on`, unless `--ipv6 off` is given); also
    /// `$ISTIO_DUAL_STACK`.
    #[arg(long, env = "DUAL_STACK", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub dual_stack: Option<bool>,
    /// Drop packets conntrack finds invalid (out of the TCP window) instead of letting the
    /// kernel reset the connection; also `$INVALID_DROP`.
    #[arg(long, env = "DROP_INVALID", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub drop_invalid: Option<bool>,
    /// Check the flags and compute the rules, but apply nothing.
    #[arg(long, env = "SKIP_RULE_APPLY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub skip_rule_apply: Option<bool>,
    /// Only remove what earlier runs left.
    #[arg(long, env = "CLEANUP_ONLY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub cleanup_only: Option<bool>,
    /// Always so: every run removes what earlier runs left and applies its rules.
    #[arg(long, env = "RECONCILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub reconcile: Option<bool>,
    /// Always so: every run applies its rules.
    #[arg(long, env = "FORCE_APPLY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub force_apply: Option<bool>,
    /// Not implemented (warned): DNS is not redirected to the agent; also
    /// `$ISTIO_META_DNS_CAPTURE`.
    #[arg(long, env = "REDIRECT_DNS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub redirect_dns: Option<bool>,
    /// Not implemented (warned): no DNS traffic is captured.
    #[arg(long, env = "CAPTURE_ALL_DNS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub capture_all_dns: Option<bool>,
    /// Not implemented (warned): the rules are not validated.
    #[arg(long, env = "RUN_VALIDATION", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub run_validation: Option<bool>,
    /// Not implemented (warned): validation's probe port.
    #[arg(long, env = "IPTABLES_PROBE_PORT")]
    pub iptables_probe_port: Option<u16>,
    /// Not implemented (warned): validation's timeout.
    #[arg(long, env = "PROBE_TIMEOUT")]
    pub probe_timeout: Option<String>,
    /// Not implemented (warned): Istio's CNI mode, which only changes iptables' lock.
    #[arg(long, env = "CNI_MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub cni_mode: Option<bool>,
    /// Not implemented (warned): `legacy` or `nft`; the iptables-restore on PATH is used.
    #[arg(long, env = "FORCE_IPTABLES_BINARY", default_value = "")]
    pub force_iptables_binary: String,
    /// Refused when not empty: run `sextant iptables` inside the namespace instead.
    #[arg(long, env = "NETWORK_NAMESPACE", default_value = "")]
    pub network_namespace: String,
    /// Istio's log flags, accepted and ignored.
    #[arg(long = "log_output_level", hide = true)]
    pub log_output_level: Option<String>,
    /// Istio's log flag, accepted and ignored.
    #[arg(long = "log_as_json", hide = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub log_as_json: Option<bool>,
    /// Istio's log flag, accepted and ignored.
    #[arg(long = "log_target", hide = true)]
    pub log_target: Vec<String>,
    /// Istio's log flag, accepted and ignored.
    #[arg(long = "log_stacktrace_level", hide = true)]
    pub log_stacktrace_level: Option<String>,
    /// Istio's log flag, accepted and ignored.
    #[arg(long = "log_caller", hide = true)]
    pub log_caller: Option<String>,
}

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// iptables-restore if on PATH, else nft.
    Auto,
    /// iptables-restore and ip6tables-restore.
    Iptables,
    /// nft.
    Nft,
}

/// `--ipv6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Arg {
    /// When the namespace has IPv6.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// A choice made for the run, and why: the flag, or what was found.
struct Choice<T> {
    value: T,
    why: String,
}

/// Why the run stops before applying anything.
struct Stop {
    message: String,
    /// 2 for flags that cannot be used, as clap's own usage errors; 1 for the machine.
    code: u8,
}

impl Stop {
    fn usage(message: String) -> Stop {
        Stop { message, code: 2 }
    }
}

/// Istio's variables for flags that also read a second name, and its variables without a
/// flag.
mod istio_env {
    pub const DNS_CAPTURE: &str = "ISTIO_META_DNS_CAPTURE";
    pub const INVALID_DROP: &str = "INVALID_DROP";
    pub const DUAL_STACK: &str = "ISTIO_DUAL_STACK";
    pub const OWNER_GROUPS: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
    pub const OWNER_GROUPS_EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
    pub const IPV4_LOOPBACK_CIDR: &str = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
}

pub fn run(args: IptablesArgs) -> ExitCode {
    match prepare(args) {
        Ok(Prepared::Done) => ExitCode::SUCCESS,
        Ok(Prepared::Apply(plan)) => apply(&plan),
        Err(stop) => {
            eprintln!("error: {}", stop.message);
            ExitCode::from(stop.code)
        }
    }
}

/// What is left to do once the flags are checked and the plan made.
enum Prepared {
    /// Nothing (printed, or `--skip-rule-apply`).
    Done,
    /// Run the plan.
    Apply(Plan),
}

fn prepare(args: IptablesArgs) -> Result<Prepared, Stop> {
    let IptablesArgs {
        envoy_port,
        inbound_capture_port,
        inbound_tunnel_port,
        proxy_uid,
        proxy_gid,
        inbound_interception_mode,
        inbound_tproxy_mark,
        inbound_tproxy_route_table,
        service_cidr,
        service_exclude_cidr,
        inbound_ports,
        local_exclude_ports,
        outbound_ports,
        local_outbound_ports_exclude,
        exclude_interfaces,
        kube_virt_interfaces,
        dry_run,
        backend,
        native_nftables,
        ipv6,
        dual_stack,
        drop_invalid,
        skip_rule_apply,
        cleanup_only,
        // Every run reconciles and applies: these ask for what is always done.
        reconcile: _,
        force_apply: _,
        redirect_dns,
        capture_all_dns,
        run_validation,
        iptables_probe_port,
        probe_timeout,
        cni_mode,
        force_iptables_binary,
        network_namespace,
        log_output_level: _,
        log_as_json: _,
        log_target: _,
        log_stacktrace_level: _,
        log_caller: _,
    } = args;
    if !network_namespace.is_empty() {
        return Err(Stop::usage(format!(
            "--network-namespace {network_namespace:?}: not supported; run `sextant iptables` \
             inside that namespace (`nsenter --net=PATH sextant iptables ...`) instead"
        )));
    }
    if !matches!(force_iptables_binary.as_str(), "" | "legacy" | "nft") {
        return Err(Stop::usage(format!(
            "--force-iptables-binary: {force_iptables_binary:?} is not `legacy` or `nft`"
        )));
    }
    let on = |flag: Option<bool>| flag.unwrap_or(false);
    let (dry_run, skip_rule_apply, cleanup_only) =
        (on(dry_run), on(skip_rule_apply), on(cleanup_only));
    let redirect_dns = or_env(redirect_dns, istio_env::DNS_CAPTURE)?;
    let drop_invalid = or_env(drop_invalid, istio_env::INVALID_DROP)?;
    let dual_stack = or_env(dual_stack, istio_env::DUAL_STACK)?;
    let unimplemented = Unimplemented {
        redirect_dns,
        capture_all_dns: on(capture_all_dns),
        run_validation: on(run_validation),
        iptables_probe_port: iptables_probe_port.is_some(),
        probe_timeout: probe_timeout.is_some(),
        cni_mode: on(cni_mode),
        force_iptables_binary: !force_iptables_binary.is_empty(),
    };
    for warning in unimplemented.warnings(|name| std::env::var(name).ok()) {
        eprintln!("warning: {warning}");
    }
    let flags = Flags {
        envoy_port,
        inbound_capture_port,
        inbound_tunnel_port,
        proxy_uid,
        proxy_gid,
        inbound_interception_mode,
        inbound_tproxy_mark,
        inbound_tproxy_route_table,
        service_cidr,
        service_exclude_cidr,
        inbound_ports,
        local_exclude_ports,
        outbound_ports,
        local_outbound_ports_exclude,
        exclude_interfaces,
        kube_virt_interfaces,
        drop_invalid,
    };
    let config = CaptureConfig::parse(&flags).map_err(|e| Stop::usage(e.to_string()))?;
    let (plan, choices) = if cleanup_only {
        let line = "cleanup only (--cleanup-only): what earlier runs left is removed, in every \
                    backend and family, and nothing is applied";
        eprintln!("sextant iptables: {line}");
        (Plan::cleanup_only(), line.to_string())
    } else {
        let backend = choose_backend(backend, on(native_nftables))?;
        let ipv6 = choose_ipv6(ipv6, dual_stack);
        let families: &[Family] = if ipv6.value {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        };
        let choices = format!(
            "backend {} ({}), IPv6 {} ({})",
            backend.value.name(),
            backend.why,
            if ipv6.value { "on" } else { "off" },
            ipv6.why
        );
        eprintln!("sextant iptables: {choices}; {}", summary(&config));
        (Plan::new(&config, backend.value, families), choices)
    };
    if dry_run {
        super::out(format_args!("# {choices}\n{plan}"));
        return Ok(Prepared::Done);
    }
    if skip_rule_apply {
        eprintln!("sextant iptables: --skip-rule-apply: the rules are computed, none applied");
        return Ok(Prepared::Done);
    }
    Ok(Prepared::Apply(plan))
}

fn apply(plan: &Plan) -> ExitCode {
    match apply::run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            if let ApplyError::Failed {
                stdin: Some(input), ..
            } = &error
            {
                eprintln!("its input was:");
                for (n, line) in input.lines().enumerate() {
                    eprintln!("{:4}  {line}", n + 1);
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// A boolean flag's value, else Istio's second variable for it (read as clap reads the
/// first), else false.
fn or_env(flag: Option<bool>, variable: &str) -> Result<bool, Stop> {
    if let Some(value) = flag {
        return Ok(value);
    }
    let Some(text) = std::env::var_os(variable) else {
        return Ok(false);
    };
    let text = text.to_string_lossy();
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Ok(true),
        "n" | "no" | "f" | "false" | "off" | "0" | "" => Ok(false),
        _ => Err(Stop::usage(format!(
            "${variable}: {text:?} is not true or false"
        ))),
    }
}

fn choose_backend(backend: BackendArg, native_nftables: bool) -> Result<Choice<Backend>, Stop> {
    let chosen = |value, why: &str| {
        let why = why.to_string();
        Ok(Choice { value, why })
    };
    match (backend, native_nftables) {
        (BackendArg::Iptables, true) => Err(Stop::usage(
            "--native-nftables asks for nft, --backend iptables for iptables: give one".into(),
        )),
        (BackendArg::Iptables, false) => chosen(Backend::Iptables, "--backend iptables"),
        (BackendArg::Nft, _) => chosen(Backend::Nft, "--backend nft"),
        (BackendArg::Auto, true) => chosen(Backend::Nft, "--native-nftables"),
        (BackendArg::Auto, false) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let detected = apply::detect_backend(&path).map_err(|error| Stop {
                message: format!("{error} (--backend auto)"),
                code: 1,
            })?;
            let program = detected.program.display();
            let why = match detected.backend {
                Backend::Iptables => format!("--backend auto: {program} is on PATH"),
                Backend::Nft => {
                    format!("--backend auto: no iptables-restore on PATH, {program} is")
                }
            };
            let value = detected.backend;
            Ok(Choice { value, why })
        }
    }
}

fn choose_ipv6(ipv6: Ipv6Arg, dual_stack: bool) -> Choice<bool> {
    let chosen = |value, why: &str| {
        let why = why.to_string();
        Choice { value, why }
    };
    match (ipv6, dual_stack) {
        (Ipv6Arg::On, _) => chosen(true, "--ipv6 on"),
        (Ipv6Arg::Off, false) => chosen(false, "--ipv6 off"),
        (Ipv6Arg::Off, true) => chosen(false, "--ipv6 off, over --dual-stack"),
        (Ipv6Arg::Auto, true) => chosen(true, "--dual-stack"),
        (Ipv6Arg::Auto, false) => match apply::namespace_ipv6() {
            NamespaceIpv6::Address(found) => Choice {
                value: true,
                why: format!("--ipv6 auto: {} on {}", found.address, found.interface),
            },
            NamespaceIpv6::LocalOnly => chosen(
                false,
                "--ipv6 auto: no IPv6 address here but loopback and link-local",
            ),
            NamespaceIpv6::Unsupported => chosen(
                false,
                "--ipv6 auto: the kernel has no IPv6 (no /proc/net/if_inet6)",
            ),
        },
    }
}

/// The `istio-iptables` options given that Sextant does not implement.
struct Unimplemented {
    redirect_dns: bool,
    capture_all_dns: bool,
    run_validation: bool,
    iptables_probe_port: bool,
    probe_timeout: bool,
    cni_mode: bool,
    force_iptables_binary: bool,
}

impl Unimplemented {
    /// One warning per option, naming it; `env` reads Istio's variables that have no flag.
    fn warnings(&self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let Unimplemented {
            redirect_dns,
            capture_all_dns,
            run_validation,
            iptables_probe_port,
            probe_timeout,
            cni_mode,
            force_iptables_binary,
        } = *self;
        let flags = [
            (
                redirect_dns,
                "--redirect-dns",
                "DNS is not captured; queries go to the Pod's resolver, not to the agent (15053)",
            ),
            (
                capture_all_dns,
                "--capture-all-dns",
                "DNS is not captured; queries go to the Pod's resolver, not to the agent (15053)",
            ),
            (
                run_validation,
                "--run-validation",
                "the rules are not validated",
            ),
            (
                iptables_probe_port,
                "--iptables-probe-port",
                "it is --run-validation's, which is not implemented",
            ),
            (
                probe_timeout,
                "--probe-timeout",
                "it is --run-validation's, which is not implemented",
            ),
            (
                cni_mode,
                "--cni-mode",
                "ignored (in Istio it only changes iptables' lock)",
            ),
            (
                force_iptables_binary,
                "--force-iptables-binary",
                "the iptables-restore on PATH is used",
            ),
        ];
        let mut warnings: Vec<String> = flags
            .into_iter()
            .filter(|(given, _, _)| *given)
            .map(|(_, flag, effect)| format!("{flag} is not implemented: {effect}"))
            .collect();
        let variables = [
            (
                istio_env::OWNER_GROUPS,
                "*",
                "the traffic of every group is captured",
            ),
            (
                istio_env::OWNER_GROUPS_EXCLUDE,
                "",
                "the traffic of every group is captured",
            ),
            (
                istio_env::IPV4_LOOPBACK_CIDR,
                "127.0.0.1/32",
                "127.0.0.1/32 is used",
            ),
        ];
        for (variable, default, effect) in variables {
            match env(variable) {
                Some(value) if !value.trim().is_empty() && value.trim() != default => {
                    warnings.push(format!(
                        "${variable} ({value:?}) is not implemented: {effect}"
                    ));
                }
                _ => {}
            }
        }
        warnings
    }
}

/// The effective configuration, in one line.
fn summary(config: &CaptureConfig) -> String {
    let mode = match config.inbound_mode {
        InterceptionMode::Redirect => "REDIRECT",
        InterceptionMode::Tproxy => "TPROXY",
    };
    format!(
        "outbound to {}, inbound ({mode}) to {}, proxy uids {:?} gids {:?}, drop invalid {}",
        config.outbound_port,
        config.inbound_capture_port,
        config.proxy_uids,
        config.proxy_gids,
        config.drop_invalid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn each_unimplemented_option_given_is_named_once_and_the_rest_are_silent() {
        let all = Unimplemented {
            redirect_dns: true,
            capture_all_dns: true,
            run_validation: true,
            iptables_probe_port: true,
            probe_timeout: true,
            cni_mode: true,
            force_iptables_binary: true,
        };
        let warnings = all.warnings(none);
        for flag in [
            "--redirect-dns ",
            "--capture-all-dns ",
            "--run-validation ",
            "--iptables-probe-port ",
            "--probe-timeout ",
            "--cni-mode ",
            "--force-iptables-binary ",
        ] {
            let naming = warnings.iter().filter(|w| w.starts_with(flag)).count();
            assert_eq!(naming, 1, "{flag} in {warnings:#?}");
        }
        let nothing = Unimplemented {
            redirect_dns: false,
            capture_all_dns: false,
            run_validation: false,
            iptables_probe_port: false,
            probe_timeout: false,
            cni_mode: false,
            force_iptables_binary: false,
        };
        assert_eq!(nothing.warnings(none), Vec::<String>::new());
    }

    #[test]
    fn istio_variables_without_a_flag_warn_only_when_they_ask_for_something() {
        let nothing = Unimplemented {
            redirect_dns: false,
            capture_all_dns: false,
            run_validation: false,
            iptables_probe_port: false,
            probe_timeout: false,
            cni_mode: false,
            force_iptables_binary: false,
        };
        let defaults = |name: &str| match name {
            istio_env::OWNER_GROUPS => Some("*".to_string()),
            istio_env::IPV4_LOOPBACK_CIDR => Some("127.0.0.1/32".to_string()),
            _ => Some(String::new()),
        };
        assert_eq!(nothing.warnings(defaults), Vec::<String>::new());
        let groups = |name: &str| (name == istio_env::OWNER_GROUPS).then(|| "1000".to_string());
        assert_eq!(
            nothing.warnings(groups),
            vec![
                "$ISTIO_OUTBOUND_OWNER_GROUPS (\"1000\") is not implemented: the traffic of every \
                 group is captured"
                    .to_string()
            ]
        );
    }
}
