//! How the sidecar outlives the application when its Pod is deleted. Istio's istio-agent
//! keeps Envoy serving for `terminationDrainDuration` (default 5 s) after SIGTERM, so that the
//! application's last outbound calls still have a proxy; a plain Envoy exits at once on
//! SIGTERM. Kubernetes' `preStop` sleep action does the waiting instead: the kubelet sends
//! SIGTERM to the sidecar only once the sleep is over, while the application shuts down in
//! parallel. (`drainDuration`, Envoy's `--drain-time-s`, is another thing: how long listeners
//! drain when they change.) A native sidecar needs none of this: Kubernetes stops it after
//! the application has exited.

/// The grace period Kubernetes gives a Pod that does not set one.
const DEFAULT_GRACE_SECONDS: u64 = 30;

/// What the sidecar's shutdown needs of the Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shutdown {
    /// The sidecar's `lifecycle.preStop.sleep.seconds`, if it sleeps at all.
    pub sleep_seconds: Option<u64>,
    /// `spec.terminationGracePeriodSeconds` to set: the Pod has none and the default is
    /// shorter than the drain.
    pub grace_seconds: Option<u64>,
    /// Why the sidecar sleeps less than `terminationDrainDuration`.
    pub warning: Option<String>,
}

/// The shutdown of a sidecar draining for `configured` seconds (`terminationDrainDuration`,
/// if the Pod or the mesh config sets it), else `default`, in a Pod whose
/// `terminationGracePeriodSeconds` is `grace`. Kubernetes refuses a sleep longer than the
/// grace period (or of 0 s), so a shorter grace period the Pod sets shortens the sleep; the
/// Pod's own setting is left as it is, with a warning when the drain was asked for (Istio's
/// own sleep sample sets 0 s, and the default drain is then no one's wish).
pub fn shutdown(
    configured: Option<u64>,
    default: u64,
    grace: Option<&serde_json::Value>,
) -> Shutdown {
    let drain = configured.unwrap_or(default);
    let sleep = |seconds: u64| (seconds > 0).then_some(seconds);
    let Some(grace) = grace.filter(|g| !g.is_null()) else {
        return Shutdown {
            sleep_seconds: sleep(drain),
            grace_seconds: (drain > DEFAULT_GRACE_SECONDS).then_some(drain),
            warning: None,
        };
    };
    // A negative or malformed grace period is the API server's to refuse; it bounds nothing.
    let grace = grace.as_u64().unwrap_or(0);
    if grace >= drain {
        return Shutdown {
            sleep_seconds: sleep(drain),
            grace_seconds: None,
            warning: None,
        };
    }
    Shutdown {
        sleep_seconds: sleep(grace),
        grace_seconds: None,
        warning: configured.is_some().then(|| format!(
            "spec.terminationGracePeriodSeconds ({grace}) is shorter than the sidecar's drain (terminationDrainDuration, {drain}s): the sidecar keeps serving for {grace}s after the Pod is deleted"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_grace_period_bounds_the_sleep_and_is_raised_only_when_unset() {
        let plain = shutdown(None, 5, None);
        assert_eq!((plain.sleep_seconds, plain.grace_seconds), (Some(5), None));
        let long = shutdown(Some(45), 5, None);
        assert_eq!(
            (long.sleep_seconds, long.grace_seconds),
            (Some(45), Some(45))
        );
        let set = shutdown(Some(45), 5, Some(&json!(60)));
        assert_eq!((set.sleep_seconds, set.grace_seconds), (Some(45), None));
        let short = shutdown(Some(45), 5, Some(&json!(10)));
        assert_eq!((short.sleep_seconds, short.grace_seconds), (Some(10), None));
        assert!(short.warning.expect("a warning").contains("(10)"));
        // The default drain is bounded without a word.
        let quiet = shutdown(None, 5, Some(&json!(0)));
        assert_eq!((quiet.sleep_seconds, quiet.warning), (None, None));
        assert_eq!(
            shutdown(Some(0), 5, None),
            Shutdown {
                sleep_seconds: None,
                grace_seconds: None,
                warning: None
            }
        );
    }
}
