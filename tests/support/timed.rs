//! The mock transport, plus the tokio instant of every request it is sent
//! (for tests on the paused clock that check when requests went out).

use std::sync::{Arc, Mutex};

use heartbeat_sdk::testing::MockTransport;
use heartbeat_sdk::transport;
use heartbeat_sdk::Transport;
use tokio::time::Instant;

/// The mock and the instants of the requests sent through [`Timed::transport`].
#[derive(Debug, Clone, Default)]
pub struct Timed {
    pub mock: MockTransport,
    at: Arc<Mutex<Vec<Instant>>>,
}

impl Timed {
    /// The mock as a transport that notes the instant of every request.
    pub fn transport(&self) -> impl Transport + 'static {
        let timed = self.clone();
        transport::from_fn(move |request| {
            timed.at.lock().unwrap().push(Instant::now());
            let mock = timed.mock.clone();
            async move { mock.send(request).await }
        })
    }

    /// When each request was sent, in order.
    pub fn at(&self) -> Vec<Instant> {
        self.at.lock().unwrap().clone()
    }
}
