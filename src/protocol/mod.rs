//! The heartbeat protocol, pure: building requests and parsing replies.
//!
//! Nothing here does I/O, and nothing here depends on the rest of the crate:
//! the [`Method`] a request is sent with is defined here, and the functions
//! here fail with this module's own error types ([`ParseError`],
//! [`AppIdError`], [`TimeoutTooLong`], [`CommandError`](command::CommandError)),
//! which the client maps onto [`Error`](crate::Error). The client
//! builds a [`Request`] here, hands it to a
//! [`Transport`](crate::Transport) as plain HTTP, and parses the reply here
//! again; the embedded server decodes requests with [`command`]. The wire
//! contract is the project's `PROTOCOL.md`; the JSON API's records, and the
//! JSON shape of every value type (feature `serde`), are in [`apps`].
//!
//! ```
//! use heartbeat_sdk::protocol::{self, Beat};
//!
//! let req = protocol::beat_request(Beat::Ping, 2000, "kiosk 7", "1700000000000000000-1");
//! assert_eq!(req.target, "/hb_ping?2000&appid=kiosk%207&cache_buster=1700000000000000000-1");
//! assert_eq!(protocol::parse_granted(b"3000").unwrap().as_millis(), 3000);
//! ```

mod app_id;
pub mod apps;
pub mod command;
pub mod history;
mod key;
pub mod notification;
mod reply;
mod request;
mod status;
mod summary;
mod time;

pub use app_id::{check_app_id, AppId, AppIdError};
#[cfg(monitor)]
pub(crate) use key::peer_key;
pub use key::{split_key, RecordKey, KEY_SEPARATOR};
pub use reply::{
    excerpt, parse_granted, parse_list, parse_text, printable, ParseError, GOODBYE, MAX_EXCERPT,
    UNREACHABLE_LINE,
};
pub use request::{
    beat_request, cache_buster, encode_component, fail_request, list_request, raw_request,
    status_request, timeout_ms, validate_app_id, Beat, Method, Request, TimeoutTooLong,
};
pub use status::{
    app_line, failed_line, multiple_line, multiple_line_head, no_record_line, PerfValue, Range,
    State, Status, MULTIPLE_LINE_END, MULTIPLE_LINE_SEPARATOR, NO_CLIENTS_LINE,
};
pub use summary::{nagios_text, AppAnswer};
pub use time::{format_time, parse_time};

/// The largest timeout, in milliseconds, that a request may carry. The
/// reference server keeps timeouts as integers; ours refuses anything larger
/// than this, and so does the client before sending.
pub const MAX_TIMEOUT_MS: u64 = u32::MAX as u64;

/// The longest application id, in bytes, that client and server accept.
pub const MAX_APP_ID_LEN: usize = 1024;

/// Tolerance the reference server adds to every promised timeout.
pub const TOLERANCE_MS: u64 = 1000;

/// Most applications the embedded server tracks by default (the
/// reference has no cap). The client sizes the body caps of the replies
/// that grow with the registry ([`MAX_LIST_BODY`], [`MAX_HOST_STATUS_BODY`])
/// for this many applications.
pub const MAX_APPS: usize = 100_000;

/// Longest text of the peer address in a record key: an IPv6 address
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`, 45 bytes, POSIX
/// `INET6_ADDRSTRLEN` less its NUL).
pub const MAX_PEER_LEN: usize = 45;

/// Longest record key as `/list` and `/status` print it: `ID @ IP`, with an
/// id of [`MAX_APP_ID_LEN`] bytes and an address of [`MAX_PEER_LEN`].
pub const MAX_KEY_LEN: usize = MAX_APP_ID_LEN + KEY_SEPARATOR.len() + MAX_PEER_LEN;

/// Bytes of a status reply other than its keys (state word, wording, the
/// count, perfdata), with a wide margin: the longest the embedded server
/// prints is under 150.
pub const STATUS_OVERHEAD: usize = 1024;

/// The largest `/list` reply for `apps` applications: one line of at most
/// [`MAX_KEY_LEN`] bytes and a `\n` each (saturating, never overflows).
///
/// ```
/// use heartbeat_sdk::protocol::{max_list_body, MAX_KEY_LEN};
/// assert_eq!(max_list_body(2), 2 * (MAX_KEY_LEN + 1));
/// ```
pub const fn max_list_body(apps: usize) -> usize {
    apps.saturating_mul(MAX_KEY_LEN + 1)
}

/// The largest host `/status` reply for `apps` applications: the
/// `WARNING - multiple (N) applications: [A,B,...]` line, every key of at
/// most [`MAX_KEY_LEN`] bytes and a `,`, plus [`STATUS_OVERHEAD`]
/// (saturating). It also bounds the status of one application.
pub const fn max_host_status_body(apps: usize) -> usize {
    apps.saturating_mul(MAX_KEY_LEN + 1)
        .saturating_add(STATUS_OVERHEAD)
}

