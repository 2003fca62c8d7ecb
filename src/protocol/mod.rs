//! The heartbeat protocol, pure: building requests and parsing replies.
//!
//! Nothing here does I/O. The client builds a [`Request`] here, hands it to a
//! [`Transport`](crate::Transport) as plain HTTP, and parses the reply here
//! again; the embedded server decodes requests with [`command`]. The wire
//! contract is the project's `PROTOCOL.md`.
//!
//! ```
//! use heartbeat_sdk::protocol::{self, Beat};
//!
//! let req = protocol::beat_request(Beat::Ping, 2000, "kiosk 7", "1700000000000000000-1");
//! assert_eq!(req.target, "/hb_ping?2000&appid=kiosk%207&cache_buster=1700000000000000000-1");
//! assert_eq!(protocol::parse_granted(b"3000").unwrap().as_millis(), 3000);
//! ```

pub mod command;
mod reply;
mod request;
mod status;

pub use reply::{
    parse_granted, parse_list, parse_text, printable, ParseError, GOODBYE, UNREACHABLE_LINE,
};
pub use request::{
    beat_request, cache_buster, encode_component, list_request, raw_request, status_request,
    timeout_ms, validate_app_id, Beat, Request,
};
pub use status::{
    app_line, multiple_line, multiple_line_head, no_record_line, PerfValue, Range, State, Status,
    MULTIPLE_LINE_END, MULTIPLE_LINE_SEPARATOR, NO_CLIENTS_LINE,
};

/// The largest timeout, in milliseconds, that a request may carry. The
/// reference server keeps timeouts as integers; ours refuses anything larger
/// than this, and so does the client before sending.
pub const MAX_TIMEOUT_MS: u64 = u32::MAX as u64;

/// The longest application id, in bytes, that client and server accept.
pub const MAX_APP_ID_LEN: usize = 1024;

/// Tolerance the reference server adds to every promised timeout.
pub const TOLERANCE_MS: u64 = 1000;
