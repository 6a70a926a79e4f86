//! What must hold when the store-and-forward record decoder meets arbitrary bytes (a
//! corrupted or torn buffer file): never a panic, never a length past what was given,
//! and whatever it accepts is exactly what `record::encode` would have written.
//!
//! Shared by the libFuzzer target (`fuzz_targets/record_decoder.rs`) and the stable
//! test that replays the committed seeds (`proxy/tests/fuzz_corpus.rs`).

use leasehold_proxy::buffer::record::{self, HEADER_LEN, MAX_PAYLOAD};

/// Panics if `record::decode` mishandles `data`.
pub fn check(data: &[u8]) {
    if let Ok((decoded, used)) = record::decode(data) {
        assert!(used <= data.len());
        assert!(used > HEADER_LEN && used - HEADER_LEN <= MAX_PAYLOAD);
        assert!(record::is_write_path(
            decoded.target.split('?').next().unwrap_or("")
        ));
        // `encode` ends every body with a newline; such a record must re-encode exactly.
        if decoded.body.ends_with(b"\n") {
            let mut again = Vec::new();
            record::encode(&mut again, decoded.arrival_ns, decoded.target, decoded.body);
            assert_eq!(again, &data[..used]);
        }
    }
}
