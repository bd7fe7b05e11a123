//! The Secrets holding Gateways' credentials. (The Gateways VirtualServices bind to and the
//! Pods Gateway selectors pick are `sextant_index::analysis`'s.)

use serde_json::Value;
use sextant_index::{manifest::Document, parse};

use super::{Report, Severity, diag, rebase};

/// Reads a Secret as the index would: a value that is not base64 is an error naming the key.
/// Secrets that hold no credential are fine.
pub(super) fn check_secret(
    file: &str,
    doc: &Document,
    item: Option<usize>,
    value: &Value,
    line: usize,
    report: &mut Report,
) {
    let errors = match parse::Secret::from_json(value) {
        Err(e) => {
            report.diagnostics.push(diag(
                file,
                line,
                Severity::Error,
                None,
                "",
                format!("Secret: {e}"),
            ));
            return;
        }
        Ok(secret) => match parse::secret(&secret) {
            Ok(_) => return,
            Err(invalid) => invalid,
        },
    };
    let doc = match item {
        Some(i) => rebase(doc, i, value.clone()),
        None => doc.clone(),
    };
    for e in errors.errors {
        report.diagnostics.push(diag(
            file,
            doc.line_of(&e.path),
            Severity::Error,
            Some(errors.object.to_string()),
            &e.path,
            e.message,
        ));
    }
}
