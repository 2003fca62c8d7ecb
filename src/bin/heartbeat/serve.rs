//! `serve`: the embedded heartbeat server as a program, a drop-in for the
//! reference server.

use std::time::Duration;

use heartbeat_sdk::protocol::printable;
use heartbeat_sdk::server::{
    Expected, RegistryConfig, Server, ServerBuilder, StateError, WebConfig, WebConfigError,
    DEFAULT_MAX_CONNECTIONS,
};
use heartbeat_sdk::{Error, Settings};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::args::{Global, ServeArgs};
use crate::{exit, output, signals};

/// File descriptors kept free of connections: the listener, stdio, log
/// files, and whatever else the process opens.
const FD_HEADROOM: u64 = 64;

/// Listen on `--bind`, else on the address of `--url` / `HB_URL`, else on
/// `HB_HOST`:`HB_PORT` (default `127.0.0.1:8888`); print
/// `listening on http://ADDR` and `dashboard at http://ADDR/` on stdout
/// (two lines, one write: scripts that take the first line's URL keep
/// working); log constructions, destructions,
/// expiries and refusals (tracing, info; updates at debug); stop gracefully
/// on Ctrl+C or SIGTERM and return 0. `APP_ID` / `--app-id` play no part.
///
/// At start the soft open-file limit is raised to the hard one, and the
/// connection cap is that limit less [`FD_HEADROOM`] (at most
/// [`DEFAULT_MAX_CONNECTIONS`]), so that connections never run the process
/// out of file descriptors.
///
/// `--state PATH`: durable state ([`ServerBuilder::state`]), committed
/// every `--state-commit-ms`; a state file that cannot be used is one line
/// on stderr and [`exit::BAD_STATE`]. Under systemd (`NOTIFY_SOCKET` set),
/// `READY=1` is sent once listening and `STOPPING=1` on shutdown.
/// A stdout or stderr that is closed or full does not stop it: the address
/// line and the logs are then dropped, and the server serves on.
pub async fn run(global: &Global, args: &ServeArgs) -> u8 {
    let server = match args.bind {
        Some(addr) => Ok(Server::builder(addr)),
        None => Settings::url_from_vars(|name| match name {
            "HB_URL" if global.url.is_some() => global.url.clone(),
            _ => std::env::var(name).ok(),
        })
        .and_then(|url| ServerBuilder::from_url(&url))
        .map_err(|error| match error {
            Error::InvalidUrl { url, reason } => Error::InvalidUrl {
                url,
                reason: format!("{reason}: use --bind"),
            },
            error => error,
        }),
    };
    let mut server = match server {
        Ok(server) => server,
        Err(error) => return exit::report("serve", &error),
    };
    let (config, expected) = match registry_config(args).and_then(|c| Ok((c, expected(args)?))) {
        Ok(settings) => settings,
        Err(reason) => {
            output::error_line(&format!("heartbeat serve: {}", printable(&reason)));
            return exit::USAGE;
        }
    };
    server = server.config(config);
    for app in expected {
        server = server.expect(app);
    }
    if let Some(max_apps) = args.max_apps {
        server = server.max_apps(usize::try_from(max_apps).unwrap_or(usize::MAX));
    }
    if let Some(share) = args.max_apps_per_host {
        server = server.max_apps_per_host(usize::try_from(share).unwrap_or(usize::MAX));
    }
    for name in &args.allowed_host {
        server = server.allowed_host(name.clone());
    }
    if let Some(path) = &args.web_config {
        match WebConfig::load(path) {
            Ok(config) => server = server.web_config(config).protect(args.protect),
            Err(error) => return bad_web_config(path, &error),
        }
    }
    let open_files = raise_open_file_limit();
    let max_connections = connection_cap(open_files, DEFAULT_MAX_CONNECTIONS);
    server = server.max_connections(max_connections);
    server = server.per_app_metrics(args.per_app_metrics);
    if let Some(path) = &args.state {
        server = server
            .state(path)
            .state_commit_interval(Duration::from_millis(args.state_commit_ms))
            .history_retention(Duration::from_secs(args.history_days * 24 * 60 * 60));
    }
    server = notifications(server, args);
    let stop = match signals::stop_signal("serve") {
        Ok(stop) => stop,
        Err(code) => return code,
    };
    let handle = match server.start().await {
        Ok(handle) => handle,
        Err(error) => {
            if let Some(state) = error.get_ref().and_then(|e| e.downcast_ref::<StateError>()) {
                // one line: StateError's messages are, and the path is escaped
                output::error_line(&format!(
                    "heartbeat serve: {}",
                    printable(&state.to_string())
                ));
                return exit::BAD_STATE;
            }
            if let Some(config) = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<WebConfigError>())
            {
                // the certificate or key files: the web config's fault
                let path = args
                    .web_config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""));
                return bad_web_config(path, config);
            }
            output::error_line(&format!("heartbeat serve: cannot listen: {error}"));
            return exit::CANNOT_LISTEN;
        }
    };
    // systemd (Type=notify): listening, state restored. Without
    // NOTIFY_SOCKET this does nothing.
    if let Err(error) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd (READY=1): {error}");
    }
    // after the bind, so that a failed one is a single line on stderr
    match open_files {
        Some(open_files) => tracing::info!(
            open_files,
            max_connections,
            "connection cap derived from the open-file limit"
        ),
        None => tracing::warn!(max_connections, "cannot read the open-file limit"),
    }
    // best effort: a closed or full stdout (`serve | head -1`) or stderr
    // does not stop the server; it serves on until Ctrl+C or SIGTERM
    if let Err(output::Unwritten::Failed(error)) = output::stdout(&format!(
        "listening on {url}\ndashboard at {url}/\n",
        url = handle.url()
    )) {
        tracing::warn!("cannot write the address to stdout: {error}");
    }
    // SIGHUP: re-read the TLS certificate (a change on disk is also
    // picked up by itself)
    let mut hangups = hangups(&handle);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(()) = next_hangup(&mut hangups) => {
                tracing::info!("SIGHUP: re-reading the TLS certificate");
                handle.reload_tls();
            }
        }
    }
    tracing::info!("signal received: shutting down");
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    handle.shutdown().await;
    exit::OK
}

