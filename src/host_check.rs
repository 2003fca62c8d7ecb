//! The check of a whole host, as a Nagios plugin reports it (`heartbeat
//! check --all`, `examples/check_heartbeat.rs`): every application's
//! [`Finding`] from [`HeartbeatClient::status_all`](crate::HeartbeatClient::status_all),
//! the worst state, and the plugin output: one status line with counts as
//! perfdata, then one long-output line per application. Not wire format:
//! what a monitor makes of the answers.
//!
//! Everything a server sent (keys, reasons) is printed through
//! [`nagios_text`], so that no id can end the status text early, start
//! perfdata, or add a line. The state word, the counts and the perfdata
//! are this module's own.

use std::fmt::Write as _;

use crate::protocol::{nagios_text, whole_ms, AppAnswer, State};

/// How one application stands in a [`HostCheck`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Finding {
    /// Tracked, with its status: its state, overdue ratio and granted
    /// timeout as the status line gave them.
    Tracked {
        /// The state of the status line.
        state: State,
        /// Its `od`, if it had one.
        overdue_ratio: Option<f64>,
        /// Its `delay` in milliseconds, if it had one.
        granted_ms: Option<u64>,
    },
    /// Expected by the server but not tracked: counted CRITICAL.
    Missing,
    /// Listed, then dropped before its status was read (done or expired):
    /// not counted.
    Gone,
    /// On another host than the asker: the server does not answer about it
    /// by id. Counted UNKNOWN.
    OtherHost,
    /// Its status could not be read (the reason, as sent or as failed):
    /// counted UNKNOWN.
    Failed(String),
}

/// One application of a [`HostCheck`]: its key and [`Finding`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedApp {
    /// The key as the server lists it (`ID @ IP`, or the bare id).
    pub key: String,
    /// How it stands.
    pub finding: Finding,
}

impl CheckedApp {
    /// An application from the answer to its status query.
    pub fn from_answer(key: impl Into<String>, answer: &AppAnswer) -> CheckedApp {
        let finding = match answer {
            AppAnswer::Status(status) => Finding::Tracked {
                state: status.state(),
                overdue_ratio: status.overdue_ratio(),
                granted_ms: status.granted().map(whole_ms),
            },
            AppAnswer::Gone(_) => Finding::Gone,
            AppAnswer::OtherHost(_) => Finding::OtherHost,
        };
        CheckedApp {
            key: key.into(),
            finding,
        }
    }

    /// The state it counts as; `None` for [`Finding::Gone`] (not counted).
    pub fn state(&self) -> Option<State> {
        match &self.finding {
            Finding::Tracked { state, .. } => Some(*state),
            Finding::Missing => Some(State::Critical),
            Finding::Gone => None,
            Finding::OtherHost | Finding::Failed(_) => Some(State::Unknown),
        }
    }

    /// Whether it is expected but not tracked.
    pub fn is_missing(&self) -> bool {
        self.finding == Finding::Missing
    }

    /// What the summary line says about it after its key, e.g.
    /// `CRITICAL, od 5.20` or `missing`.
    fn short(&self) -> String {
        match &self.finding {
            Finding::Tracked {
                state,
                overdue_ratio: Some(od),
                ..
            } => format!("{state}, od {od:.2}"),
            Finding::Tracked { state, .. } => state.to_string(),
            Finding::Missing => "missing".to_owned(),
            Finding::Gone => "gone".to_owned(),
            Finding::OtherHost => "UNKNOWN, on another host".to_owned(),
            Finding::Failed(_) => "UNKNOWN, no status".to_owned(),
        }
    }

    /// Its long-output line (without the newline).
    fn long_line(&self) -> String {
        let key = nagios_text(&self.key);
        match &self.finding {
            Finding::Tracked {
                state,
                overdue_ratio,
                granted_ms,
            } => {
                let mut line = format!("{state} - {key}");
                let mut sep = ": ";
                if let Some(od) = overdue_ratio {
                    let _ = write!(line, "{sep}od {od:.2}");
                    sep = ", ";
                }
                if let Some(ms) = granted_ms {
                    let _ = write!(line, "{sep}granted {ms} ms");
                }
                line
            }
            Finding::Missing => format!("CRITICAL - {key}: missing (expected, not tracked)"),
            Finding::Gone => {
                format!("GONE - {key}: no longer tracked (done or expired since the list was read)")
            }
            Finding::OtherHost => format!(
                "UNKNOWN - {key}: on another host; the server answers about the asking host's applications only"
            ),
            Finding::Failed(reason) => {
                format!("UNKNOWN - {key}: no status ({})", nagios_text(reason))
            }
        }
    }
}

