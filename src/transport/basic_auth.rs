//! [`BasicAuth`]: the credentials of HTTP basic authentication (RFC 7617),
//! never shown in `Debug` output.

use std::fmt;

/// A user and password for HTTP basic authentication, sent by a transport
/// as `Authorization: Basic ...`. The password is never shown: `Debug`
/// prints `<redacted>`.
///
/// ```
/// use heartbeat_sdk::transport::BasicAuth;
///
/// let auth = BasicAuth::new("prometheus", "s3cret");
/// assert_eq!(auth.user(), "prometheus");
/// assert_eq!(auth.authorization(), "Basic cHJvbWV0aGV1czpzM2NyZXQ=");
/// assert!(!format!("{auth:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl BasicAuth {
    /// Credentials for `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> BasicAuth {
        BasicAuth {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The `Authorization` header's value: `Basic base64(user:password)`.
    pub fn authorization(&self) -> String {
        let mut plain = Vec::with_capacity(self.user.len() + 1 + self.password.len());
        plain.extend_from_slice(self.user.as_bytes());
        plain.push(b':');
        plain.extend_from_slice(self.password.as_bytes());
        let mut value = String::from("Basic ");
        base64(&plain, &mut value);
        value
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Standard base64 (RFC 4648 §4) with padding, appended to `out`.
fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            base64(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded, "{plain:?}");
        }
        let mut out = String::new();
        base64(&[0xfb, 0xff, 0xbf], &mut out);
        assert_eq!(out, "+/+/");
    }

    #[test]
    fn a_colon_in_the_password_is_kept_and_the_password_never_shown() {
        let auth = BasicAuth::new("u", "a:b");
        // "u:a:b"
        assert_eq!(auth.authorization(), "Basic dTphOmI=");
        let shown = format!("{auth:?} {auth:#?}");
        assert!(!shown.contains("a:b"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
