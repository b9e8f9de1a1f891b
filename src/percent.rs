//! Percent-decoding shared by URL handling (API) and object-store names (artifacts).

/// Decodes `%XX` escapes into UTF-8, keeping malformed escapes and replacing invalid UTF-8.
pub fn decode(text: &str) -> String {
    String::from_utf8_lossy(&decode_bytes(text)).into_owned()
}

/// Decodes `%XX` escapes; `None` when the result is not valid UTF-8 (e.g. overlong encodings
/// such as `%C0%AE`, which some decoders would turn into `.`).
pub fn decode_utf8(text: &str) -> Option<String> {
    String::from_utf8(decode_bytes(text)).ok()
}

fn decode_bytes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{decode, decode_utf8};

    #[test]
    fn escapes_decode_and_malformed_ones_stay() {
        assert_eq!(decode("a%5Bb%5D"), "a[b]");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("caf%C3%A9"), "café");
        assert_eq!(decode_utf8("%C0%AE%C0%AE"), None);
        assert_eq!(decode_utf8("a%20b").as_deref(), Some("a b"));
    }
}
