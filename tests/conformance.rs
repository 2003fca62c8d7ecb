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

#[cfg(feature = "mock")]
#[tokio::test]
async fn mock_transport_conforms() {
    scenario(&common::mock_harness::MockHarness).await;
}
