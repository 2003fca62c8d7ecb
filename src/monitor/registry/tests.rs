//! The registry's unit tests.

use super::*;
use crate::monitor::service::{app_status_line, host_status_line, list_body};
use std::net::{Ipv4Addr, Ipv6Addr};

fn d(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The `/status?appid=APP` body, as the service renders it.
fn status_text(r: &mut Registry, app: &str, peer: IpAddr, now: Instant) -> String {
    let config = r.config().clone();
    app_status_line(&r.status(app, peer, now), &config)
}

/// The `/status` body, as the service renders it.
fn host_text(r: &mut Registry, now: Instant) -> String {
    let config = r.config().clone();
    host_status_line(&r.host_status(now), &config)
}

/// The `/list` body, as the service renders it.
fn list_text(r: &mut Registry, now: Instant) -> String {
    list_body(&r.list(now))
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

#[test]
fn keys_print_the_peer_as_display_does() {
    let r = Registry::default();
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "127.0.0.1",
        "255.255.255.255",
        "1.2.3.4",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(r.key_for("T", ip), format!("T @ {ip}"));
    }
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(r.key_for("T", v6), "T @ 2001:db8::1");
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
    assert_eq!(r.key_for("T", mapped), "T @ 10.0.0.7");
}

#[test]
fn registry_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
}

#[test]
fn granted_is_requested_plus_tolerance() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    assert_eq!(r.init("a", LOCAL, d(2000), t0), Ok(d(3000)));
    assert_eq!(r.ping("a", LOCAL, d(0), t0), Ok(d(1000)));
    assert_eq!(r.ping("b", LOCAL, d(u64::MAX), t0), Ok(d(u64::MAX)));
    assert_eq!(r.len(), 2);
}

#[test]
fn boundaries_ok_warning_critical_dropped() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("T", LOCAL, d(0), t0).unwrap();
    let line = |r: &mut Registry, at| status_text(r, "T", LOCAL, ms(t0, at));
    let perf = |od: &str| format!("| od={od};3;5;0;6 delay=1000ms;;; ");
    assert_eq!(
        line(&mut r, 2990),
        format!("OK - fine application [T @ 127.0.0.1]{}", perf("2.99"))
    );
    assert_eq!(
        line(&mut r, 3000),
        format!(
            "WARNING - somewhat late application [T @ 127.0.0.1]{}",
            perf("3.00")
        )
    );
    assert_eq!(
        line(&mut r, 4990),
        format!(
            "WARNING - somewhat late application [T @ 127.0.0.1]{}",
            perf("4.99")
        )
    );
    assert_eq!(
        line(&mut r, 5000),
        format!(
            "CRITICAL - quite late application [T @ 127.0.0.1]{}",
            perf("5.00")
        )
    );
    assert_eq!(
        line(&mut r, 5990),
        format!(
            "CRITICAL - quite late application [T @ 127.0.0.1]{}",
            perf("5.99")
        )
    );
    assert_eq!(r.len(), 1);
    assert_eq!(
        line(&mut r, 6000),
        "CRITICAL - no application record for queried ID: [T @ 127.0.0.1]"
    );
    assert_eq!(r.len(), 0);
    assert_eq!(r.counters().expiries, 1);
}

#[test]
fn one_microsecond_before_drop_is_kept() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("T", LOCAL, d(0), t0).unwrap();
    assert_eq!(r.expire(t0 + Duration::from_micros(5_999_999)), 0);
    assert_eq!(r.expire(t0 + Duration::from_micros(6_000_000)), 1);
}

#[test]
fn ping_refreshes_and_init_refreshes() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.ping("T", LOCAL, d(0), t0).unwrap(); // ping registers
    r.init("T", LOCAL, d(2000), ms(t0, 5000)).unwrap(); // init refreshes
    assert!(status_text(&mut r, "T", LOCAL, ms(t0, 6500)).starts_with("OK - fine"));
    assert!(host_text(&mut r, ms(t0, 6500)).contains("od=0.50;3;5;0;6 delay=3000ms"));
    // The old deadline (t0+6s) no longer applies; the new one is 5s+18s.
    assert_eq!(r.expire(ms(t0, 22_999)), 0);
    assert_eq!(r.deadline_index_len(), 1);
    assert_eq!(r.expire(ms(t0, 23_000)), 1);
    // Late at 3 s and 5 s on the first grant, back to OK by the init at
    // 5 s (CRITICAL is reached at exactly 5 × 1 s, so it comes first),
    // late again on the second grant.
    let events: Vec<String> = r.take_events().iter().map(ToString::to_string).collect();
    assert_eq!(
        events,
        [
            "Construction of [T @ 127.0.0.1]",
            "Lateness of [T @ 127.0.0.1]: WARNING",
            "Lateness of [T @ 127.0.0.1]: CRITICAL",
            "Recovery of [T @ 127.0.0.1]: OK",
            "Lateness of [T @ 127.0.0.1]: WARNING",
            "Lateness of [T @ 127.0.0.1]: CRITICAL",
            "Expiry of [T @ 127.0.0.1]"
        ]
    );
    assert!(r.take_events().is_empty());
    let c = r.counters();
    assert_eq!((c.inits, c.pings, c.expiries), (1, 1, 1));
}