/// The largest `/list` reply of a server tracking [`MAX_APPS`]
/// applications: 107 300 000 bytes (about 102 MiB), reached only with
/// 1024-byte ids from IPv6 peers; 100 000 short ids make about 2.5 MB.
pub const MAX_LIST_BODY: usize = max_list_body(MAX_APPS);

/// The largest host `/status` reply of a server tracking [`MAX_APPS`]
/// applications (a little over [`MAX_LIST_BODY`]).
pub const MAX_HOST_STATUS_BODY: usize = max_host_status_body(MAX_APPS);

/// Bytes of one entry of the JSON API's `apps` other than its key, id and
/// host (field names, punctuation, indentation, the state, two integers of
/// at most 20 digits, a float of at most 24 characters, a time, two
/// booleans), with a wide margin: the pretty-printed entries of
/// `docs/api-v1.md` are about 300 bytes with short ids.
pub const APP_RECORD_OVERHEAD: usize = 512;

/// Bytes of a JSON API document other than its `apps` entries (version,
/// time, thresholds, five counters and four counts of at most 20 digits
/// each), with a wide margin.
pub const APPS_OVERHEAD: usize = 4096;

/// The largest `GET /api/v1/apps` reply for `apps` entries (tracked apps
/// and missing expected ones): per entry, the key (at most
/// [`MAX_KEY_LEN`]) and the id (at most [`MAX_APP_ID_LEN`]) twice over, as
/// JSON escaping doubles a `"` or `\` (the only characters of a valid id
/// that JSON must escape), the host ([`MAX_PEER_LEN`], never escaped) and
/// [`APP_RECORD_OVERHEAD`]; plus [`APPS_OVERHEAD`] (saturating).
///
/// 4 749 bytes per entry: about 453 MiB for [`MAX_APPS`] entries of
/// 1024-byte ids made of quotes from IPv6 peers (a real document of
/// 100 000 short ids is about 35 MB). A server that escapes more than JSON requires (every
/// non-ASCII character as `\uXXXX`, say) can exceed it with long
/// non-ASCII ids: raise [`max_apps`](crate::ClientBuilder::max_apps) for it.
///
/// ```
/// use heartbeat_sdk::protocol::{max_apps_body, APPS_OVERHEAD};
/// assert_eq!(max_apps_body(0), APPS_OVERHEAD);
/// assert_eq!(max_apps_body(2) - max_apps_body(1), 4749);
/// assert_eq!(max_apps_body(usize::MAX), usize::MAX);
/// ```
pub const fn max_apps_body(apps: usize) -> usize {
    let per_app = 2 * (MAX_KEY_LEN + MAX_APP_ID_LEN) + MAX_PEER_LEN + APP_RECORD_OVERHEAD;
    apps.saturating_mul(per_app).saturating_add(APPS_OVERHEAD)
}

/// Whole milliseconds of `d`, rounded down and saturating at `u64::MAX`
/// (`as_millis` without its 128-bit arithmetic: this is on the ping path),
/// as every `_ms` figure of the protocol is written.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(heartbeat_sdk::protocol::whole_ms(Duration::from_micros(2_999)), 2);
/// assert_eq!(heartbeat_sdk::protocol::whole_ms(Duration::MAX), u64::MAX);
/// ```
pub fn whole_ms(d: std::time::Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The figures the docs promise, computed by hand from PROTOCOL.md's
    // limits: a key is 1 024 + 3 + 45 = 1 072 bytes, a list line 1 073.
    #[test]
    fn body_caps_are_the_documented_figures() {
        assert_eq!(MAX_KEY_LEN, 1_072);
        assert_eq!(max_list_body(0), 0);
        assert_eq!(max_list_body(1), 1_073);
        assert_eq!(MAX_LIST_BODY, 107_300_000);
        assert_eq!(max_list_body(usize::MAX), usize::MAX);

        assert_eq!(max_host_status_body(0), 1_024);
        assert_eq!(max_host_status_body(1), 1_073 + 1_024);
        assert_eq!(MAX_HOST_STATUS_BODY, 107_301_024);
        assert_eq!(max_host_status_body(usize::MAX), usize::MAX);

        // 2 × (1 072 + 1 024) + 45 + 512 = 4 749 per entry, 4 096 around them.
        assert_eq!(max_apps_body(0), 4_096);
        assert_eq!(max_apps_body(1), 4_749 + 4_096);
        assert_eq!(max_apps_body(MAX_APPS), 474_904_096);
        assert_eq!(max_apps_body(usize::MAX), usize::MAX);
    }

    #[test]
    fn whole_ms_rounds_down_and_saturates() {
        use std::time::Duration;
        assert_eq!(whole_ms(Duration::from_micros(2_999)), 2);
        assert_eq!(whole_ms(Duration::new(3, 999_999_999)), 3_999);
        assert_eq!(whole_ms(Duration::MAX), u64::MAX);
    }
}
