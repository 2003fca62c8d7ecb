//! The command line, as clap derives it.

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// `heartbeat`: talk to a heartbeat server, watch one, wrap a program in
/// heartbeats, or run the server.
#[derive(Debug, Parser)]
#[command(
    name = "heartbeat",
    version,
    about = "Send heartbeats, query and check a heartbeat server (Nagios), wrap a program in heartbeats, or run the server.",
    after_help = exit::HELP
)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is, who we are, and how requests are sent.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Server URL; without it, http://HB_HOST:HB_PORT (default http://127.0.0.1:8888).
    #[arg(long, global = true, env = "HB_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Application id sent by init, ping, done and wrap [default, only when neither is given: rust_heartbeat_client_demo]; an empty or blank id is refused.
    #[arg(long, global = true, env = "APP_ID", value_name = "ID")]
    pub app_id: Option<String>,
    /// User for HTTP basic auth (a server whose --web-config has users); the password is read from HB_PASSWORD, never from the command line. A URL's userinfo (https://user:password@host) works too.
    #[arg(long, global = true, env = "HB_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Trust the CA certificates in FILE (PEM) for an https:// server, beside the system's roots.
    #[arg(long, global = true, env = "HB_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// HTTP transport, among those compiled in.
    #[arg(long, global = true, value_enum, default_value_t = TransportKind::Reqwest)]
    pub transport: TransportKind,
    /// Total time allowed per request, in milliseconds.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        default_value_t = 4000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
}

/// The HTTP transports compiled into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// reqwest over tokio (always built into the binary).
    Reqwest,
    /// surf over libcurl (only with feature `surf`).
    #[cfg(feature = "surf")]
    Surf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send hb_init (register; ping again within TIMEOUT_MS), print the granted timeout.
    Init {
        /// The promised timeout in milliseconds.
        #[arg(value_name = "TIMEOUT_MS", default_value_t = DEFAULT_INIT_MS)]
        timeout_ms: u64,
    },
    /// Send hb_ping (alive; next ping within TIMEOUT_MS), print the granted timeout.
    Ping {
        /// The promised timeout in milliseconds.
        #[arg(value_name = "TIMEOUT_MS", default_value_t = DEFAULT_PING_MS)]
        timeout_ms: u64,
    },
    /// Send hb_done (deregister, gone within TIMEOUT_MS), print the server's goodbye.
    Done {
        /// The timeout in milliseconds.
        #[arg(value_name = "TIMEOUT_MS", default_value_t = 0)]
        timeout_ms: u64,
    },
    /// Print the applications the server tracks, one per line.
    List {
        /// Print one JSON document instead: an object whose "keys" array holds the keys, ID @ IP.
        #[arg(long)]
        json: bool,
    },
    /// Print the host's status line, or APP_ID's.
    Status {
        /// The application to ask about; the whole host when omitted.
        #[arg(value_name = "APP_ID")]
        app: Option<String>,
        /// Print the status as one JSON document instead (state, exit_code, message, app, overdue_ratio, granted_ms, perfdata, raw, ...).
        #[arg(long)]
        json: bool,
    },
    /// Print APP_ID's state changes, newest first (our server's /api/v1/events): time, change, host, state before -> after.
    History {
        /// The application.
        #[arg(value_name = "APP_ID")]
        app: String,
        /// Only the record beating from this address.
        #[arg(long, value_name = "IP")]
        host: Option<std::net::IpAddr>,
        /// Only changes at or after this time (RFC 3339 in UTC, e.g. 2026-12-07T00:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<std::time::SystemTime>,
        /// At most N changes (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print the server's JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Nagios plugin: print the status line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check {
        /// The application to check; the whole host when omitted.
        #[arg(value_name = "APP_ID", conflicts_with = "all")]
        app: Option<String>,
        /// Check every listed application (and the server's missing expected ones): the worst state, a summary line with counts, one line per app.
        #[arg(long)]
        all: bool,
        /// With --all: print one JSON document instead of the Nagios output.
        #[arg(long, requires = "all")]
        json: bool,
        /// With --all: the whole check's time limit in milliseconds (each request still has --timeout); past it the check is UNKNOWN (exit 3). Below Nagios' usual 60 s plugin timeout by default.
        #[arg(long, value_name = "MS", requires = "all", default_value_t = 50_000)]
        deadline: u64,
    },
    /// Run CMD with heartbeats: init before, pings while it runs, done after.
    #[command(after_long_help = WRAP_SIGNALS)]
    Wrap(WrapArgs),
    /// `wrap --all`: init, pings and done around CMD (the reference's hb_dummy.sh).
    #[command(after_long_help = WRAP_SIGNALS)]
    Dummy(WrapArgs),
    /// Run the heartbeat server until Ctrl+C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// The demo session: random promises and sleeps until Ctrl+C or SIGTERM.
    Demo(DemoArgs),
}

/// How `wrap` and `dummy` treat signals, shown by `heartbeat wrap --help`
/// (the module docs of `wrap` say the same at more length).
const WRAP_SIGNALS: &str = "\
A failed run:
  When CMD exits non-zero, dies of a signal or cannot start, the done becomes
  hb_fail?CODE: our server shows the app CRITICAL with the exit code. A server
  that answers it 400 (the reference) gets nothing more, so the app goes late.

