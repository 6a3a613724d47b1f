//! `iris setup`: golden files for every client's rendered configuration, merges into realistic
//! existing files (also golden), and the write path (backups, no-op runs, symlinks) in a tempdir.
//!
//! Golden files are compared byte for byte; `UPDATE_GOLDEN=1 cargo test -p iris-client` rewrites
//! them (then review the diff).
// Test helpers panic on setup failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use iris_client::setup::{
    self, MergeKind, ModelApi, SetupError, SetupModel, SetupOptions, SetupTarget,
};

const GW: &str = "http://127.0.0.1:4747";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with the golden file `name` (or rewrites it under `UPDATE_GOLDEN=1`).
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable ({e}); run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn fixture(name: &str) -> String {
    fs::read_to_string(golden_dir().join("merge").join(name)).unwrap()
}

fn models() -> Vec<SetupModel> {
    vec![
        SetupModel {
            id: "gpt-4o".into(),
            api: ModelApi::OpenAi,
        },
        SetupModel {
            id: "gpt-4o-mini".into(),
            api: ModelApi::OpenAi,
        },
        SetupModel {
            id: "claude-sonnet-4-5".into(),
            api: ModelApi::Anthropic,
        },
    ]
}

fn key_env() -> SetupOptions {
    SetupOptions {
        key_env: Some("IRIS_API_KEY".into()),
        ..SetupOptions::default()
    }
}

fn key_file() -> SetupOptions {
    SetupOptions {
        key_file: Some("/home/alice/.config/iris/key".into()),
        ..SetupOptions::default()
    }
}

#[test]
fn rendered_configs_match_golden_files() {
    let with_models = SetupOptions {
        models: models(),
        model: Some("claude-sonnet-4-5".into()),
        ..key_env()
    };
    let cases: Vec<(&str, SetupTarget, SetupOptions)> = vec![
        (
            "claude-code.json",
            SetupTarget::ClaudeCode,
            SetupOptions::default(),
        ),
        (
            "claude-code-key-env.json",
            SetupTarget::ClaudeCode,
            key_env(),
        ),
        (
            "claude-code-key-file.json",
            SetupTarget::ClaudeCode,
            key_file(),
        ),
        ("codex.toml", SetupTarget::Codex, SetupOptions::default()),
        ("codex-key-env.toml", SetupTarget::Codex, key_env()),
        ("codex-key-file.toml", SetupTarget::Codex, key_file()),
        ("gemini.env", SetupTarget::Gemini, SetupOptions::default()),
        (
            "opencode.json",
            SetupTarget::OpenCode,
            SetupOptions::default(),
        ),
        ("opencode-models.json", SetupTarget::OpenCode, with_models),
        ("opencode-key-file.json", SetupTarget::OpenCode, key_file()),
        ("env.sh", SetupTarget::Env, SetupOptions::default()),
        ("env-key-env.sh", SetupTarget::Env, key_env()),
        ("env-key-file.sh", SetupTarget::Env, key_file()),
    ];
    for (name, target, opts) in cases {
        let r = setup::render(target, GW, &opts).unwrap();
        check_golden(&format!("render/{name}"), &r.contents);
        assert_eq!(r.target, target);
        assert!(
            !r.contents.contains("iris_sk_"),
            "{name}: a key must never be written into a config"
        );
    }
}

#[test]
fn rendered_contents_are_valid_for_their_format() {
    let opts = SetupOptions {
        models: models(),
        ..key_file()
    };
    for target in SetupTarget::ALL {
        let r = setup::render(target, "https://iris.example.com/", &opts).unwrap();
        match r.merge {
            MergeKind::Json => {
                let v: serde_json::Value = serde_json::from_str(&r.contents)
                    .unwrap_or_else(|e| panic!("{target}: not JSON: {e}\n{}", r.contents));
                assert!(v.is_object());
            }
            MergeKind::Toml => {
                let doc: toml_edit::DocumentMut = r.contents.parse().unwrap();
                assert_eq!(doc["model_provider"].as_str(), Some("iris"));
                assert_eq!(
                    doc["model_providers"]["iris"]["base_url"].as_str(),
                    Some("https://iris.example.com/v1")
                );
            }
            MergeKind::DotEnv => assert!(
                r.contents
                    .lines()
                    .all(|l| l.starts_with('#') || l.contains('='))
            ),
            MergeKind::Print => assert!(r.contents.lines().all(|l| l.starts_with("export "))),
        }
    }
}

