//! Property lists that come from outside (a device's check-in or command report, a profile in a
//! GitOps repository, a raw message in an old MDM's database), read within limits.
//!
//! `plist::from_bytes` builds values by recursion: a body that nests arrays or dictionaries
//! ten thousand deep (300 KB) overflows the stack and aborts the whole server, before anyone
//! checked who sent it. A binary plist can also share one container from many places, so a
//! small body expands into a huge value. Here the value is built from the parser's event stream
//! with an explicit stack, and nesting depth, the number of elements and the bytes of strings
//! and data are counted as they arrive; past a limit the input is refused with a clear error,
//! never a crash and never unbounded memory. The serde types are then filled from the bounded
//! value (`plist::from_value`, whose recursion the depth limit bounds).
//!
//! An XML property list must also be complete: one without its closing `</plist>` (cut off in
//! transit or in a dump) is refused rather than read as whatever came before the cut.

use std::io::Cursor;

use plist::stream::{Event, Reader};
use plist::{Dictionary, Value};

/// How much a property list may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest nesting of arrays and dictionaries.
    pub max_depth: usize,
    /// Largest input, in bytes.
    pub max_bytes: usize,
}

/// Device messages and profiles nest a handful of levels (a profile's preference payloads a
/// dozen or so); 64 leaves room and keeps recursion over the value trivially shallow.
pub const MAX_DEPTH: usize = 64;

impl Limits {
    /// For bodies already bounded by the caller (the server's body limit, a file size limit).
    pub const fn depth_only() -> Self {
        Self {
            max_depth: MAX_DEPTH,
            max_bytes: usize::MAX,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::depth_only()
    }
}

/// Why a property list was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlistError {
    #[error("the property list is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    #[error("the property list nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error(
        "the property list expands to more than {limit} elements or bytes (a binary plist sharing its containers)"
    )]
    Expands { limit: usize },
    #[error("the XML property list is incomplete: it does not end with `</plist>`")]
    Truncated,
    #[error("{0}")]
    Invalid(String),
}

enum Frame {
    Array(Vec<Value>),
    Dict(Dictionary, Option<String>),
}

/// Parse a property list (XML or binary: what Apple's devices and tools write) within `limits`.
pub fn parse(bytes: &[u8], limits: Limits) -> Result<Value, PlistError> {
    if bytes.len() > limits.max_bytes {
        return Err(PlistError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if looks_like_xml(bytes) {
        if !ends_with_plist_close(bytes) {
            return Err(PlistError::Truncated);
        }
    } else if !bytes.starts_with(b"bplist") {
        return Err(PlistError::Invalid(
            "not an XML or binary property list".into(),
        ));
    }
    // Every element of a well-formed plist costs at least a byte of input (a reference in a
    // binary one); sharing may multiply that a little (strings uniqued across dictionaries),
    // a hostile file by much more.
    let budget = bytes.len().saturating_mul(4).saturating_add(1 << 20);
    let (mut elements, mut payload) = (0usize, 0usize);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    for event in Reader::new(Cursor::new(bytes)) {
        let event = event.map_err(|e| PlistError::Invalid(e.to_string()))?;
        if root.is_some() {
            return Err(PlistError::Invalid(
                "more than one value at the top level".into(),
            ));
        }
        elements += 1;
        let value = match event {
            Event::StartArray(_) | Event::StartDictionary(_) => {
                if stack.len() >= limits.max_depth {
                    return Err(PlistError::TooDeep {
                        limit: limits.max_depth,
                    });
                }
                stack.push(if matches!(event, Event::StartArray(_)) {
                    Frame::Array(Vec::new())
                } else {
                    Frame::Dict(Dictionary::new(), None)
                });
                None
            }
            Event::EndCollection => match stack.pop() {
                Some(Frame::Array(a)) => Some(Value::Array(a)),
                Some(Frame::Dict(d, None)) => Some(Value::Dictionary(d)),
                Some(Frame::Dict(_, Some(k))) => {
                    return Err(PlistError::Invalid(format!(
                        "the dictionary key `{k}` has no value"
                    )));
                }
                None => return Err(PlistError::Invalid("an unbalanced end".into())),
            },
            Event::Boolean(b) => Some(Value::Boolean(b)),
            Event::Data(d) => {
                payload += d.len();
                Some(Value::Data(d.into_owned()))
            }
            Event::Date(d) => Some(Value::Date(d)),
            Event::Integer(i) => Some(Value::Integer(i)),
            Event::Real(r) => Some(Value::Real(r)),
            Event::String(s) => {
                payload += s.len();
                // A string where a dictionary expects its next key is that key.
                if let Some(Frame::Dict(_, key @ None)) = stack.last_mut() {
                    *key = Some(s.into_owned());
                    None
                } else {
                    Some(Value::String(s.into_owned()))
                }
            }
            Event::Uid(u) => Some(Value::Uid(u)),
            _ => return Err(PlistError::Invalid("an element of an unknown kind".into())),
        };
        if elements > budget || payload > budget {
            return Err(PlistError::Expands { limit: budget });
        }
        let Some(value) = value else { continue };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Array(a)) => a.push(value),
            Some(Frame::Dict(d, key)) => match key.take() {
                Some(k) => {
                    d.insert(k, value);
                }
                None => {
                    return Err(PlistError::Invalid(
                        "a dictionary key that is not a string".into(),
                    ));
                }
            },
        }
    }
    if !stack.is_empty() {
        return Err(PlistError::Invalid(
            "the property list ends inside a container".into(),
        ));
    }
    root.ok_or_else(|| PlistError::Invalid("no value".into()))
}

