//! `sextant bootstrap`: an Envoy bootstrap that gets everything over ADS from Sextant.

use std::process::ExitCode;

use sextant_compiler::{bootstrap, json};
use sextant_model::BIND_ADDRESS_KEY;
use sextant_xds::protocol::vhds::VHDS_METADATA_KEY;

use crate::cli::BootstrapArgs;

/// How the bootstrap's ADS stream asks: `sextant bootstrap`'s protocol flags.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct AdsArgs {
    /// Use incremental (delta) ADS.
    #[arg(long)]
    pub delta: bool,
    /// Ask for virtual hosts on demand (VHDS; implies --delta): node metadata
    /// `SEXTANT_VHDS: "true"`, which `sextant serve --vhds` answers with route configurations
    /// that Envoy fills by Host as requests arrive.
    #[arg(long)]
    pub vhds: bool,
}

pub fn run(args: BootstrapArgs) -> ExitCode {
    let BootstrapArgs {
        node_id,
        xds_address,
        ads: AdsArgs { delta, vhds },
        admin_port,
        bind_address,
        interception,
        meta,
        gateway,
        grpc,
        labels,
        cluster_id,
        network,
        locality,
        xds_root_cert,
        xds_cert,
        xds_key,
        xds_token,
        xds_server_name,
        sidecar_listeners,
    } = args;
    let mut meta = meta;
    meta.extend(cluster_id.map(|c| format!("CLUSTER_ID={c}")));
    meta.extend(network.map(|n| format!("NETWORK={n}")));
    // Envoy (or gRPC) reads these from wherever it is started: make them absolute.
    let absolute = |p: Option<String>| {
        p.map(|p| {
            std::path::absolute(&p)
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
    };
    let (xds_root_cert, xds_cert, xds_key, xds_token) = (
        absolute(xds_root_cert),
        absolute(xds_cert),
        absolute(xds_key),
        absolute(xds_token),
    );
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
    if grpc {
        return grpc_bootstrap(
            &node_id,
            &xds_address,
            &labels,
            &meta,
            locality.as_deref(),
            xds_root_cert.as_deref(),
            xds_cert.as_deref().zip(xds_key.as_deref()),
        );
    }
    let mut metadata = vec![("INTERCEPTION_MODE".to_owned(), interception.clone())];
    if vhds {
        metadata.push((VHDS_METADATA_KEY.to_owned(), "true".to_owned()));
    }
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
    let mut b = bootstrap::dynamic_bootstrap(
        &node_id,
        &metadata,
        host.trim_matches(['[', ']']),
        port,
        delta || vhds,
        admin_port,
        xds_root_cert
            .map(|root_cert| bootstrap::XdsTls {
                root_cert,
                client: xds_cert.zip(xds_key),
                token: xds_token,
                server_name: xds_server_name,
            })
            .as_ref(),
    );
    if sidecar_listeners {
        bootstrap::add_sidecar_listeners(&mut b, admin_port);
    }
    if let (Some(node), Some(text)) = (b.node.as_mut(), locality.as_deref()) {
        let l = sextant_model::Locality::parse(text);
        node.locality = Some(envoy_types::pb::envoy::config::core::v3::Locality {
            region: l.region,
            zone: l.zone,
            sub_zone: l.subzone,
        });
    }
    crate::cmd::out(format_args!(
        "{}",
        sextant_index::manifest::to_yaml(&[json::to_json(&b)])
    ));
    ExitCode::SUCCESS
}

/// gRPC's xDS bootstrap (gRFC A27, with Istio's fields as pilot-agent writes them): the xDS
/// server, the node with `GENERATOR: grpc`, and Istio's server listener name template.
fn grpc_bootstrap(
    node_id: &str,
    xds_address: &str,
    labels: &[String],
    meta: &[String],
    locality: Option<&str>,
    root_cert: Option<&str>,
    client: Option<(&str, &str)>,
) -> ExitCode {
    use serde_json::{Map, Value, json};
    let proxy = match sextant_model::Proxy::from_node_id(node_id) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --node-id: {e}");
            return ExitCode::from(2);
        }
    };
    let mut metadata = Map::new();
    metadata.insert("GENERATOR".into(), json!("grpc"));
    metadata.insert("NAMESPACE".into(), json!(proxy.namespace));
    metadata.insert("INSTANCE_IPS".into(), json!(proxy.ip().to_string()));
    if !labels.is_empty() {
        if let Some(bad) = labels.iter().find(|l| !l.contains('=') || l.contains(',')) {
            eprintln!("error: --label {bad:?}: expected KEY=VALUE");
            return ExitCode::from(2);
        }
        metadata.insert("LABELS".into(), json!(labels.join(",")));
    }
    for entry in meta {
        let Some((k, v)) = entry.split_once('=') else {
            eprintln!("error: --meta {entry:?}: expected KEY=VALUE");
            return ExitCode::from(2);
        };
        metadata.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let creds = match root_cert {
        None => json!([{"type": "insecure"}]),
        Some(root) => {
            let mut config = json!({"ca_certificate_file": root});
            if let Some((cert, key)) = client {
                config["certificate_file"] = json!(cert);
                config["private_key_file"] = json!(key);
            }
            json!([{"type": "tls", "config": config}])
        }
    };
    let bootstrap = json!({
        "xds_servers": [{
            "server_uri": xds_address,
            "channel_creds": creds,
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node_id,
            "locality": locality.map_or(json!({}), |text| {
                let l = sextant_model::Locality::parse(text);
                json!({"region": l.region, "zone": l.zone, "sub_zone": l.subzone})
            }),
            "metadata": metadata,
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    });
    let text = serde_json::to_string_pretty(&bootstrap).unwrap_or_default();
    crate::cmd::out(format_args!("{text}\n"));
    ExitCode::SUCCESS
}
