//! Reading a stored capture document (`iris_capture::stored_document` on the compact form of
//! `iris_capture::stored`): the store's bytes, which a damaged disk or an old bug may have
//! garbled. The input is the document after its marker.
//!
//! Properties: no panic and no hang; a document that reads is served as one JSON value (the
//! hand-written JSON writer escapes every text, and the reassembled message it copies in as it
//! is was checked to be JSON); the same document with the bodies given beside it reads too.
#![no_main]

use iris_capture::stored::COMPACT;
use iris_capture::{Redactor, stored_document};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let redactor = Redactor::default();
    let document = format!("{COMPACT}{text}");
    let Ok(json) = stored_document(document.clone(), None, None, &redactor) else {
        return;
    };
    assert!(
        serde_json::from_str::<&RawValue>(&json).is_ok(),
        "not JSON: {json}"
    );
    let with_bodies = stored_document(
        document,
        Some("{\"model\":\"m\"}".into()),
        Some("data: {\"x\":1}\n\n".into()),
        &redactor,
    )
    .expect("a document that reads without its bodies reads with them");
    assert!(
        serde_json::from_str::<&RawValue>(&with_bodies).is_ok(),
        "not JSON: {with_bodies}"
    );
});
