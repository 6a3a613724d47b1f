//! Record builders shared by the integration tests.

pub mod faulty;

use iris_store::UsageRecord;

/// A plausible record with index `i` baked into its id-independent fields.
pub fn sample_record(i: u64) -> UsageRecord {
    let id = iris_store::new_record_id();
    UsageRecord {
        request_id: id.clone(),
        id,
        ts_ms: 1_700_000_000_000 + i64::try_from(i).unwrap(),
        login: Some(format!("user{}@example.com", i % 3)),
        display_name: Some("Some User".into()),
        tags: Vec::new(),
        node: Some("laptop".into()),
        node_id: Some("nXYZ".into()),
        identity_source: "whois".into(),
        key_id: None,
        api_family: "anthropic_messages".into(),
        method: "POST".into(),
        path: "/v1/messages".into(),
        requested_model: Some("claude-sonnet-4".into()),
        provider: Some("anthropic".into()),
        upstream_model: Some("claude-sonnet-4-20250514".into()),
        streaming: i.is_multiple_of(2),
        status: 200,
        error_class: None,
        input_tokens: 10 + i,
        output_tokens: 20 + i,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        usage_known: true,
        ttfb_ms: Some(30),
        duration_ms: 400,
        bytes_in: 1000,
        bytes_out: 2000,
        user_agent: Some("claude-cli/1.0".into()),
        session_id: None,
        session_kind: None,
        cost_usd: None,
        priced_as: None,
        tool_names: Vec::new(),
        capture_batch: None,
    }
}
