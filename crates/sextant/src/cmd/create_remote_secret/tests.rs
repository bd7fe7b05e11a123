//! The rendered Secret and kubeconfig, the cluster read from a kubeconfig, and the checks
//! and errors of `create-remote-secret`.

use super::*;

fn access() -> ClusterAccess {
    ClusterAccess {
        server: "https://remote.example:6443".into(),
        certificate_authority_data: Some("Q0EgUEVN".into()),
        insecure_skip_tls_verify: false,
        tls_server_name: None,
    }
}

fn parse(yaml: &str) -> Vec<Value> {
    sextant_index::manifest::parse_documents(yaml)
        .expect("valid YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

#[test]
fn the_secret_is_labelled_annotated_and_holds_the_kubeconfig_under_the_cluster_name() {
    let kubeconfig = remote_kubeconfig("west", &access(), "t0k3n");
    let text = render_secret("west", "istio-system", &kubeconfig);
    assert!(
        text.starts_with("# Registers the remote cluster \"west\""),
        "{text}"
    );
    let docs = parse(&text);
    let [secret] = docs.as_slice() else {
        panic!("one document: {text}")
    };
    assert_eq!(secret["apiVersion"], "v1");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "istio-remote-secret-west");
    assert_eq!(secret["metadata"]["namespace"], "istio-system");
    // A string, not a boolean: label values are strings.
    assert_eq!(
        secret["metadata"]["labels"]["istio/multiCluster"],
        json!("true")
    );
    assert_eq!(
        secret["metadata"]["annotations"]["networking.istio.io/cluster"],
        "west"
    );
    let data = secret["stringData"].as_object().expect("stringData");
    assert_eq!(data.keys().collect::<Vec<_>>(), ["west"]);
    let inner = data["west"].as_str().expect("a string");
    assert_eq!(parse(inner), [kubeconfig]);
}

#[test]
fn the_kubeconfig_has_one_cluster_user_and_context_and_uses_it() {
    let kubeconfig = remote_kubeconfig("west", &access(), "t0k3n");
    assert_eq!(
        kubeconfig["clusters"],
        json!([{"name": "west", "cluster": {"server": "https://remote.example:6443",
                                            "certificate-authority-data": "Q0EgUEVN"}}])
    );
    assert_eq!(
        kubeconfig["users"],
        json!([{"name": "west", "user": {"token": "t0k3n"}}])
    );
    assert_eq!(
        kubeconfig["contexts"],
        json!([{"name": "west", "context": {"cluster": "west", "user": "west"}}])
    );
    assert_eq!(kubeconfig["current-context"], "west");
    // kube-rs reads it as a kubeconfig.
    let typed: Kubeconfig = serde_json::from_value(kubeconfig).expect("a kubeconfig");
    assert_eq!(typed.current_context.as_deref(), Some("west"));

    let insecure = ClusterAccess {
        certificate_authority_data: None,
        insecure_skip_tls_verify: true,
        tls_server_name: Some("kubernetes.default".into()),
        ..access()
    };
    let cluster = &remote_kubeconfig("west", &insecure, "t")["clusters"][0]["cluster"];
    assert_eq!(cluster["insecure-skip-tls-verify"], true);
    assert_eq!(cluster["tls-server-name"], "kubernetes.default");
    assert!(cluster.get("certificate-authority-data").is_none());
}

#[test]
fn the_cluster_comes_from_the_current_or_named_context_with_its_ca_file_read() {
    let dir = std::env::temp_dir().join(format!("sextant-remote-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, "CA PEM").expect("write");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n\
         - name: ca\n  cluster: {{server: 'https://a:6443', certificate-authority-data: QUFB}}\n\
         - name: cb\n  cluster: {{server: 'https://b:6443', certificate-authority: {}}}\n\
         contexts:\n- name: a\n  context: {{cluster: ca, user: u}}\n- name: b\n  context: {{cluster: cb, user: u}}\n\
         users:\n- name: u\n  user: {{token: x}}\n",
        ca.display()
    );
    let kubeconfig = Kubeconfig::from_yaml(&text).expect("kubeconfig");
    let a = remote_cluster(&kubeconfig, None).expect("current context");
    assert_eq!(a.server, "https://a:6443");
    assert_eq!(a.certificate_authority_data.as_deref(), Some("QUFB"));
    let b = remote_cluster(&kubeconfig, Some("b")).expect("named context");
    assert_eq!(b.server, "https://b:6443");
    assert_eq!(b.certificate_authority_data.as_deref(), Some("Q0EgUEVN"));
    let missing = remote_cluster(&kubeconfig, Some("c")).expect_err("no such context");
    assert!(
        missing.to_string().contains("no context \"c\""),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn names_that_cannot_key_a_secret_are_refused() {
    for good in ["west", "cluster-1", "us.east.1"] {
        check_cluster_name(good).expect(good);
    }
    for bad in ["", "West", "-a", "a-", "a_b", "a/b", &"a".repeat(300)] {
        let e = check_cluster_name(bad).expect_err(bad);
        assert!(e.to_string().contains("--name"), "{e}");
    }
    check_label("--namespace", "istio-system").expect("valid");
    check_label("--namespace", "istio.system").expect_err("not a label");
    check_server_url("https://10.0.0.1:6443").expect("valid");
    check_server_url("10.0.0.1:6443").expect_err("no scheme");
}

#[test]
fn errors_say_whether_the_server_was_unreachable_or_rbac_refused() {
    let forbidden = kube::Error::Api(
        kube::core::Status::failure(
            "clusterroles.rbac.authorization.k8s.io is forbidden: User \"dev\" cannot create resource",
            "Forbidden",
        )
        .with_code(403)
        .boxed(),
    );
    let e = explain(
        forbidden,
        "creating ClusterRole sextant-reader-istio-system",
        "https://a",
    );
    let text = format!("{e:#}");
    assert!(
        text.starts_with(
            "creating ClusterRole sextant-reader-istio-system: denied by the remote cluster's RBAC"
        ),
        "{text}"
    );
    assert!(text.contains("User \"dev\" cannot create"), "{text}");
    let unauthorized = kube::Error::Api(
        kube::core::Status::failure("Unauthorized", "Unauthorized")
            .with_code(401)
            .boxed(),
    );
    let text = format!(
        "{:#}",
        explain(unauthorized, "reading namespace x", "https://a")
    );
    assert!(
        text.contains("did not accept the kubeconfig's credentials"),
        "{text}"
    );
}

#[test]
fn the_cluster_role_reads_what_the_control_plane_watches() {
    let rules = reader_rules();
    let grants = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_deref()
                .is_some_and(|g| g.iter().any(|g| g == group))
                && r.resources
                    .as_deref()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for resource in ["services", "endpoints", "pods", "namespaces", "nodes"] {
        for verb in ["get", "list", "watch"] {
            assert!(grants("", resource, verb), "{verb} {resource}");
        }
    }
    assert!(grants("discovery.k8s.io", "endpointslices", "watch"));
    assert!(grants("authentication.k8s.io", "tokenreviews", "create"));
    assert!(grants(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "create"
    ));
    assert!(!grants("", "secrets", "get"));
}

#[test]
fn the_help_names_every_resource_the_cluster_role_grants() {
    use clap::CommandFactory;
    let mut cli = crate::cli::Cli::command();
    let command = cli
        .find_subcommand_mut("create-remote-secret")
        .expect("the subcommand");
    let help = command.render_long_help().to_string().to_lowercase();
    for rule in reader_rules() {
        for resource in rule.resources.unwrap_or_default() {
            assert!(
                help.contains(&resource),
                "the help does not name {resource}: {help}"
            );
        }
    }
}

#[test]
fn the_config_clusters_id_is_refused_as_a_remote_clusters_name() {
    let e = check_cluster_name("Kubernetes").expect_err("reserved");
    assert!(
        e.to_string()
            .contains("reserved for the control plane's own (config) cluster"),
        "{e}"
    );
}

#[test]
fn a_missing_kubeconfig_is_named_once_with_its_cause_once() {
    let e = load_kubeconfig(Some(Path::new("/nonexistent"))).expect_err("no such file");
    let text = message(&e);
    assert_eq!(
        text,
        "reading the kubeconfig /nonexistent: No such file or directory (os error 2)"
    );
}

#[test]
fn an_error_whose_text_holds_its_cause_says_the_cause_once() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
    let e = anyhow::Error::new(KubeconfigError::ReadConfig(io, "/x".into())).context("loading");
    let text = message(&e);
    assert_eq!(text.matches("gone").count(), 1, "{text}");
    assert!(
        text.starts_with("loading: failed to read kubeconfig"),
        "{text}"
    );
}
