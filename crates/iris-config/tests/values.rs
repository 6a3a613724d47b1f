//! What a loaded config contains: normalized values, defaults, conversions, and that secrets
//! never print.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use iris_config::{
    AuthMode, AuthScheme, Cap, Compatibility, GrantOrigin, IrisSettings, Role, check,
    default_config_text, load,
};

#[test]
fn baseurl_normalization() {
    let cases = [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", false),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080", false),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080", true),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080", true),
        (
            "http://127.0.0.1:8080/api/v1",
            "http://127.0.0.1:8080/api",
            true,
        ),
        (
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api",
            false,
        ),
        (
            "http://127.0.0.1:8080/v1beta",
            "http://127.0.0.1:8080/v1beta",
            false,
        ),
        (
            "http://127.0.0.1:8080/v1/v1",
            "http://127.0.0.1:8080/v1",
            true,
        ),
        ("http://v1", "http://v1", false),
    ];
    for (input, want, warned) in cases {
        let text = with_provider(&format!(
            "\"baseurl\": {input:?}, \"apikey\": \"k\", \"models\": [\"m1\"]"
        ));
        let loaded = load(&text, &env(&[])).unwrap();
        assert_eq!(loaded.config.providers[0].baseurl, want, "input {input}");
        assert_eq!(!loaded.warnings.is_empty(), warned, "input {input}");
    }
}

