//! `sextant bootstrap`: an Envoy bootstrap that gets everything over ADS from Sextant.

use std::process::ExitCode;

use sextant_compiler::{bootstrap, json};
use sextant_model::BIND_ADDRESS_KEY;

use crate::cli::BootstrapArgs;

pub fn run(args: BootstrapArgs) -> ExitCode {
    let BootstrapArgs {
        node_id,
        xds_address,
        delta,
        admin_port,
        bind_address,
        interception,
        meta,
        gateway,
        labels,
        xds_root_cert,
        xds_cert,
        xds_key,
    } = args;
    let node_id = match (gateway, node_id.split_once('~')) {
        (true, Some(("sidecar" | "router", rest))) => format!("router~{rest}"),
        _ => node_id,
    };
    if let Err(e) = sextant_model::Proxy::from_node_id(&node_id) {
        eprintln!("error: --node-id: {e}");
        return ExitCode::from(2);
    }
    let Some((host, port)) = xds_address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u32>().ok()?)))
    else {
        eprintln!("error: --xds-address {xds_address:?}: expected HOST:PORT");
        return ExitCode::from(2);
    };
    let mut metadata = vec![("INTERCEPTION_MODE".to_owned(), interception.clone())];
    if interception == "NONE" {
        metadata.push((BIND_ADDRESS_KEY.to_owned(), bind_address));
    }
    if !labels.is_empty() {
        if let Some(bad) = labels.iter().find(|l| !l.contains('=') || l.contains(',')) {
            eprintln!("error: --label {bad:?}: expected KEY=VALUE");
            return ExitCode::from(2);
        }
        metadata.push(("LABELS".to_owned(), labels.join(",")));
    }
    for entry in meta {
        match entry.split_once('=') {
            Some((k, v)) => metadata.push((k.to_owned(), v.to_owned())),
            None => {
                eprintln!("error: --meta {entry:?}: expected KEY=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let b = bootstrap::dynamic_bootstrap(
        &node_id,
        &metadata,
        host.trim_matches(['[', ']']),
        port,
        delta,
        admin_port,
        xds_root_cert
            .map(|root_cert| bootstrap::XdsTls {
                root_cert,
                client: xds_cert.zip(xds_key),
            })
            .as_ref(),
    );
    crate::cmd::out(format_args!(
        "{}",
        sextant_index::manifest::to_yaml(&[json::to_json(&b)])
    ));
    ExitCode::SUCCESS
}
