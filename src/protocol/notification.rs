//! The webhook notification (`serve --webhook URL`): one JSON document per
//! state change of an application, as `docs/notifications.md` specifies.
//!
//! The server writes [`StateChange`] and a receiver written in Rust reads it
//! back with the same type (feature `serde`):
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use heartbeat_sdk::protocol::notification::{Change, StateChange};
//! use heartbeat_sdk::State;
//!
//! let body = r#"{"event":"critical","app":"kiosk-3","host":"10.0.0.5",
//!   "previous":"warning","state":"critical","overdue":3.0,
//!   "at":"2026-12-07T02:14:09.250Z","coalesced":0,
//!   "dashboard":"http://monitor:8888/","server":"http://monitor:8888"}"#;
//! let change: StateChange = serde_json::from_str(body).unwrap();
//! assert_eq!(change.event, Change::Critical);
//! assert_eq!(change.state, Some(State::Critical));
//! assert_eq!(change.host.as_deref(), Some("10.0.0.5"));
//! # }
//! ```

use super::State;

/// Which state change a [`StateChange`] reports. JSON (feature `serde`):
/// the lower-case name, `"expected-missing"` with a dash; a name this
/// version does not know reads as [`Change::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum Change {
    /// A new application (by `init` or `ping`): OK.
    Created,
    /// Its overdue ratio reached the warning ratio: WARNING.
    Warning,
    /// Its overdue ratio reached the critical ratio: CRITICAL.
    Critical,
    /// A WARNING or CRITICAL application beat again: OK.
    Recovered,
    /// It signed off (`hb_done`).
    Done,
    /// It was dropped at the drop ratio without signing off.
    Expired,
    /// An expected application has no record: CRITICAL.
    ExpectedMissing,
    /// The application's run failed (`hb_fail`): CRITICAL, with its exit
    /// code, until its next init or ping.
    Failed,
    /// History only (never notified): the server restarted and restored the
    /// record from its state file, OK (CRITICAL for a failed run), while
    /// the history's last word on it was another state.
    Restored,
    /// A change this version does not know (read side only).
    #[cfg_attr(feature = "serde", serde(other))]
    Unknown,
}

impl Change {
    /// Every change this version knows.
    pub const ALL: [Change; 9] = [
        Change::Created,
        Change::Warning,
        Change::Critical,
        Change::Recovered,
        Change::Done,
        Change::Expired,
        Change::ExpectedMissing,
        Change::Failed,
        Change::Restored,
    ];

    /// The change named `name` ([`Change::name`]); [`Change::Unknown`]
    /// for any other text.
    ///
    /// ```
    /// use heartbeat_sdk::protocol::notification::Change;
    /// assert_eq!(Change::from_name("expected-missing"), Change::ExpectedMissing);
    /// assert_eq!(Change::from_name("Critical"), Change::Unknown);
    /// ```
    pub fn from_name(name: &str) -> Change {
        Change::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .unwrap_or(Change::Unknown)
    }

    /// The name JSON uses: `created`, `warning`, `critical`, `recovered`,
    /// `done`, `expired`, `expected-missing`, `failed`, `restored`
    /// (`unknown`).
    pub fn name(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Warning => "warning",
            Change::Critical => "critical",
            Change::Recovered => "recovered",
            Change::Done => "done",
            Change::Expired => "expired",
            Change::ExpectedMissing => "expected-missing",
            Change::Failed => "failed",
            Change::Restored => "restored",
            Change::Unknown => "unknown",
        }
    }
}

/// One state change of one application, as a webhook receives it.
///
/// Fields are never left out: one without a value is `null`. Readers
/// should ignore fields they do not know; the document only gains fields.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct StateChange {
    /// What happened.
    pub event: Change,
    /// The application id, as the application sent it (untrusted text:
    /// escape it for whatever you render it in).
    pub app: String,
    /// The address it beats from; `null` for an expected application
    /// that has none (`--expect ID`) or a server keyed by id alone.
    pub host: Option<String>,
    /// The state before; `null` when there was no record.
    pub previous: Option<State>,
    /// The state after; `null` when there is no record any more (done,
    /// expired).
    pub state: Option<State>,
    /// The overdue ratio at the change (silence over the granted timeout):
    /// the threshold crossed for `warning`, `critical` and `expired`,
    /// otherwise `null`.
    pub overdue: Option<f64>,
    /// The exit code of a failed run (`failed`); absent otherwise.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exit_code: Option<u8>,
    /// When it happened: RFC 3339 in UTC with milliseconds
    /// ([`format_time`](super::format_time)); for a threshold crossing the
    /// instant it was due, not when it was noticed.
    pub at: String,
    /// How many earlier changes of this application this one folds in
    /// (`--notify-min-interval`): `previous` is then the state the last
    /// notification left it in. `0` normally.
    pub coalesced: u32,
    /// The server's dashboard.
    pub dashboard: String,
    /// The server that saw it (its URL), to tell two servers of an HA pair
    /// apart.
    pub server: String,
}
