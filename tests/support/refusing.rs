//! An address where connections are refused, for "nothing listens" tests.
//!
//! Binding port 0 and dropping the listener frees the port: a test running
//! in parallel can bind it (a server, wiremock) before the connect, which
//! then reaches that server instead of being refused. [`Refusing`] holds a
//! socket bound to the port that never listens: the port stays reserved (no
//! `SO_REUSEADDR` on it, so no other socket can bind it, and the kernel does
//! not hand it out for port 0), and connections to it are refused (on Linux
//! the SYN is answered with a reset: `ECONNREFUSED`). Keep it alive for as
//! long as the address is used.
#![allow(dead_code)]

use std::net::SocketAddr;

/// A reserved loopback port nothing listens on.
#[derive(Debug)]
pub struct Refusing {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl Refusing {
    /// Reserve a port on 127.0.0.1 (no runtime needed).
    pub fn new() -> Refusing {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("the bound address");
        Refusing {
            _socket: socket,
            addr,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
