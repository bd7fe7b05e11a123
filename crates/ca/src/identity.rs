//! The SPIFFE identities a certificate vouches for.

use std::sync::Arc;

use sextant_model::Identity;

/// The SPIFFE ids among a DER certificate's URI SANs.
pub fn certificate_identities(der: &[u8]) -> Arc<[Identity]> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return Arc::from([]);
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Arc::from([]);
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Identity::parse(uri),
            _ => None,
        })
        .collect()
}

/// When a DER certificate expires.
pub(crate) fn not_after(der: &[u8]) -> Option<std::time::SystemTime> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
