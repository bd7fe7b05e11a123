//! What `istio-init` will make of what injection gives it, checked before the Pod is
//! admitted. `sextant iptables` reads its arguments and, for each flag it is not given, the
//! environment variable Istio's istio-iptables reads; `proxyMetadata` is that environment,
//! as Istio's template gives it to istio-init too. A value it would refuse leaves the init
//! container failing and the Pod never starting: the Pod is refused at admission instead,
//! naming the annotation or `proxyMetadata` entry. So are arguments longer than Linux lets
//! one argument be.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sextant_capture::{CaptureConfig, Flags};

use super::{
    InjectConfig, Problem,
    annotations::{self, Settings},
    containers,
};

/// Linux's limit on one argument or environment string, its terminating NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): `execve` fails with E2BIG past it, and the container with it.
pub const MAX_ARG_STRLEN: usize = 131_072;

/// The variables `sextant iptables` reads a flag's value from when the flag is not given,
/// with the flag (as its errors name it).
const FLAG_VARIABLES: &[(&str, &str)] = &[
    ("INBOUND_CAPTURE_PORT", "-z"),
    ("INBOUND_TUNNEL_PORT", "-e"),
    ("PROXY_UID", "-u"),
    ("PROXY_GID", "-g"),
    ("ISTIO_INBOUND_INTERCEPTION_MODE", "-m"),
    ("ISTIO_INBOUND_TPROXY_MARK", "-t"),
    ("ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "-r"),
    ("ISTIO_SERVICE_CIDR", "-i"),
    ("ISTIO_SERVICE_EXCLUDE_CIDR", "-x"),
    ("ISTIO_INBOUND_PORTS", "-b"),
    ("ISTIO_LOCAL_EXCLUDE_PORTS", "-d"),
    ("ISTIO_OUTBOUND_PORTS", "-q"),
    ("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "-o"),
    ("ISTIO_EXCLUDE_INTERFACES", "-c"),
    ("KUBE_VIRT_INTERFACES", "-k"),
];

/// Boolean switches read from the environment as clap reads them (`true`, `no`, `1`, ...;
/// an empty value is refused).
const SWITCH_VARIABLES: &[&str] = &[
    "DRY_RUN",
    "NATIVE_NFTABLES",
    "DUAL_STACK",
    "DROP_INVALID",
    "SKIP_RULE_APPLY",
    "CLEANUP_ONLY",
    "RECONCILE",
    "FORCE_APPLY",
    "REDIRECT_DNS",
    "CAPTURE_ALL_DNS",
    "RUN_VALIDATION",
    "CNI_MODE",
];

/// Istio's second name for a switch, read (trimmed, empty for false) only when the first is
/// not set.
const SECOND_NAMES: &[(&str, &str)] = &[
    ("ISTIO_META_DNS_CAPTURE", "REDIRECT_DNS"),
    ("INVALID_DROP", "DROP_INVALID"),
    ("ISTIO_DUAL_STACK", "DUAL_STACK"),
];

/// What a variable must hold for `sextant iptables` to run, when it is not a flag's.
fn variable_problem(name: &str, value: &str, set: &HashMap<&str, &str>) -> Option<String> {
    const TRUE: &[&str] = &["y", "yes", "t", "true", "on", "1"];
    const FALSE: &[&str] = &["n", "no", "f", "false", "off", "0"];
    let boolean = |v: &str| TRUE.contains(&v) || FALSE.contains(&v);
    if SWITCH_VARIABLES.contains(&name) {
        return (!boolean(&value.to_lowercase())).then(|| "is not true or false".to_owned());
    }
    if let Some((_, first)) = SECOND_NAMES.iter().find(|(second, _)| *second == name) {
        let v = value.trim().to_lowercase();
        let ok = set.contains_key(first) || v.is_empty() || boolean(&v);
        return (!ok).then(|| "is not true or false".to_owned());
    }
    match name {
        "IPTABLES_PROBE_PORT" => {
            (value.parse::<u16>().is_err()).then(|| "is not a port number (0-65535)".to_owned())
        }
        "FORCE_IPTABLES_BINARY" => {
            (!matches!(value, "" | "legacy" | "nft")).then(|| "is not `legacy` or `nft`".to_owned())
        }
        "NETWORK_NAMESPACE" => (!value.is_empty()).then(|| {
            "asks `sextant iptables` to capture another network namespace, which it refuses"
                .to_owned()
        }),
        _ => None,
    }
}

/// The field of `flags` that `short` (`-b`) sets.
fn field<'a>(flags: &'a mut Flags, short: &str) -> Option<&'a mut String> {
    Some(match short {
        "-p" => &mut flags.envoy_port,
        "-z" => &mut flags.inbound_capture_port,
        "-e" => &mut flags.inbound_tunnel_port,
        "-u" => &mut flags.proxy_uid,
        "-g" => &mut flags.proxy_gid,
        "-m" => &mut flags.inbound_interception_mode,
        "-t" => &mut flags.inbound_tproxy_mark,
        "-r" => &mut flags.inbound_tproxy_route_table,
        "-i" => &mut flags.service_cidr,
        "-x" => &mut flags.service_exclude_cidr,
        "-b" => &mut flags.inbound_ports,
        "-d" => &mut flags.local_exclude_ports,
        "-q" => &mut flags.outbound_ports,
        "-o" => &mut flags.local_outbound_ports_exclude,
        "-c" => &mut flags.exclude_interfaces,
        "-k" => &mut flags.kube_virt_interfaces,
        _ => return None,
    })
}

