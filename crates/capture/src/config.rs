//! `istio-iptables`' flags, as given and as checked.

use crate::cidr::Cidr;

/// The defaults of [`Flags`]: those of a Pod injected with Istio's default values (every
/// outbound range and inbound port captured; Envoy's Prometheus, health and agent ports
/// 15090, 15021 and 15020 left alone).
pub mod defaults {
    /// `-p`: Envoy's outbound listener.
    pub const ENVOY_PORT: &str = "15001";
    /// `-z`: Envoy's inbound listener.
    pub const INBOUND_CAPTURE_PORT: &str = "15006";
    /// `-e`: the HBONE tunnel port, never captured inbound.
    pub const INBOUND_TUNNEL_PORT: &str = "15008";
    /// `-u`: the proxy's user.
    pub const PROXY_UID: &str = "1337";
    /// `-m`.
    pub const INBOUND_INTERCEPTION_MODE: &str = "REDIRECT";
    /// `-t`: the mark TPROXY puts on inbound packets.
    pub const INBOUND_TPROXY_MARK: &str = "1337";
    /// `-r`: the routing table that sends marked packets to the loopback interface.
    pub const INBOUND_TPROXY_ROUTE_TABLE: &str = "133";
    /// `-i`.
    pub const SERVICE_CIDR: &str = "*";
    /// `-b`.
    pub const INBOUND_PORTS: &str = "*";
    /// `-d`.
    pub const LOCAL_EXCLUDE_PORTS: &str = "15090,15021,15020";
}

/// `istio-iptables`' flags as given: each the text of its flag, comma lists unsplit, so that
/// Istio's init-container arguments (empty values and `*` included) mean what they mean to
/// Istio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags {
    /// `-p/--envoy-port`.
    pub envoy_port: String,
    /// `-z/--inbound-capture-port`.
    pub inbound_capture_port: String,
    /// `-e/--inbound-tunnel-port`.
    pub inbound_tunnel_port: String,
    /// `-u/--proxy-uid`: a comma list; empty is 1337.
    pub proxy_uid: String,
    /// `-g/--proxy-gid`: a comma list; empty is the same as `proxy_uid`.
    pub proxy_gid: String,
    /// `-m/--istio-inbound-interception-mode`: `REDIRECT` (or empty) or `TPROXY`.
    pub inbound_interception_mode: String,
    /// `-t/--istio-inbound-tproxy-mark`.
    pub inbound_tproxy_mark: String,
    /// `-r/--istio-inbound-tproxy-route-table`.
    pub inbound_tproxy_route_table: String,
    /// `-i/--istio-service-cidr`: outbound ranges captured; `*` for all, empty for none.
    pub service_cidr: String,
    /// `-x/--istio-service-exclude-cidr`: outbound ranges never captured.
    pub service_exclude_cidr: String,
    /// `-b/--istio-inbound-ports`: inbound ports captured; `*` for all, empty for none.
    pub inbound_ports: String,
    /// `-d/--istio-local-exclude-ports`: inbound ports left alone when `inbound_ports` is `*`.
    pub local_exclude_ports: String,
    /// `-q/--istio-outbound-ports`: outbound ports captured whatever their destination.
    pub outbound_ports: String,
    /// `-o/--istio-local-outbound-ports-exclude`: outbound ports never captured.
    pub local_outbound_ports_exclude: String,
    /// `-c/--istio-exclude-interfaces`: interfaces whose traffic is never captured.
    pub exclude_interfaces: String,
    /// `-k/--kube-virt-interfaces`: interfaces whose inbound traffic is treated as outbound.
    pub kube_virt_interfaces: String,
    /// `--drop-invalid`: drop packets conntrack finds invalid instead of letting the kernel
    /// answer them with a reset.
    pub drop_invalid: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            envoy_port: defaults::ENVOY_PORT.into(),
            inbound_capture_port: defaults::INBOUND_CAPTURE_PORT.into(),
            inbound_tunnel_port: defaults::INBOUND_TUNNEL_PORT.into(),
            proxy_uid: defaults::PROXY_UID.into(),
            proxy_gid: String::new(),
            inbound_interception_mode: defaults::INBOUND_INTERCEPTION_MODE.into(),
            inbound_tproxy_mark: defaults::INBOUND_TPROXY_MARK.into(),
            inbound_tproxy_route_table: defaults::INBOUND_TPROXY_ROUTE_TABLE.into(),
            service_cidr: defaults::SERVICE_CIDR.into(),
            service_exclude_cidr: String::new(),
            inbound_ports: defaults::INBOUND_PORTS.into(),
            local_exclude_ports: defaults::LOCAL_EXCLUDE_PORTS.into(),
            outbound_ports: String::new(),
            local_outbound_ports_exclude: String::new(),
            exclude_interfaces: String::new(),
            kube_virt_interfaces: String::new(),
            drop_invalid: false,
        }
    }
}

