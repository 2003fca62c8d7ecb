//! The one rule for application ids, shared by the client (before sending)
//! and the server (before registering), so that the two cannot drift.
//!
//! An id ends up inside line-based replies: `/list` prints one per line and
//! `/status` prints it inside a Nagios plugin line
//! (`OK - fine application [ID]| od=...`). So an id must not contain
//! anything that a reader of those replies takes for structure:
//!
//! - control characters (`\n`, `\r`, `\t`, NUL, DEL, the C1 controls such
//!   as U+0085 NEXT LINE): they break lines;
//! - `|`: it starts the perfdata of a plugin line, so an id could forge
//!   perfdata and make the real perfdata unparsable;
//! - U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: readers that
//!   split on Unicode line breaks would see a fake line;
//! - the bidirectional controls U+202A–U+202E and U+2066–U+2069: they
//!   reorder what a terminal or browser shows, so a line can display as
//!   something else than it is.
//!
//! Everything else (spaces, `&`, `=`, `?`, `#`, `%`, `+`, `[`, `]`, letters
//! of any script, emoji) is allowed: the client percent-encodes it.

use std::fmt;

/// Why an application id was refused by [`check_app_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppIdError {
    /// The id is empty.
    Empty,
    /// The id is longer than allowed.
    TooLong {
        /// Its length in bytes (UTF-8).
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// The id contains a control character (such as a newline).
    ControlChar {
        /// The first offending character.
        ch: char,
    },
    /// The id contains `|`, which starts the perfdata of a Nagios plugin line.
    PerfdataSeparator,
    /// The id contains U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR.
    LineSeparator {
        /// The first offending character.
        ch: char,
    },
    /// The id contains a bidirectional control (U+202A–U+202E, U+2066–U+2069).
    BidiControl {
        /// The first offending character.
        ch: char,
    },
}

impl fmt::Display for AppIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppIdError::Empty => f.write_str("it is empty"),
            AppIdError::TooLong { len, max } => {
                write!(f, "it is {len} bytes long, the maximum is {max}")
            }
            AppIdError::ControlChar { ch } => {
                write!(
                    f,
                    "it contains the control character U+{:04X}",
                    u32::from(*ch)
                )
            }
            AppIdError::PerfdataSeparator => f.write_str(
                "it contains '|', which would start the perfdata of a Nagios plugin line",
            ),
            AppIdError::LineSeparator { ch } => write!(
                f,
                "it contains the Unicode line break U+{:04X}",
                u32::from(*ch)
            ),
            AppIdError::BidiControl { ch } => write!(
                f,
                "it contains the bidirectional control U+{:04X}",
                u32::from(*ch)
            ),
        }
    }
}

impl std::error::Error for AppIdError {}

/// True for the bidirectional embedding, override and isolate controls.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks an application id against the protocol's rules (see the module
/// docs): not empty, at most `max_len` bytes, and none of the characters
/// that would corrupt a line-based reply. Pure, never panics.
///
/// The client calls it with [`MAX_APP_ID_LEN`](super::MAX_APP_ID_LEN) before
/// sending; the server's parser ([`command`](super::command)) with its
/// configured limit before registering.
///
/// ```
/// use heartbeat_sdk::protocol::{check_app_id, AppIdError, MAX_APP_ID_LEN};
///
/// assert_eq!(check_app_id("kiosk 7 [Zürich] a+b", MAX_APP_ID_LEN), Ok(()));
/// assert_eq!(check_app_id("kiosk| od=0.00", MAX_APP_ID_LEN), Err(AppIdError::PerfdataSeparator));
/// assert_eq!(
///     check_app_id("a\u{2028}Tetris @ 10.0.0.5", MAX_APP_ID_LEN),
///     Err(AppIdError::LineSeparator { ch: '\u{2028}' })
/// );
/// assert_eq!(check_app_id("abcd", 3), Err(AppIdError::TooLong { len: 4, max: 3 }));
/// ```
pub fn check_app_id(app_id: &str, max_len: usize) -> Result<(), AppIdError> {
    if app_id.is_empty() {
        return Err(AppIdError::Empty);
    }
    if app_id.len() > max_len {
        return Err(AppIdError::TooLong {
            len: app_id.len(),
            max: max_len,
        });
    }
    for ch in app_id.chars() {
        if ch.is_control() {
            return Err(AppIdError::ControlChar { ch });
        }
        match ch {
            '|' => return Err(AppIdError::PerfdataSeparator),
            '\u{2028}' | '\u{2029}' => return Err(AppIdError::LineSeparator { ch }),
            c if is_bidi_control(c) => return Err(AppIdError::BidiControl { ch }),
            _ => {}
        }
    }
    Ok(())
}