/// Where a flag's value came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// An annotation (or, for `None`, the injector's own configuration).
    Annotation(Option<&'static str>),
    /// A `proxyMetadata` entry.
    Metadata(&'a str, &'a str),
}

/// Every reason `istio-init`, as injected into a Pod with `annotations` and `settings`, would
/// fail; none when it runs.
pub fn check(
    config: &InjectConfig,
    settings: &Settings,
    annotations: &Map<String, Value>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let metadata = &settings.proxy_config.proxy_metadata;
    let set: HashMap<&str, &str> = metadata
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let metadata_problem = |name: &str, value: &str, reason: String| {
        if settings.pod_metadata.contains(name) {
            let text = annotations[annotations::PROXY_CONFIG].as_str();
            Problem {
                annotation: annotations::PROXY_CONFIG.to_owned(),
                value: text.unwrap_or_default().to_owned(),
                reason: format!("proxyMetadata {name}: {reason}"),
            }
        } else {
            Problem {
                annotation: "meshConfig.defaultConfig.proxyMetadata".to_owned(),
                value: format!("{name}={value}"),
                reason,
            }
        }
    };
    let mut flags = Flags::default();
    let mut sources: HashMap<&str, Source<'_>> = HashMap::new();
    for (name, value) in metadata {
        if let Some((_, short)) = FLAG_VARIABLES.iter().find(|(v, _)| v == name) {
            if let Some(field) = field(&mut flags, short) {
                field.clone_from(value);
                sources.insert(short, Source::Metadata(name, value));
            }
        } else if let Some(why) = variable_problem(name, value, &set) {
            let reason = format!(
                "istio-init's `sextant iptables` reads ${name}, and {:?} {why}",
                super::values::shown(value)
            );
            problems.push(metadata_problem(name, value, reason));
        }
    }
    let given = containers::init_flags(config, settings);
    for flag in &given {
        // A flag given wins over its variable, as with clap.
        if let Some(field) = field(&mut flags, flag.flag) {
            field.clone_from(&flag.value);
            sources.insert(flag.flag, Source::Annotation(flag.annotation));
        }
    }
    if let Err(error) = CaptureConfig::parse(&flags) {
        let short = error.flag.split('/').next().unwrap_or(error.flag);
        let reason = format!("istio-init's `sextant iptables` would refuse it: {error}");
        match sources.get(short) {
            Some(Source::Metadata(name, value)) => {
                problems.push(metadata_problem(name, value, reason));
            }
            Some(Source::Annotation(Some(annotation))) => {
                problems.push(annotation_problem(annotation, annotations, reason));
            }
            _ => problems.push(Problem {
                annotation: "the injector's configuration".to_owned(),
                value: flags_text(&given),
                reason,
            }),
        }
    }
    for flag in &given {
        if flag.value.len() >= MAX_ARG_STRLEN {
            let reason = format!(
                "istio-init's argument {} would be {} bytes, more than Linux takes in one argument ({MAX_ARG_STRLEN} with its end, MAX_ARG_STRLEN)",
                flag.flag,
                flag.value.len()
            );
            problems.push(annotation_problem(
                flag.annotation.unwrap_or(annotations::PROXY_CONFIG),
                annotations,
                reason,
            ));
        }
    }
    problems
}