/// How inbound connections reach Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterceptionMode {
    /// NAT to the inbound port: Envoy sees the original destination through `SO_ORIGINAL_DST`.
    Redirect,
    /// TPROXY in the mangle table, with policy routing to the loopback interface: Envoy sees
    /// the original source address too.
    Tproxy,
}

/// Outbound address ranges to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// `*`: every destination.
    All,
    /// These ranges only; none when empty.
    Only(Vec<Cidr>),
}

/// Inbound ports to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortList {
    /// `*`: every port but the excluded ones.
    All,
    /// These ports only; no inbound capture when empty.
    Only(Vec<u16>),
}

impl PortList {
    /// Whether any inbound traffic is captured.
    pub fn is_empty(&self) -> bool {
        matches!(self, PortList::Only(ports) if ports.is_empty())
    }
}

/// The capture a Pod asks for, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Envoy's outbound listener (15001).
    pub outbound_port: u16,
    /// Envoy's inbound listener (15006).
    pub inbound_capture_port: u16,
    /// The tunnel port (15008), never sent to the inbound listener.
    pub inbound_tunnel_port: u16,
    /// Users whose traffic is the proxy's own, never captured again.
    pub proxy_uids: Vec<u32>,
    /// Groups whose traffic is the proxy's own.
    pub proxy_gids: Vec<u32>,
    /// How inbound connections are captured.
    pub inbound_mode: InterceptionMode,
    /// The packet mark of TPROXY-captured connections.
    pub tproxy_mark: u32,
    /// The routing table that delivers marked packets locally.
    pub tproxy_route_table: u32,
    /// Outbound destinations captured.
    pub outbound_include: Ranges,
    /// Outbound destinations never captured (checked before `outbound_include`).
    pub outbound_exclude: Vec<Cidr>,
    /// Inbound ports captured.
    pub inbound_include: PortList,
    /// Inbound ports left alone when every port is captured.
    pub inbound_exclude: Vec<u16>,
    /// Outbound ports captured whatever the destination.
    pub outbound_ports_include: Vec<u16>,
    /// Outbound ports never captured.
    pub outbound_ports_exclude: Vec<u16>,
    /// Interfaces whose traffic is never captured.
    pub exclude_interfaces: Vec<String>,
    /// Interfaces whose inbound traffic is captured as outbound (`-k`, for VMs on the Pod).
    pub reroute_interfaces: Vec<String>,
    /// Whether packets conntrack finds invalid (out of the TCP window) are dropped, so that
    /// they do not reset the connection.
    pub drop_invalid: bool,
}

impl Default for CaptureConfig {
    /// The configuration of [`Flags::default`].
    fn default() -> Self {
        CaptureConfig::parse(&Flags::default()).expect("the default flags are valid")
    }
}

/// A flag whose value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {problem}")]
pub struct FlagError {
    /// The flag, short and long (`-d/--istio-local-exclude-ports`).
    pub flag: &'static str,
    /// What is wrong with its value.
    pub problem: Problem,
}

