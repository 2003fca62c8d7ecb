//! The single mapping from a request to a reply, shared by the HTTP server
//! and the in-memory mock transport.

use std::net::IpAddr;
use std::time::Instant;

use crate::protocol::command::{parse_command, Command};
use crate::server::metrics;
use crate::server::registry::Registry;

/// The reference server's answer to `hb_done` (defined in [`crate::protocol`]).
pub use crate::protocol::GOODBYE;

/// The content type of every reply but `/metrics`, as the reference sends it.
pub const TEXT_PLAIN: &str = "text/plain";

/// An HTTP status, a content type and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code (200, 400, 414 or 503).
    pub status: u16,
    /// Response body (no trailing newline except for `/list` and `/metrics`).
    pub body: String,
    /// `text/plain`, or the Prometheus exposition type for `/metrics`.
    pub content_type: &'static str,
}

impl Reply {
    fn ok(body: String) -> Self {
        Reply {
            status: 200,
            body,
            content_type: TEXT_PLAIN,
        }
    }

    /// An `ERROR: {reason}` reply with `status`.
    pub fn error(status: u16, reason: impl std::fmt::Display) -> Self {
        Reply {
            status,
            body: format!("ERROR: {reason}"),
            content_type: TEXT_PLAIN,
        }
    }
}

/// Handles one request: [`parse`] then [`apply`]. `target` is the
/// request-target (`/path?query`), `form_body` the request body if any (read
/// for `appid=` only), `peer` the client address. Errors are
/// `ERROR: {reason}` with status 400/414 (bad request, nothing registered)
/// or 503 (registry full). Never panics.
///
/// Events (construction, expiry, ...) accumulate in the registry; drain them
/// with [`Registry::take_events`] to log them.
pub fn handle(
    registry: &mut Registry,
    target: &str,
    form_body: Option<&[u8]>,
    peer: IpAddr,
    now: Instant,
) -> Reply {
    match parse(target, form_body) {
        Ok(command) => apply(registry, command, peer, now),
        Err(reply) => reply,
    }
}

/// Decodes a request into a [`Command`] without touching any registry (so
/// a server can do it before taking its lock); a bad request is the
/// `ERROR: {reason}` [`Reply`] to send (400 or 414).
pub fn parse(target: &str, form_body: Option<&[u8]>) -> Result<Command, Reply> {
    parse_command(target, form_body).map_err(|e| Reply::error(e.http_status(), e))
}

/// Applies a decoded `command` from `peer` to `registry` at `now` and
/// returns the reply (200, or 503 when the registry is full).
pub fn apply(registry: &mut Registry, command: Command, peer: IpAddr, now: Instant) -> Reply {
    match command {
        Command::Init { app, timeout_ms } => granted(registry.init(&app, peer, timeout_ms, now)),
        Command::Ping { app, timeout_ms } => granted(registry.ping(&app, peer, timeout_ms, now)),
        Command::Done { app, .. } => {
            registry.done(&app, peer, now);
            Reply::ok(GOODBYE.to_owned())
        }
        Command::List => Reply::ok(registry.list(now)),
        Command::Status { app } => Reply::ok(registry.status(app.as_deref(), peer, now)),
        Command::Metrics => Reply {
            content_type: metrics::CONTENT_TYPE,
            ..Reply::ok(metrics::render(registry, now))
        },
    }
}