#[test]
fn done_removes_immediately() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("T", LOCAL, d(1_000_000), t0).unwrap();
    assert!(!r.done("T", OTHER, t0)); // other host's T is unknown
    assert!(r.done("T", LOCAL, t0));
    assert!(!r.done("T", LOCAL, t0));
    assert!(r.is_empty());
    assert_eq!(r.deadline_index_len(), 0);
    assert_eq!(r.counters().dones, 3);
    let events = r.take_events();
    let last = events.last().map(|e| (e.kind, &*e.key, e.previous));
    assert_eq!(
        last,
        Some((EventKind::Done, "T @ 127.0.0.1", Some(State::Ok)))
    );
}

#[test]
fn host_status_and_list_with_zero_one_several() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    assert_eq!(
        host_text(&mut r, t0),
        "UNKNOWN - no heartbeat clients at the moment..."
    );
    assert_eq!(list_text(&mut r, t0), "");
    r.init("B", OTHER, d(2000), t0).unwrap();
    assert_eq!(
        host_text(&mut r, t0),
        "OK - fine application [B @ 1.2.3.4]| od=0.00;3;5;0;6 delay=3000ms;;; "
    );
    r.init("C", OTHER, d(2000), t0).unwrap();
    r.init("A", OTHER, d(2000), t0).unwrap();
    assert_eq!(
        host_text(&mut r, t0),
        "WARNING - multiple (3) applications: [A @ 1.2.3.4,B @ 1.2.3.4,C @ 1.2.3.4]"
    );
    assert_eq!(
        list_text(&mut r, t0),
        "A @ 1.2.3.4\nB @ 1.2.3.4\nC @ 1.2.3.4\n"
    );
}

/// The registry answers with typed data; only the service renders text.
#[test]
fn status_and_list_are_typed() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    assert_eq!(r.host_status(t0), HostStatus::NoClients);
    assert_eq!(
        r.status("B", OTHER, t0),
        AppStatus::NoRecord {
            key: "B @ 1.2.3.4".into()
        }
    );
    r.init("B", OTHER, d(2000), t0).unwrap();
    let one = AppInfo {
        key: "B @ 1.2.3.4",
        overdue_ratio: 0.5,
        granted: d(3000),
        state: State::Ok,
        failed: None,
    };
    assert_eq!(r.status("B", OTHER, ms(t0, 1500)), AppStatus::Tracked(one));
    assert_eq!(r.host_status(ms(t0, 1500)), HostStatus::One(one));
    let late = r.status("B", OTHER, ms(t0, 9000));
    assert!(matches!(
        late,
        AppStatus::Tracked(AppInfo {
            state: State::Warning,
            ..
        })
    ));
    r.init("A", OTHER, d(2000), t0).unwrap();
    assert_eq!(
        r.host_status(t0),
        HostStatus::Multiple(vec!["A @ 1.2.3.4", "B @ 1.2.3.4"])
    );
    assert_eq!(r.list(t0), ["A @ 1.2.3.4", "B @ 1.2.3.4"]);
}

#[test]
fn same_id_from_two_hosts_is_two_records() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("T", LOCAL, d(0), t0).unwrap();
    r.init("T", OTHER, d(0), t0).unwrap();
    assert_eq!(r.len(), 2);
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(status_text(&mut r, "T", mapped, t0).starts_with("OK"));
    r.init("T", IpAddr::V6(Ipv6Addr::LOCALHOST), d(0), t0)
        .unwrap();
    assert!(list_text(&mut r, t0).contains("T @ ::1\n"));
}

#[test]
fn bare_keys_when_not_keyed_by_peer() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        key_by_peer: false,
        ..RegistryConfig::default()
    });
    r.init("T", LOCAL, d(0), t0).unwrap();
    r.ping("T", OTHER, d(0), t0).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(list_text(&mut r, t0), "T\n");
    assert!(status_text(&mut r, "T", OTHER, t0).starts_with("OK - fine application [T]| "));
    assert_eq!(
        status_text(&mut r, "U", OTHER, t0),
        "CRITICAL - no application record for queried ID: [U]"
    );
    assert!(r.done("T", LOCAL, t0));
}

#[test]
fn max_apps_refuses_new_but_not_existing() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 2,
        ..RegistryConfig::default()
    });
    r.init("a", LOCAL, d(0), t0).unwrap();
    r.init("b", LOCAL, d(100_000), t0).unwrap();
    assert_eq!(r.init("c", LOCAL, d(0), t0), Err(RegistryFull::full(2)));
    assert_eq!(r.ping("c", LOCAL, d(0), t0), Err(RegistryFull::full(2)));
    assert_eq!(r.ping("a", LOCAL, d(0), t0), Ok(d(1000)));
    assert_eq!(r.counters().refused, 2);
    assert_eq!(r.counters().pings, 1);
    assert!(!list_text(&mut r, t0).contains('c'));
    // Once "a" expires there is room again.
    assert_eq!(r.ping("c", LOCAL, d(0), ms(t0, 6000)), Ok(d(1000)));
    assert_eq!(
        list_text(&mut r, ms(t0, 6000)),
        "b @ 127.0.0.1\nc @ 127.0.0.1\n"
    );
}