/// What is wrong with a flag's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    /// An item is not a port number.
    #[error("{0:?} is not a port (1-65535)")]
    Port(String),
    /// An item is not a number of the kind the flag takes.
    #[error("{item:?} is not {what}")]
    Number {
        /// The item as given.
        item: String,
        /// What it should be (`a user id`).
        what: &'static str,
    },
    /// An item is not an address range.
    #[error("{item:?} is not a CIDR range: {reason}")]
    Cidr {
        /// The item as given.
        item: String,
        /// Why.
        reason: String,
    },
    /// An item is not an interface name.
    #[error("{0:?} is not an interface name (1-15 of A-Z a-z 0-9 . _ - @)")]
    Interface(String),
    /// `*` in a list with other items.
    #[error("`*` stands for everything and cannot be listed with other items ({0:?})")]
    WildcardInList(String),
    /// `*` where it means nothing.
    #[error("`*` is not accepted here")]
    Wildcard,
    /// Not an interception mode.
    #[error("{0:?} is not an interception mode (REDIRECT or TPROXY)")]
    Mode(String),
}

const ENVOY_PORT: &str = "-p/--envoy-port";
const INBOUND_CAPTURE_PORT: &str = "-z/--inbound-capture-port";
const INBOUND_TUNNEL_PORT: &str = "-e/--inbound-tunnel-port";
const PROXY_UID: &str = "-u/--proxy-uid";
const PROXY_GID: &str = "-g/--proxy-gid";
const MODE: &str = "-m/--istio-inbound-interception-mode";
const TPROXY_MARK: &str = "-t/--istio-inbound-tproxy-mark";
const TPROXY_ROUTE_TABLE: &str = "-r/--istio-inbound-tproxy-route-table";
const SERVICE_CIDR: &str = "-i/--istio-service-cidr";
const SERVICE_EXCLUDE_CIDR: &str = "-x/--istio-service-exclude-cidr";
const INBOUND_PORTS: &str = "-b/--istio-inbound-ports";
const LOCAL_EXCLUDE_PORTS: &str = "-d/--istio-local-exclude-ports";
const OUTBOUND_PORTS: &str = "-q/--istio-outbound-ports";
const OUTBOUND_PORTS_EXCLUDE: &str = "-o/--istio-local-outbound-ports-exclude";
const EXCLUDE_INTERFACES: &str = "-c/--istio-exclude-interfaces";
const KUBE_VIRT_INTERFACES: &str = "-k/--kube-virt-interfaces";

