//! Where the server is and who we are: `HB_URL`, `HB_HOST`, `HB_PORT`, `APP_ID`.

use std::fmt;

use url::Url;

use crate::error::Error;
use crate::protocol::validate_app_id;

/// The host used when neither `HB_URL` nor `HB_HOST` is set.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The port used when neither `HB_URL` nor `HB_PORT` is set.
pub const DEFAULT_PORT: u16 = 8888;
/// The application id used when `APP_ID` is not set.
pub const DEFAULT_APP_ID: &str = "rust_heartbeat_client_demo";

/// The server URL and application id, as PROTOCOL.md reads them from the
/// environment.
///
/// `HB_URL` wins when set; otherwise `http://HB_HOST:HB_PORT` with defaults
/// `127.0.0.1` and `8888`. A URL without a scheme means `http://`. `HB_URL`,
/// `HB_HOST` and `HB_PORT` set to an empty or blank string count as unset.
///
/// `APP_ID` is [`DEFAULT_APP_ID`] only when it is not set at all: set to an
/// empty string or to whitespace only (`APP_ID=''`, `APP_ID='   '`), it is
/// refused with [`Error::InvalidAppId`], as is any id
/// [`validate_app_id`] refuses, so that a
/// mistyped id never beats as the demo id.
///
/// ```
/// use heartbeat_sdk::Settings;
///
/// let vars = |name: &str| match name {
///     "HB_PORT" => Some("9999".to_owned()),
///     "APP_ID" => Some("kiosk-3".to_owned()),
///     _ => None,
/// };
/// let settings = Settings::from_vars(vars).unwrap();
/// assert_eq!(settings.url.as_str(), "http://127.0.0.1:9999/");
/// assert_eq!(settings.app_id, "kiosk-3");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The server's base URL.
    pub url: Url,
    /// This application's id.
    pub app_id: String,
}

/// The URL without its password: `Debug` output ends up in logs.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &redacted(self.url.as_str()))
            .field("app_id", &self.app_id)
            .finish()
    }
}

impl Settings {
    /// Read the process environment. An `APP_ID` that is not valid UTF-8 is
    /// refused ([`Error::InvalidAppId`]), not taken as unset.
    pub fn from_env() -> Result<Settings, Error> {
        if std::env::var_os("APP_ID").is_some_and(|id| id.to_str().is_none()) {
            return Err(Error::InvalidAppId {
                reason: "APP_ID is not valid UTF-8".to_owned(),
            });
        }
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// Read the settings through `var`, a lookup such as `std::env::var`;
    /// handy in tests, which should not change the process environment.
    ///
    /// `None` for `APP_ID` means unset (the demo id); `Some` of an empty or
    /// blank string is an [`Error::InvalidAppId`].
    ///
    /// ```
    /// use heartbeat_sdk::{Error, Settings};
    ///
    /// let app_id = |id: Option<&str>| {
    ///     Settings::from_vars(|name| (name == "APP_ID").then_some(id).flatten().map(str::to_owned))
    ///         .map(|settings| settings.app_id)
    /// };
    /// assert_eq!(app_id(None).unwrap(), "rust_heartbeat_client_demo");
    /// assert!(matches!(app_id(Some("")), Err(Error::InvalidAppId { .. })));
    /// assert!(matches!(app_id(Some("   ")), Err(Error::InvalidAppId { .. })));
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, Error> {
        let url = Settings::url_from_vars(&var)?;
        let app_id = match var("APP_ID") {
            None => DEFAULT_APP_ID.to_owned(),
            Some(id) if id.trim().is_empty() => {
                return Err(Error::InvalidAppId {
                    reason: if id.is_empty() {
                        "it is empty".to_owned()
                    } else {
                        "it is only whitespace".to_owned()
                    },
                })
            }
            Some(id) => id,
        };
        validate_app_id(&app_id)?;
        Ok(Settings { url, app_id })
    }

    /// The server URL alone from the process environment (`HB_URL`, else
    /// `HB_HOST`:`HB_PORT`), ignoring `APP_ID`: what a server needs.
    pub fn url_from_env() -> Result<Url, Error> {
        Settings::url_from_vars(|name| std::env::var(name).ok())
    }

    /// The server URL alone through `var` (`HB_URL`, else
    /// `http://HB_HOST:HB_PORT` with the defaults), as [`Settings::from_vars`]
    /// reads it; `APP_ID` is neither read nor validated.
    ///
    /// ```
    /// use heartbeat_sdk::Settings;
    ///
    /// let vars = |name: &str| match name {
    ///     "HB_HOST" => Some("::1".to_owned()),
    ///     "APP_ID" => Some("not\nvalid".to_owned()),
    ///     _ => None,
    /// };
    /// assert_eq!(Settings::url_from_vars(vars).unwrap().as_str(), "http://[::1]:8888/");
    /// ```
    pub fn url_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Url, Error> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let url = match var("HB_URL") {
            Some(url) => parse_url(&url)?,
            None => {
                let host = var("HB_HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned());
                let port = match var("HB_PORT") {
                    None => DEFAULT_PORT,
                    Some(port) => port.trim().parse().map_err(|_| Error::InvalidUrl {
                        url: format!("http://{host}:{port}"),
                        reason: format!("HB_PORT {port:?} is not a port number (1-65535)"),
                    })?,
                };
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host
                };
                parse_url(&format!("http://{host}:{port}"))?
            }
        };
        Ok(url)
    }
}

