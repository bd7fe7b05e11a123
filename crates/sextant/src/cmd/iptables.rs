//! `sextant iptables`: a Pod's init step, as Istio's `istio-iptables`. Sets up the capture
//! rules in the current network namespace (`sextant-capture`), or prints them.

use std::process::ExitCode;

use clap::ValueEnum;
use sextant_capture::{
    Backend, CaptureConfig, Family, Flags, InterceptionMode, Plan,
    apply::{self, ApplyError},
    defaults,
};

/// Arguments of `sextant iptables`: `istio-iptables`' flags and environment variables, so
/// that the arguments Istio's injection gives its init container work unchanged, and
/// Sextant's own `--dry-run`, `--backend` and `--ipv6`. Lists are comma-separated.
/// A flag given twice takes its last value, as with `istio-iptables`. (Declared here rather
/// than in `cli.rs`, which is at its size limit.)
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
    /// Print the commands and the rules for the chosen backend, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// How the rules are applied: `iptables-restore` (Istio's chains), `nft` (a table
    /// `sextant` per family), or `auto`: iptables-restore if it is on PATH, else nft.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Whether IPv6 rules are applied too; `auto`: when the namespace has an IPv6 address
    /// other than loopback and link-local on an interface other than `lo`.
    #[arg(long, value_enum, default_value_t = Ipv6Arg::Auto)]
    pub ipv6: Ipv6Arg,
    /// Istio's log level flag, accepted and ignored.
    #[arg(long = "log_output_level", hide = true)]
    pub log_output_level: Option<String>,
    /// Istio's JSON log flag, accepted and ignored.
    #[arg(long = "log_as_json", hide = true)]
    pub log_as_json: bool,
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

pub fn run(args: IptablesArgs) -> ExitCode {
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
        ipv6,
        log_output_level: _,
        log_as_json: _,
    } = args;
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
    };
    let config = match CaptureConfig::parse(&flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let wanted = match backend {
        BackendArg::Auto => None,
        BackendArg::Iptables => Some(Backend::Iptables),
        BackendArg::Nft => Some(Backend::Nft),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let backend = match apply::choose_backend(wanted, &path) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("error: {error} (--backend auto)");
            return ExitCode::FAILURE;
        }
    };
    let ipv6 = match ipv6 {
        Ipv6Arg::On => true,
        Ipv6Arg::Off => false,
        Ipv6Arg::Auto => apply::namespace_has_ipv6(),
    };
    let families: &[Family] = if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    eprintln!("sextant iptables: {}", summary(&config, backend, ipv6));
    let plan = Plan::new(&config, backend, families);
    if dry_run {
        super::out(format_args!("{plan}"));
        return ExitCode::SUCCESS;
    }
    match apply::run(&plan) {
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

/// The effective configuration, in one line.
fn summary(config: &CaptureConfig, backend: Backend, ipv6: bool) -> String {
    let mode = match config.inbound_mode {
        InterceptionMode::Redirect => "REDIRECT",
        InterceptionMode::Tproxy => "TPROXY",
    };
    let backend = match backend {
        Backend::Iptables => "iptables",
        Backend::Nft => "nft",
    };
    format!(
        "outbound to {}, inbound ({mode}) to {}, proxy uids {:?} gids {:?}, backend {backend}, IPv6 {}",
        config.outbound_port,
        config.inbound_capture_port,
        config.proxy_uids,
        config.proxy_gids,
        if ipv6 { "on" } else { "off" },
    )
}
