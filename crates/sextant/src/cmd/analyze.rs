//! `sextant analyze`: `sextant validate`'s checks across a live cluster's objects, printed as
//! `istioctl analyze` prints them.
//!
//! The Istio kinds Sextant serves, and the Services and Pods the reference checks read, are
//! listed from every namespace (a VirtualService may route to a Service, or bind to a Gateway,
//! of another namespace); only the messages about the namespace asked for (`-n`, else the
//! kubeconfig context's) are shown, or about every namespace with `-A`. Each object is checked
//! as `validate` checks a file holding it, so the two cannot disagree; the cross-object
//! analysis is `sextant_index::analysis`, the one the status writer runs too. Messages carry
//! Istio's level for their code (IST0101 is an error), and the exit code is 79, as istioctl's,
//! when one is at or above `--failure-threshold`.

mod cluster;

use std::{collections::HashSet, path::PathBuf, process::ExitCode};

use clap::ValueEnum;
use serde_json::{Value, json};
use sextant_index::analysis::{self, Code, Level};

use super::{
    output::{self, Format},
    validate::{self, Diagnostic, Severity},
};

/// istioctl's exit code when analysis finds issues at or above the failure threshold.
pub const ISSUES_FOUND: u8 = 79;

/// Arguments of `sextant analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories of manifests to analyze with the cluster's objects; an object in
    /// them replaces the cluster's object of the same kind, namespace and name.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// The namespace whose objects are reported (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Report the objects of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Kubeconfig file (default: as kubectl finds it, `KUBECONFIG` else `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The lowest level that makes the exit code 79.
    #[arg(long, value_enum, default_value_t = Threshold::Error, ignore_case = true)]
    pub failure_threshold: Threshold,
    /// The lowest level printed.
    #[arg(long, value_enum, default_value_t = Threshold::Info, ignore_case = true)]
    pub output_threshold: Threshold,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// A level as a threshold (`--failure-threshold Warning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Everything.
    Info,
}

impl Threshold {
    fn admits(self, level: Level) -> bool {
        let most = match self {
            Threshold::Error => Level::Error,
            Threshold::Warning => Level::Warning,
            Threshold::Info => Level::Info,
        };
        // Levels order Error < Warning < Info.
        level <= most
    }
}

/// One message as istioctl shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// `VirtualService default/reviews` (or a file, for a file that could not be read).
    pub origin: String,
    /// The message type.
    pub code: &'static str,
    /// Its level.
    pub level: Level,
    /// For people.
    pub message: String,
    /// The field at fault, when known.
    pub field: String,
}

pub fn run(args: AnalyzeArgs) -> ExitCode {
    let AnalyzeArgs {
        files,
        namespace,
        all_namespaces,
        kubeconfig,
        context,
        failure_threshold,
        output_threshold,
        output,
    } = args;
    let local = match sextant_source::files::read_inputs(&files) {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let live = match cluster::runtime()
        .and_then(|rt| rt.block_on(cluster::list(kubeconfig.as_deref(), context.clone())))
    {
        Ok(live) => live,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let namespace = namespace.unwrap_or_else(|| live.namespace.clone());
    let scope = (!all_namespaces).then_some(namespace.as_str());
    let findings = analyze(live.objects, local, scope);
    let shown: Vec<&Finding> = findings
        .iter()
        .filter(|f| output_threshold.admits(f.level))
        .collect();
    let value = Value::Array(shown.iter().map(|f| to_json(f)).collect());
    output::print(output, &value, |_| table(&shown, scope));
    if findings.iter().any(|f| failure_threshold.admits(f.level)) {
        ExitCode::from(ISSUES_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks the `live` objects (minus those `local` files replace) with the `local` files, and
/// returns the messages about the namespace `scope` (every namespace when `None`), sorted.
pub fn analyze(
    live: Vec<Value>,
    local: Vec<(String, String)>,
    scope: Option<&str>,
) -> Vec<Finding> {
    // Files' objects without a namespace are `default`'s, as `validate` reads them.
    let replaced = cluster::identities(&local, "default");
    let mut inputs: Vec<(String, String)> = live
        .into_iter()
        .filter_map(|object| {
            let id = cluster::identity(&object, "default")?;
            (!replaced.contains(&id))
                .then(|| (id.origin(), sextant_index::manifest::to_yaml(&[object])))
        })
        .collect();
    inputs.extend(local);
    let report = validate::validate_complete(&inputs);
    let mut seen = HashSet::new();
    let mut out: Vec<Finding> = report
        .diagnostics
        .iter()
        .filter_map(finding)
        .filter(|f| scope.is_none_or(|ns| namespace_of(&f.origin).is_none_or(|n| n == ns)))
        .filter(|f| seen.insert(f.clone()))
        .collect();
    out.sort();
    out
}

/// The namespace of an origin `Kind namespace/name`.
fn namespace_of(origin: &str) -> Option<&str> {
    let (_, id) = origin.split_once(' ')?;
    Some(id.split_once('/')?.0)
}

/// A diagnostic of `validate` as istioctl shows it: the analysis codes at Istio's level, an
/// object's own errors as IST0106 and its warnings as IST0133; notes are not shown.
fn finding(d: &Diagnostic) -> Option<Finding> {
    let code: Code = match (d.code.and_then(analysis::code), d.severity) {
        (Some(code), _) => code,
        (None, Severity::Error) => analysis::SCHEMA_VALIDATION_ERROR,
        (None, Severity::Warning) => analysis::SCHEMA_WARNING,
        (None, Severity::Note) => return None,
    };
    let message = if d.code.is_some() || d.field.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.field, d.message)
    };
    Some(Finding {
        origin: d.object.clone().unwrap_or_else(|| d.file.clone()),
        code: code.code,
        level: code.level,
        message,
        field: d.field.clone(),
    })
}

fn to_json(f: &Finding) -> Value {
    let mut value = json!({
        "code": f.code,
        "level": f.level.as_title(),
        "origin": f.origin,
        "message": f.message,
    });
    if let Some(code) = analysis::code(f.code) {
        value["documentationUrl"] = json!(code.documentation_url());
    }
    if !f.field.is_empty() {
        value["field"] = json!(f.field);
    }
    value
}

/// istioctl's lines: `Error [IST0101] (VirtualService default/reviews) ...`.
fn table(findings: &[&Finding], scope: Option<&str>) -> String {
    if findings.is_empty() {
        return match scope {
            Some(ns) => format!("✔ No validation issues found when analyzing namespace: {ns}.\n"),
            None => "✔ No validation issues found when analyzing all namespaces.\n".to_owned(),
        };
    }
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{} [{}] ({}) {}\n",
            f.level.as_title(),
            f.code,
            super::output::printable(&f.origin),
            super::output::printable(&f.message)
        ));
    }
    out
}

#[cfg(test)]
mod tests;
