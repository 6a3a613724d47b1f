//! Inputs the fuzz targets (fuzz/fuzz_targets/) found that broke a property, minimised, with
//! the property they broke. Each must keep passing.

use iris_providers::{PeekError, peek_request, with_include_usage, with_model};

/// peek_model: `{"":"\xAE"}` (invalid UTF-8 in a field the peek skips) was accepted by the peek
/// but refused by the rewrites, so the same body got through when no rewrite was needed and a
/// 400 when one was, and reached the provider as invalid JSON. The peek now refuses it, at the
/// byte where the UTF-8 breaks.
#[test]
fn invalid_utf8_in_a_skipped_field_is_not_json() {
    let crash: &[u8] = b"{\"\":\"\xae\"}";
    assert_eq!(
        peek_request(crash),
        Err(PeekError::NotJson("invalid UTF-8 at byte 5".into()))
    );
    assert!(with_model(crash, "m").is_err());
    assert!(with_include_usage(crash).is_err());

    // The same shape inside a real request: the peek and both rewrites agree.
    let body = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xc3\"}]}";
    assert!(matches!(peek_request(body), Err(PeekError::NotJson(_))));
    assert!(with_model(body, "provider/m").is_err());
    // Valid UTF-8 (here a 2-byte character) is of course still fine.
    let ok = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"café\"}]}";
    assert_eq!(
        peek_request(ok.as_bytes()).map(|p| p.model),
        Ok(Some("m".to_owned()))
    );
    assert!(with_model(ok.as_bytes(), "provider/m").is_ok());
}