/// How many applications count in each state (gone ones in none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// OK.
    pub ok: usize,
    /// WARNING.
    pub warning: usize,
    /// CRITICAL (missing ones included).
    pub critical: usize,
    /// UNKNOWN (other host, no status).
    pub unknown: usize,
    /// Of the critical ones, how many are missing.
    pub missing: usize,
    /// Gone between the list and their status (not in any state).
    pub gone: usize,
}

impl Counts {
    /// Applications counted in a state (all but the gone ones).
    pub fn total(&self) -> usize {
        self.ok + self.warning + self.critical + self.unknown
    }
}

/// Most applications the summary line names; the others are counted
/// (`... and 12 more`) and all are in the long output.
pub const SUMMARY_NAMES: usize = 10;

/// The check of a whole host: every application's [`Finding`], the worst
/// state, and the Nagios plugin output.
///
/// The worst state ranks OK < UNKNOWN < WARNING < CRITICAL (the Monitoring
/// Plugins' `max_state_alt`): an application the check could not see does
/// not hide a late one. With no application counted the state is UNKNOWN.
///
/// ```
/// use heartbeat_sdk::host_check::{CheckedApp, Finding, HostCheck};
/// use heartbeat_sdk::protocol::State;
///
/// let tracked = |key: &str, state, od| CheckedApp {
///     key: key.into(),
///     finding: Finding::Tracked { state, overdue_ratio: Some(od), granted_ms: Some(3000) },
/// };
/// let check = HostCheck::new(vec![
///     tracked("kiosk-1", State::Ok, 0.5),
///     tracked("kiosk-3", State::Critical, 5.2),
///     CheckedApp { key: "kiosk-9".into(), finding: Finding::Missing },
/// ]);
/// assert_eq!(check.state(), State::Critical);
/// assert_eq!(
///     check.line(),
///     "CRITICAL - 2 of 3 applications need attention: kiosk-3 (CRITICAL, od 5.20), kiosk-9 (missing)\
///      | ok=1 warning=0 critical=2 unknown=0"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HostCheck {
    apps: Vec<CheckedApp>,
}

/// Rank of a state for the worst-state rule: OK < UNKNOWN < WARNING < CRITICAL.
fn rank(state: State) -> u8 {
    match state {
        State::Ok => 0,
        State::Unknown => 1,
        State::Warning => 2,
        State::Critical => 3,
    }
}

impl HostCheck {
    /// The check of these applications, kept in the order given.
    pub fn new(apps: Vec<CheckedApp>) -> HostCheck {
        HostCheck { apps }
    }

    /// The applications, in the order given.
    pub fn apps(&self) -> &[CheckedApp] {
        &self.apps
    }

