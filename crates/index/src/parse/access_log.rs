//! The mesh config's `accessLogFile` and `accessLogFormat`, checked before they reach Envoy.
//! Istio passes both through unchecked, and Envoy then rejects every listener that carries
//! them (`Not supported field in StreamInfo: FOO`, `unable to open file`): every proxy NACKs,
//! and no later listener change lands until the mesh config is fixed. Here a value Envoy
//! would refuse is an error naming the field, and the last good mesh config stays in force.

/// The longest format accepted: it is copied into every connection manager of every proxy.
pub const MAX_FORMAT_BYTES: usize = 16 << 10;

/// Envoy's format commands (`%NAME%`, `%NAME(ARGS)%`, `%NAME(ARGS):LENGTH%`) as of Envoy 1.40,
/// besides the families `matches_family` accepts.
const COMMANDS: &[&str] = &[
    "ACCESS_LOG_TYPE",
    "BYTES_RECEIVED",
    "BYTES_RETRANSMITTED",
    "BYTES_SENT",
    "CEL",
    "CLUSTER_METADATA",
    "CONNECTION_ID",
    "CONNECTION_TERMINATION_DETAILS",
    "CUSTOM_FLAGS",
    "DURATION",
    "DYNAMIC_METADATA",
    "EMIT_TIME",
    "EMIT_TIME_LOCAL",
    "ENVIRONMENT",
    "FILTER_CHAIN_NAME",
    "FILTER_STATE",
    "GRPC_STATUS",
    "GRPC_STATUS_NUMBER",
    "HOSTNAME",
    "LOCAL_REPLY_BODY",
    "METADATA",
    "PACKETS_RETRANSMITTED",
    "PATH",
    "PROTOCOL",
    "QUERY_PARAM",
    "REQ",
    "REQ_WITHOUT_QUERY",
    "REQUESTED_SERVER_NAME",
    "RESP",
    "RESPONSE_CODE",
    "RESPONSE_CODE_DETAILS",
    "RESPONSE_FLAGS",
    "RESPONSE_FLAGS_LONG",
    "ROUTE_NAME",
    "START_TIME",
    "START_TIME_LOCAL",
    "STREAM_ID",
    "TRACE_ID",
    "TRAILER",
    "UNIQUE_ID",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_HOST",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_HOST_NAME_WITHOUT_PORT",
    "UPSTREAM_METADATA",
    "UPSTREAM_PROTOCOL",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "VIRTUAL_CLUSTER_NAME",
];

/// Families of commands named by their parts (addresses, ports, TLS details of either side,
/// durations and byte counts), so that a command of a family the list above does not spell
/// out is not refused.
fn matches_family(name: &str) -> bool {
    let side = ["DOWNSTREAM_", "UPSTREAM_"]
        .iter()
        .any(|p| name.starts_with(p));
    let part = [
        "ADDRESS",
        "PORT",
        "SAN",
        "SUBJECT",
        "ISSUER",
        "CERT",
        "TLS_",
        "PEER_",
        "LOCAL_",
        "REMOTE_",
        "DIRECT_",
        "FINGERPRINT",
        "SERIAL",
        "FILTER_STATE",
        "CONNECTION",
        "TRANSPORT_FAILURE_REASON",
        "BYTES",
        "HANDSHAKE",
    ]
    .iter()
    .any(|p| name.contains(p));
    (side && part) || name.ends_with("_DURATION") || name.ends_with("_BYTES")
}

/// Whether Envoy takes `format` as a substitution format string: every `%` opens a known
/// command that is closed, with balanced arguments and a numeric length.
pub fn check_format(format: &str) -> Result<(), String> {
    if format.len() > MAX_FORMAT_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_FORMAT_BYTES} accepted",
            format.len()
        ));
    }
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        let command = &rest[at + 1..];
        let name_len = command
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        let name = &command[..name_len];
        let mut after = &command[name_len..];
        if name.is_empty() {
            return Err(format!(
                "a '%' at byte {} starts no command (Envoy's commands are %NAME%)",
                format.len() - rest.len() + at
            ));
        }
        if !COMMANDS.contains(&name) && !matches_family(name) {
            return Err(format!(
                "unknown command %{name}% (Envoy: \"Not supported field in StreamInfo: {name}\")"
            ));
        }
        if let Some(args) = after.strip_prefix('(') {
            let mut depth = 1usize;
            let close = args.char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            });
            let Some(close) = close else {
                return Err(format!("%{name}(: its arguments are not closed by ')'"));
            };
            after = &args[close + 1..];
        }
        if let Some(length) = after.strip_prefix(':') {
            let digits = length.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!("%{name}: the length after ':' must be a number"));
            }
            after = &length[digits..];
        }
        match after.strip_prefix('%') {
            Some(next) => rest = next,
            None => return Err(format!("%{name}: not closed by '%'")),
        }
    }
    Ok(())
}

/// Whether Envoy can open `file` for its file logger: a path from the root (Envoy's working
/// directory is nobody's choice), without NUL.
pub fn check_file(file: &str) -> Result<(), String> {
    if file.contains('\0') {
        return Err("holds a NUL byte".to_owned());
    }
    if !file.starts_with('/') {
        return Err(format!(
            "{file:?} is not an absolute path (/dev/stdout, or a file from the root)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_default_format_and_commands_with_arguments_pass() {
        let istio = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";
        assert_eq!(check_format(istio), Ok(()));
        for ok in [
            "%REQ(USER-AGENT):10%",
            "%START_TIME(%s.%3f)%",
            "%DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_TLS_VERSION% %REQUEST_DURATION%",
            "%DYNAMIC_METADATA(istio:a:b)%",
            "no commands at all",
            "",
        ] {
            assert_eq!(check_format(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_envoy_refuses_is_named() {
        for (bad, says) in [
            ("%FOO%", "unknown command %FOO%"),
            ("%START_TIME unterminated", "not closed by '%'"),
            ("%REQ(%", "not closed by ')'"),
            ("%REQ(X-Y):abc%", "must be a number"),
            ("100% sure", "starts no command"),
        ] {
            let e = check_format(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_format(&"x".repeat(MAX_FORMAT_BYTES + 1)).is_err());
    }

    #[test]
    fn log_files_are_absolute_paths() {
        assert_eq!(check_file("/dev/stdout"), Ok(()));
        assert!(check_file("relative/access.log").is_err());
        assert!(check_file("/a\0b").is_err());
    }
}