/// Parse and deserialize within `limits`.
pub fn from_bytes_within<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: Limits,
) -> Result<T, PlistError> {
    let value = parse(bytes, limits)?;
    plist::from_value(&value).map_err(|e| PlistError::Invalid(e.to_string()))
}

/// Parse and deserialize with the default depth limit (the caller bounds the size).
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PlistError> {
    from_bytes_within(bytes, Limits::default())
}

fn trimmed_start(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn looks_like_xml(bytes: &[u8]) -> bool {
    trimmed_start(bytes).starts_with(b"<")
}

fn ends_with_plist_close(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != 0)
        .map_or(0, |i| i + 1);
    bytes[..end].ends_with(b"</plist>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_xml(depth: usize, open: &str, close: &str) -> Vec<u8> {
        let mut s = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string><key>X</key>"#,
        );
        for _ in 0..depth {
            s.push_str(open);
        }
        for _ in 0..depth {
            s.push_str(close);
        }
        s.push_str("</dict></plist>");
        s.into_bytes()
    }

    /// A binary plist whose arrays nest `depth` deep (one object per level).
    fn nested_binary(depth: usize) -> Vec<u8> {
        let mut v = Value::Array(Vec::new());
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        let mut out = Vec::new();
        // The plist writer recurses too: deep ones are written by hand.
        if depth <= 32 {
            v.to_writer_binary(&mut out).unwrap();
            return out;
        }
        // bplist00, objects: object i is an array holding object i+1; the last is empty.
        let n = depth + 1;
        let mut offsets = Vec::with_capacity(n);
        out.extend_from_slice(b"bplist00");
        let ref_size = if n < 256 { 1 } else { 2 };
        for i in 0..n {
            offsets.push(out.len());
            if i + 1 < n {
                out.push(0xA1);
                let r = (i + 1) as u64;
                out.extend_from_slice(&r.to_be_bytes()[8 - ref_size..]);
            } else {
                out.push(0xA0);
            }
        }
        let table = out.len();
        let off_size = if table < 65_536 { 2 } else { 4 };
        for o in &offsets {
            out.extend_from_slice(&(*o as u64).to_be_bytes()[8 - off_size..]);
        }
        let mut trailer = [0u8; 32];
        trailer[6] = off_size as u8;
        trailer[7] = ref_size as u8;
        trailer[8..16].copy_from_slice(&(n as u64).to_be_bytes());
        trailer[24..32].copy_from_slice(&(table as u64).to_be_bytes());
        out.extend_from_slice(&trailer);
        out
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // See: issue 11 §1 (a 10,000-deep check-in aborted `serve`).
        for (open, close) in [("<array>", "</array>"), ("<dict><key>k</key>", "</dict>")] {
            let xml = nested_xml(20_000, open, close);
            assert_eq!(
                parse(&xml, Limits::default()),
                Err(PlistError::TooDeep { limit: MAX_DEPTH })
            );
        }
        let bin = nested_binary(20_000);
        assert_eq!(
            parse(&bin, Limits::default()),
            Err(PlistError::TooDeep { limit: MAX_DEPTH })
        );
        // Just within the limit is fine, in both formats.
        let ok = nested_xml(MAX_DEPTH - 1, "<array>", "</array>");
        assert!(parse(&ok, Limits::default()).is_ok());
        assert!(parse(&nested_binary(30), Limits::default()).is_ok());
    }

    #[test]
    fn a_binary_plist_sharing_one_container_everywhere_is_refused() {
        // 40 arrays each holding the next one twice: 2^40 elements from a few hundred bytes.
        let n = 41usize;
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(out.len());
            if i + 1 < n {
                out.push(0xA2);
                out.push((i + 1) as u8);
                out.push((i + 1) as u8);
            } else {
                out.push(0xA0);
            }
        }
        let table = out.len();
        for o in &offsets {
            out.extend_from_slice(&(*o as u16).to_be_bytes());
        }
        let mut trailer = [0u8; 32];
        trailer[6] = 2;
        trailer[7] = 1;
        trailer[8..16].copy_from_slice(&(n as u64).to_be_bytes());
        trailer[24..32].copy_from_slice(&(table as u64).to_be_bytes());
        out.extend_from_slice(&trailer);
        assert!(matches!(
            parse(&out, Limits::default()),
            Err(PlistError::Expands { .. })
        ));
    }

    #[test]
    fn truncated_xml_and_oversized_input_are_refused() {
        let whole = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>A</key><string>b</string></dict></plist>
"#;
        assert!(parse(whole, Limits::default()).is_ok());
        let cut = &whole[..whole.len() - 10];
        assert_eq!(parse(cut, Limits::default()), Err(PlistError::Truncated));
        let small = Limits {
            max_depth: 8,
            max_bytes: 16,
        };
        assert!(matches!(
            parse(whole, small),
            Err(PlistError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage", Limits::default()),
            Err(PlistError::Invalid(_))
        ));
    }

    #[test]
    fn values_round_trip_through_both_formats() {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "TokenUpdate".into());
        d.insert("Token".into(), Value::Data(vec![1, 2, 3]));
        d.insert(
            "List".into(),
            Value::Array(vec![1u64.into(), true.into(), 2.5f64.into()]),
        );
        let v = Value::Dictionary(d);
        let (mut xml, mut bin) = (Vec::new(), Vec::new());
        v.to_writer_xml(&mut xml).unwrap();
        v.to_writer_binary(&mut bin).unwrap();
        assert_eq!(parse(&xml, Limits::default()).unwrap(), v);
        assert_eq!(parse(&bin, Limits::default()).unwrap(), v);
    }
}