Signals:
  SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 sent to the wrapper are
  passed on to CMD; the wrapper waits for CMD, sends done (if asked to) and exits
  with CMD's code, or 128+N if CMD died of signal N.
  When stdin is not a terminal, CMD runs in a process group of its own and the
  signals go to the whole group (CMD's children too). When stdin is a terminal,
  CMD stays in the wrapper's group so that it can read the terminal; Ctrl+C then
  reaches the whole group directly.
  Linux: CMD gets SIGKILL when the wrapper dies (for instance of SIGKILL), set with
  prctl(PR_SET_PDEATHSIG) in a pre_exec hook, the binary's one unsafe call.
  CMD's own children are not covered by that.";

/// The timeout `heartbeat init` promises by default (the reference wrapper's `HB_INIT_TIMEOUT`).
pub const DEFAULT_INIT_MS: u64 = 10_000;
/// The timeout `heartbeat ping` promises by default (the reference wrapper's `HB_PING_INTERVAL`).
pub const DEFAULT_PING_MS: u64 = 9_000;

/// Options of `heartbeat wrap` and `heartbeat dummy`.
///
/// The environment variables are those of the reference's `hb_wrapper.sh`.
#[derive(Debug, Clone, Args)]
pub struct WrapArgs {
    /// Send hb_init before CMD starts.
    #[arg(long, env = "HB_SEND_INIT")]
    pub init: bool,
    /// Send hb_ping every --interval while CMD runs.
    #[arg(long, env = "HB_SEND_PING")]
    pub ping: bool,
    /// Send hb_done after CMD exits (hb_fail?CODE when it failed).
    #[arg(long, env = "HB_SEND_DONE")]
    pub done: bool,
    /// All three: --init --ping --done.
    #[arg(long)]
    pub all: bool,
    /// Ping period in milliseconds; each ping promises twice this.
    #[arg(
        long,
        env = "HB_PING_INTERVAL",
        value_name = "MS",
        default_value_t = DEFAULT_PING_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub interval: u64,
    /// The timeout hb_init promises, in milliseconds.
    #[arg(long, env = "HB_INIT_TIMEOUT", value_name = "MS", default_value_t = DEFAULT_INIT_MS)]
    pub init_timeout: u64,
    /// The timeout hb_done announces, in milliseconds.
    #[arg(long, env = "HB_DONE_TIMEOUT", value_name = "MS", default_value_t = 0)]
    pub done_timeout: u64,
    /// The program to run and its arguments (after `--`).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// Options of `heartbeat serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: the host and port of --url / HB_URL, else HB_HOST:HB_PORT].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Largest number of applications tracked; new ones past it get 503.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_apps: Option<u64>,
    /// Most applications one host may have tracked at once: its new ones past it get 503 while other hosts still register; expected ones are not held to it (they count in --max-apps) [default: no share: kiosks behind one NAT or proxy share an address].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_apps_per_host: Option<u64>,
    /// TLS and basic auth from FILE in the Prometheus exporter-toolkit format (`tls_server_config`, `basic_auth_users`; see the operator guide). A bad file stops serve with exit code 78.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,
    /// What the --web-config users protect: `views` (the dashboard, /api/*, /metrics) or `reference` (every path: the reference clients must then send credentials).
    #[arg(long, value_name = "WHAT", default_value = "views", value_parser = parse_protect, requires = "web_config")]
    pub protect: heartbeat_sdk::server::Protect,
    /// Serve the operator's views (the dashboard, /api/*, /metrics) only to requests for Host NAME (any port) or the address reached; others get 421, which stops DNS rebinding. Repeatable [default: any Host].
    #[arg(long, value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Expect an application, `ID` (from any host) or `ID @ IP`: never dropped, CRITICAL while it has not reported. Repeatable.
    #[arg(long, value_name = "ID")]
    pub expect: Vec<String>,
    /// Expected applications from FILE, one per line; blank lines and lines starting with `#` are skipped. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub expect_file: Vec<std::path::PathBuf>,
    /// The longest timeout any application may promise, in milliseconds: a longer one is granted as this (the reply says so) [default: no cap, as the reference].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_timeout: Option<u64>,
    /// The longest timeout an expected application may promise, in milliseconds, so that no host can silence it for long with one init.
    #[arg(long, value_name = "MS", default_value_t = 86_400_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_expected_timeout: u64,
    /// Added to every promised timeout to get the granted one [default: 1000].
    #[arg(long, value_name = "MS")]
    pub tolerance_ms: Option<u64>,
    /// Overdue ratio from which an application is WARNING [default: 3].
    #[arg(long, value_name = "RATIO")]
    pub warn: Option<f64>,
    /// Overdue ratio from which an application is CRITICAL [default: 5].
    #[arg(long, value_name = "RATIO")]
    pub crit: Option<f64>,
    /// Overdue ratio at which a record is dropped, unless expected [default: 6].
    #[arg(long, value_name = "RATIO")]
    pub drop: Option<f64>,
    /// Keep the tracked applications in the SQLite file PATH (created if missing) and restore them at start. A bad file stops serve with exit code 73.
    #[arg(long, value_name = "PATH")]
    pub state: Option<std::path::PathBuf>,
    /// How often --state is committed, in milliseconds: a crash loses at most this much.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "state", value_parser = clap::value_parser!(u64).range(1..))]
    pub state_commit_ms: u64,
    /// How many days --state keeps the history of state changes (GET /api/v1/events, uptime); pruned hourly.
    #[arg(long, value_name = "DAYS", default_value_t = 30, requires = "state", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub history_days: u64,
    /// Which applications get per-application series in /metrics: `all` (five series each), `problems` (only those not OK: a few thousand series for a million apps) or `none`. `heartbeat_apps_by_state` is always there.
    #[arg(long, value_name = "WHICH", default_value = "all", value_parser = parse_per_app_metrics)]
    pub per_app_metrics: heartbeat_sdk::server::PerAppMetrics,
    /// POST every state change (created, warning, critical, recovered, done, expired, expected-missing, failed) to URL as JSON (docs/notifications.md). Repeatable.
    #[arg(long, value_name = "URL")]
    pub webhook: Vec<url::Url>,
    /// The body --webhook URLs get: `json` (one document per change) or `slack` (a Slack/Mattermost `{"text": ...}` message).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = parse_webhook_format)]
    pub webhook_format: heartbeat_sdk::server::WebhookFormat,
    /// Send CRITICAL applications as alerts to the Alertmanager at URL (API v2). Repeatable: give every peer of a cluster.
    #[arg(long, value_name = "URL")]
    pub alertmanager: Vec<url::Url>,
    /// Re-send active alerts every MS milliseconds; their endsAt is four intervals ahead.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_resend_ms: u64,
    /// Also alert on WARNING (severity="warning").
    #[arg(long)]
    pub alert_warning: bool,
    /// Shortest time between two webhook notifications of one application, in milliseconds; changes in between are folded into the latest state.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub notify_min_interval_ms: u64,
    /// The URL this server is reached at, for the links in notifications [default: http:// and the address it listens on].
    #[arg(long, value_name = "URL")]
    pub external_url: Option<url::Url>,
}

fn parse_since(text: &str) -> Result<std::time::SystemTime, String> {
    heartbeat_sdk::protocol::parse_time(text).map_err(|e| e.reason().to_owned())
}

fn parse_webhook_format(text: &str) -> Result<heartbeat_sdk::server::WebhookFormat, String> {
    text.parse()
}

fn parse_protect(text: &str) -> Result<heartbeat_sdk::server::Protect, String> {
    text.parse()
}

fn parse_per_app_metrics(text: &str) -> Result<heartbeat_sdk::server::PerAppMetrics, String> {
    text.parse()
}

/// Options of `heartbeat demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Stop by itself after N pings.
    #[arg(long, value_name = "N")]
    pub beats: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_a_flag_of_list_and_status_off_by_default() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        assert!(matches!(
            parse(&["heartbeat", "list"]),
            Command::List { json: false }
        ));
        assert!(matches!(
            parse(&["heartbeat", "list", "--json"]),
            Command::List { json: true }
        ));
        assert!(matches!(
            parse(&["heartbeat", "status", "kiosk", "--json"]),
            Command::Status { app: Some(app), json: true } if app == "kiosk"
        ));
        assert!(matches!(
            parse(&["heartbeat", "status"]),
            Command::Status {
                app: None,
                json: false
            }
        ));
        assert!(Cli::try_parse_from(["heartbeat", "ping", "--json"]).is_err());
    }

    #[test]
    fn wrap_takes_the_command_verbatim() {
        let cli = Cli::try_parse_from([
            "heartbeat",
            "wrap",
            "--ping",
            "--interval",
            "50",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .unwrap();
        let Command::Wrap(wrap) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert!(wrap.ping && !wrap.init && !wrap.done && !wrap.all);
        assert_eq!(wrap.interval, 50);
        assert_eq!(wrap.command, ["sh", "-c", "exit 7"]);
        // without `--`, options after CMD belong to CMD
        let cli = Cli::try_parse_from(["heartbeat", "dummy", "ls", "--init"]).unwrap();
        let Command::Dummy(wrap) = cli.command else {
            panic!()
        };
        assert!(!wrap.init);
        assert_eq!(wrap.command, ["ls", "--init"]);
    }

    #[test]
    fn global_options_go_anywhere_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "heartbeat",
            "ping",
            "500",
            "--url",
            "x:1",
            "--timeout",
            "100",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("x:1"));
        assert_eq!(cli.global.timeout, 100);
        assert!(matches!(cli.command, Command::Ping { timeout_ms: 500 }));
        assert!(Cli::try_parse_from(["heartbeat", "ping", "abc"]).is_err());
        assert!(Cli::try_parse_from(["heartbeat", "ping", "--timeout", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["heartbeat", "list", "--transport", "carrier-pigeon"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["heartbeat", "wrap"]).is_err(),
            "CMD is required"
        );
    }
}
