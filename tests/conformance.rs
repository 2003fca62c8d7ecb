//! The one conformance scenario, run for every transport compiled in.

mod common;

use common::{scenario, wiremock_harness::WiremockHarness};

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_transport_conforms() {
    let make = || heartbeat_sdk::transport::ReqwestTransport::new().unwrap();
    scenario(&WiremockHarness(make)).await;
}