#[test]
fn claude_code_values() {
    let r = setup::render(
        SetupTarget::ClaudeCode,
        "http://ai/",
        &SetupOptions::default(),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.contents).unwrap();
    assert_eq!(
        v["env"]["ANTHROPIC_BASE_URL"], "http://ai",
        "no /v1 for Claude Code"
    );
    assert_eq!(v["apiKeyHelper"], "echo iris-placeholder");
    assert_eq!(r.display_path().as_deref(), Some("~/.claude/settings.json"));

    let r = setup::render(SetupTarget::ClaudeCode, "http://ai", &key_env()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.contents).unwrap();
    assert_eq!(v["apiKeyHelper"], "echo \"$IRIS_API_KEY\"");

    let spaced = SetupOptions {
        key_file: Some("/home/a b/it's".into()),
        ..SetupOptions::default()
    };
    let r = setup::render(SetupTarget::ClaudeCode, "http://ai", &spaced).unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.contents).unwrap();
    assert_eq!(v["apiKeyHelper"], r"cat '/home/a b/it'\''s'");
}

#[test]
fn gateway_url_with_v1_is_taken_back_to_the_root() {
    let r = setup::render(
        SetupTarget::Env,
        "http://127.0.0.1:4747/v1/",
        &SetupOptions::default(),
    )
    .unwrap();
    assert!(
        r.contents
            .contains("OPENAI_BASE_URL=http://127.0.0.1:4747/v1\n")
    );
    assert!(!r.contents.contains("/v1/v1"));
    assert!(
        r.contents
            .contains("ANTHROPIC_BASE_URL=http://127.0.0.1:4747\n")
    );
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let e = setup::render(
        SetupTarget::Codex,
        "127.0.0.1:4747",
        &SetupOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not a gateway URL") && e.contains("http://"),
        "{e}"
    );
    let bad_env = SetupOptions {
        key_env: Some("X; rm -rf ~".into()),
        ..SetupOptions::default()
    };
    let e = setup::render(SetupTarget::ClaudeCode, GW, &bad_env).unwrap_err();
    assert!(matches!(e, SetupError::InvalidOption(_)), "{e}");
    let e = setup::write(
        &setup::render(SetupTarget::Env, GW, &SetupOptions::default()).unwrap(),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    assert!(matches!(e, SetupError::NoFile { .. }), "{e}");
}

#[test]
fn gemini_with_a_key_tells_how_to_send_it() {
    let r = setup::render(SetupTarget::Gemini, GW, &key_env()).unwrap();
    assert!(r.contents.contains("GEMINI_API_KEY=not-needed\n"));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("export GEMINI_API_KEY=\"$IRIS_API_KEY\"")),
        "{:?}",
        r.notes
    );
}

// ---- merges into existing files -------------------------------------------------------------

fn merged(target: SetupTarget, opts: &SetupOptions, input: &str) -> String {
    let r = setup::render(target, GW, opts).unwrap();
    setup::merge(&r, input).unwrap()
}

#[test]
fn claude_code_merge_keeps_other_settings() {
    let input = fixture("claude-settings.in.json");
    let out = merged(SetupTarget::ClaudeCode, &key_env(), &input);
    check_golden("merge/claude-settings.out.json", &out);

    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["env"]["ANTHROPIC_BASE_URL"], GW);
    assert_eq!(v["apiKeyHelper"], "echo \"$IRIS_API_KEY\"");
    assert_eq!(v["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
    assert!(
        v["env"].get("ANTHROPIC_API_KEY").is_none(),
        "the old key would win over the helper"
    );
    assert_eq!(v["model"], "opus", "an unrelated key is kept");
    assert_eq!(v["permissions"]["allow"][1], "Bash(cargo test:*)");
    assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "Edit");
    assert_eq!(v["includeCoAuthoredBy"], false);
    // The untouched part is byte for byte what the user wrote.
    let perms_start = input.find("\"permissions\"").unwrap();
    let perms_end = input.find("  \"env\"").unwrap();
    assert!(out.contains(&input[perms_start..perms_end]));
    // Merging again changes nothing.
    assert_eq!(merged(SetupTarget::ClaudeCode, &key_env(), &out), out);
}

