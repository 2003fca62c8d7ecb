//! `heartbeat`: the command line of heartbeat-sdk (feature `cli`).
//!
//! One module per concern: [`args`] (clap), [`connect`] (settings and
//! client), [`beat`] (init, ping, done, list, status, history), [`check`] (Nagios),
//! [`wrap`] (wrap, dummy), [`serve`], [`demo`]; [`exit`] holds the exit
//! codes, [`output`] every write to stdout and stderr (no `println!`: a full
//! or closed stdout must not panic).
//!
//! No `unsafe` but one: [`wrap`]'s `pre_exec` hook setting the parent death
//! signal on Linux (`deny`, allowed on that one function, with its SAFETY
//! comment); the library forbids `unsafe` outright.
#![deny(unsafe_code)]

mod args;
mod beat;
mod check;
mod connect;
mod demo;
mod exit;
mod output;
mod serve;
mod signals;
mod wrap;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command};
use heartbeat_sdk::protocol::history::EventsQuery;
use heartbeat_sdk::protocol::Beat;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error_line(&format!(
                "heartbeat: cannot start the async runtime: {error}"
            ));
            return ExitCode::from(exit::CANNOT_START);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// Run the subcommand; returns the exit code.
async fn run(cli: Cli) -> u8 {
    let global = &cli.global;
    match cli.command {
        Command::Init { timeout_ms } => beat::beat(global, Beat::Init, timeout_ms).await,
        Command::Ping { timeout_ms } => beat::beat(global, Beat::Ping, timeout_ms).await,
        Command::Done { timeout_ms } => beat::beat(global, Beat::Done, timeout_ms).await,
        Command::List { json } => beat::list(global, json).await,
        // an empty APP_ID (an unset `$ARG1$` in a Nagios command) means the host
        Command::Status { app, json } => {
            beat::status(global, non_empty(app.as_deref()), json).await
        }
        Command::History {
            app,
            host,
            since,
            limit,
            json,
        } => {
            let mut query = EventsQuery::new(app).limit(limit);
            query.host = host;
            query.since = since;
            beat::history(global, &query, json).await
        }
        Command::Check {
            all: true,
            json,
            deadline,
            ..
        } => check::run_all(global, json, std::time::Duration::from_millis(deadline)).await,
        Command::Check { app, .. } => check::run(global, non_empty(app.as_deref())).await,
        Command::Wrap(args) => wrap::run(global, args, false).await,
        Command::Dummy(args) => wrap::run(global, args, true).await,
        Command::Serve(args) => serve::run(global, &args).await,
        Command::Demo(args) => demo::run(global, &args).await,
    }
}

/// `app`, unless it is empty.
fn non_empty(app: Option<&str>) -> Option<&str> {
    app.filter(|app| !app.is_empty())
}

/// Logs go to stderr, filtered by `RUST_LOG`; without it `serve` and `demo`
/// log at info, `wrap` logs the keep-alive's failed pings, and the one-shot
/// commands log nothing (each reports its failure in one line itself).
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Serve(_) | Command::Demo(_) => "info",
        Command::Wrap(_) | Command::Dummy(_) => "heartbeat_sdk::keepalive=warn",
        _ => "off",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // a closed or full stderr drops the log line (never eprintln!, which panics)
        .log_internal_errors(false)
        .init();
}