/// Property tests: no input panics or runs away; valid check-ins and reports round-trip.
#[cfg(test)]
mod props {
    use plist::{Dictionary, Value};
    use proptest::prelude::*;

    use crate::apple::checkin::{self, CheckinMessage};
    use crate::apple::command;
    use crate::fuzz::{config, mutate};

    /// Any text a device could send: every character but the controls XML cannot carry.
    fn text() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{0,40}"
    }

    fn authenticate(udid: &str, serial: &str, name: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "Authenticate".into());
        d.insert("UDID".into(), udid.into());
        d.insert("Topic".into(), "com.apple.mgmt.External.t".into());
        d.insert("SerialNumber".into(), serial.into());
        d.insert("DeviceName".into(), name.into());
        d
    }

    fn encode(d: Dictionary, binary: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let v = Value::Dictionary(d);
        if binary {
            v.to_writer_binary(&mut out).unwrap();
        } else {
            v.to_writer_xml(&mut out).unwrap();
        }
        out
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = super::parse(&bytes, super::Limits::default());
            let _ = checkin::parse(&bytes);
            let _ = command::parse_report(&bytes);
        }

        #[test]
        fn mutated_check_ins_never_panic(
            binary in any::<bool>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        ) {
            let base = encode(authenticate("UDID-1", "C02X", "Mac"), binary);
            let _ = checkin::parse(&mutate(&base, &edits));
            let mut r = Dictionary::new();
            r.insert("UDID".into(), "UDID-1".into());
            r.insert("Status".into(), "Acknowledged".into());
            r.insert("CommandUUID".into(), "C-1".into());
            let _ = command::parse_report(&mutate(&encode(r, binary), &edits));
        }

        #[test]
        fn valid_check_ins_round_trip(
            udid in "[A-F0-9-]{1,40}",
            serial in text(),
            name in text(),
            token in proptest::collection::vec(any::<u8>(), 1..64),
            binary in any::<bool>(),
        ) {
            let msg = checkin::parse(&encode(authenticate(&udid, &serial, &name), binary)).unwrap();
            prop_assert_eq!(msg.sender.udid.as_deref(), Some(udid.as_str()));
            match msg.message {
                CheckinMessage::Authenticate(a) => {
                    prop_assert_eq!(a.serial_number.as_deref(), Some(serial.as_str()));
                    prop_assert_eq!(a.device_name.as_deref(), Some(name.as_str()));
                }
                other => prop_assert!(false, "{:?}", other.name()),
            }
            let mut t = Dictionary::new();
            t.insert("MessageType".into(), "TokenUpdate".into());
            t.insert("UDID".into(), udid.as_str().into());
            t.insert("Topic".into(), "com.apple.mgmt.External.t".into());
            t.insert("Token".into(), Value::Data(token.clone()));
            t.insert("PushMagic".into(), serial.as_str().into());
            match checkin::parse(&encode(t, binary)).unwrap().message {
                CheckinMessage::TokenUpdate(u) => {
                    prop_assert_eq!(u.token, token);
                    prop_assert_eq!(u.push_magic, serial);
                }
                other => prop_assert!(false, "{:?}", other.name()),
            }
        }

        #[test]
        fn nesting_is_accepted_exactly_up_to_the_limit(depth in 1usize..200, binary in any::<bool>()) {
            let mut v = Value::Array(Vec::new());
            for _ in 1..depth.min(60) {
                v = Value::Array(vec![v]);
            }
            // Beyond what the writer can nest without recursing deeply: write XML by hand.
            let bytes = if depth < 60 {
                let mut out = Vec::new();
                if binary { v.to_writer_binary(&mut out).unwrap() } else { v.to_writer_xml(&mut out).unwrap() }
                out
            } else {
                format!(
                    "<?xml version=\"1.0\"?><plist version=\"1.0\">{}{}</plist>",
                    "<array>".repeat(depth),
                    "</array>".repeat(depth)
                )
                .into_bytes()
            };
            let got = super::parse(&bytes, super::Limits::default());
            let levels = if depth < 60 { depth.min(59) } else { depth };
            prop_assert_eq!(got.is_ok(), levels <= super::MAX_DEPTH, "{} levels: {:?}", levels, got.err());
        }
    }
}