#[test]
fn apps_view_and_custom_ratios() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        tolerance: Duration::ZERO,
        warn_ratio: 1.5,
        crit_ratio: 2.0,
        drop_ratio: 2.5,
        ..RegistryConfig::default()
    });
    r.init("a", LOCAL, d(1000), t0).unwrap();
    let view: Vec<AppInfo<'_>> = r.apps(ms(t0, 1500)).collect();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].key, "a @ 127.0.0.1");
    assert_eq!(view[0].granted, d(1000));
    assert_eq!(view[0].state, State::Warning);
    assert!((view[0].overdue_ratio - 1.5).abs() < 1e-9);
    assert_eq!(
        host_text(&mut r, ms(t0, 2000)),
        "CRITICAL - quite late application [a @ 127.0.0.1]| od=2.00;1.5;2;0;2.5 delay=1000ms;;; "
    );
    assert_eq!(r.expire(ms(t0, 2500)), 1);
}

#[test]
fn zero_granted_timeout_never_divides_by_zero() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        tolerance: Duration::ZERO,
        ..RegistryConfig::default()
    });
    assert_eq!(r.ping("z", LOCAL, d(0), t0), Ok(d(0)));
    assert!(r.apps(t0).all(|a| a.overdue_ratio.is_finite()));
    assert_eq!(r.len(), 1);
    assert_eq!(
        list_text(&mut r, t0),
        "",
        "expired at once: od is 0/0 >= 6 by convention"
    );
}

#[test]
fn clock_going_backwards_does_not_panic() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("a", LOCAL, d(0), ms(t0, 10_000)).unwrap();
    assert!(status_text(&mut r, "a", LOCAL, t0).starts_with("OK"));
    r.ping("b", LOCAL, d(0), t0).unwrap();
    assert_eq!(r.len(), 2);
}

#[test]
fn event_buffer_is_bounded() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    for i in 0..EVENT_BUFFER_CAP + 10 {
        r.ping(&i.to_string(), LOCAL, d(0), t0).unwrap();
    }
    assert_eq!(r.counters().events_dropped, 10);
    assert_eq!(r.take_events().len(), EVENT_BUFFER_CAP);
}

#[test]
fn mass_removal_shrinks_and_stays_consistent() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    for i in 0..5000 {
        r.init(&format!("{i:04}"), LOCAL, d(0), t0).unwrap();
    }
    let full = r.apps_capacity();
    assert!(full >= 5000, "{full}");
    assert!(!r.is_empty());
    for i in 10..5000 {
        assert!(r.done(&format!("{i:04}"), LOCAL, t0));
    }
    assert!(
        r.apps_capacity() < full / 4,
        "{} of {full}",
        r.apps_capacity()
    );
    assert_eq!(r.len(), 10);
    assert_eq!(r.deadline_index_len(), 10);
    assert!(list_text(&mut r, t0).starts_with("0000 @ 127.0.0.1\n0001 @ "));
    assert_eq!(r.expire(ms(t0, 6000)), 10);
    assert!(r.is_empty());
}

#[test]
fn expiry_examines_only_expired_records() {
    const N: u64 = 100_000;
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: N as usize,
        ..RegistryConfig::default()
    });
    // App i pinged at t0 + i µs with granted 1000 ms: its deadline is
    // t0 + 6 s + i µs.
    let us = |n: u64| t0 + Duration::from_micros(n);
    for i in 0..N {
        r.ping(&format!("app{i}"), LOCAL, d(0), us(i)).unwrap();
        // the first deadline, compared and found in the future (none
        // before the first record)
        assert_eq!(r.last_sweep_examined(), usize::from(i > 0));
    }
    assert_eq!(r.len(), N as usize);
    assert_eq!(r.deadline_index_len(), N as usize);
    // Just before the first drop: every app crossed WARNING (3 s + i µs)
    // and CRITICAL (5 s + i µs); each crossing is one comparison, and
    // the next one, in the future, one more.
    r.expire(us(5_999_999));
    assert_eq!(r.last_sweep_examined(), 2 * N as usize + 1);
    assert_eq!(r.counters().expiries, 0);
    r.take_events();
    // At t0 + 6 s + 9 µs, apps 0..=9 are due: their 10 deadlines and
    // the first one still in the future (app 10) are compared, no more.
    let at = us(6_000_009);
    assert!(status_text(&mut r, "app50000", LOCAL, at).starts_with("CRITICAL - quite"));
    assert_eq!(r.last_sweep_examined(), 11);
    assert_eq!(r.len(), N as usize - 10);
    // A request with nothing due compares one deadline, the first.
    r.ping("app50000", LOCAL, d(0), at).unwrap();
    assert_eq!(r.last_sweep_examined(), 1);
    assert_eq!(r.deadline_index_len(), r.len());
    assert_eq!(r.counters().expiries, 10);
}