fn granted(result: Result<u64, crate::server::registry::RegistryFull>) -> Reply {
    match result {
        Ok(ms) => Reply::ok(ms.to_string()),
        Err(full) => Reply::error(503, full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::registry::{Event, RegistryConfig};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));

    struct Harness {
        registry: Registry,
        t0: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(RegistryConfig::default())
        }

        fn with(config: RegistryConfig) -> Self {
            Harness {
                registry: Registry::new(config),
                t0: Instant::now(),
            }
        }

        fn at(&mut self, ms: u64, target: &str) -> Reply {
            self.req(ms, target, None, LOCAL)
        }

        fn req(&mut self, ms: u64, target: &str, body: Option<&[u8]>, peer: IpAddr) -> Reply {
            let now = self.t0 + Duration::from_millis(ms);
            handle(&mut self.registry, target, body, peer, now)
        }
    }

    fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            body: body.to_owned(),
            content_type: TEXT_PLAIN,
        }
    }

    #[test]
    fn replies_match_protocol_samples() {
        let mut h = Harness::new();
        assert_eq!(
            h.at(0, "/hb_init?2000&appid=Tetris&cache_buster=1"),
            ok("3000")
        );
        assert_eq!(
            h.at(1560, "/status?0&appid=Tetris"),
            ok("OK - fine application [Tetris @ 127.0.0.1]| od=0.52;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(
            h.at(9300, "/status?0&appid=Tetris"),
            ok("WARNING - somewhat late application [Tetris @ 127.0.0.1]| od=3.10;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(
            h.at(15210, "/status?0&appid=Tetris"),
            ok("CRITICAL - quite late application [Tetris @ 127.0.0.1]| od=5.07;3;5;0;6 delay=3000ms;;; ")
        );
        assert_eq!(h.at(15210, "/list"), ok("Tetris @ 127.0.0.1\n"));
        assert_eq!(
            h.at(18000, "/status?0&appid=Tetris"),
            ok("CRITICAL - no application record for queried ID: [Tetris @ 127.0.0.1]")
        );
        assert_eq!(h.at(18000, "/list"), ok(""));
    }

    #[test]
    fn whole_life_cycle_at_boundaries() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_ping?&appid=X"), ok("1000")); // empty timeout = 0
        let status = |h: &mut Harness, ms| h.at(ms, "/status").body;
        let expect = [
            (2990, "OK - fine", "2.99"),
            (3000, "WARNING - somewhat late", "3.00"),
            (4990, "WARNING - somewhat late", "4.99"),
            (5000, "CRITICAL - quite late", "5.00"),
            (5990, "CRITICAL - quite late", "5.99"),
        ];
        for (ms, prefix, od) in expect {
            assert_eq!(
                status(&mut h, ms),
                format!("{prefix} application [X @ 127.0.0.1]| od={od};3;5;0;6 delay=1000ms;;; ")
            );
        }
        assert_eq!(
            status(&mut h, 6000),
            "UNKNOWN - no heartbeat clients at the moment..."
        );
        let events: Vec<Event> = h.registry.take_events();
        assert_eq!(
            events,
            [
                Event::Constructed("X @ 127.0.0.1".into()),
                Event::Expired("X @ 127.0.0.1".into())
            ]
        );
    }

    #[test]
    fn ping_keeps_an_app_alive_and_done_says_goodbye() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_init?0&appid=A"), ok("1000"));
        assert_eq!(h.at(5000, "/x/hb_ping?0&appid=A"), ok("1000"));
        assert!(h
            .at(10_999, "/status?0&appid=A")
            .body
            .starts_with("CRITICAL - quite late"));
        assert_eq!(h.at(11_000, "/hb_done?0&appid=A"), ok(GOODBYE));
        // done of an unknown id is answered all the same.
        assert_eq!(h.at(11_000, "/hb_done?0&appid=A"), ok(GOODBYE));
        assert_eq!(h.at(11_000, "/hb_done?&appid=never-seen"), ok(GOODBYE));
        assert_eq!(h.at(11_000, "/list"), ok(""));
    }

    #[test]
    fn host_status_with_several_apps() {
        let mut h = Harness::new();
        for app in ["C", "A", "B"] {
            let target = format!("/hb_init?5000&appid={app}");
            assert_eq!(h.req(0, &target, None, HOST), ok("6000"));
        }
        assert_eq!(
            h.at(1, "/status"),
            ok("WARNING - multiple (3) applications: [A @ 1.2.3.4,B @ 1.2.3.4,C @ 1.2.3.4]")
        );
        assert_eq!(
            h.at(1, "/status?0&appid=A"),
            ok("CRITICAL - no application record for queried ID: [A @ 127.0.0.1]")
        );
        assert!(h
            .req(1, "/status?0&appid=A", None, HOST)
            .body
            .starts_with("OK - fine"));
    }

    #[test]
    fn every_bad_input_is_a_400_and_registers_nothing() {
        let mut h = Harness::new();
        let cases = [
            (
                "/hb_init?abc&appid=y",
                "ERROR: timeout must be a whole number of milliseconds, got [abc]",
            ),
            (
                "/hb_ping?-5&appid=y",
                "ERROR: timeout must not be negative, got [-5]",
            ),
            (
                "/hb_ping?99999999999999999999&appid=y",
                "ERROR: timeout [99999999999999999999] exceeds the maximum of 4294967295 ms",
            ),
            (
                "/hb_ping?2000",
                "ERROR: missing appid parameter for hb_ping",
            ),
            ("/hb_init?2000&appid=", "ERROR: empty appid for hb_init"),
            (
                "/hb_ping?1&appid=a%2",
                "ERROR: invalid percent-encoding in appid",
            ),
            (
                "/hb_ping?1&appid=%C3%28",
                "ERROR: appid is not valid UTF-8 after percent-decoding",
            ),
            (
                "/hb_ping?1&appid=a%0Db",
                "ERROR: appid must not contain control characters",
            ),
            (
                "/hb_pong?1&appid=y",
                "ERROR: cannot process your request: [/hb_pong?1&appid=y]",
            ),
        ];
        for (target, body) in cases {
            let reply = h.at(0, target);
            assert_eq!(reply.status, 400, "{target}");
            assert_eq!(reply.body, body, "{target}");
        }
        let long = format!("/hb_ping?1&appid={}", "x".repeat(2000));
        assert_eq!(h.at(0, &long).status, 414);
        assert!(h.registry.is_empty());
        assert_eq!(h.registry.counters(), Default::default());
        assert!(h.registry.take_events().is_empty());
    }

    #[test]
    fn percent_decoded_ids_and_form_bodies() {
        let mut h = Harness::new();
        assert_eq!(h.at(0, "/hb_init?1&appid=a%26b"), ok("1001"));
        assert_eq!(h.at(0, "/list"), ok("a&b @ 127.0.0.1\n"));
        let body: &[u8] = b"appid=Form+App";
        assert_eq!(
            h.req(0, "/hb_init?2000&cache_buster=9", Some(body), LOCAL),
            ok("3000")
        );
        assert_eq!(
            h.at(0, "/list"),
            ok("Form App @ 127.0.0.1\na&b @ 127.0.0.1\n")
        );
        assert_eq!(h.req(0, "/hb_done?0", Some(body), LOCAL), ok(GOODBYE));
        assert_eq!(h.at(0, "/list"), ok("a&b @ 127.0.0.1\n"));
    }

    #[test]
    fn full_registry_is_a_503() {
        let mut h = Harness::with(RegistryConfig {
            max_apps: 1,
            ..RegistryConfig::default()
        });
        assert_eq!(h.at(0, "/hb_init?0&appid=a"), ok("1000"));
        let reply = h.at(0, "/hb_ping?0&appid=b");
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            "ERROR: registry full: already tracking the maximum of 1 applications"
        );
        assert_eq!(h.at(0, "/hb_ping?0&appid=a"), ok("1000"));
    }

    #[test]
    fn bare_keys_config() {
        let mut h = Harness::with(RegistryConfig {
            key_by_peer: false,
            ..RegistryConfig::default()
        });
        assert_eq!(h.req(0, "/hb_init?0&appid=T", None, HOST), ok("1000"));
        assert_eq!(
            h.at(1000, "/status?0&appid=T"),
            ok("OK - fine application [T]| od=1.00;3;5;0;6 delay=1000ms;;; ")
        );
        assert_eq!(h.at(1000, "/list"), ok("T\n"));
    }

    #[test]
    fn metrics_endpoint() {
        let mut h = Harness::new();
        h.at(0, "/hb_init?0&appid=a%22b");
        let reply = h.at(500, "/metrics");
        assert_eq!(reply.status, 200);
        assert!(reply
            .body
            .contains("heartbeat_app_overdue_ratio{app=\"a\\\"b @ 127.0.0.1\"} 0.5\n"));
        assert!(reply.body.contains("heartbeat_inits_total 1\n"));
    }
}