/// The one line (and exit code 78) for a web config file that cannot be
/// used: read, parsed, or its certificate and key loaded.
fn bad_web_config(path: &std::path::Path, error: &WebConfigError) -> u8 {
    output::error_line(&format!(
        "heartbeat serve: --web-config {}: {}",
        printable(&path.display().to_string()),
        printable(&error.to_string())
    ));
    exit::BAD_CONFIG
}

/// `SIGHUP`s, with TLS (they re-read the certificate); `None` without
/// TLS or when the handler cannot be installed (logged).
fn hangups(handle: &heartbeat_sdk::server::ServerHandle) -> Option<Signal> {
    if !handle.url().starts_with("https:") {
        return None;
    }
    signal(SignalKind::hangup())
        .inspect_err(|error| {
            tracing::warn!("cannot install the SIGHUP handler (certificate reload): {error}");
        })
        .ok()
}

/// The next of `hangups`; never, without them.
async fn next_hangup(hangups: &mut Option<Signal>) -> Option<()> {
    match hangups {
        Some(hangups) => hangups.recv().await,
        None => std::future::pending().await,
    }
}

/// The notifications of `--webhook`, `--webhook-format`, `--alertmanager`,
/// `--alert-resend-ms`, `--alert-warning`, `--notify-min-interval-ms` and
/// `--external-url`.
fn notifications(mut server: ServerBuilder, args: &ServeArgs) -> ServerBuilder {
    for url in &args.webhook {
        server = server.webhook(url.clone(), args.webhook_format);
    }
    for url in &args.alertmanager {
        server = server.alertmanager(url.clone());
    }
    if let Some(url) = &args.external_url {
        server = server.external_url(url.clone());
    }
    server
        .alert_resend(Duration::from_millis(args.alert_resend_ms))
        .alert_on_warning(args.alert_warning)
        .notify_min_interval(Duration::from_millis(args.notify_min_interval_ms))
}