#[test]
fn a_mass_expiry_gives_the_table_back_at_once() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    for i in 0..5000 {
        let timeout = if i < 10 { 60_000 } else { 0 };
        r.init(&format!("{i:04}"), LOCAL, d(timeout), t0).unwrap();
    }
    let full = r.apps_capacity();
    assert_eq!(r.expire(ms(t0, 6000)), 4990);
    assert!(
        r.apps_capacity() < full / 4,
        "{} of {full}",
        r.apps_capacity()
    );
    assert_eq!(r.len(), 10);
}

#[test]
fn restore_tracks_refreshes_and_respects_the_cap() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 2,
        ..RegistryConfig::default()
    });
    r.restore("a @ 10.0.0.1", d(2000), t0).unwrap();
    r.restore("b", d(1000), t0).unwrap();
    assert_eq!(list_text(&mut r, t0), "a @ 10.0.0.1\nb\n");
    assert_eq!(r.restore("c", d(1000), t0), Err(RegistryFull::full(2)));
    // refreshing a known key is not a new record, cap or not
    r.restore("b", d(4000), ms(t0, 5000)).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r.deadline_index_len(), 2);
    // a was dropped at 6 × 2000 ms; b, refreshed at 5 s with 4 s, lives
    // until 5 + 24 s
    assert_eq!(r.expire(ms(t0, 12_000)), 1);
    assert_eq!(list_text(&mut r, ms(t0, 28_999)), "b\n");
    assert_eq!(r.expire(ms(t0, 29_000)), 1);
    let events = r.take_events();
    let expired: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Expired)
        .map(|e| &*e.key)
        .collect();
    assert_eq!(expired, ["a @ 10.0.0.1", "b"]);
    // nothing else but the crossings on the way there
    assert!(events.iter().all(|e| matches!(
        e.kind,
        EventKind::Warning | EventKind::Critical | EventKind::Expired
    )));
}

#[cfg(feature = "state")]
#[test]
fn granted_of_is_the_stored_grant() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("a", LOCAL, d(2500), t0).unwrap();
    assert_eq!(r.granted_of("a @ 127.0.0.1"), Some(d(3500)));
    assert_eq!(r.granted_of("a"), None);
}

#[test]
fn events_name_their_record_key() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 1,
        ..RegistryConfig::default()
    });
    r.init("a", LOCAL, d(0), t0).unwrap();
    r.ping("a", LOCAL, d(0), t0).unwrap();
    assert!(r.init("b", OTHER, d(0), t0).is_err());
    assert!(r.done("a", LOCAL, t0));
    r.init("c", LOCAL, d(0), t0).unwrap();
    r.expire(ms(t0, 6000));
    let keys: Vec<String> = r.take_events().iter().map(|e| e.key().to_owned()).collect();
    assert_eq!(
        keys,
        [
            "a @ 127.0.0.1",
            "a @ 127.0.0.1",
            "b @ 1.2.3.4",
            "a @ 127.0.0.1",
            "c @ 127.0.0.1",
            "c @ 127.0.0.1",
            "c @ 127.0.0.1",
            "c @ 127.0.0.1"
        ]
    );
}

#[test]
fn a_bad_expected_spec_says_why() {
    let err = "a @ host".parse::<Expected>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"host\" after the last \" @ \" is not an IP address"
    );
    let err = "a|b".parse::<Expected>().unwrap_err();
    assert!(
        err.to_string().starts_with("invalid application id: "),
        "{err}"
    );
}

fn expecting(specs: &[&str]) -> Registry {
    let mut r = Registry::default();
    for spec in specs {
        r.expect(spec.parse().unwrap());
    }
    r
}

#[test]
fn expected_specs_parse_on_the_last_separator() {
    let e: Expected = "a @ b @ ::ffff:10.0.0.7".parse().unwrap();
    assert_eq!(e.id(), "a @ b");
    assert_eq!(e.host(), Some("10.0.0.7".parse().unwrap()));
    assert_eq!(e.to_string(), "a @ b @ 10.0.0.7");
    let e: Expected = "Tetris".parse().unwrap();
    assert_eq!((e.id(), e.host()), ("Tetris", None));
    for bad in ["", "a|b", "a\nb", " @ 1.2.3.4", "a @ host", "a @ 1.2.3"] {
        assert!(bad.parse::<Expected>().is_err(), "{bad:?}");
    }
    assert_eq!(split_key("a @ b @ 1.2.3.4"), ("a @ b", Some("1.2.3.4")));
    assert_eq!(split_key("a"), ("a", None));
}

