//! Checks of the values Istio's injection annotations take, with Istio's rules
//! (`pkg/kube/inject/validate.go`): a value that fails one makes injection fail, so a Pod
//! never starts with an init container that cannot apply its rules.

use std::net::IpAddr;

/// A check of one value: why it is wrong, if it is.
pub type Check = fn(&str) -> Result<(), String>;

/// `REDIRECT`, `TPROXY` or `NONE`.
pub fn interception_mode(mode: &str) -> Result<(), String> {
    match mode {
        "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
        _ => Err("interceptionMode invalid, use REDIRECT,TPROXY,NONE".to_owned()),
    }
}

/// `true` or `false`, as Kubernetes annotations spell them.
pub fn true_or_false(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".to_owned()),
    }
}

/// A comma-separated list of ports (each 1-65535, as `sextant iptables` takes them); empty is
/// an empty list.
pub fn port_list(ports: &str) -> Result<(), String> {
    let ports = ports.trim();
    if ports.is_empty() {
        return Ok(());
    }
    for port in ports.split(',') {
        let number = port
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("failed parsing port {port:?}"))?;
        if number == 0 {
            return Err(format!("port {port:?} is not a port from 1 to 65535"));
        }
    }
    Ok(())
}

/// `*` or a port list.
pub fn port_list_or_all(ports: &str) -> Result<(), String> {
    if ports == "*" {
        Ok(())
    } else {
        port_list(ports)
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8`, `fd00::/8`); empty is an empty list.
pub fn cidr_list(cidrs: &str) -> Result<(), String> {
    if cidrs.is_empty() {
        return Ok(());
    }
    for cidr in cidrs.split(',') {
        let parsed = cidr.split_once('/').and_then(|(ip, len)| {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(())
        });
        if parsed.is_none() {
            return Err(format!("failed parsing cidr {cidr:?}"));
        }
    }
    Ok(())
}

/// `*` or a CIDR list.
pub fn cidr_list_or_all(cidrs: &str) -> Result<(), String> {
    if cidrs == "*" {
        Ok(())
    } else {
        cidr_list(cidrs)
    }
}

/// A comma-separated list of network interface names (at most 15 characters, a letter then
/// letters, digits, `_`, `.` or `-`).
pub fn interface_list(interfaces: &str) -> Result<(), String> {
    if interfaces.is_empty() {
        return Ok(());
    }
    for name in interfaces.split(',') {
        let name = name.trim();
        if name.is_empty() {
            return Err("empty interface name".to_owned());
        }
        if name.len() > 15 {
            return Err(format!("interface name {name:?} too long (max 15 chars)"));
        }
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(format!(
                "interface name {name:?} contains invalid characters"
            ));
        }
    }
    Ok(())
}

/// A Kubernetes resource quantity (`100m`, `128Mi`, `1.5`, `2e3`), not negative: the API
/// server refuses a container whose resources are.
pub fn quantity(value: &str) -> Result<(), String> {
    let invalid = || {
        Err("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".to_owned())
    };
    if value.starts_with('-') {
        return Err("a resource quantity cannot be negative".to_owned());
    }
    let unsigned = value.strip_prefix('+').unwrap_or(value);
    let digits_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return invalid();
    }
    let suffix_ok = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())),
    };
    if suffix_ok { Ok(()) } else { invalid() }
}

/// An Envoy log level, as Istio's `sidecar.istio.io/logLevel` takes it.
pub fn log_level(level: &str) -> Result<(), String> {
    match level {
        "trace" | "debug" | "info" | "warning" | "warn" | "error" | "critical" | "off" => Ok(()),
        _ => Err(
            "log level must be one of trace, debug, info, warning, error, critical, off".to_owned(),
        ),
    }
}

/// Envoy's log components (`ALL_LOGGER_IDS` in `source/common/common/logger.h`, as Envoy
/// 1.40's `/logging` lists them): Envoy refuses to start when `--component-log-level` names
/// another.
pub const ENVOY_LOG_COMPONENTS: &[&str] = &[
    "a2a",
    "admin",
    "ai_protocol_manager",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "basic_auth",
    "cache_filter",
    "client",
    "config",
    "connection",
    "conn_handler",
    "compression",
    "credential_injector",
    "decompression",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "ext_proc",
    "rocketmq",
    "file",
    "filter",
    "forward_proxy",
    "geolocation",
    "grpc",
    "happy_eyeballs",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "json_rpc",
    "kafka",
    "key_value_store",
    "lua",
    "local_rate_limit",
    "main",
    "matcher",
    "mcp",
    "misc",
    "mongo",
    "multi_connection",
    "notification",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rate_limit_quota",
    "rbac",
    "rds",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "sse",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
    "golang",
    "stats_sinks",
    "dynamic_modules",
    "ip_tagging",
];

/// Envoy's `--component-log-level`: `COMPONENT:LEVEL` pairs separated by commas, each
/// component one of [`ENVOY_LOG_COMPONENTS`].
pub fn component_log_level(levels: &str) -> Result<(), String> {
    for pair in levels.split(',') {
        let Some((component, level)) = pair.split_once(':') else {
            return Err(format!("{:?} is not COMPONENT:LEVEL", shown(pair)));
        };
        if !ENVOY_LOG_COMPONENTS.contains(&component) {
            return Err(format!(
                "{:?} is not one of Envoy's log components (admin, config, connection, http, misc, router, upstream, ...: the admin port's /logging lists them)",
                shown(component)
            ));
        }
        log_level(level)?;
    }
    Ok(())
}

/// A value as messages quote it: cut to its first 100 characters when longer, so that a
/// denial does not repeat megabytes of a hostile value.
pub fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 100;
    match value.char_indices().nth(SHOWN) {
        None => value.into(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()).into(),
    }
}

/// A container image reference: no whitespace, quotes or `$`, not empty.
pub fn image(image: &str) -> Result<(), String> {
    let bad = image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'$".contains(c));
    if bad {
        Err("not a container image reference".to_owned())
    } else {
        Ok(())
    }
}

/// A control plane's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u32,
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        host_port(s)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `HOST:PORT`, the host a DNS name or an IP address (IPv6 in brackets).
pub fn host_port(address: &str) -> Result<Address, String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("expected HOST:PORT".to_owned());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
        Some(_) => return Err(format!("{host:?} is not an IPv6 address")),
        None if host.parse::<std::net::Ipv4Addr>().is_ok() => host,
        None if is_dns_name(host) => host,
        None => return Err(format!("{host:?} is neither a DNS name nor an IP address")),
    };
    Ok(Address {
        host: host.to_owned(),
        port: u32::from(port),
    })
}

/// A DNS name (`sextant.istio-system.svc`).
pub fn dns_name(name: &str) -> Result<(), String> {
    if is_dns_name(name) {
        Ok(())
    } else {
        Err("not a DNS name".to_owned())
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes() {
        for good in [
            "100m", "128Mi", "1", "1.5", "2e3", "+1", ".5", "1Gi", "0.25",
        ] {
            assert!(quantity(good).is_ok(), "{good}");
        }
        for bad in [
            "", "m", "1.2.3", "10mb", "1Gib", "abc", "1 Gi", "1e", "-1", "-0.5Gi", "+-1",
        ] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_follow_istio() {
        assert!(port_list("80, 8080").is_ok());
        assert!(port_list("").is_ok());
        assert!(port_list("80,http").is_err());
        assert!(port_list("70000").is_err());
        assert!(port_list("80,0").is_err());
        assert!(port_list_or_all("*").is_ok());
        assert!(cidr_list("10.0.0.0/8,fd00::/8").is_ok());
        assert!(cidr_list("10.0.0.1").is_err());
        assert!(cidr_list("10.0.0.0/33").is_err());
        assert!(cidr_list_or_all("*").is_ok());
        assert!(interface_list("eth1,net-2").is_ok());
        assert!(interface_list("eth1,").is_err());
        assert!(interface_list("1eth").is_err());
        assert!(interface_list("averyveryverylongname").is_err());
    }

    #[test]
    fn addresses_are_host_and_port() {
        let address = host_port("sextant.istio-system.svc:15012").expect("valid");
        assert_eq!(address.host, "sextant.istio-system.svc");
        assert_eq!(address.port, 15012);
        let v6 = host_port("[::1]:15012").expect("valid");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:15012");
        assert!(host_port("sextant").is_err());
        assert!(host_port("bad_host:1").is_err());
        assert!(host_port("a:99999").is_err());
    }

    #[test]
    fn log_levels_are_envoys() {
        assert!(log_level("warning").is_ok());
        assert!(log_level("loud").is_err());
        assert!(component_log_level("misc:error,upstream:debug").is_ok());
        assert!(component_log_level("misc").is_err());
        assert!(component_log_level("misc:loud").is_err());
        let unknown =
            component_log_level("misc:error,nosuch:debug").expect_err("no such component");
        assert!(unknown.contains("\"nosuch\""), "{unknown}");
        assert!(component_log_level("dynamic_modules:trace,a2a:off").is_ok());
    }
}
