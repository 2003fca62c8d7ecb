//! The file format: each accepted key, each refusal and its message.

use super::*;

fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::from_yaml(yaml, Path::new("/etc/hb"))
}

fn refusal(yaml: &str) -> String {
    match parse(yaml) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn empty_file_means_no_tls_no_auth() {
    for yaml in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
        let config = parse(yaml).expect(yaml);
        assert!(config.tls().is_none(), "{yaml:?}");
        assert!(!config.has_users(), "{yaml:?}");
        assert!(config.headers().is_empty());
        assert!(config.authenticator().is_none());
        assert!(config.tls_acceptor().expect("no TLS, no error").is_none());
    }
    // empty sections too
    let config = parse("tls_server_config:\nbasic_auth_users:\nhttp_server_config:\n").unwrap();
    assert!(config.tls().is_none());
    assert!(!config.has_users());
}

#[test]
fn tls_settings_and_defaults() {
    let config =
        parse("tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n")
            .unwrap();
    let tls = config.tls().unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/hb/server.crt"));
    assert_eq!(tls.key_file, Path::new("/abs/server.key"));
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    assert_eq!(tls.client_ca_file, None);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.max_version, TlsVersion::Tls13);

    let config = parse(
        "tls_server_config:
  cert_file: certs/server.crt
  key_file: certs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ../ca/clients.pem
  min_version: TLS13
  max_version: TLS13
",
    )
    .unwrap();
    let tls = config.tls().unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/hb/certs/server.crt"));
    assert_eq!(tls.key_file, Path::new("/etc/hb/certs/server.key"));
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/hb/../ca/clients.pem"))
    );
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.max_version, TlsVersion::Tls13);
}

#[test]
fn every_client_auth_type_is_accepted() {
    let cases = [
        ("NoClientCert", ClientAuth::NoClientCert, false),
        ("RequestClientCert", ClientAuth::RequestClientCert, false),
        (
            "RequireAnyClientCert",
            ClientAuth::RequireAnyClientCert,
            false,
        ),
        ("RequireClientCert", ClientAuth::RequireAnyClientCert, false),
        (
            "VerifyClientCertIfGiven",
            ClientAuth::VerifyClientCertIfGiven,
            true,
        ),
        (
            "RequireAndVerifyClientCert",
            ClientAuth::RequireAndVerifyClientCert,
            true,
        ),
    ];
    for (name, expected, ca) in cases {
        let ca_line = if ca { "  client_ca_file: ca.pem\n" } else { "" };
        let yaml = format!(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {name}\n{ca_line}"
        );
        let config = parse(&yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.tls().unwrap().client_auth, expected, "{name}");
    }
}