/// Never started: missing; starts: tracked; dies: never dropped;
/// `done`: missing again.
#[test]
fn an_expected_app_is_never_dropped() {
    let t0 = Instant::now();
    let mut r = expecting(&["T", "H @ 1.2.3.4"]);
    let missing = |r: &Registry| {
        r.missing()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(missing(&r), ["H @ 1.2.3.4", "T"]);
    assert_eq!(
        status_text(&mut r, "T", LOCAL, t0),
        "CRITICAL - expected application has not reported [T]"
    );
    assert_eq!(
        status_text(&mut r, "H", OTHER, t0),
        "CRITICAL - expected application has not reported [H @ 1.2.3.4]"
    );
    // asked from another host, `H @ 1.2.3.4` is not this key's spec
    let elsewhere = status_text(&mut r, "H", LOCAL, t0);
    assert!(elsewhere.contains("[H @ 127.0.0.1]"), "{elsewhere}");
    assert!(!elsewhere.contains("expected"), "{elsewhere}");
    // H from another host does not satisfy `H @ 1.2.3.4`
    r.init("H", LOCAL, d(0), t0).unwrap();
    assert_eq!(
        status_text(&mut r, "H", OTHER, t0),
        "CRITICAL - expected application has not reported [H @ 1.2.3.4]"
    );
    assert_eq!(
        host_text(&mut r, t0),
        "CRITICAL - 2 expected applications have not reported: [H @ 1.2.3.4,T]"
    );
    r.init("T", OTHER, d(0), t0).unwrap();
    r.init("H", OTHER, d(0), t0).unwrap();
    assert!(missing(&r).is_empty());
    // T is reported from 1.2.3.4: from here it is an ordinary unknown key
    assert_eq!(
        status_text(&mut r, "T", LOCAL, t0),
        "CRITICAL - no application record for queried ID: [T @ 127.0.0.1]"
    );
    assert!(host_text(&mut r, t0).starts_with("WARNING - multiple (3)"));
    // an hour later the unexpected H @ 127.0.0.1 is gone, the others stay
    let later = ms(t0, 3_600_000);
    assert_eq!(r.expire(later), 1);
    assert_eq!(r.list(later), ["H @ 1.2.3.4", "T @ 1.2.3.4"]);
    assert_eq!(r.deadline_index_len(), 0);
    assert!(status_text(&mut r, "T", OTHER, later)
        .starts_with("CRITICAL - quite late application [T @ 1.2.3.4]| od=3600.00;"));
    assert!(r.done("T", OTHER, later));
    assert_eq!(missing(&r), ["T"]);
    assert_eq!(
        host_text(&mut r, later),
        "CRITICAL - expected application has not reported [T]"
    );
    r.ping("T", OTHER, d(0), later).unwrap();
    assert!(missing(&r).is_empty());
    assert!(host_text(&mut r, later).starts_with("WARNING - multiple (2)"));
}

#[test]
fn expecting_a_tracked_app_stops_its_expiry() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("T", LOCAL, d(0), t0).unwrap();
    r.init("U", LOCAL, d(0), t0).unwrap();
    r.expect("T".parse().unwrap());
    r.expect("T".parse().unwrap());
    assert!(r.missing().is_empty());
    // T stays in the crossings index until CRITICAL, U until its drop
    assert_eq!(r.deadline_index_len(), 2);
    assert_eq!(r.expire(ms(t0, 60_000)), 1);
    assert_eq!(r.deadline_index_len(), 0);
    assert_eq!(r.list(ms(t0, 60_000)), ["T @ 127.0.0.1"]);
    assert!(r.done("T", LOCAL, t0));
    assert_eq!(r.missing().len(), 1);
}

#[test]
fn snapshot_knows_expected_and_missing() {
    let t0 = Instant::now();
    let mut r = expecting(&["T", "M", "X @ 1.2.3.4"]);
    r.init("T", OTHER, d(0), t0).unwrap();
    r.init("U", OTHER, d(0), t0).unwrap();
    let mut snap = r.snapshot(t0);
    snap.sort();
    assert_eq!((snap.key(0), snap.is_expected(0)), ("T @ 1.2.3.4", true));
    assert_eq!((snap.key(1), snap.is_expected(1)), ("U @ 1.2.3.4", false));
    let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
    assert_eq!(missing, ["M", "X @ 1.2.3.4"]);
    // X reports from its host: no longer missing
    r.init("X", OTHER, d(0), t0).unwrap();
    let snap = r.snapshot(t0);
    let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
    assert_eq!(missing, ["M"]);
    // bare keys: `ID @ IP` specs never match, `ID` ones do
    let mut r = Registry::new(RegistryConfig {
        key_by_peer: false,
        ..RegistryConfig::default()
    });
    assert!("a @ b".parse::<Expected>().is_err(), "b is no IP address");
    r.expect(Expected::any_host("a @ b").unwrap());
    r.expect("X @ 1.2.3.4".parse().unwrap());
    r.init("a @ b", OTHER, d(0), t0).unwrap();
    r.init("X", OTHER, d(0), t0).unwrap();
    let mut snap = r.snapshot(ms(t0, 60_000));
    snap.sort();
    assert_eq!((snap.key(0), snap.is_expected(0)), ("a @ b", true));
    let missing: Vec<String> = snap.missing().iter().map(ToString::to_string).collect();
    assert_eq!(missing, ["X @ 1.2.3.4"]);
    assert_eq!(snap.len(), 1, "X is not expected and expired");
}

