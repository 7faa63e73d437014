//! A small DER reader (and BER-to-DER normaliser) for the CMS structures mdmctl takes apart
//! without OpenSSL: SCEP messages (signed attributes OpenSSL's API cannot read) and
//! `Mdm-Signature`s on the check-in hot path (where OpenSSL 3.0's decoders cost ~180 µs a
//! certificate). Every length is bounds-checked; hostile input gives an error, never a panic.

/// Why bytes are not the DER (or BER) expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(pub &'static str);

/// Deepest nesting the normaliser follows. CMS messages nest about a dozen
/// levels; the bound keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 48;

const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OCTET_STRING_CONSTRUCTED: u8 = 0x24;

fn malformed(what: &'static str) -> DerError {
    DerError(what)
}

/// Re-encodes one BER element as DER-shaped bytes: definite minimal lengths
/// everywhere and universal constructed OCTET STRINGs flattened into
/// primitive ones (X.690 §10.2). SET OF ordering is left alone: the `der`
/// crate sorts on decode, and signatures over SignedAttributes are checked
/// by OpenSSL on the original bytes anyway. Trailing bytes are an error.
pub(crate) fn ber_to_der(input: &[u8]) -> Result<Vec<u8>, DerError> {
    let mut out = Vec::with_capacity(input.len());
    let used = normalize_element(input, 0, &mut out)?;
    if used != input.len() {
        return Err(malformed("trailing bytes after the top-level element"));
    }
    Ok(out)
}

/// Reads the identifier octets; returns them and the number of bytes used.
fn read_identifier(input: &[u8]) -> Result<(&[u8], usize), DerError> {
    let first = *input.first().ok_or(malformed("truncated tag"))?;
    if first & 0x1f != 0x1f {
        return Ok((&input[..1], 1));
    }
    // High-tag-number form: continuation bit on every octet but the last.
    // Four subsequent octets are far more than any CMS structure needs.
    for i in 1..=4 {
        let b = *input.get(i).ok_or(malformed("truncated tag"))?;
        if b & 0x80 == 0 {
            return Ok((&input[..=i], i + 1));
        }
    }
    Err(malformed("tag number too large"))
}

/// Reads the length octets at `input[pos..]`. `None` is the indefinite form.
fn read_length(input: &[u8], pos: &mut usize) -> Result<Option<usize>, DerError> {
    let first = *input.get(*pos).ok_or(malformed("truncated length"))?;
    *pos += 1;
    if first < 0x80 {
        return Ok(Some(usize::from(first)));
    }
    if first == 0x80 {
        return Ok(None);
    }
    let count = usize::from(first & 0x7f);
    if count > 4 {
        return Err(malformed("length too large"));
    }
    let mut len: usize = 0;
    for _ in 0..count {
        let b = *input.get(*pos).ok_or(malformed("truncated length"))?;
        *pos += 1;
        len = (len << 8) | usize::from(b);
    }
    Ok(Some(len))
}

/// Appends a DER length.
pub(crate) fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Truncation is impossible: len < 0x80.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

fn normalize_element(input: &[u8], depth: usize, out: &mut Vec<u8>) -> Result<usize, DerError> {
    if depth > MAX_DEPTH {
        return Err(malformed("nesting too deep"));
    }
    let (ident, mut pos) = read_identifier(input)?;
    let constructed = ident[0] & 0x20 != 0;
    let len = read_length(input, &mut pos)?;
    match len {
        Some(n) => {
            let end = pos
                .checked_add(n)
                .filter(|end| *end <= input.len())
                .ok_or(malformed("length exceeds the data"))?;
            let body = &input[pos..end];
            if constructed {
                let mut children = Vec::with_capacity(body.len());
                let mut p = 0;
                while p < body.len() {
                    p += normalize_element(&body[p..], depth + 1, &mut children)?;
                }
                finish_constructed(ident, &children, out)?;
            } else {
                if ident == [0] {
                    return Err(malformed("unexpected end-of-contents"));
                }
                out.extend_from_slice(ident);
                write_length(out, body.len());
                out.extend_from_slice(body);
            }
            Ok(end)
        }
        None => {
            if !constructed {
                return Err(malformed("indefinite length on a primitive element"));
            }
            let mut children = Vec::new();
            loop {
                let rest = input.get(pos..).ok_or(malformed("truncated element"))?;
                if rest.is_empty() {
                    return Err(malformed("missing end-of-contents"));
                }
                if rest.starts_with(&[0, 0]) {
                    pos += 2;
                    break;
                }
                pos += normalize_element(rest, depth + 1, &mut children)?;
            }
            finish_constructed(ident, &children, out)?;
            Ok(pos)
        }
    }
}

fn finish_constructed(ident: &[u8], children: &[u8], out: &mut Vec<u8>) -> Result<(), DerError> {
    if ident == [TAG_OCTET_STRING_CONSTRUCTED] {
        // X.690 §8.7.3: the value is the concatenation of the segments,
        // which (already normalised) are primitive OCTET STRINGs.
        let mut joined = Vec::with_capacity(children.len());
        for seg in Tlvs::new(children) {
            let seg = seg?;
            if seg.tag != TAG_OCTET_STRING {
                return Err(malformed(
                    "constructed octet string holds a non-octet-string",
                ));
            }
            joined.extend_from_slice(seg.content);
        }
        out.push(TAG_OCTET_STRING);
        write_length(out, joined.len());
        out.extend_from_slice(&joined);
    } else {
        out.extend_from_slice(ident);
        write_length(out, children.len());
        out.extend_from_slice(children);
    }
    Ok(())
}