#[test]
fn codex_merge_keeps_comments_and_other_providers() {
    let input = fixture("codex-config.in.toml");
    let out = merged(SetupTarget::Codex, &key_env(), &input);
    check_golden("merge/codex-config.out.toml", &out);

    let doc: toml_edit::DocumentMut = out.parse().unwrap();
    assert_eq!(doc["model_provider"].as_str(), Some("iris"));
    assert_eq!(doc["model"].as_str(), Some("gpt-5.1-codex"));
    let iris = &doc["model_providers"]["iris"];
    assert_eq!(iris["base_url"].as_str(), Some("http://127.0.0.1:4747/v1"));
    assert_eq!(iris["env_key"].as_str(), Some("IRIS_API_KEY"));
    assert_eq!(iris["wire_api"].as_str(), Some("responses"));
    assert!(
        iris.get("request_max_retries").is_none(),
        "our table is replaced whole"
    );
    assert_eq!(
        doc["model_providers"]["openai-proxy"]["base_url"].as_str(),
        Some("http://proxy.internal:10000/v1")
    );
    assert_eq!(
        doc["shell_environment_policy"]["inherit"].as_str(),
        Some("core")
    );
    for kept in [
        "# Codex configuration (hand-written)",
        "# which provider Codex uses\nmodel_provider = \"iris\"\n",
        "# The old proxy; kept for rollback.",
        "# iris, set up last month",
        "[mcp_servers.docs]",
    ] {
        assert!(out.contains(kept), "lost {kept:?}:\n{out}");
    }
    // model_provider must stay a top-level key, not fall under a [table].
    let first_table = out.find("\n[").unwrap();
    assert!(out.find("model_provider = \"iris\"").unwrap() < first_table);
    assert_eq!(merged(SetupTarget::Codex, &key_env(), &out), out);
}

#[test]
fn codex_merge_into_a_file_with_only_tables() {
    let input = "[tui]\nnotifications = true\n";
    let out = merged(SetupTarget::Codex, &SetupOptions::default(), input);
    let doc: toml_edit::DocumentMut = out.parse().unwrap();
    assert_eq!(doc["model_provider"].as_str(), Some("iris"));
    assert_eq!(doc["tui"]["notifications"].as_bool(), Some(true));
    assert!(out.starts_with("model_provider = \"iris\"\n"), "{out}");
}

#[test]
fn opencode_merge_keeps_comments_and_other_providers() {
    let opts = SetupOptions {
        models: models(),
        ..SetupOptions::default()
    };
    let input = fixture("opencode.in.json");
    let out = merged(SetupTarget::OpenCode, &opts, &input);
    check_golden("merge/opencode.out.json", &out);
    assert!(out.contains("// my OpenCode setup"));
    assert!(out.contains("\"Ollama (local)\""));
    assert!(out.contains("\"theme\": \"tokyonight\""));
    assert!(out.contains("\"@ai-sdk/anthropic\""));
    assert!(out.contains("\"baseURL\": \"http://127.0.0.1:4747/v1\""));
    assert_eq!(merged(SetupTarget::OpenCode, &opts, &out), out);
}

#[test]
fn gemini_merge_replaces_lines_in_place() {
    let input = fixture("gemini.in.env");
    let out = merged(SetupTarget::Gemini, &SetupOptions::default(), &input);
    check_golden("merge/gemini.out.env", &out);
    assert!(out.starts_with("# personal Gemini settings\nGEMINI_MODEL=gemini-2.5-pro\n"));
    assert!(out.contains("\nGOOGLE_GEMINI_BASE_URL=http://127.0.0.1:4747\nDEBUG=false\n"));
    assert!(out.ends_with("GEMINI_API_KEY=not-needed\n"));
}

#[test]
fn broken_existing_files_are_left_alone() {
    let r = setup::render(SetupTarget::ClaudeCode, GW, &SetupOptions::default()).unwrap();
    let e = setup::merge(&r, "{ \"env\": ").unwrap_err();
    assert!(matches!(e, SetupError::Parse { .. }), "{e}");
    let e = setup::merge(&r, "[1, 2]").unwrap_err();
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    let e = setup::merge(&r, "{\"env\": \"ANTHROPIC_BASE_URL=x\"}").unwrap_err();
    assert!(e.to_string().contains("`env`"), "{e}");
    let c = setup::render(SetupTarget::Codex, GW, &SetupOptions::default()).unwrap();
    let e = setup::merge(&c, "model = \n").unwrap_err();
    assert!(e.to_string().contains("not valid TOML"), "{e}");
    let e = setup::merge(&c, "model_providers = { x = { name = \"x\" } }\n").unwrap_err();
    assert!(e.to_string().contains("inline table"), "{e}");
}

