//! The one conformance scenario, run for every transport compiled in.

mod common;

#[cfg(any(feature = "reqwest", feature = "surf", feature = "mock"))]
use common::scenario;
#[cfg(any(feature = "reqwest", feature = "surf"))]
use common::wiremock_harness::WiremockHarness;

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_transport_conforms() {
    let make = || heartbeat_sdk::transport::ReqwestTransport::new().unwrap();
    scenario(&WiremockHarness(make)).await;
}

#[cfg(feature = "surf")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surf_transport_conforms() {
    let make = || heartbeat_sdk::transport::SurfTransport::new().unwrap();
    scenario(&WiremockHarness(make)).await;
}

/// The mock runs every step of [`scenario`]: it has no branch on the
/// harness, and `MockHarness` scripts every request (`fail_next(usize::MAX,
/// ..)`), so the embedded registry never answers here (its semantics are
/// tested through the mock elsewhere). Four checks hold for the mock by
/// construction rather than by observation, because it has no sockets and
/// no headers:
/// - `Reply::Redirect`: the mock answers the bare 3xx with no `Location`;
///   the `Error::Status` with that code, the fallback and one request per
///   call are checked, but "the other origin receives nothing" cannot fail
///   (the mock reaches no network);
/// - `Reply::Slow`: `MockFailure::Timeout` fails at once, so the client's
///   `request_timeout` is not what fires; only the error's kind
///   (`is_timeout`) and the fallback are checked;
/// - `Reply::Refused`: a scripted `is_connect` error, not a closed port;
/// - the form's `Content-Type`: `MockRecorder` reports
///   `application/x-www-form-urlencoded` for any request with a form (the
///   `Transport` contract), so that assertion cannot fail for the mock.
///
/// Method, path, query, form body, cache busters, reply parsing and error
/// typing are observed for real.
#[cfg(feature = "mock")]
#[tokio::test]
async fn mock_transport_conforms() {
    scenario(&common::mock_harness::MockHarness).await;
}