#[test]
fn load_resolves_paths_against_the_files_directory() {
    let dir = std::env::temp_dir().join(format!("hb-web-config-load-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let file = dir.join("conf/web.yml");
    std::fs::write(
        &file,
        "tls_server_config:\n  cert_file: tls/a.crt\n  key_file: a.key\n",
    )
    .unwrap();
    let config = WebConfig::load(&file).unwrap();
    let tls = config.tls().unwrap();
    assert_eq!(tls.cert_file, dir.join("conf/tls/a.crt"));
    assert_eq!(tls.key_file, dir.join("conf/a.key"));

    let missing = dir.join("conf/missing.yml");
    let error = WebConfig::load(&missing).unwrap_err();
    assert!(matches!(error, WebConfigError::Io { .. }), "{error:?}");
    let shown = error.to_string();
    assert!(
        shown.starts_with("cannot read web config file ") && shown.contains("missing.yml"),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn users_and_headers_are_accepted() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let yaml = format!(
        "basic_auth_users:\n  alice: {hash}\n  bob: '{hash}'
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    Content-Security-Policy: ''
"
    );
    let config = parse(&yaml).unwrap();
    assert!(config.has_users());
    assert!(config.authenticator().is_some());
    let headers: Vec<(&str, &str)> = config
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    // sorted by name; the blank one left out
    assert_eq!(
        headers,
        [
            ("strict-transport-security", "max-age=31536000"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "deny"),
        ]
    );
}

#[test]
fn exporter_toolkit_keys_not_implemented_are_named() {
    let cases = [
        (
            "tls_server_config:\n  cert: PEM\n",
            "tls_server_config.cert is not supported; use cert_file",
        ),
        (
            "tls_server_config:\n  key: PEM\n",
            "tls_server_config.key is not supported; use key_file",
        ),
        (
            "tls_server_config:\n  client_ca: PEM\n",
            "tls_server_config.client_ca is not supported",
        ),
        (
            "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites is not supported",
        ),
        (
            "tls_server_config:\n  curve_preferences: [X25519]\n",
            "tls_server_config.curve_preferences is not supported",
        ),
        (
            "tls_server_config:\n  prefer_server_cipher_suites: true\n",
            "tls_server_config.prefer_server_cipher_suites is not supported",
        ),
        (
            "tls_server_config:\n  client_allowed_sans: [a.example]\n",
            "tls_server_config.client_allowed_sans is not supported",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 10\n",
            "rate_limit is not supported",
        ),
    ];
    for (yaml, expected) in cases {
        let error = refusal(yaml);
        assert!(error.starts_with(expected), "{yaml:?}: {error}");
    }
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let error = parse("basic_auth_users:\ntls_config:\n  cert_file: a\n").unwrap_err();
    let WebConfigError::Yaml { line, ref message } = error else {
        panic!("{error:?}");
    };
    assert_eq!(line, Some(2), "{message}");
    assert!(message.contains("unknown field `tls_config`"), "{message}");
    assert!(error.to_string().starts_with("invalid YAML: "));

    for yaml in [
        "tls_server_config:\n  cert_fil: a\n",
        "http_server_config:\n  http3: true\n",
        "tls_server_config: [a]\n",
        "basic_auth_users: [alice]\n",
        ": : :\n  - [\n",
    ] {
        let error = parse(yaml).unwrap_err();
        assert!(
            matches!(error, WebConfigError::Yaml { .. }),
            "{yaml:?}: {error:?}"
        );
        assert!(!error.to_string().contains('\n'), "{error}");
    }
}

#[test]
fn tls_settings_are_checked() {
    let cases = [
        (
            "tls_server_config:\n  cert_file: c\n",
            "tls_server_config: cert_file is set without key_file",
        ),
        (
            "tls_server_config:\n  key_file: k\n  cert_file: ''\n",
            "tls_server_config: key_file is set without cert_file",
        ),
        (
            "tls_server_config:\n  client_ca_file: ca\n  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config: client_auth_type and client_ca_file need cert_file and key_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: VerifyClientCertIfGiven\n",
            "tls_server_config: client_auth_type VerifyClientCertIfGiven needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Yes\n",
            "tls_server_config.client_auth_type: unknown value \"Yes\" (expected NoClientCert, RequestClientCert,",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
            "tls_server_config.min_version: TLS10 is not supported by rustls",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n",
            "tls_server_config.max_version: TLS11 is not supported by rustls",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: SSL3\n",
            "tls_server_config.min_version: unknown TLS version \"SSL3\"",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config: min_version TLS13 is above max_version TLS12",
        ),
    ];
    for (yaml, expected) in cases {
        let error = refusal(yaml);
        assert!(error.starts_with(expected), "{yaml:?}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

#[test]
fn headers_are_checked() {
    let cases = [
        (
            "http_server_config:\n  headers:\n    Server: hb\n",
            "http_server_config.headers: header \"Server\" cannot be configured (only Strict-Transport-Security,",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers: X-Frame-Options: \"allow\" is not allowed (expected deny or sameorigin)",
        ),
        (
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
            "http_server_config.headers: X-Content-Type-Options: \"sniff\" is not allowed (expected nosniff)",
        ),
        (
            "http_server_config:\n  headers:\n    X-XSS-Protection: \"1\\r\\nSet-Cookie: a=b\"\n",
            "http_server_config.headers: X-XSS-Protection: \"1\\r\\nSet-Cookie: a=b\" is not a header value",
        ),
    ];
    for (yaml, expected) in cases {
        let error = refusal(yaml);
        assert!(error.starts_with(expected), "{yaml:?}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

#[test]
fn a_bad_hash_is_refused_at_load_naming_the_user_not_the_hash() {
    let hash = "$2y$10$tooshort";
    let error = refusal(&format!("basic_auth_users:\n  dave: '{hash}'\n"));
    assert!(
        error.starts_with("basic_auth_users: user \"dave\": not a bcrypt hash"),
        "{error}"
    );
    assert!(!error.contains(hash), "{error}");
    // a cost bcrypt refuses (the rest well-formed)
    let good = bcrypt::hash("pw", 4).unwrap();
    let error = refusal(&format!(
        "basic_auth_users:\n  erin: '{}'\n",
        good.replacen("$04$", "$03$", 1)
    ));
    assert!(
        error.contains("user \"erin\": bcrypt cost 3 is out of range"),
        "{error}"
    );
}
