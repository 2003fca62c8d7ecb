//! [`ErrorPolicy`]: raise a failure, or return the caller's fallback value.

/// What a call does when it fails: the Python client's `errorReturnValue`.
///
/// Under either policy the failure is logged through `tracing` at error
/// level with the URL and path. [`ErrorPolicy::Raise`] then returns the
/// error; [`ErrorPolicy::Fallback`] returns `Ok(value)` instead.
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
}