/// A problem with `annotation` (the older name of `-k`'s when only that one is given).
fn annotation_problem(
    annotation: &'static str,
    annotations: &Map<String, Value>,
    reason: String,
) -> Problem {
    let annotation = if annotation == annotations::REROUTE_VIRTUAL_INTERFACES
        && !annotations.contains_key(annotation)
    {
        annotations::KUBEVIRT_INTERFACES
    } else {
        annotation
    };
    Problem {
        annotation: annotation.to_owned(),
        value: annotations
            .get(annotation)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        reason,
    }
}

fn flags_text(flags: &[containers::InitFlag]) -> String {
    flags
        .iter()
        .map(|f| format!("{} {:?}", f.flag, f.value))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::*;

    /// Every variable `sextant iptables` reads is one this module knows what to do with: a
    /// flag's, a switch, or one checked or free.
    #[test]
    fn every_variable_sextant_iptables_reads_is_checked() {
        let command = crate::cmd::iptables::IptablesArgs::augment_args(clap::Command::new("x"));
        // Read and used as it is, whatever it holds.
        let free = ["PROBE_TIMEOUT"];
        let known = |name: &str| {
            FLAG_VARIABLES.iter().any(|(v, _)| *v == name)
                || SWITCH_VARIABLES.contains(&name)
                || free.contains(&name)
                || [
                    "IPTABLES_PROBE_PORT",
                    "FORCE_IPTABLES_BINARY",
                    "NETWORK_NAMESPACE",
                ]
                .contains(&name)
        };
        let mut read = Vec::new();
        for arg in command.get_arguments() {
            let Some(name) = arg.get_env() else { continue };
            let name = name.to_str().expect("ASCII").to_owned();
            assert!(
                known(&name),
                "${name} is read by sextant iptables but not checked"
            );
            if let Some((_, short)) = FLAG_VARIABLES.iter().find(|(v, _)| *v == name) {
                assert_eq!(
                    arg.get_short().map(|c| format!("-{c}")).as_deref(),
                    Some(*short),
                    "${name}"
                );
            }
            read.push(name);
        }
        let listed = FLAG_VARIABLES
            .iter()
            .map(|(v, _)| *v)
            .chain(SWITCH_VARIABLES.iter().copied());
        for name in listed {
            assert!(read.iter().any(|r| r == name), "${name} is not read");
        }
        for (_, first) in SECOND_NAMES {
            assert!(SWITCH_VARIABLES.contains(first), "{first}");
        }
    }

    #[test]
    fn variables_are_checked_as_sextant_iptables_reads_them() {
        let none = HashMap::new();
        assert!(variable_problem("DRY_RUN", "TRUE", &none).is_none());
        assert!(variable_problem("DRY_RUN", "", &none).is_some());
        assert!(variable_problem("ISTIO_META_DNS_CAPTURE", " true ", &none).is_none());
        assert!(variable_problem("ISTIO_META_DNS_CAPTURE", "", &none).is_none());
        assert!(variable_problem("ISTIO_META_DNS_CAPTURE", "maybe", &none).is_some());
        let first = HashMap::from([("REDIRECT_DNS", "true")]);
        assert!(variable_problem("ISTIO_META_DNS_CAPTURE", "maybe", &first).is_none());
        assert!(variable_problem("IPTABLES_PROBE_PORT", "70000", &none).is_some());
        assert!(variable_problem("NETWORK_NAMESPACE", "/proc/1/ns/net", &none).is_some());
        assert!(variable_problem("FORCE_IPTABLES_BINARY", "nft", &none).is_none());
        assert!(variable_problem("ISTIO_META_ANYTHING", "\n", &none).is_none());
    }
}