// ---- writing ----------------------------------------------------------------------------------

#[test]
fn write_creates_then_backs_up_then_skips_identical() {
    let home = tempfile::tempdir().unwrap();
    let first = setup::render(SetupTarget::ClaudeCode, GW, &SetupOptions::default()).unwrap();
    let report = setup::write(&first, home.path()).unwrap();
    let file = home.path().join(".claude/settings.json");
    assert_eq!(report.path, file);
    assert!(report.created && report.changed);
    assert_eq!(report.backup, None);
    assert_eq!(fs::read_to_string(&file).unwrap(), first.contents);

    // Same config again: nothing written, no backup.
    let again = setup::write(&first, home.path()).unwrap();
    assert!(!again.changed && !again.created);
    assert_eq!(again.backup, None);

    // A different config: the old file is copied aside first.
    let second =
        setup::render(SetupTarget::ClaudeCode, "http://127.0.0.1:9999", &key_env()).unwrap();
    let report = setup::write_to(&second, &file, 1_700_000_000).unwrap();
    let backup = report.backup.clone().unwrap();
    assert_eq!(
        backup,
        home.path().join(".claude/settings.json.bak-1700000000")
    );
    assert_eq!(fs::read_to_string(&backup).unwrap(), first.contents);
    assert!(
        fs::read_to_string(&file)
            .unwrap()
            .contains("http://127.0.0.1:9999")
    );

    // Same second, another change: the backup name does not collide.
    let third =
        setup::render(SetupTarget::ClaudeCode, "http://127.0.0.1:9998", &key_env()).unwrap();
    let report = setup::write_to(&third, &file, 1_700_000_000).unwrap();
    assert_eq!(
        report.backup.unwrap(),
        home.path().join(".claude/settings.json.bak-1700000000-1")
    );
    assert!(
        fs::read_to_string(&backup)
            .unwrap()
            .contains("127.0.0.1:4747")
    );

    // No temporary files are left behind.
    let names: Vec<String> = fs::read_dir(home.path().join(".claude"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("iris-tmp")), "{names:?}");
}

#[test]
fn write_merges_into_an_existing_file_and_reports_what_it_removed() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".claude/settings.json");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let input = fixture("claude-settings.in.json");
    fs::write(&file, &input).unwrap();
    let r = setup::render(SetupTarget::ClaudeCode, GW, &key_env()).unwrap();
    let report = setup::write(&r, home.path()).unwrap();
    assert!(report.changed && !report.created);
    assert_eq!(fs::read_to_string(report.backup.unwrap()).unwrap(), input);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("removed env.ANTHROPIC_API_KEY")),
        "{:?}",
        report.notes
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        setup::merge(&r, &input).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn write_keeps_permissions_and_follows_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let dotfiles = home.path().join("dotfiles/codex.toml");
    fs::create_dir_all(dotfiles.parent().unwrap()).unwrap();
    fs::write(&dotfiles, "# mine\nmodel = \"o3\"\n").unwrap();
    fs::set_permissions(&dotfiles, fs::Permissions::from_mode(0o600)).unwrap();
    let link = home.path().join(".codex/config.toml");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&dotfiles, &link).unwrap();

    let r = setup::render(SetupTarget::Codex, GW, &SetupOptions::default()).unwrap();
    let report = setup::write(&r, home.path()).unwrap();
    assert_eq!(report.path, fs::canonicalize(&dotfiles).unwrap());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = fs::read_to_string(&link).unwrap();
    assert!(
        text.starts_with("# mine\nmodel = \"o3\"\nmodel_provider = \"iris\"\n"),
        "{text}"
    );
    let mode = fs::metadata(&dotfiles).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn write_refuses_to_clobber_a_broken_file() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".config/opencode/opencode.json");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "{ \"provider\": { ").unwrap();
    let r = setup::render(SetupTarget::OpenCode, GW, &SetupOptions::default()).unwrap();
    let e = setup::write(&r, home.path()).unwrap_err();
    assert!(e.to_string().contains("opencode.json"), "{e}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "{ \"provider\": { ");
    assert_eq!(
        fs::read_dir(file.parent().unwrap()).unwrap().count(),
        1,
        "no backup, no temp file"
    );
}
