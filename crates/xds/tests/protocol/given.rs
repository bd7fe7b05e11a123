//! The limits and the clock a state machine is given.

use super::*;

#[test]
fn nack_text_is_kept_up_to_the_limit_cut_on_a_character_boundary() {
    use sextant_xds::protocol::Limits;
    let limits = Limits {
        nack_message_bytes: 9,
        ..Limits::default()
    };
    let all = state(&[("a", 1)]);
    // 'é' is two bytes: the ninth byte falls inside the fifth one, which is not kept.
    let long = "ééééé-and-a-long-tail".repeat(1000);
    for (text, kept, cut) in [
        ("short", "short".to_owned(), false),
        (
            long.as_str(),
            format!("éééé... ({} more bytes cut)", long.len() - 8),
            true,
        ),
    ] {
        let mut s = sotw().with_limits(limits);
        let r = s
            .on_request(req(type_url::CLUSTER, &[], "", ""), &all)
            .expect("response");
        let mut n = req(type_url::CLUSTER, &[], &r.nonce, "");
        n.error_detail = Some(Status {
            code: 3,
            message: text.to_owned(),
            ..Default::default()
        });
        s.on_request(n, &all);
        assert_eq!(
            s.status()[type_url::CLUSTER].nack.as_ref().map(|n| &n.1),
            Some(&kept)
        );
        assert!(matches!(
            s.events.last(),
            Some(Event::Nack { error, truncated, .. }) if *error == kept && *truncated == cut
        ));

        let mut d = delta().with_limits(limits);
        let r = d
            .on_request(dreq(type_url::CLUSTER, &[], &[], ""), &all)
            .expect("response");
        let mut n = dreq(type_url::CLUSTER, &[], &[], &r.nonce);
        n.error_detail = Some(Status {
            code: 3,
            message: text.to_owned(),
            ..Default::default()
        });
        d.on_request(n, &all);
        assert_eq!(
            d.status()[type_url::CLUSTER].nack.as_ref().map(|n| &n.1),
            Some(&kept)
        );
    }
}

/// A clock that stands still until moved.
struct FixedClock(std::sync::Mutex<std::time::SystemTime>);

impl sextant_xds::protocol::Clock for FixedClock {
    fn now(&self) -> std::time::SystemTime {
        *self.0.lock().expect("clock")
    }
}

#[test]
fn sent_and_acked_times_come_from_the_injected_clock() {
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let clock = Arc::new(FixedClock(std::sync::Mutex::new(start)));
    let all = state(&[("a", 1)]);
    for (name, status) in [
        ("sotw", {
            let mut s = Sotw::new(Interner::default(), clock.clone());
            let r = s
                .on_request(req(type_url::CLUSTER, &[], "", ""), &all)
                .expect("response");
            *clock.0.lock().expect("clock") = start + std::time::Duration::from_secs(5);
            s.on_request(req(type_url::CLUSTER, &[], &r.nonce, &r.version_info), &all);
            s.status()
        }),
        ("delta", {
            *clock.0.lock().expect("clock") = start;
            let mut d = Delta::new(clock.clone());
            let r = d
                .on_request(dreq(type_url::CLUSTER, &[], &[], ""), &all)
                .expect("response");
            *clock.0.lock().expect("clock") = start + std::time::Duration::from_secs(5);
            d.on_request(dreq(type_url::CLUSTER, &[], &[], &r.nonce), &all);
            d.status()
        }),
    ] {
        let cds = &status[type_url::CLUSTER];
        assert_eq!(cds.sent_at, Some(start), "{name}");
        assert_eq!(
            cds.acked_at,
            Some(start + std::time::Duration::from_secs(5)),
            "{name}"
        );
    }
}

#[test]
fn subscriptions_past_the_name_limit_are_refused() {
    use sextant_xds::protocol::{Limits, Refused};
    let limits = Limits {
        subscription_names: 3,
        ..Limits::default()
    };
    let all = state(&[("a", 1)]);
    // State of the world: each request carries the whole subscription.
    let s = sotw().with_limits(limits);
    assert_eq!(
        s.admit(&req(type_url::ENDPOINT, &["a", "b", "c"], "", "").into()),
        Ok(())
    );
    let refused = s
        .admit(&req(type_url::ENDPOINT, &["a", "b", "c", "d"], "", "").into())
        .expect_err("four names");
    assert_eq!(
        refused,
        Refused::TooManyNames {
            type_url: type_url::ENDPOINT.to_owned(),
            names: 4,
            limit: 3
        }
    );
    assert_eq!(refused.bound(), "subscription_names");
    // Delta: requests add to the subscription; names held already and removals count.
    let mut d = delta().with_limits(limits);
    let first = dreq(type_url::ENDPOINT, &["a", "b"], &[], "");
    assert_eq!(d.admit(&first), Ok(()));
    d.on_request(first, &all);
    assert_eq!(
        d.admit(&dreq(type_url::ENDPOINT, &["b", "c"], &[], "")),
        Ok(())
    );
    assert!(
        d.admit(&dreq(type_url::ENDPOINT, &["c", "d"], &[], ""))
            .is_err()
    );
    assert_eq!(
        d.admit(&dreq(type_url::ENDPOINT, &["c", "d"], &["a"], "")),
        Ok(())
    );
}