fn kinds(r: &mut Registry) -> Vec<EventKind> {
    r.take_events().iter().map(|e| e.kind).collect()
}

#[test]
fn a_failed_run_is_critical_until_it_reports_and_never_dropped() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.init("job", LOCAL, d(2000), t0).unwrap();
    r.fail("job", LOCAL, 3, ms(t0, 100)).unwrap();
    assert_eq!(kinds(&mut r), [EventKind::Created, EventKind::Failed(3)]);
    assert_eq!(
        status_text(&mut r, "job", LOCAL, ms(t0, 100)),
        "CRITICAL - application [job @ 127.0.0.1] failed with exit code 3| od=0.03;3;5;0;6 delay=3000ms;;; "
    );
    // the same failure again changes nothing; no crossing, no expiry, ever
    r.fail("job", LOCAL, 3, ms(t0, 200)).unwrap();
    r.advance(ms(t0, 10_000_000), usize::MAX);
    assert_eq!(kinds(&mut r), []);
    assert_eq!(r.list(ms(t0, 10_000_000)), ["job @ 127.0.0.1"]);
    assert_eq!(r.failed_of("job @ 127.0.0.1"), Some(3));
    // another code is another event; a ping recovers it
    r.fail("job", LOCAL, 137, ms(t0, 10_000_001)).unwrap();
    r.ping("job", LOCAL, d(2000), ms(t0, 10_000_002)).unwrap();
    let events = r.take_events();
    assert_eq!(events[0].kind, EventKind::Failed(137));
    assert_eq!(events[0].previous, Some(State::Critical));
    assert_eq!(events[1].kind, EventKind::Recovered);
    assert_eq!(r.failed_of("job @ 127.0.0.1"), None);
    let app = r.apps(ms(t0, 10_000_002)).next().unwrap();
    assert_eq!((app.state, app.failed), (State::Ok, None));
    // and it goes late on the usual schedule again
    r.advance(ms(t0, 10_000_002 + 9_000), usize::MAX);
    assert_eq!(kinds(&mut r), [EventKind::Warning]);
    assert_eq!(r.counters().fails, 3);
}

#[test]
fn a_failure_without_a_record_registers_it_first_within_the_limit() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 1,
        ..RegistryConfig::default()
    });
    r.fail("cron", LOCAL, 1, t0).unwrap();
    let events = r.take_events();
    assert_eq!(events[0].kind, EventKind::Created);
    assert_eq!(events[1].kind, EventKind::Failed(1));
    assert_eq!(events[1].previous, Some(State::Ok));
    assert_eq!(r.fail("other", LOCAL, 1, t0), Err(RegistryFull::full(1)));
    // done removes a failed record like any other
    assert!(r.done("cron", LOCAL, t0));
    let done = r.take_events();
    assert_eq!(done.last().unwrap().kind, EventKind::Done);
    assert_eq!(done.last().unwrap().previous, Some(State::Critical));
}

#[test]
fn a_restored_failure_is_critical_without_an_event() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    r.restore("job @ 127.0.0.1", d(3000), t0).unwrap();
    assert!(r.restore_failure("job @ 127.0.0.1", 2));
    assert!(!r.restore_failure("nobody", 2));
    assert_eq!(kinds(&mut r), []);
    let app = r.apps(t0).next().unwrap();
    assert_eq!((app.state, app.failed), (State::Critical, Some(2)));
    r.advance(ms(t0, 1_000_000), usize::MAX);
    assert_eq!(kinds(&mut r), [], "never dropped");
}

/// The keys of a sorted snapshot.
fn sorted_keys(r: &mut Registry, now: Instant) -> Vec<String> {
    let mut snap = r.snapshot(now);
    snap.sort();
    (0..snap.len()).map(|i| snap.key(i).to_owned()).collect()
}

#[test]
fn a_snapshot_reuses_the_last_key_order_only_while_the_keys_stay() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for i in 0..300 {
        r.init(&format!("app-{:03}", (i * 7) % 300), peer, d(60_000), t0)
            .unwrap();
    }
    let first = sorted_keys(&mut r, t0);
    let mut want = first.clone();
    want.sort();
    assert_eq!(first, want);
    // pings move no key: the kept order is used, and still right
    for i in 0..300 {
        r.ping(&format!("app-{i:03}"), peer, d(60_000), t0 + d(1))
            .unwrap();
    }
    assert_eq!(r.layout, r.key_order.0.lock().unwrap().as_ref().unwrap().0);
    assert_eq!(sorted_keys(&mut r, t0 + d(2)), want);
    // a new key, a done, an expiry: a new order each time
    r.init("aaa", peer, d(0), t0 + d(3)).unwrap();
    let with_new = sorted_keys(&mut r, t0 + d(4));
    assert_eq!(with_new[0], "aaa @ 127.0.0.1");
    assert_eq!(with_new.len(), 301);
    r.done("app-150", peer, t0 + d(5));
    let after_done = sorted_keys(&mut r, t0 + d(6));
    assert!(!after_done.contains(&"app-150 @ 127.0.0.1".to_owned()));
    assert_eq!(after_done.len(), 300);
    let after_expiry = sorted_keys(&mut r, t0 + d(7_000));
    assert_eq!(after_expiry.len(), 299, "aaa expired");
    assert!(after_expiry.windows(2).all(|w| w[0] < w[1]));
}

