//! Every validation rule, one row each: the config text and the exact, complete list of
//! diagnostics it must produce (severity, path and message), so cascading extra diagnostics fail
//! the test too.

mod common;

use common::*;

struct Case {
    name: &'static str,
    text: String,
    want: &'static [&'static str],
}

fn case(name: &'static str, text: impl Into<String>, want: &'static [&'static str]) -> Case {
    Case {
        name,
        text: text.into(),
        want,
    }
}

#[track_caller]
fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let got = diags(&c.text);
        if got != c.want {
            failures.push(format!(
                "--- {}\n{}\nwant:\n  {}\ngot:\n  {}",
                c.name,
                c.text,
                c.want.join("\n  "),
                got.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn baselines_are_clean() {
    run(vec![
        case("provider baseline", with_provider(P_OK), &[]),
        case("grants baseline", with_grants(ADMIN_ALL), &[]),
        case("top baseline", with_top(""), &[]),
        case("iris baseline", with_iris(""), &[]),
    ]);
}

#[test]
fn syntax_and_shape() {
    run(vec![
        case(
            "comments and trailing commas",
            format!(
                "// top\n/* block */\n{{\n  \"providers\": {{ \"p\": {{ {P_OK}, /* inline */ }}, }}, // end\n  \"grants\": [{ADMIN_ALL},],\n}}\n"
            ),
            &[],
        ),
        case(
            "syntax error",
            "{\n  \"providers\": {}\n  \"grants\": []\n}",
            &["error: invalid HuJSON: Expected comma on line 3 column 3"],
        ),
        case("empty file", "", &["error: config is empty"]),
        case(
            "root is not an object",
            "[]",
            &["error: expected an object, found an array"],
        ),
        case(
            "bad number literal",
            with_iris(r#""limits": {"max_body_bytes": 1e400}"#),
            &["error: iris.limits.max_body_bytes: invalid number \"1e400\": use a JSON number"],
        ),
    ]);
}

#[test]
fn providers_section() {
    run(vec![
        case(
            "providers missing",
            format!("{{\"grants\": [{ADMIN_ALL}]}}"),
            &["error: providers: missing required section"],
        ),
        case(
            "providers empty",
            r#"{"providers": {}}"#,
            &["warning: providers: no providers configured; every model request will fail"],
        ),
        case(
            "providers wrong type",
            r#"{"providers": []}"#,
            &["error: providers: expected an object, found an array"],
        ),
        case(
            "provider wrong type",
            r#"{"providers": {"p": "http://127.0.0.1"}}"#,
            &["error: providers.p: expected an object, found a string"],
        ),
        case(
            "provider id with a slash",
            format!("{{\"providers\": {{\"a/b\": {{ {P_OK} }}}}, \"grants\": [{ADMIN_ALL}]}}"),
            &[
                "error: providers[\"a/b\"]: invalid provider id \"a/b\": use letters, digits, '.', '_' and '-' (no '/')",
            ],
        ),
        case(
            "provider id with dots is fine",
            format!(
                "{{\"providers\": {{\"my.provider_1-x\": {{ {P_OK} }}}}, \"grants\": [{ADMIN_ALL}]}}"
            ),
            &[],
        ),
    ]);
}

#[test]
fn baseurl_rules() {
    let k = r#""apikey": "k", "models": ["m1"]"#;
    let p = |url: &str| with_provider(&format!("\"baseurl\": {url:?}, {k}"));
    run(vec![
        case(
            "missing",
            with_provider(k),
            &["error: providers.p.baseurl: missing required field"],
        ),
        case(
            "not a string",
            with_provider(&format!("\"baseurl\": 8080, {k}")),
            &["error: providers.p.baseurl: expected a string, found a number"],
        ),
        case(
            "relative",
            p("api.example"),
            &["error: providers.p.baseurl: invalid URL: relative URL without a base"],
        ),
        case(
            "ftp",
            p("ftp://127.0.0.1/"),
            &["error: providers.p.baseurl: URL scheme must be http or https, found \"ftp\""],
        ),
        case(
            "query",
            p("http://127.0.0.1/?key=secret"),
            &["error: providers.p.baseurl: URL must not contain a query string"],
        ),
        case(
            "fragment",
            p("http://127.0.0.1/#x"),
            &["error: providers.p.baseurl: URL must not contain a fragment"],
        ),
        case(
            "credentials",
            p("http://user:pw@127.0.0.1/"),
            &[
                "error: providers.p.baseurl: URL must not contain credentials; put the key in apikey",
            ],
        ),
        case(
            "whitespace",
            p(" http://127.0.0.1"),
            &["error: providers.p.baseurl: baseurl has leading or trailing whitespace"],
        ),
        case(
            "ends in /v1",
            p("http://127.0.0.1:8080/v1"),
            &[
                "warning: providers.p.baseurl: baseurl ends in /v1; iris appends the API path itself (the /v1 was removed)",
            ],
        ),
        case(
            "ends in /v1/",
            p("http://127.0.0.1:8080/api/v1/"),
            &[
                "warning: providers.p.baseurl: baseurl ends in /v1; iris appends the API path itself (the /v1 was removed)",
            ],
        ),
        case("path prefix is fine", p("http://127.0.0.1:8080/api/"), &[]),
        case("v1beta is not v1", p("http://127.0.0.1:8080/v1beta"), &[]),
    ]);
}

#[test]
fn apikey_and_auth_rules() {
    let u = r#""baseurl": "http://127.0.0.1", "models": ["m1"]"#;
    let p = |extra: &str| with_provider(&format!("{u}, {extra}"));
    run(vec![
        case(
            "absent",
            with_provider(u),
            &[
                "warning: providers.p.apikey: no API key configured; requests will be forwarded without a provider credential",
            ],
        ),
        case(
            "empty",
            p(r#""apikey": """#),
            &[
                "warning: providers.p.apikey: no API key configured; requests will be forwarded without a provider credential",
            ],
        ),
        case(
            "null means absent",
            p(r#""apikey": null"#),
            &[
                "warning: providers.p.apikey: no API key configured; requests will be forwarded without a provider credential",
            ],
        ),
        case(
            "keyfile",
            p(r#""apikey": "keyfile::{\"type\": \"service_account\"}""#),
            &[
                "warning: providers.p.apikey: keyfile:: service-account keys are not supported yet; requests will be forwarded without a provider credential",
            ],
        ),
        case(
            "line break in key",
            p(r#""apikey": "sk-abc\r\nX-Evil: 1""#),
            &[
                "error: providers.p.apikey: API key contains a line break or NUL character and cannot be sent in a header",
            ],
        ),
        case(
            "auth_mode none needs no key",
            p(r#""auth_mode": "none""#),
            &[],
        ),
        case(
            "auth_mode values",
            p(r#""apikey": "k", "auth_mode": "passthrough""#),
            &[],
        ),
        case(
            "auth_mode invalid",
            p(r#""apikey": "k", "auth_mode": "forward""#),
            &[
                "error: providers.p.auth_mode: invalid auth_mode \"forward\": expected \"override\", \"passthrough\" or \"none\"",
            ],
        ),
        case(
            "authorization invalid is a warning",
            p(r#""apikey": "k", "authorization": "basic""#),
            &[
                "warning: providers.p.authorization: invalid authorization \"basic\": expected \"bearer\", \"x-api-key\" or \"x-goog-api-key\"; using \"bearer\"",
            ],
        ),
        case(
            "authorization wrong type",
            p(r#""apikey": "k", "authorization": true"#),
            &["error: providers.p.authorization: expected a string, found a boolean"],
        ),
    ]);
}

#[test]
fn models_rules() {
    let u = r#""baseurl": "http://127.0.0.1", "apikey": "k""#;
    let p = |models: &str| with_provider(&format!("{u}, \"models\": {models}"));
    run(vec![
        case(
            "missing",
            with_provider(u),
            &["error: providers.p.models: missing required field"],
        ),
        case(
            "empty",
            p("[]"),
            &["error: providers.p.models: must list at least one model"],
        ),
        case(
            "string instead of array",
            p(r#""m1""#),
            &["error: providers.p.models: expected an array, found a string"],
        ),
        case(
            "element types",
            p(r#"["m1", 5, ""]"#),
            &[
                "error: providers.p.models[1]: expected a string, found a number",
                "error: providers.p.models[2]: model id is empty",
            ],
        ),
        case(
            "duplicates",
            p(r#"["m1", "m2", "m1"]"#),
            &["warning: providers.p.models[2]: duplicate model \"m1\" (already listed at index 0)"],
        ),
    ]);
}

#[test]
fn compatibility_and_other_provider_fields() {
    let p = |extra: &str| with_provider(&format!("{P_OK}, {extra}"));
    run(vec![
        case(
            "unknown flag",
            p(r#""compatibility": {"anthropic_message": true}"#),
            &[
                "warning: providers.p.compatibility.anthropic_message: unknown config key \"anthropic_message\" (did you mean \"anthropic_messages\"?)",
            ],
        ),
        case(
            "flag not a bool",
            p(r#""compatibility": {"openai_chat": "yes"}"#),
            &[
                "error: providers.p.compatibility.openai_chat: expected true or false, found a string",
            ],
        ),
        case(
            "nothing enabled",
            p(r#""compatibility": {"openai_chat": false}"#),
            &[
                "warning: providers.p.compatibility: no compatibility flag is enabled; no request can be routed to this provider",
            ],
        ),
        case(
            "all known flags",
            p(
                r#""compatibility": {"openai_chat": true, "openai_responses": true, "anthropic_messages": true, "gemini_generate_content": true, "google_generate_content": true, "google_raw_predict": true, "bedrock_model_invoke": true, "bedrock_converse": true, "experimental_gemini_cli_vertex_compat": true}"#,
            ),
            &[],
        ),
        case(
            "add_headers ok",
            p(r#""add_headers": ["X-Team: research", "X-Empty:", "anthropic-beta:  a,b "]"#),
            &[],
        ),
        case(
            "add_headers problems",
            p(
                r#""add_headers": ["NoColon", "Bad Name: x", "Host: evil", "X-Inject: a\r\nX-Evil: 1", ": v", 7]"#,
            ),
            &[
                "error: providers.p.add_headers[0]: expected \"Header-Name: value\" (no ':' found)",
                "error: providers.p.add_headers[1]: invalid header name \"Bad Name\": use letters, digits and !#$%&'*+-.^_`|~",
                "error: providers.p.add_headers[2]: header \"Host\" cannot be set with add_headers; iris manages it",
                "error: providers.p.add_headers[3]: value of header \"X-Inject\" contains a line break or NUL character",
                "error: providers.p.add_headers[4]: invalid header name \"\": use letters, digits and !#$%&'*+-.^_`|~",
                "error: providers.p.add_headers[5]: expected a string, found a number",
            ],
        ),
        case(
            "add_headers values the request path could not send",
            p(
                r#""add_headers": ["X-A: \u0001", "X-B: del\u007f", "X-C: caf\u00e9", "X-D: tab\tok"]"#,
            ),
            &[
                "error: providers.p.add_headers[0]: value of header \"X-A\" contains a control or non-ASCII character; header values must be visible ASCII",
                "error: providers.p.add_headers[1]: value of header \"X-B\" contains a control or non-ASCII character; header values must be visible ASCII",
                "error: providers.p.add_headers[2]: value of header \"X-C\" contains a control or non-ASCII character; header values must be visible ASCII",
            ],
        ),
        case(
            "add_headers not an array",
            p(r#""add_headers": "X-A: b""#),
            &["error: providers.p.add_headers: expected an array, found a string"],
        ),
        case(
            "preference must be an integer",
            p(r#""preference": 1.5"#),
            &["error: providers.p.preference: expected an integer, found 1.5"],
        ),
        case(
            "disabled must be a bool",
            p(r#""disabled": "yes""#),
            &["error: providers.p.disabled: expected true or false, found a string"],
        ),
        case(
            "aperture-only fields are accepted",
            p(
                r#""name": "P", "description": "d", "cost_basis": "anthropic", "model_cost_map": [{"match": "m*", "as": "claude-x", "adjustment": 1.0}], "preference": -3, "disabled": true"#,
            ),
            &[],
        ),
        case(
            "unknown cost basis",
            p(r#""cost_basis": "acme""#),
            &["warning: providers.p.cost_basis: unknown cost_basis \"acme\""],
        ),
        case(
            "unknown provider key",
            p(r#""basurl": "http://127.0.0.1""#),
            &[
                "warning: providers.p.basurl: unknown config key \"basurl\" (did you mean \"baseurl\"?)",
            ],
        ),
    ]);
}

#[test]
fn grants_rules() {
    const NO_ADMIN: &str = "warning: grants: no grant in grants or temp_grants assigns role:admin";
    run(vec![
        case(
            "no grants at all",
            with_provider(P_OK).replace(&format!("\"grants\": [{ADMIN_ALL}],"), ""),
            &[
                "warning: grants: providers are configured but no grants; every request will be denied",
            ],
        ),
        case(
            "empty grants",
            with_grants(""),
            &[
                "warning: grants: providers are configured but no grants; every request will be denied",
            ],
        ),
        case(
            "no admin",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "p/*"}]}}"#,
            ),
            &[NO_ADMIN],
        ),
        case(
            "grants not an array",
            with_top("").replace(&format!("[{ADMIN_ALL}]"), "{}"),
            &["error: grants: expected an array, found an object"],
        ),
        case(
            "dst is an error",
            with_grants(
                r#"{"src": ["*"], "dst": ["tag:aperture"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[
                "error: grants[0].dst: dst is not allowed in config grants: they always apply to this gateway (dst belongs in tailnet policy file grants)",
            ],
        ),
        case(
            "src missing",
            with_grants(
                r#"{"app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &["error: grants[0].src: missing required field"],
        ),
        case(
            "src empty",
            with_grants(
                r#"{"src": [], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[
                "warning: grants[0].src: src is empty: this grant matches no one and has no effect (list sources such as \"*\", \"alice@example.com\" or \"tag:ci\")",
            ],
        ),
        case(
            "src a string",
            with_grants(
                r#"{"src": "*", "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &["error: grants[0].src: expected an array, found a string"],
        ),
        case(
            "src element problems",
            with_grants(
                r#"{"src": ["", 3], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[
                "error: grants[0].src[0]: source is empty",
                "error: grants[0].src[1]: expected a string, found a number",
            ],
        ),
        case(
            "all src forms",
            with_grants(
                r#"{"src": ["*", "alice@example.com", "group:eng", "tag:ci", "tag:api,tag:prod", "(loopback)"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[],
        ),
        case(
            "unsorted tags",
            with_grants(
                r#"{"src": ["tag:prod,tag:api"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[
                "warning: grants[0].src[0]: tagged devices are matched by their tags sorted and joined with commas; \"tag:prod,tag:api\" never matches, write \"tag:api,tag:prod\"",
            ],
        ),
        case(
            "comma list of logins",
            with_grants(
                r#"{"src": ["a@example.com,b@example.com"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}"#,
            ),
            &[
                "warning: grants[0].src[0]: source \"a@example.com,b@example.com\" contains a comma but is not a tag list like \"tag:a,tag:b\"; it matches nothing (list each source as its own string)",
            ],
        ),
        case(
            "invalid role",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "owner"}, {"role": "admin", "models": "**"}]}}"#,
            ),
            &[
                "error: grants[0].app[\"tailscale.com/cap/aperture\"][0].role: invalid role \"owner\": expected \"user\" or \"admin\"",
            ],
        ),
        case(
            "models not a string",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin", "models": ["**"]}]}}"#,
            ),
            &[
                "error: grants[0].app[\"tailscale.com/cap/aperture\"][0].models: expected a string, found an array",
            ],
        ),
        case(
            "models glob does not compile",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin", "models": "p/[m"}]}}"#,
            ),
            &[
                "error: grants[0].app[\"tailscale.com/cap/aperture\"][0].models: invalid models pattern \"p/[m\": unclosed character class; missing ']'",
            ],
        ),
        case(
            "models empty",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin", "models": ""}]}}"#,
            ),
            &[
                "error: grants[0].app[\"tailscale.com/cap/aperture\"][0].models: invalid models pattern \"\": pattern is empty",
            ],
        ),
        case(
            "models match nothing",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "anthropic/**"}, {"models": "*/m1"}, {"models": "m1"}]}}"#,
            ),
            &[
                "warning: grants[0].app[\"tailscale.com/cap/aperture\"][1].models: grant models pattern \"anthropic/**\" matches no configured model",
                "warning: grants[0].app[\"tailscale.com/cap/aperture\"][3].models: grant models pattern \"m1\" matches no configured model",
            ],
        ),
        case(
            "grant with neither role nor models",
            with_grants(&format!(
                r#"{ADMIN_ALL}, {{"src": ["*"], "app": {{"tailscale.com/cap/aperture": [{{"read_metrics": true}}], "example.com/cap/custom": [{{"x": 1}}]}}}}"#
            )),
            &["warning: grants[1]: grant assigns neither a role nor models; it has no effect"],
        ),
        case(
            "grant with models only is fine (roles are a union)",
            with_grants(&format!(
                r#"{ADMIN_ALL}, {{"src": ["group:eng"], "app": {{"tailscale.com/cap/aperture": [{{"models": "p/m1"}}]}}}}"#
            )),
            &[],
        ),
        case(
            "ignored cap fields",
            with_grants(&format!(
                r#"{ADMIN_ALL}, {{"src": ["*"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user", "quotas": [{{"bucket": "b"}}], "send_hooks": [], "add_headers": [], "enable_chat_ui": true, "read_metrics": true, "set_cors": true, "cors_paths": [], "Access-Control-Allow-Origin": "*", "mcp_tools": [], "connectors": []}}]}}}}"#
            )),
            &[
                "warning: grants[1].app[\"tailscale.com/cap/aperture\"][0].quotas: iris does not enforce quotas yet; this field is ignored",
                "warning: grants[1].app[\"tailscale.com/cap/aperture\"][0].send_hooks: iris does not run hooks yet; this field is ignored",
                "warning: grants[1].app[\"tailscale.com/cap/aperture\"][0].add_headers: iris does not apply per-grant add_headers yet; this field is ignored",
            ],
        ),
        case(
            "unknown keys in grant and cap",
            with_grants(
                r#"{"src": ["*"], "srcs": [], "app": {"tailscale.com/cap/aperture": [{"role": "admin", "model": "**"}, {"models": "**"}]}}"#,
            ),
            &[
                "warning: grants[0].app[\"tailscale.com/cap/aperture\"][0].model: unknown config key \"model\" (did you mean \"models\"?)",
                "warning: grants[0].srcs: unknown config key \"srcs\" (did you mean \"src\"?)",
            ],
        ),
        case(
            "cap list wrong type",
            with_grants(
                r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": {"role": "admin"}}}"#,
            ),
            &[
                "error: grants[0].app[\"tailscale.com/cap/aperture\"]: expected an array, found an object",
            ],
        ),
    ]);
}

#[test]
fn temp_grants_rules() {
    let t = |temp: &str| {
        format!("{{\"providers\": {{\"p\": {{ {P_OK} }}}}, \"temp_grants\": [{temp}]}}")
    };
    run(vec![
        case(
            "legacy grants",
            t(
                r#"{"src": ["*"], "grants": [{"role": "admin"}, {"providers": [{"provider": "p", "model": "m1"}, {"provider": "p"}]}]}"#,
            ),
            &[],
        ),
        case(
            "hooks are ignored",
            t(
                r#"{"src": ["*"], "grants": [{"role": "admin"}, {"providers": [{"provider": "p"}]}, {"hook": {"match": {"events": ["entire_request"]}, "hook": "oso", "fields": []}}]}"#,
            ),
            &[
                "warning: temp_grants[0].grants[2].hook: iris does not run hooks yet; this entry is ignored",
            ],
        ),
        case(
            "undefined provider",
            t(
                r#"{"src": ["*"], "grants": [{"role": "admin"}, {"providers": [{"provider": "nope", "model": "m1"}]}]}"#,
            ),
            &[
                "warning: temp_grants[0].grants[1].providers[0].provider: references undefined provider \"nope\"",
            ],
        ),
        case(
            "unknown model of a known provider",
            t(
                r#"{"src": ["*"], "grants": [{"role": "admin"}, {"providers": [{"provider": "p", "model": "m9"}]}]}"#,
            ),
            &[
                "warning: temp_grants[0].grants[1].providers[0]: grant models pattern \"p/m9\" matches no configured model",
            ],
        ),
        case(
            "entry problems",
            t(
                r#"{"src": ["*"], "grants": [{"role": "root"}, {"providers": [{"model": "m1"}, {"provider": "p", "modle": "m1"}]}, {"rol": "admin"}]}"#,
            ),
            &[
                "error: temp_grants[0].grants[0].role: invalid role \"root\": expected \"user\" or \"admin\"",
                "error: temp_grants[0].grants[1].providers[0].provider: missing required field",
                "warning: temp_grants[0].grants[1].providers[1].modle: unknown config key \"modle\" (did you mean \"model\"?)",
                "warning: temp_grants[0].grants[2].rol: unknown config key \"rol\" (did you mean \"role\"?)",
            ],
        ),
        case(
            "src required",
            t(r#"{"grants": [{"role": "admin"}, {"providers": [{"provider": "p"}]}]}"#),
            &["error: temp_grants[0].src: missing required field"],
        ),
        case(
            "nothing granted",
            format!(
                "{{\"providers\": {{\"p\": {{ {P_OK} }}}}, \"grants\": [{ADMIN_ALL}], \"temp_grants\": [{{\"src\": [\"*\"], \"grants\": []}}]}}"
            ),
            &["warning: temp_grants[0]: grant assigns neither a role nor models; it has no effect"],
        ),
    ]);
}

#[test]
fn top_level_sections() {
    run(vec![
        case(
            "ignored sections warn when used",
            with_top(
                r#""quotas": {"q": {"capacity": "$10.00"}}, "hooks": {"oso": {"url": "http://127.0.0.1:1"}}, "exporters": {"s3": {}}, "mcp": {"servers": {}}, "connectors": {"servers": {}}, "flags": {"connectors": {"value": true}},"#,
            ),
            &[
                "warning: quotas: iris ignores the \"quotas\" section for now",
                "warning: hooks: iris ignores the \"hooks\" section for now",
                "warning: exporters: iris ignores the \"exporters\" section for now",
                "warning: mcp: iris ignores the \"mcp\" section for now",
                "warning: connectors: iris ignores the \"connectors\" section for now",
                "warning: flags: iris ignores the \"flags\" section for now",
            ],
        ),
        case(
            "empty ignored sections are silent",
            with_top(r#""quotas": {}, "hooks": {},"#),
            &[],
        ),
        case(
            "database and auto_cost_basis just parse",
            with_top(
                r#""database": {"retention": {"duration": "30d", "purge": ["captures"]}}, "auto_cost_basis": false,"#,
            ),
            &[],
        ),
        case(
            "section types",
            with_top(r#""quotas": [], "database": "x", "auto_cost_basis": "yes","#),
            &[
                "error: quotas: expected an object, found an array",
                "error: database: expected an object, found a string",
                "error: auto_cost_basis: expected true or false, found a string",
            ],
        ),
        case(
            "unknown top-level key",
            with_top(r#""provider": {}, "something_else": 1,"#),
            &[
                "warning: provider: unknown config key \"provider\" (did you mean \"providers\"?)",
                "warning: something_else: unknown config key \"something_else\"",
            ],
        ),
    ]);
}

#[test]
fn iris_section() {
    run(vec![
        case(
            "every field",
            with_iris(
                r#""listen": "[::1]:9000", "data_dir": "/var/lib/iris", "identity": {"whois": false, "tailscale_socket": "/run/ts.sock", "serve_headers": true, "keys": false, "loopback": false}, "limits": {"max_body_bytes": 1024}, "timeouts": {"connect": "250ms", "first_byte": "1m30s", "idle": "1h"}, "usage": {"flush_interval": "2s", "queue_capacity": 1, "batch_size": 1}"#,
            ),
            &[],
        ),
        case(
            "bad values",
            with_iris(
                r#""listen": "localhost:4747", "data_dir": "", "limits": {"max_body_bytes": 1023}, "timeouts": {"connect": "10", "first_byte": "0s", "idle": 300}, "usage": {"flush_interval": "1x", "queue_capacity": 0, "batch_size": -1}"#,
            ),
            &[
                "error: iris.listen: invalid listen address \"localhost:4747\": expected an IP address and port, like \"127.0.0.1:4747\" or \"[::1]:4747\"",
                "error: iris.data_dir: path is empty",
                "error: iris.limits.max_body_bytes: must be at least 1024",
                "error: iris.timeouts.connect: invalid duration \"10\": write numbers with units ms, s, m or h, like \"250ms\", \"10s\", \"5m\", \"1h30m\"",
                "error: iris.timeouts.first_byte: must be greater than zero",
                "error: iris.timeouts.idle: expected a string, found a number",
                "error: iris.usage.flush_interval: invalid duration \"1x\": write numbers with units ms, s, m or h, like \"250ms\", \"10s\", \"5m\", \"1h30m\"",
                "error: iris.usage.queue_capacity: must be at least 1",
                "error: iris.usage.batch_size: expected a non-negative integer, found -1",
            ],
        ),
        case(
            "browser hosts",
            with_iris(
                r#""browser_hosts": ["ai.example.com", "AI.Example.org.", "https://x.example", "a.example:443", "", 5, "a..b"]"#,
            ),
            &[
                "error: iris.browser_hosts[2]: expected a DNS host name without scheme, port or path, like \"ai.example.com\"",
                "error: iris.browser_hosts[3]: expected a DNS host name without scheme, port or path, like \"ai.example.com\"",
                "error: iris.browser_hosts[4]: expected a DNS host name without scheme, port or path, like \"ai.example.com\"",
                "error: iris.browser_hosts[5]: expected a string, found a number",
                "error: iris.browser_hosts[6]: expected a DNS host name without scheme, port or path, like \"ai.example.com\"",
            ],
        ),
        case(
            "every identity source off",
            with_iris(
                r#""identity": {"whois": false, "serve_headers": false, "keys": false, "loopback": false}"#,
            ),
            &[
                "warning: iris.identity: every identity source is disabled; every request will be denied",
            ],
        ),
        case(
            "unknown keys at every iris level",
            with_iris(
                r#""listn": "127.0.0.1:1", "identity": {"who_is": true}, "limits": {"max_body": 1}, "timeouts": {"read": "1s"}, "usage": {"batch": 1}"#,
            ),
            &[
                "warning: iris.identity.who_is: unknown config key \"who_is\" (did you mean \"whois\"?)",
                "warning: iris.limits.max_body: unknown config key \"max_body\"",
                "warning: iris.timeouts.read: unknown config key \"read\"",
                "warning: iris.usage.batch: unknown config key \"batch\"",
                "warning: iris.listn: unknown config key \"listn\" (did you mean \"listen\"?)",
            ],
        ),
        case(
            "section types",
            with_iris(r#""identity": [], "limits": 1, "timeouts": "10s", "usage": null"#),
            &[
                "error: iris.identity: expected an object, found an array",
                "error: iris.limits: expected an object, found a number",
                "error: iris.timeouts: expected an object, found a string",
            ],
        ),
    ]);
}

#[test]
fn duplicate_keys_at_every_level() {
    let text = format!(
        r#"{{
  "providers": {{
    "p": {{ {P_OK}, "models": ["m1"], "compatibility": {{"openai_chat": true, "openai_chat": true}} }},
    "p": {{ {P_OK} }},
  }},
  "grants": [{{"src": ["*"], "src": ["*"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user", "role": "admin", "models": "**"}}]}}}}],
  "iris": {{ "listen": "127.0.0.1:1", "listen": "127.0.0.1:2" }},
}}"#
    );
    assert_eq!(
        diags(&text),
        [
            "warning: providers.p.models: duplicate config key \"models\"",
            "warning: providers.p.compatibility.openai_chat: duplicate config key \"openai_chat\"",
            "warning: providers.p: duplicate config key \"p\"",
            "warning: grants[0].src: duplicate config key \"src\"",
            "warning: grants[0].app[\"tailscale.com/cap/aperture\"][0].role: duplicate config key \"role\"",
            "warning: iris.listen: duplicate config key \"listen\"",
        ]
    );
    // The last duplicate wins.
    let config = loaded(&text);
    assert_eq!(config.providers.len(), 1);
    assert_eq!(config.providers[0].models, ["m1", "m2"]);
    assert_eq!(
        config.grants[0].caps[0].role,
        Some(iris_config::Role::Admin)
    );
    assert_eq!(config.iris.listen.port(), 2);
}

#[test]
fn env_substitution_errors_are_reported_at_the_value() {
    let text = with_provider(
        r#""baseurl": "${BASE_URL}", "apikey": "${KEY_A}${KEY_B}", "models": ["${MODEL:-m1}", "$${literal}"], "add_headers": ["X-A: ${"]"#,
    );
    assert_eq!(
        diags(&text),
        [
            "error: providers.p.baseurl: unsubstituted macros: [BASE_URL]",
            "error: providers.p.apikey: unsubstituted macros: [KEY_A KEY_B]",
            "error: providers.p.add_headers[0]: unterminated macro: \"${\" without a closing \"}\" (write \"$${\" for a literal \"${\")",
        ]
    );
    let e = env(&[
        ("BASE_URL", "http://127.0.0.1:9000/v1"),
        ("KEY_A", "sk-"),
        ("KEY_B", "123"),
    ]);
    let text = with_provider(
        r#""baseurl": "${BASE_URL}", "apikey": "${KEY_A}${KEY_B}", "models": ["${MODEL:-m1}", "$${literal}"], "add_headers": ["X-Key: ${KEY_B}"]"#,
    );
    let loaded = iris_config::load(&text, &e).unwrap();
    assert_eq!(
        render(&loaded.warnings),
        [
            "warning: providers.p.baseurl: baseurl ends in /v1; iris appends the API path itself (the /v1 was removed)"
        ]
    );
    let p = &loaded.config.providers[0];
    assert_eq!(p.baseurl, "http://127.0.0.1:9000");
    assert_eq!(p.apikey.as_ref().map(|k| k.expose()), Some("sk-123"));
    assert_eq!(p.models, ["m1", "${literal}"]);
    assert_eq!(p.add_headers, [("X-Key".to_owned(), "123".to_owned())]);
}

#[test]
fn invalid_macro_name() {
    assert_eq!(
        diags(&with_iris(r#""data_dir": "/srv/${HOME-DIR}""#)),
        [
            "error: iris.data_dir: invalid macro name \"HOME-DIR\": use letters, digits and '_', not starting with a digit"
        ]
    );
}
