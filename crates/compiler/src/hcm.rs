//! The HTTP connection managers of sidecars and gateways: Istio's settings, the fault, CORS
//! and router filters, outbound routes from RDS by port, inbound routes inline to
//! `inbound|PORT||`.

use envoy_types::pb::envoy::{
    config::{
        listener::v3::{Filter, Listener, filter},
        route::v3::{
            RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
            route_action, route_match,
        },
    },
    extensions::filters::{
        http::{cors::v3::Cors, fault::v3::HttpFault, on_demand::v3::OnDemand, router::v3::Router},
        network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager,
        },
    },
};

use prost::Message;

pub(crate) mod access_log;

use crate::{
    context::inbound_cluster,
    lds::{http_filter, network_filter},
    proto::{ads, boolv, seconds, u32v},
};

/// An HTTP connection manager with Istio's settings and the fault, CORS and router filters.
pub(crate) fn hcm(
    stat_prefix: String,
    routes: http_connection_manager::RouteSpecifier,
    outbound: bool,
) -> Filter {
    network_filter(
        "envoy.filters.network.http_connection_manager",
        &hcm_config(stat_prefix, routes, outbound),
    )
}

/// A gateway's HTTP connection manager with routes from RDS `route_name`: the client's
/// address is the connection's, and the client certificate's details replace whatever
/// `x-forwarded-client-cert` the client sent (Istio's gateway defaults).
pub(crate) fn gateway_hcm(stat_prefix: String, route_name: String) -> Filter {
    let mut hcm = hcm_config(
        stat_prefix,
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name,
        }),
        true,
    );
    hcm.use_remote_address = Some(boolv(true));
    hcm.forward_client_cert_details =
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            subject: Some(boolv(true)),
            cert: true,
            dns: true,
            uri: true,
            ..Default::default()
        });
    network_filter("envoy.filters.network.http_connection_manager", &hcm)
}

fn hcm_config(
    stat_prefix: String,
    routes: http_connection_manager::RouteSpecifier,
    outbound: bool,
) -> HttpConnectionManager {
    let mut hcm = HttpConnectionManager {
        codec_type: http_connection_manager::CodecType::Auto as i32,
        stat_prefix,
        route_specifier: Some(routes),
        http_filters: vec![
            http_filter("envoy.filters.http.fault", &HttpFault::default()),
            http_filter("envoy.filters.http.cors", &Cors {}),
            http_filter("envoy.filters.http.router", &Router::default()),
        ],
        use_remote_address: Some(boolv(false)),
        normalize_path: Some(boolv(true)),
        path_with_escaped_slashes_action: if outbound {
            http_connection_manager::PathWithEscapedSlashesAction::KeepUnchanged as i32
        } else {
            0
        },
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }],
        stream_idle_timeout: Some(seconds(0)),
        server_name: "istio-envoy".to_owned(),
        ..Default::default()
    };
    // Inbound, the peer's identity reaches the application (Istio's sidecar defaults); Envoy
    // drops the header from plaintext connections.
    if !outbound {
        hcm.forward_client_cert_details =
            http_connection_manager::ForwardClientCertDetails::AppendForward as i32;
        hcm.set_current_client_cert_details =
            Some(http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(boolv(true)),
                uri: true,
                dns: true,
                ..Default::default()
            });
    }
    hcm
}

/// Adds Envoy's `on_demand` filter, first, to each HTTP connection manager of `listener`
/// whose routes come from RDS, so that a request whose Host matches no virtual host asks for
/// it over VHDS before it is routed; whether any changed. First, so that the filters before
/// the router see the route when the request starts again with it.
pub(crate) fn ask_on_demand(listener: &mut Listener) -> bool {
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    let mut changed = false;
    for filter in chains.flat_map(|c| c.filters.iter_mut()) {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
            continue;
        };
        if any.type_url != HCM_TYPE_URL {
            continue;
        }
        let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
            continue;
        };
        let from_rds = matches!(
            hcm.route_specifier,
            Some(http_connection_manager::RouteSpecifier::Rds(_))
        );
        if !from_rds || hcm.http_filters.iter().any(|f| f.name == ON_DEMAND) {
            continue;
        }
        hcm.http_filters
            .insert(0, http_filter(ON_DEMAND, &OnDemand::default()));
        any.value = hcm.encode_to_vec();
        changed = true;
    }
    changed
}

/// Envoy's filter that fetches a missing virtual host (VHDS) before routing.
const ON_DEMAND: &str = "envoy.filters.http.on_demand";

const HCM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Outbound HTTP connection manager with routes from RDS `port`.
pub(crate) fn outbound_hcm(port: u16) -> Filter {
    hcm(
        format!("outbound_0.0.0.0_{port}"),
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: port.to_string(),
        }),
        true,
    )
}

/// Inbound HTTP connection manager with an inline route to `inbound|PORT||`.
pub(crate) fn inbound_hcm(target: u16) -> Filter {
    let cluster = inbound_cluster(target);
    let routes = RouteConfiguration {
        name: cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{target}"),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                name: "default".to_owned(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.clone(),
                    )),
                    timeout: Some(seconds(0)),
                    retry_policy: Some(RetryPolicy {
                        retry_on: "reset-before-request".to_owned(),
                        num_retries: Some(u32v(2)),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    };
    hcm(
        format!("inbound_0.0.0.0_{target}"),
        http_connection_manager::RouteSpecifier::RouteConfig(routes),
        false,
    )
}
