//! Two `cfg` aliases, so the feature sets they stand for are spelled once:
//! `default_transport` (a transport `HeartbeatClient::new` can build:
//! feature `reqwest` or `surf`) and `monitor` (the protocol's state
//! machine: feature `server` or `mock`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(default_transport)");
    println!("cargo::rustc-check-cfg=cfg(monitor)");
    let enabled = |feature: &str| std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some();
    if enabled("REQWEST") || enabled("SURF") {
        println!("cargo::rustc-cfg=default_transport");
    }
    if enabled("SERVER") || enabled("MOCK") {
        println!("cargo::rustc-cfg=monitor");
    }
}