/// A kept order that no longer sorts (the map reordered without a key
/// coming or going) is caught and the snapshot sorted anyway.
#[test]
fn a_stale_kept_order_is_caught_and_sorted() {
    let t0 = Instant::now();
    let mut r = Registry::default();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for i in 0..10 {
        r.init(&format!("app-{i}"), peer, d(60_000), t0).unwrap();
    }
    let want = sorted_keys(&mut r, t0);
    let reversed: Vec<u32> = (0..10).rev().collect();
    *r.key_order.0.lock().unwrap() = Some((r.layout, reversed.into()));
    assert_eq!(sorted_keys(&mut r, t0), want);
    assert!(
        r.key_order.0.lock().unwrap().is_none(),
        "the stale order is dropped"
    );
}

#[test]
fn max_timeout_caps_every_grant_and_the_reply_says_so() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_timeout: Some(d(60_000)),
        ..RegistryConfig::default()
    });
    // granted = capped promise + the 1 s tolerance
    assert_eq!(
        r.init("long", LOCAL, d(u64::from(u32::MAX)), t0),
        Ok(d(61_000))
    );
    assert_eq!(r.ping("long", LOCAL, d(3_600_000), t0), Ok(d(61_000)));
    assert_eq!(r.init("short", LOCAL, d(5_000), t0), Ok(d(6_000)));
    // the cap is what the record is judged by: WARNING at 3 × 61 s
    assert!(status_text(&mut r, "long", LOCAL, ms(t0, 183_000)).starts_with("WARNING"));
    // no cap by default, as the reference
    let mut r = Registry::default();
    assert_eq!(
        r.init("long", LOCAL, d(u64::from(u32::MAX)), t0),
        Ok(d(u64::from(u32::MAX) + 1_000))
    );
}

#[test]
fn an_expected_app_cannot_be_silenced_for_months_by_one_init() {
    let t0 = Instant::now();
    let mut r = expecting(&["backup"]);
    // one init from any host with the largest timeout: 24 h, not 49.7 days
    let granted = r.init("backup", OTHER, d(u64::from(u32::MAX)), t0);
    assert_eq!(granted, Ok(DEFAULT_MAX_EXPECTED_TIMEOUT + d(1_000)));
    let two_days = ms(t0, 2 * 24 * 3_600_000);
    assert!(status_text(&mut r, "backup", OTHER, ms(t0, 3 * 86_401_000)).starts_with("WARNING"));
    assert!(!status_text(&mut r, "backup", OTHER, two_days).starts_with("WARNING"));
    // an app that is not expected keeps the reference's behaviour
    assert_eq!(
        r.init("other", OTHER, d(u64::from(u32::MAX)), t0),
        Ok(d(u64::from(u32::MAX) + 1_000))
    );
    // the cap can be changed, and max_timeout applies to expected apps too
    let mut r = Registry::new(RegistryConfig {
        max_expected_timeout: d(10_000),
        ..RegistryConfig::default()
    });
    r.expect("backup @ 1.2.3.4".parse().unwrap());
    assert_eq!(r.init("backup", OTHER, d(60_000), t0), Ok(d(11_000)));
    assert_eq!(
        r.init("backup", LOCAL, d(60_000), t0),
        Ok(d(61_000)),
        "another host's backup is not expected"
    );
    // expected after the record exists: capped from its next beat
    let mut r = Registry::default();
    r.init("late", LOCAL, d(u64::from(u32::MAX)), t0).unwrap();
    r.expect("late".parse().unwrap());
    assert_eq!(
        r.ping("late", LOCAL, d(u64::from(u32::MAX)), t0),
        Ok(DEFAULT_MAX_EXPECTED_TIMEOUT + d(1_000))
    );
}

#[test]
fn expecting_ten_thousand_ids_over_a_hundred_thousand_records_marks_each_once() {
    // one pass over the records for all specs (expect_all): the old
    // per-spec pass was 10^9 lookups here
    let t0 = Instant::now();
    let mut r = Registry::default();
    for i in 0..100_000 {
        r.init(&format!("kiosk-{i:06}"), LOCAL, d(60_000), t0)
            .unwrap();
        if i % 4096 == 0 {
            r.take_events();
        }
    }
    r.take_events();
    // every tenth tracked id, plus 1 000 ids that have no record, one twice
    let mut specs: Vec<Expected> = (0..9_000)
        .map(|i| format!("kiosk-{:06}", i * 10).parse().unwrap())
        .collect();
    specs.extend((0..1_000).map(|i| format!("absent-{i:04}").parse().unwrap()));
    specs.push("absent-0007".parse().unwrap());
    r.expect_all(specs);
    let missing: Vec<String> = r.missing().iter().map(ToString::to_string).collect();
    assert_eq!(missing.len(), 1_000);
    assert!(missing.iter().all(|m| m.starts_with("absent-")));
    let mut snap = r.snapshot(t0);
    snap.sort();
    let expected = (0..snap.len()).filter(|&i| snap.is_expected(i)).count();
    assert_eq!(expected, 9_000);
    assert!(snap.is_expected(0) && !snap.is_expected(1) && snap.is_expected(10));
    // the same specs again change nothing
    r.expect("kiosk-000000".parse().unwrap());
    assert_eq!(r.missing().len(), 1_000);
    // the expected ones are never dropped; the rest are
    assert_eq!(r.expire(ms(t0, 10_000_000)), 91_000);
    assert_eq!(r.list(ms(t0, 10_000_000)).len(), 9_000);
}