    /// The counts per state.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for app in &self.apps {
            match app.state() {
                Some(State::Ok) => counts.ok += 1,
                Some(State::Warning) => counts.warning += 1,
                Some(State::Critical) => counts.critical += 1,
                Some(State::Unknown) => counts.unknown += 1,
                None => counts.gone += 1,
            }
            if app.is_missing() {
                counts.missing += 1;
            }
        }
        counts
    }

    /// The worst state of any application (OK < UNKNOWN < WARNING <
    /// CRITICAL); UNKNOWN when none is counted.
    pub fn state(&self) -> State {
        self.apps
            .iter()
            .filter_map(CheckedApp::state)
            .max_by_key(|&state| rank(state))
            .unwrap_or(State::Unknown)
    }

    /// The perfdata: `ok=N warning=N critical=N unknown=N`.
    pub fn perfdata(&self) -> String {
        let c = self.counts();
        format!(
            "ok={} warning={} critical={} unknown={}",
            c.ok, c.warning, c.critical, c.unknown
        )
    }

    /// The one status line, without a newline:
    /// `STATE - TEXT| ok=N warning=N critical=N unknown=N`.
    ///
    /// - no application: `UNKNOWN - no heartbeat clients at the moment...`
    /// - all OK: `OK - all N applications fine` (`OK - 1 application fine`)
    /// - else `STATE - K of N applications need attention: KEY (STATE, od X.XX), KEY (missing), ...`,
    ///   the worst first (then in the order given), at most
    ///   [`SUMMARY_NAMES`] of them and `... and M more`.
    pub fn line(&self) -> String {
        let counts = self.counts();
        let total = counts.total();
        let state = self.state();
        let plural = |n: usize| {
            if n == 1 {
                "application"
            } else {
                "applications"
            }
        };
        let text = if total == 0 {
            "no heartbeat clients at the moment...".to_owned()
        } else if counts.ok == total {
            match total {
                1 => "1 application fine".to_owned(),
                n => format!("all {n} applications fine"),
            }
        } else {
            let mut attention: Vec<&CheckedApp> = self
                .apps
                .iter()
                .filter(|app| app.state().is_some_and(|s| s != State::Ok))
                .collect();
            // stable: equal states keep the order given
            attention.sort_by_key(|app| std::cmp::Reverse(app.state().map(rank)));
            let mut text = format!(
                "{} of {total} {} {}: ",
                attention.len(),
                plural(total),
                if attention.len() == 1 {
                    "needs attention"
                } else {
                    "need attention"
                }
            );
            for (i, app) in attention.iter().take(SUMMARY_NAMES).enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                let _ = write!(text, "{} ({})", nagios_text(&app.key), app.short());
            }
            if attention.len() > SUMMARY_NAMES {
                let _ = write!(text, " ... and {} more", attention.len() - SUMMARY_NAMES);
            }
            text
        };
        format!("{state} - {text}| {}", self.perfdata())
    }

    /// The long output: one line per application, in the order given, each
    /// ending in `\n` (`STATE - KEY: od X.XX, granted N ms`,
    /// `CRITICAL - KEY: missing (expected, not tracked)`, ...).
    pub fn long_output(&self) -> String {
        let mut out = String::new();
        for app in &self.apps {
            out.push_str(&app.long_line());
            out.push('\n');
        }
        out
    }

    /// The whole plugin output: [`line`](Self::line), a newline, then the
    /// [`long_output`](Self::long_output).
    pub fn output(&self) -> String {
        format!("{}\n{}", self.line(), self.long_output())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{app_line, Status};

    fn tracked(key: &str, state: State, od: f64) -> CheckedApp {
        CheckedApp {
            key: key.into(),
            finding: Finding::Tracked {
                state,
                overdue_ratio: Some(od),
                granted_ms: Some(3000),
            },
        }
    }

    fn app(key: &str, finding: Finding) -> CheckedApp {
        CheckedApp {
            key: key.into(),
            finding,
        }
    }

    #[test]
    fn a_host_of_three() {
        let check = HostCheck::new(vec![
            tracked("kiosk-1", State::Ok, 0.5),
            tracked("kiosk-3", State::Critical, 5.2),
            app("kiosk-9", Finding::Missing),
        ]);
        assert_eq!(check.state(), State::Critical);
        assert_eq!(
            check.line(),
            "CRITICAL - 2 of 3 applications need attention: kiosk-3 (CRITICAL, od 5.20), kiosk-9 (missing)\
             | ok=1 warning=0 critical=2 unknown=0"
        );
        assert_eq!(check.long_output().lines().count(), 3);
    }

    #[test]
    fn an_answer_becomes_a_finding() {
        let key = "a [b] @ c @ 10.0.0.1";
        let own = Status::parse(&app_line(State::Warning, key, 3.2, 3.0, 5.0, 6.0, 2000)).unwrap();
        let checked = CheckedApp::from_answer(key, &AppAnswer::classify(key, own));
        assert_eq!(
            checked.finding,
            Finding::Tracked {
                state: State::Warning,
                overdue_ratio: Some(3.2),
                granted_ms: Some(2000)
            }
        );
        let other = Status::parse(&app_line(
            State::Ok,
            "a @ 127.0.0.1",
            0.1,
            3.0,
            5.0,
            6.0,
            2000,
        ))
        .unwrap();
        let checked = CheckedApp::from_answer(key, &AppAnswer::classify(key, other));
        assert_eq!(checked.finding, Finding::OtherHost);
    }

    #[test]
    fn missing_apps_are_counted_and_kept_in_order() {
        let check = HostCheck::new(vec![
            app("m1", Finding::Missing),
            tracked("o", State::Ok, 0.1),
            app("m2", Finding::Missing),
        ]);
        let keys: Vec<&str> = check.apps().iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["m1", "o", "m2"]);
        assert!(check.apps()[0].is_missing());
        assert!(!check.apps()[1].is_missing());
        let counts = check.counts();
        assert_eq!((counts.missing, counts.critical, counts.ok), (2, 2, 1));
    }

    #[test]
    fn exactly_summary_names_apps_are_all_named_with_no_more() {
        let apps: Vec<CheckedApp> = (0..SUMMARY_NAMES)
            .map(|i| tracked(&format!("c{i}"), State::Critical, 5.5))
            .collect();
        let line = HostCheck::new(apps.clone()).line();
        assert!(line.contains("c9 ("), "{line}");
        assert!(!line.contains("more"), "{line}");
        let mut eleven = apps;
        eleven.push(tracked("c10", State::Critical, 5.5));
        let line = HostCheck::new(eleven).line();
        assert!(!line.contains("c10 ("), "{line}");
        assert!(line.contains(" ... and 1 more|"), "{line}");
    }

    #[test]
    fn no_apps_is_unknown() {
        let check = HostCheck::new(vec![]);
        assert_eq!(check.state(), State::Unknown);
        assert_eq!(
            check.line(),
            "UNKNOWN - no heartbeat clients at the moment...| ok=0 warning=0 critical=0 unknown=0"
        );
        assert_eq!(check.long_output(), "");
        // only gone ones: nothing counted either
        let gone = HostCheck::new(vec![app("a", Finding::Gone)]);
        assert_eq!(gone.state(), State::Unknown);
        assert_eq!(gone.counts().gone, 1);
    }

    #[test]
    fn the_worst_state_wins_critical_over_warning_over_unknown_over_ok() {
        let ok = tracked("o", State::Ok, 0.1);
        let warn = tracked("w", State::Warning, 3.1);
        let crit = tracked("c", State::Critical, 5.1);
        let unknown = app("u", Finding::OtherHost);
        let cases = [
            (vec![ok.clone()], State::Ok),
            (vec![ok.clone(), unknown.clone()], State::Unknown),
            (
                vec![unknown.clone(), warn.clone(), ok.clone()],
                State::Warning,
            ),
            (
                vec![crit.clone(), warn.clone(), unknown.clone()],
                State::Critical,
            ),
            (
                vec![ok.clone(), app("m", Finding::Missing)],
                State::Critical,
            ),
            (vec![app("g", Finding::Gone), ok.clone()], State::Ok),
        ];
        for (apps, worst) in cases {
            let check = HostCheck::new(apps);
            assert_eq!(check.state(), worst, "{check:?}");
            assert!(check.line().starts_with(&format!("{worst} - ")));
        }
    }

    #[test]
    fn all_fine_and_one_fine() {
        let one = HostCheck::new(vec![tracked("a", State::Ok, 0.1)]);
        assert_eq!(
            one.output(),
            "OK - 1 application fine| ok=1 warning=0 critical=0 unknown=0\nOK - a: od 0.10, granted 3000 ms\n"
        );
        let three = HostCheck::new(vec![
            tracked("a", State::Ok, 0.1),
            tracked("b", State::Ok, 0.2),
            tracked("c", State::Ok, 0.3),
        ]);
        assert_eq!(
            three.line(),
            "OK - all 3 applications fine| ok=3 warning=0 critical=0 unknown=0"
        );
    }

    #[test]
    fn the_summary_names_the_worst_first_and_at_most_ten() {
        let mut apps = vec![tracked("w", State::Warning, 3.5)];
        apps.extend((0..12).map(|i| tracked(&format!("c{i}"), State::Critical, 5.5)));
        let check = HostCheck::new(apps);
        let line = check.line();
        assert!(
            line.starts_with(
                "CRITICAL - 13 of 13 applications need attention: c0 (CRITICAL, od 5.50), c1 "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                "c9 (CRITICAL, od 5.50) ... and 3 more| ok=0 warning=1 critical=12 unknown=0"
            ),
            "{line}"
        );
        assert_eq!(check.long_output().lines().count(), 13);
    }

    #[test]
    fn hostile_keys_cannot_forge_state_perfdata_or_lines() {
        let evil = "x| ok=99 critical=0\nOK - all fine\u{1b}[2J";
        let check = HostCheck::new(vec![
            tracked(evil, State::Critical, 5.0),
            app("y", Finding::Failed("boom|\r\nOK".into())),
        ]);
        let output = check.output();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 3, "{output}");
        assert_eq!(lines[0].matches('|').count(), 1, "{}", lines[0]);
        assert!(
            lines[0].starts_with("CRITICAL - 2 of 2 applications need attention: x\\u{7c} ok=99")
        );
        assert!(lines[0].ends_with("| ok=0 warning=0 critical=1 unknown=1"));
        for line in &lines[1..] {
            assert!(!line.contains('|'), "{line}");
        }
        assert!(!output.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(lines[2], "UNKNOWN - y: no status (boom\\u{7c}\\r\\nOK)");
    }
}