/// Parse a server URL: `http` or `https`, a host, a port in range; a URL
/// without a scheme means `http://`.
///
/// ```
/// use heartbeat_sdk::settings::parse_url;
/// assert_eq!(parse_url("127.0.0.1:8888").unwrap().as_str(), "http://127.0.0.1:8888/");
/// assert!(parse_url("ftp://example.org").is_err());
/// assert!(parse_url("http://127.0.0.1:99999").is_err());
/// ```
pub fn parse_url(input: &str) -> Result<Url, Error> {
    let input = input.trim();
    let invalid = |reason: String| Error::InvalidUrl {
        url: redacted(input).into_owned(),
        reason,
    };
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("http://{input}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "unsupported scheme {:?} (use http or https)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    if url.port() == Some(0) {
        return Err(invalid("port 0 cannot be connected to".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "a server URL takes no query or fragment".to_owned(),
        ));
    }
    Ok(url)
}

/// Whether `var` (a lookup such as `std::env::var`) names a server:
/// `HB_URL`, `HB_HOST` or `HB_PORT` set to something other than blanks. The
/// demos (`heartbeat demo`, `examples/demo.rs`) start the embedded server
/// when none is named.
///
/// ```
/// use heartbeat_sdk::settings::names_a_server;
///
/// assert!(!names_a_server(|_| None));
/// assert!(!names_a_server(|name| (name == "HB_URL").then(|| " ".to_owned())));
/// assert!(!names_a_server(|name| (name == "APP_ID").then(|| "x".to_owned())));
/// for name in ["HB_URL", "HB_HOST", "HB_PORT"] {
///     assert!(names_a_server(|n| (n == name).then(|| "9000".to_owned())), "{name}");
/// }
/// ```
pub fn names_a_server(var: impl Fn(&str) -> Option<String>) -> bool {
    ["HB_URL", "HB_HOST", "HB_PORT"]
        .into_iter()
        .any(|name| var(name).is_some_and(|value| !value.trim().is_empty()))
}

/// `url` with the password of its userinfo (`scheme://user:password@host`)
/// replaced by `***`, for errors and logs; unchanged without one.
///
/// ```
/// use heartbeat_sdk::settings::redacted;
///
/// assert_eq!(redacted("https://ops:s3cret@monitor:8888/"), "https://ops:***@monitor:8888/");
/// assert_eq!(redacted("http://monitor:8888"), "http://monitor:8888");
/// ```
pub fn redacted(url: &str) -> std::borrow::Cow<'_, str> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    let Some(at) = url[after_scheme..authority_end].rfind('@') else {
        return std::borrow::Cow::Borrowed(url);
    };
    let userinfo = &url[after_scheme..after_scheme + at];
    let Some(colon) = userinfo.find(':') else {
        return std::borrow::Cow::Borrowed(url);
    };
    let user_end = after_scheme + colon;
    std::borrow::Cow::Owned(format!(
        "{}:***{}",
        &url[..user_end],
        &url[after_scheme + at..]
    ))
}

