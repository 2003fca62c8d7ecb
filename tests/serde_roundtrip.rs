//! Feature `serde`: every value type written to its documented JSON shape
//! (exact strings) and read back equal.
#![cfg(feature = "serde")]

use std::time::{Duration, UNIX_EPOCH};

use heartbeat_sdk::protocol::apps::{parse_apps, AppRecord, AppState, Apps};
use heartbeat_sdk::protocol::{app_line, State, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// `value` written is exactly `json`, and `json` read back is `value`.
#[track_caller]
fn round_trip<T>(value: &T, json: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), json);
    assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
}

/// The example document of docs/api-v1.md, read from the file itself.
fn api_example() -> &'static str {
    let doc = include_str!("../docs/api-v1.md");
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let len = doc[start..].find("```").expect("its end");
    &doc[start..start + len]
}

#[test]
fn states_are_snake_case_words() {
    round_trip(&State::Ok, r#""ok""#);
    round_trip(&State::Warning, r#""warning""#);
    round_trip(&State::Critical, r#""critical""#);
    round_trip(&State::Unknown, r#""unknown""#);
    // like State::from_word, any other word is unknown
    assert_eq!(
        serde_json::from_str::<State>(r#""OK""#).unwrap(),
        State::Unknown
    );
    for (state, json) in [
        (AppState::Ok, r#""ok""#),
        (AppState::Warning, r#""warning""#),
        (AppState::Critical, r#""critical""#),
        (AppState::Missing, r#""missing""#),
    ] {
        round_trip(&state, json);
    }
    assert_eq!(
        serde_json::from_str::<AppState>(r#""paused""#).unwrap(),
        AppState::Missing
    );
}

#[test]
fn a_status_line_with_its_perfdata() {
    let line = app_line(State::Warning, "T @ 127.0.0.1", 3.1, 3.0, 5.0, 6.0, 3000);
    let status: Status = line.parse().unwrap();
    round_trip(
        &status,
        concat!(
            r#"{"state":"warning","exit_code":1,"message":"WARNING - somewhat late application [T @ 127.0.0.1]","#,
            r#""app":"T @ 127.0.0.1","overdue_ratio":3.1,"granted_ms":3000,"#,
            r#""perfdata":[{"label":"od","value":3.1,"unit":"","warn":{"start":0.0,"end":3.0,"inside":false},"#,
            r#""crit":{"start":0.0,"end":5.0,"inside":false},"min":0.0,"max":6.0},"#,
            r#"{"label":"delay","value":3000.0,"unit":"ms","warn":null,"crit":null,"min":null,"max":null}],"#,
            r#""raw_perfdata":"od=3.10;3;5;0;6 delay=3000ms;;;","unparsed_perfdata":[],"#,
            r#""raw":"WARNING - somewhat late application [T @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; "}"#
        ),
    );
}

#[test]
fn a_status_with_unparsed_perfdata_quotes_and_long_output() {
    let raw =
        "CRITICAL - \"x\\y\" [a] b]| od=U;@1:2;~:; junk 'q''t'=5s;;;0;\nlong\u{1b}[2J | extra=1";
    let status: Status = raw.parse().unwrap();
    assert_eq!(status.unparsed_perfdata(), ["junk"]);
    round_trip(
        &status,
        concat!(
            r#"{"state":"critical","exit_code":2,"message":"CRITICAL - \"x\\y\" [a] b]","app":"a] b","#,
            r#""overdue_ratio":null,"granted_ms":null,"#,
            r#""perfdata":[{"label":"od","value":null,"unit":"","warn":{"start":1.0,"end":2.0,"inside":true},"#,
            r#""crit":{"start":null,"end":null,"inside":false},"min":null,"max":null},"#,
            r#"{"label":"q't","value":5.0,"unit":"s","warn":null,"crit":null,"min":0.0,"max":null},"#,
            r#"{"label":"extra","value":1.0,"unit":"","warn":null,"crit":null,"min":null,"max":null}],"#,
            r#""raw_perfdata":"od=U;@1:2;~:; junk 'q''t'=5s;;;0;","unparsed_perfdata":["junk"],"#,
            r#""raw":"CRITICAL - \"x\\y\" [a] b]| od=U;@1:2;~:; junk 'q''t'=5s;;;0;\nlong\u001b[2J | extra=1"}"#
        ),
    );
    assert_eq!(status.to_string(), raw);
}

#[test]
fn a_status_is_read_from_raw_alone_and_raw_wins() {
    let status: Status =
        serde_json::from_str(r#"{"raw":"OK - fine","state":"critical","new_field":[]}"#).unwrap();
    assert_eq!(status.state(), State::Ok);
    assert_eq!(status.raw(), "OK - fine");
    assert!(serde_json::from_str::<Status>(r#"{"raw":""}"#).is_err());
    assert!(serde_json::from_str::<Status>(r#"{"state":"ok"}"#).is_err());
}

#[cfg(any(feature = "server", feature = "mock"))]
#[test]
fn server_counters() {
    let mut counters = heartbeat_sdk::monitor::Counters::default();
    counters.inits = 7;
    counters.pings = 1234;
    counters.dones = 2;
    counters.fails = 5;
    counters.expiries = 1;
    counters.refused = 3;
    counters.refused_host_share = 6;
    counters.events_dropped = 4;
    round_trip(
        &counters,
        r#"{"inits":7,"pings":1234,"dones":2,"fails":5,"expiries":1,"refused":3,"refused_host_share":6,"events_dropped":4}"#,
    );
}

const TRACKED: &str = concat!(
    r#"{"key":"<img src=x onerror=alert(1)> @ 10.0.6.66","id":"<img src=x onerror=alert(1)>","#,
    r#""host":"10.0.6.66","state":"ok","overdue_ratio":0.1,"granted_ms":3000,"#,
    r#""last_seen":"2026-11-25T10:00:00.934Z","last_seen_ago_ms":300,"expected":false,"missing":false,"#,
    r#""failed":null,"uptime_24h":1.0,"uptime_7d":1.0,"#,
    r#""strip_24h":"-----------------------------------------------o"}"#
);

const MISSING: &str = concat!(
    r#"{"key":"planetarium-show","id":"planetarium-show","host":null,"state":"missing","#,
    r#""overdue_ratio":null,"granted_ms":null,"last_seen":null,"last_seen_ago_ms":null,"#,
    r#""expected":true,"missing":true,"failed":null,"uptime_24h":null,"uptime_7d":null,"#,
    r#""strip_24h":"------------------------------------------------"}"#
);

#[test]
fn app_records_tracked_and_missing() {
    let tracked: AppRecord = serde_json::from_str(TRACKED).unwrap();
    assert_eq!(tracked.id, "<img src=x onerror=alert(1)>");
    assert_eq!(tracked.host.as_deref(), Some("10.0.6.66"));
    assert_eq!(tracked.state, AppState::Ok);
    assert_eq!(tracked.overdue_ratio, Some(0.1));
    assert_eq!(tracked.granted, Some(Duration::from_secs(3)));
    assert_eq!(
        tracked.last_seen,
        Some(UNIX_EPOCH + Duration::from_millis(1_795_600_800_934))
    );
    assert_eq!(tracked.last_seen_ago, Some(Duration::from_millis(300)));
    assert!(!tracked.expected && !tracked.missing);
    round_trip(&tracked, TRACKED);

    let missing: AppRecord = serde_json::from_str(MISSING).unwrap();
    assert_eq!(missing.state, AppState::Missing);
    assert_eq!(
        (
            &missing.host,
            missing.overdue_ratio,
            missing.granted,
            missing.last_seen,
            missing.last_seen_ago
        ),
        (&None, None, None, None, None)
    );
    assert!(missing.expected && missing.missing);
    round_trip(&missing, MISSING);
}

#[test]
fn app_records_refuse_what_the_api_does_not_write() {
    for (from, to) in [
        (r#""granted_ms":3000"#, r#""granted_ms":3000.5"#),
        (r#""granted_ms":3000"#, r#""granted_ms":-1"#),
        (r#""granted_ms":3000"#, r#""granted_ms":"3000""#),
        (
            r#""last_seen":"2026-11-25T10:00:00.934Z""#,
            r#""last_seen":"2026-11-25T10:00:00.934+00:00""#,
        ),
        (
            r#""last_seen":"2026-11-25T10:00:00.934Z""#,
            r#""last_seen":1795600800934"#,
        ),
        (r#""expected":false,"#, ""),
    ] {
        let bad = TRACKED.replace(from, to);
        assert_ne!(bad, TRACKED);
        assert!(serde_json::from_str::<AppRecord>(&bad).is_err(), "{bad}");
    }
}

#[test]
fn the_whole_example_of_the_api_document() {
    let example = api_example();
    let apps = parse_apps(example.as_bytes()).unwrap();
    assert_eq!(apps.version, 1);
    assert_eq!(
        apps.generated_at,
        UNIX_EPOCH + Duration::from_millis(1_795_600_801_234)
    );
    assert_eq!(apps.thresholds.tolerance, Duration::from_secs(1));
    assert_eq!(
        (
            apps.thresholds.warn_ratio,
            apps.thresholds.crit_ratio,
            apps.thresholds.drop_ratio
        ),
        (3.0, 5.0, 6.0)
    );
    assert_eq!(
        (
            apps.counters.inits,
            apps.counters.pings,
            apps.counters.refusals
        ),
        (7, 1234, 0)
    );
    assert_eq!(
        (
            apps.counts.ok,
            apps.counts.warning,
            apps.counts.critical,
            apps.counts.missing
        ),
        (2, 1, 0, 1)
    );
    let keys: Vec<&str> = apps.apps.iter().map(|app| app.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "kiosk-1 @ 127.0.0.1",
            "<img src=x onerror=alert(1)> @ 10.0.6.66",
            "projector-b @ 10.0.5.3",
            "planetarium-show"
        ]
    );
    // written back: the same document, field for field (`version` too)
    let written = serde_json::to_value(&apps).unwrap();
    let original: Value = serde_json::from_str(example).unwrap();
    assert_eq!(written, original);
    let again: Apps = serde_json::from_value(written).unwrap();
    assert_eq!(again, apps);
    assert_eq!(
        serde_json::to_string(&apps.apps[1]).unwrap(),
        TRACKED,
        "an entry of the example, compact"
    );
    assert_eq!(serde_json::to_string(&apps.apps[3]).unwrap(), MISSING);
}

#[test]
fn an_empty_document_is_the_default() {
    let json = concat!(
        r#"{"version":1,"generated_at":"1970-01-01T00:00:00.000Z","#,
        r#""thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},"#,
        r#""counters":{"inits":0,"pings":0,"dones":0,"expiries":0,"refusals":0,"fails":0},"#,
        r#""counts":{"ok":0,"warning":0,"critical":0,"missing":0},"apps":[]}"#
    );
    round_trip(&Apps::default(), json);
}

/// The compact document the embedded server writes (its golden render,
/// with a missing app that has a host): written back byte for byte, so
/// the derives keep the field order of docs/api-v1.md.
#[test]
fn the_servers_compact_document_byte_for_byte() {
    let doc = concat!(
        r#"{"version":1,"generated_at":"2026-11-25T10:00:01.234Z","#,
        r#""thresholds":{"warn_ratio":3.0,"crit_ratio":5.0,"drop_ratio":6.0,"tolerance_ms":1000},"#,
        r#""counters":{"inits":1,"pings":1,"dones":1,"expiries":0,"refusals":0,"fails":0},"#,
        r#""counts":{"ok":1,"warning":1,"critical":0,"missing":2},"apps":["#,
        r#"{"key":"kiosk-1 @ 127.0.0.1","id":"kiosk-1","host":"127.0.0.1","state":"ok","#,
        r#""overdue_ratio":0.52,"granted_ms":3000,"last_seen":"2026-11-25T09:59:59.674Z","#,
        r#""last_seen_ago_ms":1560,"expected":true,"missing":false,"#,
        r#""failed":3,"uptime_24h":0.5,"uptime_7d":0.25,"strip_24h":"----------------------------------------oooocccc"},"#,
        r#"{"key":"projector-b @ 10.0.5.3","id":"projector-b","host":"10.0.5.3","state":"warning","#,
        r#""overdue_ratio":3.4,"granted_ms":11000,"last_seen":"2026-11-25T09:59:23.834Z","#,
        r#""last_seen_ago_ms":37400,"expected":false,"missing":false,"#,
        r#""failed":null,"uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"},"#,
        r#"{"key":"planetarium-show","id":"planetarium-show","host":null,"state":"missing","#,
        r#""overdue_ratio":null,"granted_ms":null,"last_seen":null,"#,
        r#""last_seen_ago_ms":null,"expected":true,"missing":true,"#,
        r#""failed":null,"uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"},"#,
        r#"{"key":"vitrine @ 10.0.5.3","id":"vitrine","host":"10.0.5.3","state":"missing","#,
        r#""overdue_ratio":null,"granted_ms":null,"last_seen":null,"#,
        r#""last_seen_ago_ms":null,"expected":true,"missing":true,"#,
        r#""failed":null,"uptime_24h":null,"uptime_7d":null,"strip_24h":"------------------------------------------------"}]}"#
    );
    let apps = parse_apps(doc.as_bytes()).unwrap();
    assert_eq!(apps.apps[3].host.as_deref(), Some("10.0.5.3"));
    assert_eq!(apps.apps[3].state, AppState::Missing);
    round_trip(&apps, doc);
}
