//! `serve`: the embedded heartbeat server as a program, a drop-in for the
//! reference server.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use heartbeat_sdk::server::Server;
use heartbeat_sdk::Error;

use crate::args::{Global, ServeArgs};
use crate::{connect, exit, signals};

/// Listen on `--bind`, else on the address of `--url` / `HB_URL`, else on
/// `HB_HOST`:`HB_PORT` (default `127.0.0.1:8888`); print
/// `listening on http://ADDR` on stdout; log every construction, update,
/// destruction and expiry (tracing, info); stop gracefully on Ctrl+C or
/// SIGTERM and return 0.
pub async fn run(global: &Global, args: &ServeArgs) -> u8 {
    let server = match (args.bind, &global.url) {
        (Some(addr), _) => Ok(Server::bind(addr)),
        (None, Some(_)) => connect::settings(global)
            .and_then(|s| bind_address(&s.url))
            .map(Server::bind),
        (None, None) => Server::from_env(),
    };
    let mut server = match server {
        Ok(server) => server,
        Err(error) => return exit::report("serve", &error),
    };
    if let Some(max_apps) = args.max_apps {
        server = server.max_apps(usize::try_from(max_apps).unwrap_or(usize::MAX));
    }
    let stop = match signals::interrupt_or_terminate() {
        Ok(stop) => stop,
        Err(error) => {
            eprintln!("heartbeat serve: cannot install signal handlers: {error}");
            return exit::UNREACHABLE;
        }
    };
    let handle = match server.start().await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("heartbeat serve: cannot listen: {error}");
            return exit::UNREACHABLE;
        }
    };
    println!("listening on {}", handle.url());
    let _ = std::io::stdout().flush();
    stop.await;
    tracing::info!("signal received: shutting down");
    handle.shutdown().await;
    exit::OK
}

/// The socket address a server URL names: an IP address, or `localhost`.
fn bind_address(url: &url::Url) -> Result<SocketAddr, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        Some(url::Host::Domain("localhost")) => IpAddr::from([127, 0, 0, 1]),
        _ => {
            return Err(invalid(
                "the server binds to an IP address or localhost: use --bind",
            ))
        }
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("no port"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_bind_addresses() {
        let addr = |u: &str| bind_address(&heartbeat_sdk::settings::parse_url(u).unwrap());
        assert_eq!(
            addr("127.0.0.1:9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            addr("http://localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(addr("http://[::1]:2").unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(
            addr("http://0.0.0.0").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(addr("http://example.org:3").is_err());
    }
}