/// Takes the userinfo out of `url`: the basic-auth credentials it names
/// (percent-decoded), if any; `url` is left without them.
pub(crate) fn take_userinfo(url: &mut Url) -> Option<crate::transport::BasicAuth> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = crate::transport::BasicAuth::new(
        decode(url.username()),
        decode(url.password().unwrap_or("")),
    );
    // an http(s) URL with a host can always lose its userinfo
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = from(&[]).unwrap();
        assert_eq!(s.url.as_str(), "http://127.0.0.1:8888/");
        assert_eq!(s.app_id, DEFAULT_APP_ID);
    }

    #[test]
    fn host_and_port_build_the_url() {
        let s = from(&[("HB_HOST", "10.1.2.3"), ("HB_PORT", "9000")]).unwrap();
        assert_eq!(s.url.as_str(), "http://10.1.2.3:9000/");
        let s = from(&[("HB_HOST", "::1")]).unwrap();
        assert_eq!(s.url.as_str(), "http://[::1]:8888/");
    }

    #[test]
    fn hb_url_wins_and_may_omit_the_scheme() {
        let s = from(&[
            ("HB_URL", "hb.example:7000"),
            ("HB_HOST", "x"),
            ("HB_PORT", "1"),
        ])
        .unwrap();
        assert_eq!(s.url.as_str(), "http://hb.example:7000/");
        let s = from(&[("HB_URL", "https://hb.example/base")]).unwrap();
        assert_eq!(s.url.as_str(), "https://hb.example/base");
    }

    #[test]
    fn empty_server_variables_count_as_unset() {
        let s = from(&[("HB_URL", ""), ("HB_HOST", "\t"), ("HB_PORT", " ")]).unwrap();
        assert_eq!(s.url.as_str(), "http://127.0.0.1:8888/");
        assert_eq!(s.app_id, DEFAULT_APP_ID);
    }

    /// Issue 10, item 8: an empty or blank APP_ID used to beat as the demo id.
    #[test]
    fn an_empty_or_blank_app_id_is_refused_and_only_an_unset_one_is_the_demo_id() {
        for (id, reason) in [
            ("", "it is empty"),
            ("   ", "it is only whitespace"),
            ("\t \u{a0}", "it is only whitespace"),
        ] {
            match from(&[("APP_ID", id)]) {
                Err(Error::InvalidAppId { reason: got }) => assert_eq!(got, reason, "{id:?}"),
                other => panic!("APP_ID={id:?}: {other:?}"),
            }
        }
        assert_eq!(from(&[]).unwrap().app_id, DEFAULT_APP_ID);
        assert_eq!(
            from(&[("APP_ID", " padded ")]).unwrap().app_id,
            " padded ",
            "an id with text in it is sent as given"
        );
    }

    #[test]
    fn the_url_alone_ignores_the_app_id() {
        let long = "x".repeat(10_000);
        let vars = |name: &str| match name {
            "HB_PORT" => Some("9000".to_owned()),
            "APP_ID" => Some(long.clone()),
            _ => None,
        };
        assert_eq!(
            Settings::url_from_vars(vars).unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        assert!(Settings::from_vars(vars).is_err());
        assert!(matches!(
            Settings::url_from_vars(|name| (name == "HB_PORT").then(|| "eighty".to_owned())),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for pairs in [
            &[("HB_PORT", "99999")][..],
            &[("HB_PORT", "eighty")],
            &[("HB_PORT", "0")],
            &[("HB_URL", "ftp://x:1")],
            &[("HB_URL", "http://")],
            &[("HB_URL", "http://x:70000")],
            &[("HB_URL", "http://x:1/?q=1")],
        ] {
            assert!(
                matches!(from(pairs), Err(Error::InvalidUrl { .. })),
                "{pairs:?}"
            );
        }
        let long = "x".repeat(10_000);
        assert!(matches!(
            from(&[("APP_ID", &long)]),
            Err(Error::InvalidAppId { .. })
        ));
    }
}