/// The registry settings of `--tolerance-ms`, `--warn`, `--crit` and
/// `--drop` (the reference's where not given); the reason they are refused:
/// the ratios must be positive finite numbers with warn < crit <= drop.
fn registry_config(args: &ServeArgs) -> Result<RegistryConfig, String> {
    let default = RegistryConfig::default();
    let config = RegistryConfig {
        tolerance: args
            .tolerance_ms
            .map_or(default.tolerance, Duration::from_millis),
        warn_ratio: args.warn.unwrap_or(default.warn_ratio),
        crit_ratio: args.crit.unwrap_or(default.crit_ratio),
        drop_ratio: args.drop.unwrap_or(default.drop_ratio),
        max_timeout: args.max_timeout.map(Duration::from_millis),
        max_expected_timeout: Duration::from_millis(args.max_expected_timeout),
        ..default
    };
    let (warn, crit, drop) = (config.warn_ratio, config.crit_ratio, config.drop_ratio);
    for (name, ratio) in [("--warn", warn), ("--crit", crit), ("--drop", drop)] {
        if !(ratio.is_finite() && ratio > 0.0) {
            return Err(format!("{name} {ratio} must be a positive finite number"));
        }
    }
    if warn >= crit {
        return Err(format!(
            "--warn {warn} must be below --crit {crit} (thresholds: warn < crit <= drop)"
        ));
    }
    if crit > drop {
        return Err(format!(
            "--crit {crit} must not be above --drop {drop} (thresholds: warn < crit <= drop)"
        ));
    }
    Ok(config)
}

/// The applications of `--expect` and of each `--expect-file` (one per
/// line, trimmed; blank lines and lines starting with `#` skipped); the
/// reason one is refused.
fn expected(args: &ServeArgs) -> Result<Vec<Expected>, String> {
    let mut all = Vec::new();
    for spec in &args.expect {
        all.push(
            spec.parse::<Expected>()
                .map_err(|e| format!("--expect {spec:?}: {e}"))?,
        );
    }
    for path in &args.expect_file {
        let text =
            read_expect_file(path).map_err(|e| format!("--expect-file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            all.push(
                line.parse::<Expected>().map_err(|e| {
                    format!("--expect-file {}, line {}: {e}", path.display(), n + 1)
                })?,
            );
        }
    }
    Ok(all)
}

/// The largest `--expect-file` read: room for [`MAX_APPS`] lines of the
/// longest spec (an id of 1 024 bytes and an address).
///
/// [`MAX_APPS`]: heartbeat_sdk::protocol::MAX_APPS
const MAX_EXPECT_FILE: u64 =
    (heartbeat_sdk::protocol::MAX_APPS * (heartbeat_sdk::protocol::MAX_KEY_LEN + 1)) as u64;

/// The text of an `--expect-file`: at most [`MAX_EXPECT_FILE`] bytes, so
/// `/dev/zero` or a runaway file is a one-line error, not all memory.
fn read_expect_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_EXPECT_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_EXPECT_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_EXPECT_FILE} bytes"
        )));
    }
    Ok(text)
}

/// Raise the soft `RLIMIT_NOFILE` as far as the hard one allows; the soft
/// limit then in force, or `None` if it cannot be read.
fn raise_open_file_limit() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // an unlimited hard limit is refused above the kernel's nr_open (Linux)
    // or OPEN_MAX (macOS): then try the usual ceilings
    for target in [hard, 1 << 20, 10_240] {
        if target <= soft {
            break;
        }
        if target <= hard && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            return Some(target);
        }
    }
    Some(soft)
}

/// The connection cap for a soft open-file limit of `open_files`: that
/// limit less [`FD_HEADROOM`], at least 1, and never above `configured`.
fn connection_cap(open_files: Option<u64>, configured: usize) -> usize {
    let Some(open_files) = open_files else {
        return configured;
    };
    let fits = usize::try_from(open_files.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX);
    fits.clamp(1, configured.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_below_the_open_file_limit() {
        assert_eq!(connection_cap(Some(1024), 10_000), 960);
        assert_eq!(connection_cap(Some(256), 10_000), 192);
        assert_eq!(connection_cap(Some(1 << 20), 10_000), 10_000);
        assert_eq!(connection_cap(Some(u64::MAX), 10_000), 10_000);
        assert_eq!(connection_cap(Some(10), 10_000), 1);
        assert_eq!(connection_cap(None, 10_000), 10_000);
    }
}