impl CaptureConfig {
    /// Checks every flag, as `istio-iptables` reads them: comma lists with spaces and empty
    /// items ignored, `*` alone for everything.
    pub fn parse(flags: &Flags) -> Result<CaptureConfig, FlagError> {
        let Flags {
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
        } = flags;
        let proxy_uids = match ids(PROXY_UID, proxy_uid, "a user id")? {
            uids if uids.is_empty() => vec![1337],
            uids => uids,
        };
        let proxy_gids = match ids(PROXY_GID, proxy_gid, "a group id")? {
            gids if gids.is_empty() => proxy_uids.clone(),
            gids => gids,
        };
        let outbound_include = match wildcard_or_items(SERVICE_CIDR, service_cidr)? {
            None => Ranges::All,
            Some(items) => Ranges::Only(cidrs(SERVICE_CIDR, &items)?),
        };
        let outbound_exclude = match wildcard_or_items(SERVICE_EXCLUDE_CIDR, service_exclude_cidr)?
        {
            None => return Err(error(SERVICE_EXCLUDE_CIDR, Problem::Wildcard)),
            Some(items) => cidrs(SERVICE_EXCLUDE_CIDR, &items)?,
        };
        let inbound_include = match wildcard_or_items(INBOUND_PORTS, inbound_ports)? {
            None => PortList::All,
            Some(items) => PortList::Only(ports(INBOUND_PORTS, &items)?),
        };
        Ok(CaptureConfig {
            outbound_port: port(ENVOY_PORT, envoy_port)?,
            inbound_capture_port: port(INBOUND_CAPTURE_PORT, inbound_capture_port)?,
            inbound_tunnel_port: port(INBOUND_TUNNEL_PORT, inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            inbound_mode: mode(inbound_interception_mode)?,
            tproxy_mark: positive(
                TPROXY_MARK,
                inbound_tproxy_mark,
                "a packet mark (1-4294967295)",
            )?,
            tproxy_route_table: positive(
                TPROXY_ROUTE_TABLE,
                inbound_tproxy_route_table,
                "a routing table id (1-4294967295)",
            )?,
            outbound_include,
            outbound_exclude,
            inbound_include,
            inbound_exclude: port_list(LOCAL_EXCLUDE_PORTS, local_exclude_ports)?,
            outbound_ports_include: port_list(OUTBOUND_PORTS, outbound_ports)?,
            outbound_ports_exclude: port_list(
                OUTBOUND_PORTS_EXCLUDE,
                local_outbound_ports_exclude,
            )?,
            exclude_interfaces: interfaces(EXCLUDE_INTERFACES, exclude_interfaces)?,
            reroute_interfaces: interfaces(KUBE_VIRT_INTERFACES, kube_virt_interfaces)?,
            drop_invalid: *drop_invalid,
        })
    }

    /// Whether an include range asks for loopback destinations to be captured: then the
    /// application's own loopback traffic is not let through (as Istio decides).
    pub fn captures_loopback(&self) -> bool {
        matches!(&self.outbound_include, Ranges::Only(cidrs) if cidrs.iter().any(Cidr::is_loopback))
    }
}

fn error(flag: &'static str, problem: Problem) -> FlagError {
    FlagError { flag, problem }
}

/// The items of a comma list: trimmed, empty ones dropped (as Istio's `config.Split`).
fn items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `None` for `*`, else the items; `*` among other items is an error.
fn wildcard_or_items<'a>(
    flag: &'static str,
    value: &'a str,
) -> Result<Option<Vec<&'a str>>, FlagError> {
    let items = items(value);
    match items.as_slice() {
        ["*"] => Ok(None),
        list if list.contains(&"*") => Err(error(flag, Problem::WildcardInList(value.into()))),
        _ => Ok(Some(items)),
    }
}

fn port(flag: &'static str, item: &str) -> Result<u16, FlagError> {
    match item.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(error(flag, Problem::Port(item.into()))),
    }
}

fn ports(flag: &'static str, items: &[&str]) -> Result<Vec<u16>, FlagError> {
    items.iter().map(|item| port(flag, item)).collect()
}

fn port_list(flag: &'static str, value: &str) -> Result<Vec<u16>, FlagError> {
    match wildcard_or_items(flag, value)? {
        None => Err(error(flag, Problem::Wildcard)),
        Some(items) => ports(flag, &items),
    }
}

fn ids(flag: &'static str, value: &str, what: &'static str) -> Result<Vec<u32>, FlagError> {
    items(value)
        .into_iter()
        .map(|item| {
            item.parse().map_err(|_| {
                let item = item.into();
                error(flag, Problem::Number { item, what })
            })
        })
        .collect()
}

fn positive(flag: &'static str, value: &str, what: &'static str) -> Result<u32, FlagError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(error(
            flag,
            Problem::Number {
                item: value.into(),
                what,
            },
        )),
    }
}

fn cidrs(flag: &'static str, items: &[&str]) -> Result<Vec<Cidr>, FlagError> {
    items
        .iter()
        .map(|item| {
            item.parse().map_err(|reason| {
                let item = (*item).into();
                error(flag, Problem::Cidr { item, reason })
            })
        })
        .collect()
}

/// Interface names go into `iptables-restore` and `nft` input: only the characters Linux
/// names commonly use, so a name can neither break the input's syntax nor be a pattern.
fn interfaces(flag: &'static str, value: &str) -> Result<Vec<String>, FlagError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    items(value)
        .into_iter()
        .map(|item| {
            if item.len() <= 15 && item.chars().all(name_char) {
                Ok(item.to_string())
            } else {
                Err(error(flag, Problem::Interface(item.into())))
            }
        })
        .collect()
}

fn mode(value: &str) -> Result<InterceptionMode, FlagError> {
    match value.trim().to_ascii_uppercase().as_str() {
        "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        _ => Err(error(MODE, Problem::Mode(value.into()))),
    }
}

#[cfg(test)]
mod tests;