#[test]
fn compatibility_default_logic() {
    let compat = |block: &str| {
        let c = loaded(&with_provider(&format!("{P_OK}{block}")));
        c.providers[0].compatibility
    };
    let chat_only = Compatibility::default();
    assert!(chat_only.openai_chat && !chat_only.anthropic_messages);

    // No block: openai_chat only.
    assert_eq!(compat(""), chat_only);
    // Another flag on, openai_chat not listed: openai_chat off.
    let c = compat(r#", "compatibility": {"anthropic_messages": true}"#);
    assert!(!c.openai_chat && c.anthropic_messages);
    // Listed explicitly: kept.
    let c = compat(r#", "compatibility": {"anthropic_messages": true, "openai_chat": true}"#);
    assert!(c.openai_chat && c.anthropic_messages);
    // Other flags listed but false: openai_chat stays on.
    let c = compat(r#", "compatibility": {"openai_responses": false}"#);
    assert_eq!(c, chat_only);
    // Empty block: same as none.
    assert_eq!(compat(r#", "compatibility": {}"#), chat_only);
    // Every flag maps to its field.
    let c = compat(
        r#", "compatibility": {"openai_responses": true, "gemini_generate_content": true, "google_generate_content": true, "google_raw_predict": true, "bedrock_model_invoke": true, "bedrock_converse": true, "experimental_gemini_cli_vertex_compat": true}"#,
    );
    assert_eq!(
        c,
        Compatibility {
            openai_chat: false,
            openai_responses: true,
            anthropic_messages: false,
            gemini_generate_content: true,
            google_generate_content: true,
            google_raw_predict: true,
            bedrock_model_invoke: true,
            bedrock_converse: true,
            experimental_gemini_cli_vertex_compat: true,
        }
    );
}

#[test]
fn provider_fields_and_file_order() {
    let text = format!(
        r#"{{
  "providers": {{
    "zeta": {{ {P_OK} }},
    "alpha": {{
      "name": "Alpha", "description": "the first letter",
      "baseurl": "https://127.0.0.1:8443/base/",
      "apikey": "sk-alpha",
      "authorization": "x-goog-api-key",
      "auth_mode": "passthrough",
      "models": ["a-1", "a-2", "a-1"],
      "disabled": true,
      "preference": 7,
      "add_headers": ["X-One: 1", "x-two:two words "],
    }},
    "mid": {{ {P_OK}, "authorization": "x-api-key", "auth_mode": "" }},
  }},
  "grants": [{ADMIN_ALL}],
}}"#
    );
    let config = loaded(&text);
    let ids: Vec<&str> = config.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["zeta", "alpha", "mid"]);

    let a = config.provider("alpha").unwrap();
    assert_eq!(a.name, "Alpha");
    assert_eq!(a.description, "the first letter");
    assert_eq!(a.baseurl, "https://127.0.0.1:8443/base");
    assert_eq!(a.apikey.as_ref().unwrap().expose(), "sk-alpha");
    assert_eq!(a.authorization, AuthScheme::XGoogApiKey);
    assert_eq!(a.auth_mode, AuthMode::Passthrough);
    assert_eq!(a.models, ["a-1", "a-2"]);
    assert!(a.disabled);
    assert_eq!(a.preference, 7);
    assert_eq!(
        a.add_headers,
        [
            ("X-One".to_owned(), "1".to_owned()),
            ("x-two".to_owned(), "two words".to_owned())
        ]
    );

    let z = config.provider("zeta").unwrap();
    assert_eq!(z.name, "");
    assert_eq!(z.authorization, AuthScheme::Bearer);
    assert_eq!(z.auth_mode, AuthMode::Override);
    assert!(!z.disabled);
    assert_eq!(z.preference, 0);
    assert!(z.add_headers.is_empty());

    let m = config.provider("mid").unwrap();
    assert_eq!(m.authorization, AuthScheme::XApiKey);
    assert_eq!(m.auth_mode, AuthMode::Override);
    assert!(config.provider("nope").is_none());
}

#[test]
fn missing_or_empty_keys_are_none() {
    let e = env(&[("EMPTY_KEY", "")]);
    for apikey in [
        "",
        r#", "apikey": """#,
        r#", "apikey": "${EMPTY_KEY}""#,
        r#", "apikey": "${UNSET_KEY:-}""#,
        r#", "apikey": "keyfile::{}""#,
    ] {
        let text = with_provider(&format!(
            r#""baseurl": "http://127.0.0.1", "models": ["m1"]{apikey}"#
        ));
        let l = load(&text, &e).unwrap();
        assert!(l.config.providers[0].apikey.is_none(), "{apikey}");
        assert_eq!(l.warnings.len(), 1, "{apikey}");
        assert_eq!(l.warnings[0].path, "providers.p.apikey");
    }
}

#[test]
fn grants_are_converted_in_order() {
    let text = format!(
        r#"{{
  "providers": {{ "p": {{ {P_OK} }}, "q": {{ {P_OK} }} }},
  "grants": [
    {ADMIN_ALL},
    {{"src": ["group:eng", "tag:ci"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user", "models": "q/*"}}], "example.com/cap/other": [1, 2]}}}},
  ],
  "temp_grants": [
    {{"src": ["alice@example.com"], "grants": [
      {{"role": "admin"}},
      {{"providers": [{{"provider": "p", "model": "m1"}}, {{"provider": "q"}}, {{"provider": "q", "model": ""}}]}},
      {{"hook": {{"hook": "oso"}}}},
    ]}},
  ],
}}"#
    );
    let l = load(&text, &env(&[])).unwrap();
    assert_eq!(
        render(&l.warnings),
        [
            "warning: temp_grants[0].grants[2].hook: iris does not run hooks yet; this entry is ignored"
        ]
    );
    let g = &l.config.grants;
    assert_eq!(g.len(), 3);

    assert_eq!(g[0].origin, GrantOrigin::Grants { index: 0 });
    assert_eq!(g[0].src, ["*"]);
    assert_eq!(
        g[0].caps,
        [
            Cap {
                role: Some(Role::Admin),
                models: None
            },
            Cap {
                role: Some(Role::User),
                models: None
            },
            Cap {
                role: None,
                models: Some("**".into())
            },
        ]
    );

    assert_eq!(g[1].origin, GrantOrigin::Grants { index: 1 });
    assert_eq!(g[1].src, ["group:eng", "tag:ci"]);
    assert_eq!(
        g[1].caps,
        [Cap {
            role: Some(Role::User),
            models: Some("q/*".into())
        }]
    );

    assert_eq!(g[2].origin, GrantOrigin::TempGrants { index: 0 });
    assert_eq!(g[2].src, ["alice@example.com"]);
    let models: Vec<Option<&str>> = g[2].caps.iter().map(|c| c.models.as_deref()).collect();
    assert_eq!(models, [None, Some("p/m1"), Some("q/**"), Some("q/**")]);
    assert_eq!(g[2].caps[0].role, Some(Role::Admin));
    assert!(g[2].caps[1..].iter().all(|c| c.role.is_none()));
}

#[test]
fn cap_from_json_for_whois_capmap() {
    let cap =
        Cap::from_json(&serde_json::json!({"role": "admin", "models": "anthropic/**"})).unwrap();
    assert_eq!(
        cap,
        Cap {
            role: Some(Role::Admin),
            models: Some("anthropic/**".into())
        }
    );
    // Unknown and Aperture-only fields are ignored.
    let cap = Cap::from_json(
        &serde_json::json!({"role": "user", "quotas": [{"bucket": "b"}], "future_field": 1}),
    )
    .unwrap();
    assert_eq!(cap.role, Some(Role::User));
    assert_eq!(cap.models, None);

    assert_eq!(
        Cap::from_json(&serde_json::json!({"role": "root", "models": "[x"})).unwrap_err(),
        "role: invalid role \"root\": expected \"user\" or \"admin\"; models: invalid models pattern \"[x\": unclosed character class; missing ']'"
    );
    assert_eq!(
        Cap::from_json(&serde_json::json!("admin")).unwrap_err(),
        "expected an object, found a string"
    );
}

#[test]
fn iris_settings_values() {
    let config = loaded(&with_iris(
        r#""listen": "[::1]:9000", "data_dir": "/var/lib/iris", "identity": {"whois": false, "tailscale_socket": "/run/ts.sock", "serve_headers": true, "keys": false}, "limits": {"max_body_bytes": 2048}, "timeouts": {"connect": "250ms", "first_byte": "1m30s"}, "usage": {"flush_interval": "2s", "batch_size": 10}"#,
    ));
    let s = config.iris;
    assert_eq!(s.listen, "[::1]:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(s.data_dir, Some(PathBuf::from("/var/lib/iris")));
    assert!(!s.identity.whois);
    assert_eq!(
        s.identity.tailscale_socket,
        Some(PathBuf::from("/run/ts.sock"))
    );
    assert!(s.identity.serve_headers);
    assert!(!s.identity.keys);
    assert!(s.identity.loopback, "unset fields keep their default");
    assert_eq!(s.max_body_bytes, 2048);
    assert_eq!(s.timeouts.connect, Duration::from_millis(250));
    assert_eq!(s.timeouts.first_byte, Duration::from_secs(90));
    assert_eq!(s.timeouts.idle, Duration::from_secs(300));
    assert_eq!(s.usage.flush_interval, Duration::from_secs(2));
    assert_eq!(s.usage.queue_capacity, 65536);
    assert_eq!(s.usage.batch_size, 10);

    // No iris section: all defaults.
    let defaults = loaded(&with_top("")).iris;
    assert_eq!(defaults, IrisSettings::default());
    assert_eq!(
        defaults.listen,
        iris_config::DEFAULT_LISTEN.parse().unwrap()
    );
    assert_eq!(defaults.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(defaults.data_dir, None);
    assert_eq!(defaults.identity.tailscale_socket, None);
    assert!(
        defaults.identity.whois
            && defaults.identity.keys
            && defaults.identity.loopback
            && !defaults.identity.serve_headers
    );
    assert_eq!(defaults.timeouts.connect, Duration::from_secs(10));
    assert_eq!(defaults.usage.batch_size, 1000);
}

#[test]
fn secrets_never_print() {
    let secret = "sk-ant-api03-VERY-SECRET";
    let e = env(&[("ANTHROPIC_API_KEY", secret), ("OPENAI_API_KEY", secret)]);
    let l = load(default_config_text(), &e).unwrap();
    assert_eq!(
        l.config
            .provider("anthropic")
            .unwrap()
            .apikey
            .as_ref()
            .unwrap()
            .expose(),
        secret
    );
    let debug = format!("{:?} {:#?} {:?}", l.config, l.config, l);
    assert!(!debug.contains(secret), "the key leaked into Debug output");
    assert!(debug.contains("[redacted]"));

    // A key with a line break is rejected without echoing it.
    let bad = "sk-SECRET-PART\nX-Evil: 1";
    let e = env(&[("ANTHROPIC_API_KEY", bad), ("OPENAI_API_KEY", "k")]);
    let diags = load(default_config_text(), &e).unwrap_err();
    let text = render(&diags).join("\n");
    assert!(
        text.contains("error: providers.anthropic.apikey: "),
        "{text}"
    );
    assert!(!text.contains("SECRET-PART"), "{text}");

    // Header values are not echoed either.
    let text = with_provider(&format!(
        r#"{P_OK}, "add_headers": ["Authorization: Bearer sk-SECRET-PART\u0000"]"#
    ));
    let text = render(&check(&text, &env(&[]))).join("\n");
    assert!(text.contains("providers.p.add_headers[0]"), "{text}");
    assert!(!text.contains("SECRET-PART"), "{text}");
}

#[test]
fn default_config_loads_cleanly() {
    let with_keys = env(&[("ANTHROPIC_API_KEY", "sk-a"), ("OPENAI_API_KEY", "sk-o")]);
    assert_eq!(check(default_config_text(), &with_keys), []);

    let l = load(default_config_text(), &env(&[])).unwrap();
    assert_eq!(
        render(&l.warnings),
        [
            "warning: providers.anthropic.apikey: no API key configured; requests will be forwarded without a provider credential",
            "warning: providers.openai.apikey: no API key configured; requests will be forwarded without a provider credential",
        ]
    );
    let c = l.config;
    let ids: Vec<&str> = c.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["anthropic", "openai"]);
    let anthropic = c.provider("anthropic").unwrap();
    assert_eq!(anthropic.baseurl, "https://api.anthropic.com");
    assert_eq!(anthropic.authorization, AuthScheme::XApiKey);
    assert!(anthropic.compatibility.anthropic_messages && !anthropic.compatibility.openai_chat);
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.authorization, AuthScheme::Bearer);
    assert!(openai.compatibility.openai_chat && openai.compatibility.openai_responses);
    assert!(openai.models.iter().any(|m| m == "text-embedding-3-small"));
    assert_eq!(c.grants.len(), 1);
    assert_eq!(c.grants[0].src, ["(loopback)"]);
    assert_eq!(c.iris, IrisSettings::default());
    // The text documents the macro syntax it uses.
    assert!(default_config_text().contains("${NAME:-fallback}"));
}

#[test]
fn load_returns_all_diagnostics_on_error() {
    let text = with_provider(r#""baseurl": "ftp://127.0.0.1", "models": ["m1"], "extra": 1"#);
    let diags = load(&text, &env(&[])).unwrap_err();
    assert_eq!(
        render(&diags),
        [
            "error: providers.p.baseurl: URL scheme must be http or https, found \"ftp\"",
            "warning: providers.p.apikey: no API key configured; requests will be forwarded without a provider credential",
            "warning: providers.p.extra: unknown config key \"extra\"",
        ]
    );
}

#[test]
fn many_problems_are_reported_at_once() {
    let text = r#"// a config with a problem in every corner
{
  "providers": {
    "anthropic": {
      "basurl": "https://api.anthropic.com",
      "apikey": "${ANTHROPIC_KEY}",
      "authorization": "token",
      "compatibility": {"anthropic_messages": true, "openai_chatt": true},
      "models": ["claude-x", "claude-x", 42],
    },
    "open/ai": {
      "baseurl": "http://127.0.0.1:9000/v1/",
      "apikey": "",
      "models": "gpt-5",
      "add_headers": ["X-Team research"],
    },
    "local": {
      "baseurl": "http://127.0.0.1:11434/",
      "models": ["llama"],
    },
    "broken": {
      "baseurl": "http://127.0.0.1:11435?x=1",
      "models": ["llama"],
      "preference": "high",
    },
  },
  "grants": [
    {"src": ["*"], "dst": ["tag:ai"], "app": {"tailscale.com/cap/aperture": [{"role": "owner"}, {"models": "gemini/**"}]}},
    {"src": [], "app": {"tailscale.com/cap/aperture": [{"models": "anthropic/[claude"}]}},
    {"src": ["tag:prod,tag:api"], "app": {"tailscale.com/cap/aperture": [{"read_metrics": true}]}},
  ],
  "temp_grants": [
    {"src": ["bob@example.com"], "grants": [{"providers": [{"provider": "mistral"}]}, {"hook": {"hook": "oso"}}]},
  ],
  "quotas": {"team": {"capacity": "$10.00"}},
  "iris": {
    "listen": "127.0.0.1:99999",
    "limits": {"max_body_bytes": 10},
    "timeouts": {"connect": "10 s", "idle": "5m"},
    "usage": {"queue_capacity": 0},
    "identity": {"whois": true, "whois": false, "serve_header": true},
  },
}
"#;
    let diags = check(text, &env(&[]));
    assert!(diags.iter().filter(|d| d.is_error()).count() >= 10);
    insta::assert_snapshot!(render(&diags).join("\n"));
}

#[test]
fn cost_retention_and_capture_settings() {
    let text = r#"{
      "providers": {"anthropic": {"baseurl": "https://api.anthropic.com", "apikey": "k", "models": ["claude-x"],
        "compatibility": {"anthropic_messages": true}, "cost_basis": "bedrock",
        "model_cost_map": [{"match": "claude-*", "as": "claude-sonnet-4-5", "adjustment": 1.1}, {"match": "x", "as": "y"}]}},
      "grants": [{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}],
      "database": {"retention": {"duration": "30d", "purge": ["captures", "tools"]}},
      "auto_cost_basis": false,
      "iris": {"captures": {"enabled": false, "max_body_bytes": 2048, "redact_headers": ["X-Secret"]}},
    }"#;
    let env = std::collections::HashMap::<String, String>::new();
    let c = load(text, &env).unwrap().config;
    let p = &c.providers[0];
    assert_eq!(p.cost_basis.as_deref(), Some("bedrock"));
    assert_eq!(p.model_cost_map.len(), 2);
    assert_eq!(
        (
            p.model_cost_map[0].as_model.as_str(),
            p.model_cost_map[0].adjustment
        ),
        ("claude-sonnet-4-5", 1.1)
    );
    assert_eq!(p.model_cost_map[1].adjustment, 1.0);
    assert_eq!(c.database.retention_duration, "30d");
    assert_eq!(c.database.purge, ["captures", "tools"]);
    assert!(!c.auto_cost_basis);
    assert!(!c.iris.captures.enabled);
    assert_eq!(c.iris.captures.max_body_bytes, 2048);
    assert_eq!(c.iris.captures.redact_headers, ["x-secret"]);
    // Defaults.
    let d = load(
        &text.replace(
            r#""database": {"retention": {"duration": "30d", "purge": ["captures", "tools"]}},"#,
            "",
        ),
        &env,
    )
    .unwrap()
    .config;
    assert_eq!(d.database.purge, ["captures"]);
    assert_eq!(d.database.retention_duration, "");
    // Bad values are errors with paths.
    for (bad, path) in [
        (
            r#""duration": "30d""#.replace("30d", "10m"),
            "database.retention.duration",
        ),
        (
            r#""duration": "30d""#.replace("30d", "5000d"),
            "database.retention.duration",
        ),
        (
            r#""purge": ["captures", "tools"]"#.replace("tools", "everything"),
            "database.retention.purge[1]",
        ),
    ] {
        let t = text.replace(
            r#""duration": "30d""#,
            if bad.starts_with("\"duration") {
                &bad
            } else {
                r#""duration": "30d""#
            },
        );
        let t = if bad.starts_with("\"purge") {
            t.replace(r#""purge": ["captures", "tools"]"#, &bad)
        } else {
            t
        };
        let diags = check(&t, &env);
        assert!(
            diags.iter().any(|d| d.is_error() && d.path == path),
            "{path}: {diags:?}"
        );
    }
    let t = text.replace(r#""match": "x""#, r#""match": "[x""#);
    assert!(
        check(&t, &env)
            .iter()
            .any(|d| d.is_error() && d.path.contains("model_cost_map[1].match"))
    );
}
