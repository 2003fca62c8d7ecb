//! [`ErrorPolicy`]: raise a failure, or return the caller's fallback value.

/// What a call does when it fails: the Python client's `errorReturnValue`.
///
/// [`ErrorPolicy::Raise`] returns the error; the failure is logged only at
/// `debug` level (the caller has it, and logs it with its own context if it
/// wants). [`ErrorPolicy::Fallback`] returns `Ok(value)` instead and logs
/// the swallowed failure once at `warn` level, with the server URL, since
/// the log is then its only trace. Nothing is logged at `error` level.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_sdk::ErrorPolicy;
///
/// let raise: ErrorPolicy<Duration> = ErrorPolicy::Raise;
/// let fallback = ErrorPolicy::Fallback(Duration::ZERO);
/// assert!(raise.fallback().is_none());
/// assert_eq!(fallback.fallback(), Some(Duration::ZERO));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ErrorPolicy<T> {
    /// Return the error (Python: no `errorReturnValue`).
    #[default]
    Raise,
    /// Log the error and return this value (Python: `errorReturnValue`).
    Fallback(T),
}

impl<T> ErrorPolicy<T> {
    /// The fallback value, if this policy has one.
    pub fn fallback(self) -> Option<T> {
        match self {
            ErrorPolicy::Raise => None,
            ErrorPolicy::Fallback(value) => Some(value),
        }
    }

    /// Apply the policy to a failed call to `url`: log it (`warn` when it is
    /// swallowed, `debug` when it is returned) and return the fallback value
    /// or the error.
    pub(crate) fn recover(self, url: &str, error: crate::Error) -> crate::Result<T> {
        match self {
            ErrorPolicy::Raise => {
                tracing::debug!(url, %error, "heartbeat request failed");
                Err(error)
            }
            ErrorPolicy::Fallback(value) => {
                tracing::warn!(url, %error, "heartbeat request failed; returning the fallback value");
                Ok(value)
            }
        }
    }
}
