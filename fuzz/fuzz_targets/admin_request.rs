//! Fuzz the admin HTTP request head parser (`api::admin::parse_request`): never panics; a head
//! without the blank line is "incomplete" below the size limit and an error at it; a parsed GET
//! path carries no query string (a POST target keeps it); every error is a 4xx response whose
//! bytes are well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::api::admin::{REQUEST_HEAD_BYTES_MAX, Request, parse_request};

fuzz_target!(|data: &[u8]| {
    let terminated = data.windows(4).any(|w| w == b"\r\n\r\n");
    match parse_request(data) {
        Ok(None) => {
            assert!(!terminated, "a complete head was reported incomplete");
            assert!(data.len() < REQUEST_HEAD_BYTES_MAX);
        }
        Ok(Some(Request::Get(path))) => {
            assert!(terminated);
            assert!(!path.contains('?'), "query string left in {path:?}");
            assert!(path.len() <= data.len());
        }
        Ok(Some(Request::Post(target))) => {
            assert!(terminated);
            assert!(target.len() <= data.len());
        }
        Ok(Some(Request::OtherMethod)) => assert!(terminated),
        Err(response) => {
            assert!(
                (400..500).contains(&response.status),
                "status {}",
                response.status
            );
            let bytes = response.to_bytes();
            let text = String::from_utf8_lossy(&bytes);
            let content_length = format!("Content-Length: {}\r\n", response.body.len());
            assert!(text.starts_with("HTTP/1.1 4") && text.contains(&content_length));
        }
    }
});
