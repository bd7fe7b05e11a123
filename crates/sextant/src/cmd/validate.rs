//! `sextant validate`: offline checks of manifests, reported like a compiler.
//!
//! Each VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar and
//! PeerAuthentication is checked against
//! Sextant's CRD schema and Istio's semantic rules, and each Secret that holds a credential is
//! read as the index would. When the input also holds the objects a configuration refers to
//! (Services, DestinationRules, Pods), dangling references are reported as warnings with Istio's
//! analysis codes; Gateways named by VirtualServices are always looked for, and Sidecars are
//! checked against each other and the Pods they select. Those cross-object checks are
//! `sextant_index::analysis`, which `sextant analyze` and the status writer run too;
//! ServiceEntries' (IST0134, IST0177) read the manifest itself (`service_entries`).
//! Kinds Sextant does not validate are skipped with a note.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
};

use serde::Serialize;
use serde_json::Value;
use sextant_index::{
    analysis,
    check::{self, Checked, Config, ObjectKind},
    manifest::{self, Document},
};
use sextant_model::{Kind, ObjectRef};
use sextant_source::files::read_inputs;

use crate::cli::{Output, ValidateArgs};

mod gateways;
mod service_entries;

/// An analysis warning (`code`) about `id` at `field` of the document `located` holds.
fn warning(
    located: &Located,
    id: &ObjectRef,
    field: String,
    code: &'static str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        file: located.file.clone(),
        line: located.doc.line_of(&field),
        severity: Severity::Warning,
        object: Some(id.to_string()),
        field,
        code: Some(code),
        message,
    }
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object is rejected.
    Error,
    /// The object is accepted but something is probably wrong.
    Warning,
    /// Information (skipped documents).
    Note,
}

/// One finding, tied to a file and line.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    /// File name (`<stdin>` for standard input).
    pub file: String,
    /// Line from 1.
    pub line: usize,
    /// Severity.
    pub severity: Severity,
    /// `Kind namespace/name` of the object, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Field path, when the finding is about a field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// Istio analysis code, for reference checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{}:{}: {severity}: ", self.file, self.line)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        if let Some(code) = self.code {
            write!(f, "[{code}] ")?;
        }
        f.write_str(&self.message)
    }
}

/// The result of validating a set of inputs.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Every finding, in input order.
    pub diagnostics: Vec<Diagnostic>,
    /// Number of VirtualServices and DestinationRules checked.
    pub checked: usize,
}