/// An application id that passed [`check_app_id`]: holding one is the
/// proof, so code that receives an `AppId` does not check again.
///
/// [`AppId::new`] checks against [`MAX_APP_ID_LEN`](super::MAX_APP_ID_LEN),
/// as the server's parser ([`parse_command`](super::command::parse_command))
/// does for every id it reads from the wire. It reads as a `&str` (`Deref`, `AsRef`,
/// `Borrow`, `Display`).
///
/// ```
/// use heartbeat_sdk::protocol::{AppId, AppIdError};
///
/// let id = AppId::new("kiosk 7")?;
/// assert_eq!(id.as_str(), "kiosk 7");
/// assert!(id.starts_with("kiosk")); // a `str` method, through `Deref`
/// assert_eq!(AppId::new("a\nb").unwrap_err(), AppIdError::ControlChar { ch: '\n' });
/// assert_eq!("x|y".parse::<AppId>().unwrap_err(), AppIdError::PerfdataSeparator);
/// # Ok::<(), AppIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// `id`, if it passes [`check_app_id`] with
    /// [`MAX_APP_ID_LEN`](super::MAX_APP_ID_LEN).
    ///
    /// # Errors
    /// The first rule `id` breaks.
    pub fn new(id: impl Into<String>) -> Result<AppId, AppIdError> {
        AppId::with_max_len(id, super::MAX_APP_ID_LEN)
    }

    /// `id`, if it passes [`check_app_id`] with `max_len`.
    ///
    /// # Errors
    /// The first rule `id` breaks.
    pub fn with_max_len(id: impl Into<String>, max_len: usize) -> Result<AppId, AppIdError> {
        let id = id.into();
        check_app_id(&id, max_len)?;
        Ok(AppId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for AppId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AppId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppId {
    type Err = AppIdError;

    fn from_str(id: &str) -> Result<AppId, AppIdError> {
        AppId::new(id)
    }
}

impl TryFrom<String> for AppId {
    type Error = AppIdError;

    fn try_from(id: String) -> Result<AppId, AppIdError> {
        AppId::new(id)
    }
}

impl TryFrom<&str> for AppId {
    type Error = AppIdError;

    fn try_from(id: &str) -> Result<AppId, AppIdError> {
        AppId::new(id)
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> String {
        id.0
    }
}

impl PartialEq<str> for AppId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AppId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A string; reading one checks it ([`AppId::new`]).
#[cfg(feature = "serde")]
impl serde::Serialize for AppId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for AppId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AppId, D::Error> {
        let id = String::deserialize(d)?;
        AppId::new(id).map_err(|e| serde::de::Error::custom(format!("invalid application id: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_id_is_made_only_of_a_checked_id() {
        assert_eq!(AppId::new("kiosk").unwrap(), "kiosk");
        assert_eq!(AppId::new(""), Err(AppIdError::Empty));
        assert_eq!(
            AppId::with_max_len("abcd", 3),
            Err(AppIdError::TooLong { len: 4, max: 3 })
        );
        assert_eq!(AppId::with_max_len("abc", 3).unwrap().into_string(), "abc");
        assert_eq!(
            AppId::try_from("a\u{2029}b"),
            Err(AppIdError::LineSeparator { ch: '\u{2029}' })
        );
        assert_eq!(
            AppId::try_from("a\u{202E}b".to_owned()),
            Err(AppIdError::BidiControl { ch: '\u{202E}' })
        );
        let id: AppId = "é 漢".parse().unwrap();
        assert_eq!((id.len(), id.to_string()), (6, "é 漢".to_owned()));
        assert_eq!(String::from(id), "é 漢");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn an_app_id_reads_from_json_only_when_valid() {
        let id: AppId = serde_json::from_str("\"kiosk 7\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"kiosk 7\"");
        let err = serde_json::from_str::<AppId>("\"a|b\"").unwrap_err();
        assert!(err.to_string().contains("invalid application id"), "{err}");
    }

    const MAX: usize = super::super::MAX_APP_ID_LEN;

    #[test]
    fn ordinary_ids_pass_whatever_their_script_or_punctuation() {
        for ok in [
            "Tetris",
            "kiosk 7",
            "a&b=c?d#e%f+g/h",
            "[x] ]y[",
            "Zürich",
            "東京",
            "שלום",  // right-to-left text itself is fine
            "مرحبا", // so is Arabic
            "🙂",
            "zero\u{200B}width", // other format characters are left alone
            "\u{00A0}nbsp",
        ] {
            assert_eq!(check_app_id(ok, MAX), Ok(()), "{ok:?}");
        }
        assert_eq!(check_app_id(&"x".repeat(MAX), MAX), Ok(()));
    }

    #[test]
    fn every_forbidden_character_is_refused_with_its_reason() {
        assert_eq!(check_app_id("", MAX), Err(AppIdError::Empty));
        assert_eq!(
            check_app_id(&"é".repeat(MAX / 2 + 1), MAX),
            Err(AppIdError::TooLong {
                len: MAX + 2,
                max: MAX
            })
        );
        for ch in ['\n', '\r', '\t', '\0', '\u{7f}', '\u{85}', '\u{9b}'] {
            assert_eq!(
                check_app_id(&format!("a{ch}b"), MAX),
                Err(AppIdError::ControlChar { ch }),
                "{ch:?}"
            );
        }
        assert_eq!(
            check_app_id("kiosk| od=0.00;3;5;0;6 delay=86400000ms;;; ", MAX),
            Err(AppIdError::PerfdataSeparator)
        );
        for ch in ['\u{2028}', '\u{2029}'] {
            assert_eq!(
                check_app_id(&format!("a{ch}Tetris @ 10.0.0.5"), MAX),
                Err(AppIdError::LineSeparator { ch })
            );
        }
        for ch in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(
                check_app_id(&format!("a{ch}b"), MAX),
                Err(AppIdError::BidiControl { ch }),
                "{ch:?}"
            );
        }
        // the neighbours of the refused ranges are allowed
        for ch in ['\u{2027}', '\u{202F}', '\u{2065}', '\u{206A}', '\u{200F}'] {
            assert_eq!(check_app_id(&format!("a{ch}b"), MAX), Ok(()), "{ch:?}");
        }
    }

    #[test]
    fn reasons_are_single_printable_lines() {
        for err in [
            AppIdError::Empty,
            AppIdError::TooLong {
                len: 2000,
                max: 1024,
            },
            AppIdError::ControlChar { ch: '\n' },
            AppIdError::PerfdataSeparator,
            AppIdError::LineSeparator { ch: '\u{2028}' },
            AppIdError::BidiControl { ch: '\u{202E}' },
        ] {
            let text = err.to_string();
            let structural = |c: char| {
                c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
            };
            assert!(!text.chars().any(structural), "{text:?}");
        }
        assert_eq!(
            AppIdError::BidiControl { ch: '\u{202E}' }.to_string(),
            "it contains the bidirectional control U+202E"
        );
    }
}