#[test]
fn a_host_past_its_share_is_refused_while_others_still_register() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 10,
        max_apps_per_host: Some(3),
        ..RegistryConfig::default()
    });
    r.expect("spare @ 127.0.0.1".parse().unwrap());
    for i in 0..3 {
        r.init(&format!("flood-{i}"), LOCAL, d(60_000), t0).unwrap();
    }
    let refused = r.init("flood-3", LOCAL, d(60_000), t0);
    assert_eq!(
        refused,
        Err(RegistryFull {
            max_apps: 10,
            host_share: Some(3)
        })
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "host share full: this host already has the maximum of 3 applications"
    );
    // a known one still beats, another host still registers
    assert_eq!(r.ping("flood-0", LOCAL, d(60_000), t0), Ok(d(61_000)));
    assert_eq!(r.init("kiosk", OTHER, d(0), t0), Ok(d(1000)));
    // an expected application is never refused
    assert_eq!(r.init("spare", LOCAL, d(0), t0), Ok(d(1000)));
    assert_eq!(r.counters().refused_host_share, 1);
    assert_eq!(r.counters().refused, 0);
    let kinds: Vec<_> = r.take_events().iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::RefusedHostShare), "{kinds:?}");
    // a done frees the share; an expiry too
    assert!(r.done("flood-1", LOCAL, t0));
    assert_eq!(r.init("flood-3", LOCAL, d(0), t0), Ok(d(1000)));
    assert!(r.init("flood-4", LOCAL, d(0), t0).is_err());
    // flood-3 (1 s) expires at 6 s: room for one more
    let later = ms(t0, 6_000);
    assert_eq!(r.init("flood-4", LOCAL, d(60_000), later), Ok(d(61_000)));
    assert!(r.init("flood-5", LOCAL, d(0), later).is_err());
}

#[test]
fn without_a_share_one_host_may_fill_the_registry() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 5,
        ..RegistryConfig::default()
    });
    for i in 0..5 {
        r.init(&format!("a-{i}"), LOCAL, d(0), t0).unwrap();
    }
    assert_eq!(r.init("b", OTHER, d(0), t0), Err(RegistryFull::full(5)));
    assert!(
        r.per_host.is_empty(),
        "hosts are counted only under a share"
    );
}

#[test]
fn restored_records_count_in_their_hosts_share() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps_per_host: Some(2),
        ..RegistryConfig::default()
    });
    for key in ["a @ 127.0.0.1", "b @ 127.0.0.1", "c @ 127.0.0.1"] {
        r.restore(key, d(60_000), t0).unwrap();
    }
    assert!(r.init("d", LOCAL, d(0), t0).is_err(), "3 restored, share 2");
    assert_eq!(r.init("d", OTHER, d(0), t0), Ok(d(1000)));
    assert!(r.done("a", LOCAL, t0) && r.done("b", LOCAL, t0));
    assert_eq!(r.init("d", LOCAL, d(0), t0), Ok(d(1000)));
}

#[test]
fn a_record_that_becomes_expected_leaves_its_hosts_share() {
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps_per_host: Some(2),
        ..RegistryConfig::default()
    });
    r.init("a", LOCAL, d(0), t0).unwrap();
    r.init("b", LOCAL, d(0), t0).unwrap();
    assert!(r.init("c", LOCAL, d(0), t0).is_err());
    r.expect("a @ 127.0.0.1".parse().unwrap());
    assert_eq!(r.init("c", LOCAL, d(0), t0), Ok(d(1000)));
    // its done does not free a slot it no longer holds
    assert!(r.done("a", LOCAL, t0));
    assert!(r.init("d", LOCAL, d(0), t0).is_err());
}

#[test]
fn expected_ids_from_many_hosts_cannot_fill_the_registry() {
    // attack F1: a bare expected id beaten from ever new addresses makes
    // records that are never dropped; they still count in max_apps
    let t0 = Instant::now();
    let mut r = Registry::new(RegistryConfig {
        max_apps: 5,
        max_apps_per_host: Some(1),
        ..RegistryConfig::default()
    });
    r.expect("exp1".parse().unwrap());
    for i in 2..60u8 {
        let _ = r.init("exp1", IpAddr::from([127, 0, 0, i]), d(0), t0);
    }
    assert_eq!(r.len(), 5);
    assert_eq!(r.counters().refused, 53);
}