impl Report {
    /// Number of findings of a severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

pub fn run(args: ValidateArgs) -> ExitCode {
    let ValidateArgs {
        files,
        output,
        strict,
        max_regex_program_size,
        input,
    } = args;
    sextant_index::parse::re2::set_max_program_size(max_regex_program_size);
    input.limits().configure();
    let inputs = match read_inputs(&files) {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = validate(&inputs);
    match output {
        Output::Text => {
            for d in &report.diagnostics {
                crate::cmd::out(format_args!("{d}\n"));
            }
            eprintln!(
                "{} object(s) checked: {} error(s), {} warning(s)",
                report.checked,
                report.count(Severity::Error),
                report.count(Severity::Warning)
            );
        }
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => crate::cmd::out(format_args!("{text}\n")),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    }
    let failed =
        report.count(Severity::Error) > 0 || (strict && report.count(Severity::Warning) > 0);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// What the input holds besides configuration, for the reference checks.
#[derive(Default)]
struct Referents {
    /// Service host names.
    services: BTreeSet<String>,
    /// Every Pod, with its namespace and name.
    pods: Vec<PodRef>,
}

/// A Pod of the input.
struct PodRef {
    /// `metadata.namespace` (`default` when none).
    namespace: String,
    /// `metadata.name`.
    name: String,
    /// `metadata.labels`.
    labels: BTreeMap<String, String>,
}

/// Where a checked object came from.
struct Located {
    file: String,
    doc: Document,
    checked: Checked,
}

/// Validates named texts and returns every finding.
pub fn validate(inputs: &[(String, String)]) -> Report {
    validate_with(inputs, false)
}

/// `validate` for inputs that are every object of a cluster (`sextant analyze`): a subset no
/// DestinationRule defines and a host no Service declares are judged even when the inputs
/// hold no DestinationRule or no Service, as the status writer judges the cluster's snapshot.
pub fn validate_complete(inputs: &[(String, String)]) -> Report {
    validate_with(inputs, true)
}

fn validate_with(inputs: &[(String, String)], complete: bool) -> Report {
    let mut report = Report::default();
    let mut configs: Vec<Located> = Vec::new();
    let mut referents = Referents::default();
    for (file, text) in inputs {
        let docs = match manifest::parse_documents(text) {
            Ok(docs) => docs,
            Err(e) => {
                let line = e.line();
                report
                    .diagnostics
                    .push(diag(file, line, Severity::Error, None, "", e.to_string()));
                continue;
            }
        };
        for doc in docs {
            for (item, value) in expand_lists(&doc.value) {
                let line = match &item {
                    Some(i) => doc.line_of(&format!("items[{i}]")),
                    None => doc.line,
                };
                handle_object(
                    file,
                    &doc,
                    item,
                    value,
                    line,
                    &mut report,
                    &mut configs,
                    &mut referents,
                );
            }
        }
    }
    for located in &configs {
        emit_checked(located, &mut report);
    }
    let mut services = referents.services.clone();
    if complete || !services.is_empty() {
        services.extend(service_entries::hosts(&configs));
    }
    shared_analysis(&configs, &services, &referents.pods, complete, &mut report);
    service_entries::analyze(&configs, &mut report);
    let order: BTreeMap<&str, usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    report
        .diagnostics
        .sort_by_key(|d| (order.get(d.file.as_str()).copied(), d.line));
    report
}

/// `kind: List` documents (as `kubectl get -o yaml` writes) are checked item by item.
fn expand_lists(value: &Value) -> Vec<(Option<usize>, Value)> {
    if value.get("kind").and_then(Value::as_str) == Some("List")
        && let Some(items) = value.get("items").and_then(Value::as_array)
    {
        return items
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| (Some(i), v))
            .collect();
    }
    vec![(None, value.clone())]
}

#[allow(clippy::too_many_arguments)]
fn handle_object(
    file: &str,
    doc: &Document,
    item: Option<usize>,
    value: Value,
    line: usize,
    report: &mut Report,
    configs: &mut Vec<Located>,
    referents: &mut Referents,
) {
    if value.is_null() {
        return;
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        report.diagnostics.push(diag(
            file,
            line,
            Severity::Error,
            None,
            "",
            "not a Kubernetes object: apiVersion and kind are required".into(),
        ));
        return;
    }
    match check::classify(api_version, kind) {
        ObjectKind::Istio(k) => {
            report.checked += 1;
            let checked = check::check_istio_object(k, &value);
            let mut doc = doc.clone();
            if let Some(i) = item {
                doc = rebase(&doc, i, value);
            }
            configs.push(Located {
                file: file.to_owned(),
                doc,
                checked,
            });
        }
        ObjectKind::UnservedVersion(k) => report.diagnostics.push(diag(
            file,
            line,
            Severity::Error,
            None,
            "apiVersion",
            if k == Kind::PeerAuthentication {
                format!(
                    "{} is not served at {api_version}; use security.istio.io/v1 or v1beta1",
                    k.as_str()
                )
            } else {
                format!(
                    "{} is not served at {api_version}; use networking.istio.io/v1, v1beta1 or v1alpha3",
                    k.as_str()
                )
            },
        )),
        ObjectKind::Kubernetes(Kind::Service) => {
            let meta = value.get("metadata");
            let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
            let ns = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            referents
                .services
                .insert(format!("{name}.{ns}.svc.cluster.local"));
        }
        ObjectKind::Kubernetes(Kind::Pod) => {
            let labels = value
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            let meta = |key: &str| {
                value
                    .pointer(&format!("/metadata/{key}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let namespace = Some(meta("namespace"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned());
            referents.pods.push(PodRef {
                namespace,
                name: meta("name"),
                labels,
            });
        }
        ObjectKind::Kubernetes(Kind::Secret) => {
            gateways::check_secret(file, doc, item, &value, line, report);
        }
        ObjectKind::Kubernetes(_) => {}
        ObjectKind::Other => report.diagnostics.push(diag(
            file,
            line,
            Severity::Note,
            None,
            "",
            format!("skipping {kind} ({api_version}): not a kind sextant validates"),
        )),
    }
}

/// Field lines of a `List` item are looked up under `items[i]`.
fn rebase(doc: &Document, item: usize, value: Value) -> Document {
    let mut out = doc.clone();
    out.value = value;
    out.line = doc.line_of(&format!("items[{item}]"));
    out.set_prefix(format!("items[{item}]"));
    out
}

fn emit_checked(located: &Located, report: &mut Report) {
    let object = Some(located.checked.object.to_string());
    for (severity, list) in [
        (Severity::Error, &located.checked.errors),
        (Severity::Warning, &located.checked.warnings),
    ] {
        for e in list {
            let line = if e.path.is_empty() {
                located.doc.line
            } else {
                located.doc.line_of(&e.path)
            };
            report.diagnostics.push(diag(
                &located.file,
                line,
                severity,
                object.clone(),
                &e.path,
                e.message.clone(),
            ));
        }
    }
}

fn diag(
    file: &str,
    line: usize,
    severity: Severity,
    object: Option<String>,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        severity,
        object,
        field: field.to_owned(),
        code: None,
        message,
    }
}

/// The analysis `sextant analyze` and the status writer share (`sextant_index::analysis`),
/// over the valid objects of the input; each finding is a warning at its field's line.
fn shared_analysis(
    configs: &[Located],
    services: &BTreeSet<String>,
    pods: &[PodRef],
    complete: bool,
    report: &mut Report,
) {
    let mut input = analysis::Input {
        domain_suffix: "cluster.local",
        judge_subsets: complete,
        ..analysis::Input::default()
    };
    // Where each object of the input's lists came from, list by list.
    let (mut vs_at, mut dr_at, mut gw_at, mut sc_at) = (vec![], vec![], vec![], vec![]);
    for located in configs {
        let id = &located.checked.object;
        if id.kind == Kind::Gateway {
            // Present, valid or not: an invalid one is reported for its own errors.
            input
                .gateway_names
                .insert(format!("{}/{}", id.namespace, id.name));
        }
        match &located.checked.config {
            Some(Config::VirtualService(vs)) => {
                input.virtual_services.push(vs);
                vs_at.push(located);
            }
            Some(Config::DestinationRule(dr)) => {
                input.judge_subsets = true;
                input.destination_rules.push(dr);
                dr_at.push(located);
            }
            Some(Config::Gateway(gw)) => {
                input.gateways.push(gw);
                gw_at.push(located);
            }
            Some(Config::Sidecar(sc)) => {
                input.sidecars.push(sc);
                sc_at.push(located);
            }
            _ => {}
        }
    }
    input.services = (complete || !services.is_empty())
        .then(|| analysis::Hosts::Set(services.iter().map(String::as_str).collect()));
    input.pods = Some(
        pods.iter()
            .map(|p| analysis::Pod {
                namespace: &p.namespace,
                name: &p.name,
                labels: &p.labels,
            })
            .collect(),
    );
    for m in analysis::analyze(&input) {
        let located = match m.object.kind {
            Kind::VirtualService => vs_at[m.at],
            Kind::DestinationRule => dr_at[m.at],
            Kind::Gateway => gw_at[m.at],
            _ => sc_at[m.at],
        };
        report.diagnostics.push(warning(
            located,
            &m.object,
            m.field,
            m.code.code,
            m.description,
        ));
    }
}
