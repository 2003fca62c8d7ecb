//! The one conformance scenario, run for every transport compiled in.

mod common;

#[cfg(any(feature = "reqwest", feature = "surf"))]
use common::{scenario, wiremock_harness::WiremockHarness};

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
