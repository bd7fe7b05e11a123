use super::*;

fn parse(change: impl FnOnce(&mut Flags)) -> Result<CaptureConfig, FlagError> {
    let mut flags = Flags::default();
    change(&mut flags);
    CaptureConfig::parse(&flags)
}

fn problem(change: impl FnOnce(&mut Flags)) -> (String, FlagError) {
    let err = parse(change).expect_err("the flags are invalid");
    (err.to_string(), err)
}

#[test]
fn istio_injected_arguments_parse_with_empty_values_and_wildcards() {
    // As Istio's injection template writes them for a Pod without annotations.
    let config = parse(|f| {
        f.envoy_port = "15001".into();
        f.inbound_capture_port = "15006".into();
        f.proxy_uid = "1337".into();
        f.inbound_interception_mode = "REDIRECT".into();
        f.service_cidr = "*".into();
        f.service_exclude_cidr = String::new();
        f.inbound_ports = "*".into();
        f.local_exclude_ports = "15090,15021,15020".into();
    })
    .expect("valid");
    assert_eq!(config, CaptureConfig::default());
    assert_eq!(config.outbound_include, Ranges::All);
    assert_eq!(config.outbound_exclude, vec![]);
    assert_eq!(config.inbound_include, PortList::All);
    assert_eq!(config.inbound_exclude, vec![15090, 15021, 15020]);
    assert_eq!(config.proxy_uids, vec![1337]);
    assert_eq!(
        config.proxy_gids,
        vec![1337],
        "the group defaults to the user"
    );
    assert_eq!(config.inbound_mode, InterceptionMode::Redirect);
}

#[test]
fn lists_ignore_spaces_and_empty_items_and_empty_means_none() {
    let config = parse(|f| {
        f.inbound_ports = " 9080, ,8080,".into();
        f.service_cidr = "10.0.0.0/8, 2001:db8::/32".into();
        f.proxy_uid = "3,4".into();
        f.proxy_gid = "1,2".into();
        f.inbound_interception_mode = "tproxy".into();
    })
    .expect("valid");
    assert_eq!(config.inbound_include, PortList::Only(vec![9080, 8080]));
    let Ranges::Only(cidrs) = &config.outbound_include else {
        panic!("a list, not everything");
    };
    let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(
        (config.proxy_uids, config.proxy_gids),
        (vec![3, 4], vec![1, 2])
    );
    assert_eq!(config.inbound_mode, InterceptionMode::Tproxy);

    let none = parse(|f| {
        f.inbound_ports = String::new();
        f.service_cidr = String::new();
        f.inbound_interception_mode = String::new();
        f.proxy_uid = String::new();
    })
    .expect("valid");
    assert!(none.inbound_include.is_empty());
    assert_eq!(none.outbound_include, Ranges::Only(vec![]));
    assert_eq!(none.inbound_mode, InterceptionMode::Redirect);
    assert_eq!(none.proxy_uids, vec![1337], "an empty user is Istio's 1337");
}

#[test]
fn a_port_out_of_range_names_the_flag_and_the_port() {
    let (text, err) = problem(|f| f.local_exclude_ports = "15090,70000".into());
    assert_eq!(err.flag, "-d/--istio-local-exclude-ports");
    assert_eq!(err.problem, Problem::Port("70000".into()));
    assert_eq!(
        text,
        "-d/--istio-local-exclude-ports: \"70000\" is not a port (1-65535)"
    );
    let (_, err) = problem(|f| f.inbound_ports = "0".into());
    assert_eq!(
        (err.flag, err.problem),
        ("-b/--istio-inbound-ports", Problem::Port("0".into()))
    );
    let (_, err) = problem(|f| f.envoy_port = "http".into());
    assert_eq!(
        (err.flag, err.problem),
        ("-p/--envoy-port", Problem::Port("http".into()))
    );
    let (_, err) = problem(|f| f.outbound_ports = "1000:2000".into());
    assert_eq!(err.flag, "-q/--istio-outbound-ports");
    let (_, err) = problem(|f| f.local_outbound_ports_exclude = "-1".into());
    assert_eq!(err.flag, "-o/--istio-local-outbound-ports-exclude");
}

#[test]
fn a_bad_cidr_names_the_flag_and_the_range() {
    let (text, err) = problem(|f| f.service_cidr = "10.0.0.0/8,10.1.0.0/33".into());
    assert_eq!(err.flag, "-i/--istio-service-cidr");
    assert!(
        text.contains("\"10.1.0.0/33\" is not a CIDR range"),
        "{text}"
    );
    let (text, err) = problem(|f| f.service_exclude_cidr = "169.254.169.254/32,metadata".into());
    assert_eq!(err.flag, "-x/--istio-service-exclude-cidr");
    assert!(text.contains("\"metadata\""), "{text}");
}

#[test]
fn wildcards_are_refused_where_they_mean_nothing_or_are_not_alone() {
    let (_, err) = problem(|f| f.service_exclude_cidr = "*".into());
    assert_eq!(
        (err.flag, err.problem),
        ("-x/--istio-service-exclude-cidr", Problem::Wildcard)
    );
    let (_, err) = problem(|f| f.local_exclude_ports = "*".into());
    assert_eq!(
        (err.flag, err.problem),
        ("-d/--istio-local-exclude-ports", Problem::Wildcard)
    );
    let (text, err) = problem(|f| f.service_cidr = "*,10.0.0.0/8".into());
    assert_eq!(err.flag, "-i/--istio-service-cidr");
    assert!(text.contains("cannot be listed with other items"), "{text}");
}

#[test]
fn bad_ids_modes_and_interfaces_name_their_flag() {
    let (text, err) = problem(|f| f.proxy_uid = "istio-proxy".into());
    assert_eq!(err.flag, "-u/--proxy-uid");
    assert_eq!(text, "-u/--proxy-uid: \"istio-proxy\" is not a user id");
    let (_, err) = problem(|f| f.proxy_gid = "1337,x".into());
    assert_eq!(err.flag, "-g/--proxy-gid");
    let (text, err) = problem(|f| f.inbound_interception_mode = "NONE".into());
    assert_eq!(err.flag, "-m/--istio-inbound-interception-mode");
    assert!(text.contains("\"NONE\""), "{text}");
    let (_, err) = problem(|f| f.exclude_interfaces = "eth0,eth\"1".into());
    assert_eq!(
        (err.flag, err.problem),
        (
            "-c/--istio-exclude-interfaces",
            Problem::Interface("eth\"1".into())
        )
    );
    let (_, err) = problem(|f| f.kube_virt_interfaces = "averyveryverylongname".into());
    assert_eq!(err.flag, "-k/--kube-virt-interfaces");
    let (_, err) = problem(|f| f.inbound_tproxy_mark = "0".into());
    assert_eq!(err.flag, "-t/--istio-inbound-tproxy-mark");
    let (_, err) = problem(|f| f.inbound_tproxy_route_table = "main".into());
    assert_eq!(err.flag, "-r/--istio-inbound-tproxy-route-table");
}

#[test]
fn a_loopback_include_range_captures_loopback() {
    assert!(!CaptureConfig::default().captures_loopback());
    let config = parse(|f| f.service_cidr = "127.1.2.3/32".into()).expect("valid");
    assert!(config.captures_loopback());
    let config = parse(|f| f.service_cidr = "::1/128".into()).expect("valid");
    assert!(config.captures_loopback());
}