/// One DER element found by [`Tlvs`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    /// First identifier octet (class, constructed bit and low tag number).
    pub tag: u8,
    /// The contents octets.
    pub content: &'a [u8],
    /// The whole element, header included.
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Parses exactly one definite-length element.
    pub fn parse(input: &'a [u8]) -> Result<Self, DerError> {
        let mut it = Tlvs::new(input);
        let tlv = it.next().ok_or(malformed("empty input"))??;
        if it.next().is_some() {
            return Err(malformed("trailing bytes after element"));
        }
        Ok(tlv)
    }

    /// The elements inside a constructed element.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, DerError> {
        if self.tag & 0x20 == 0 {
            return Err(malformed("expected a constructed element"));
        }
        Tlvs::new(self.content).collect()
    }

    /// The `index`-th child, or an error naming what was expected there.
    pub fn child(&self, index: usize, what: &'static str) -> Result<Tlv<'a>, DerError> {
        self.children()?.get(index).copied().ok_or(malformed(what))
    }
}

/// Iterator over consecutive definite-length elements (for normalised input).
pub(crate) struct Tlvs<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Tlvs<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Tlvs {
            rest: input,
            failed: false,
        }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, DerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let step = || -> Result<(Tlv<'a>, &'a [u8]), DerError> {
            let input = self.rest;
            let (ident, mut pos) = read_identifier(input)?;
            let len = read_length(input, &mut pos)?.ok_or(malformed("indefinite length"))?;
            let end = pos
                .checked_add(len)
                .filter(|end| *end <= input.len())
                .ok_or(malformed("length exceeds the data"))?;
            Ok((
                Tlv {
                    tag: ident[0],
                    content: &input[pos..end],
                    raw: &input[..end],
                },
                &input[end..],
            ))
        };
        match step() {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_is_unchanged() {
        let der = [0x30, 0x06, 0x04, 0x01, 0xaa, 0x02, 0x01, 0x05];
        assert_eq!(ber_to_der(&der).unwrap(), der);
    }

    #[test]
    fn indefinite_and_constructed_octets_are_flattened() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite)
        // { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x00,
            0x00,
        ];
        assert_eq!(
            ber_to_der(&ber).unwrap(),
            [0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn non_minimal_lengths_are_fixed() {
        let ber = [0x04, 0x82, 0x00, 0x01, 0xff];
        assert_eq!(ber_to_der(&ber).unwrap(), [0x04, 0x01, 0xff]);
    }

    #[test]
    fn long_lengths_round_trip() {
        let mut ber = vec![0x04, 0x82, 0x01, 0x00];
        ber.extend(std::iter::repeat_n(7u8, 256));
        assert_eq!(ber_to_der(&ber).unwrap(), ber);
    }

    #[test]
    fn garbage_is_an_error() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x80, 0x04, 0x00],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x30, 0x03, 0x04, 0x05, 0x00],
            &[0x24, 0x03, 0x02, 0x01, 0x00],
            &[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(ber_to_der(input).is_err(), "{input:02x?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ber = Vec::new();
        for _ in 0..10_000 {
            ber.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(ber_to_der(&ber).is_err());
    }
}

/// Property tests: DER passes through the normaliser unchanged, BER becomes that DER, and no
/// input panics.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// A DER element tree: primitives with random content, constructed ones around children.
    #[derive(Clone, Debug)]
    enum Node {
        Prim(u8, Vec<u8>),
        Cons(u8, Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = (
            prop::sample::select(vec![0x02u8, 0x05, 0x06, 0x0c, 0x13, 0x80, 0x81]),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(t, c)| Node::Prim(t, c));
        leaf.prop_recursive(8, 64, 6, |inner| {
            (
                prop::sample::select(vec![0x30u8, 0x31, 0xa0, 0xa3]),
                proptest::collection::vec(inner, 0..6),
            )
                .prop_map(|(t, c)| Node::Cons(t, c))
        })
    }

    fn der(n: &Node) -> Vec<u8> {
        let (tag, content) = match n {
            Node::Prim(t, c) => (*t, c.clone()),
            Node::Cons(t, kids) => (*t, kids.iter().flat_map(der).collect()),
        };
        let mut out = vec![tag];
        write_length(&mut out, content.len());
        out.extend(content);
        out
    }

    /// The same tree in BER: constructed elements with indefinite lengths.
    fn ber(n: &Node) -> Vec<u8> {
        match n {
            Node::Prim(..) => der(n),
            Node::Cons(t, kids) => {
                let mut out = vec![*t, 0x80];
                for k in kids {
                    out.extend(ber(k));
                }
                out.extend([0, 0]);
                out
            }
        }
    }

    proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn der_is_a_fixed_point_and_ber_normalises_to_it(n in node()) {
            let d = der(&n);
            prop_assert_eq!(ber_to_der(&d).unwrap(), d.clone());
            prop_assert_eq!(ber_to_der(&ber(&n)).unwrap(), d.clone());
            let top = Tlv::parse(&d).unwrap();
            prop_assert_eq!(top.raw, &d[..]);
        }

        #[test]
        fn random_and_mutated_input_never_panics(
            n in node(),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        ) {
            let _ = ber_to_der(&bytes);
            let _ = Tlv::parse(&bytes).and_then(|t| t.children());
            let m = crate::fuzz::mutate(&ber(&n), &edits);
            let _ = ber_to_der(&m);
            let _ = Tlv::parse(&m).and_then(|t| t.children());
        }

        #[test]
        fn nesting_deeper_than_the_limit_is_refused(depth in 1usize..200) {
            let mut v = vec![0x05, 0x00];
            for _ in 0..depth {
                let mut w = vec![0x30, 0x80];
                w.extend(v);
                w.extend([0, 0]);
                v = w;
            }
            prop_assert_eq!(ber_to_der(&v).is_ok(), depth <= MAX_DEPTH);
        }
    }
}
