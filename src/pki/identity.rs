//! Device identity: the certificate a request comes with, and whether to trust it.
//!
//! A device proves who it is with its identity certificate, presented one of three ways: in an
//! `Mdm-Signature` header (a detached CMS SignedData over the request body, when the enrollment
//! profile sets `SignMessage`), as the TLS client certificate, or in a header set by a
//! TLS-terminating proxy (RFC 9440 `:base64:` form, or URL-escaped PEM as nginx's
//! `$ssl_client_escaped_cert`). [`TrustAnchors`] then checks the certificate chains to one of
//! the store's SCEP CAs (generated, or imported from the old MDM) and is within its validity.
//! Matching the certificate to the enrollment is the server's job.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509PurposeId, X509StoreContext};

use super::{CertInfo, fingerprint_sha256};
use crate::timestamp::Timestamp;

/// Why a device's identity was not accepted. Devices only ever see 400 or 403 for these.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no identity certificate: no `Mdm-Signature` header, no TLS client certificate, no certificate header"
    )]
    Missing,
    #[error("the `Mdm-Signature` header is not a CMS signature: {0}")]
    BadSignatureEncoding(String),
    #[error("the `Mdm-Signature` does not match the request body")]
    SignatureMismatch,
    #[error("the client certificate header is not a certificate: {0}")]
    BadHeader(String),
    #[error("the certificate `{subject}` is not trusted: {reason}")]
    Untrusted { subject: String, reason: String },
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// A certificate a device presented, with how it was presented.
#[derive(Clone, Debug)]
pub struct Presented {
    pub cert: X509,
    /// Other certificates that came with it (CMS signer chain): candidate intermediates.
    pub chain: Vec<X509>,
    pub via: &'static str,
}

/// Verify an `Mdm-Signature` header against the body and return the signer's certificate.
pub fn verify_mdm_signature(header: &str, body: &[u8]) -> Result<Presented, IdentityError> {
    let der = decode_header(header)?;
    let p7 =
        Pkcs7::from_der(&der).map_err(|e| IdentityError::BadSignatureEncoding(e.to_string()))?;
    let no_certs = Stack::new()?;
    let no_store = X509StoreBuilder::new()?.build();
    // NOVERIFY: the signature is checked here, the certificate's chain by TrustAnchors.
    p7.verify(
        &no_certs,
        &no_store,
        Some(body),
        None,
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )
    .map_err(|_| IdentityError::SignatureMismatch)?;
    signers_of(&p7)
}

/// The certificate an `Mdm-Signature` claims (and the others it carries), before the body it
/// signs is read: whether a trusted CA vouches for it decides whether the body is read at all.
/// The signature itself is checked later ([`verify_mdm_signature`] or
/// [`ParsedSignature::check`]).
pub fn signature_certificates(header: &str) -> Result<Presented, IdentityError> {
    let der = decode_header(header)?;
    let p7 =
        Pkcs7::from_der(&der).map_err(|e| IdentityError::BadSignatureEncoding(e.to_string()))?;
    signers_of(&p7)
}

fn signers_of(p7: &Pkcs7) -> Result<Presented, IdentityError> {
    let no_certs = Stack::new()?;
    let signers = p7
        .signers(&no_certs, Pkcs7Flags::empty())
        .map_err(|e| IdentityError::BadSignatureEncoding(e.to_string()))?;
    let cert = signers
        .iter()
        .next()
        .map(|c| c.to_owned())
        .ok_or_else(|| IdentityError::BadSignatureEncoding("no signer certificate".into()))?;
    let chain = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|certs| certs.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    Ok(Presented {
        cert,
        chain,
        via: "Mdm-Signature",
    })
}

/// An `Mdm-Signature` taken apart without OpenSSL's decoders (which cost ~180 µs per embedded
/// certificate under OpenSSL 3.0): the signer's certificate (raw DER), what was signed, and the
/// signature. [`ParsedSignature::check`] then verifies it with the certificate's public key.
///
/// Only the shape devices send is handled: a detached SignedData over `id-data`, one signer
/// identified by issuer and serial number, whose certificate is embedded, RSA PKCS#1 v1.5 with
/// SHA-1/256/384/512, with or without signed attributes. Anything else is `Ok(None)`: the caller
/// falls back to [`verify_mdm_signature`], OpenSSL's complete implementation, which is also what
/// the fast path is tested against.
#[derive(Debug, Clone)]
pub struct ParsedSignature {
    pub cert_der: Vec<u8>,
    digest: Digest,
    /// The signed attributes re-tagged as `SET OF` (what the signature covers), if any.
    signed_attrs: Option<Vec<u8>>,
    message_digest: Option<Vec<u8>>,
    signature: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    fn of_oid(oid: &[u8]) -> Option<Self> {
        Some(match oid {
            [0x2b, 0x0e, 0x03, 0x02, 0x1a] => Digest::Sha1,
            [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01] => Digest::Sha256,
            [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02] => Digest::Sha384,
            [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03] => Digest::Sha512,
            _ => return None,
        })
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        use openssl::sha;
        match self {
            Digest::Sha1 => sha::sha1(data).to_vec(),
            Digest::Sha256 => sha::sha256(data).to_vec(),
            Digest::Sha384 => sha::sha384(data).to_vec(),
            Digest::Sha512 => sha::sha512(data).to_vec(),
        }
    }

    fn md(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest;
        match self {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
        }
    }
}

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// `1.2.840.113549.1.1.*`: rsaEncryption (1) and shaNWithRSAEncryption (5, 11, 12, 13).
const OID_PKCS1_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];

impl ParsedSignature {
    /// Take an `Mdm-Signature` header apart. `Ok(None)`: not the usual shape (use OpenSSL).
    pub fn parse(header: &str) -> Result<Option<Self>, IdentityError> {
        let der = decode_header(header)?;
        Ok(parse_cms(&der).ok().flatten())
    }

    /// Check the signature over `body` with the signer's public key.
    pub fn check(
        &self,
        body: &[u8],
        key: &openssl::pkey::PKeyRef<openssl::pkey::Public>,
    ) -> Result<(), IdentityError> {
        let signed: &[u8] = match (&self.signed_attrs, &self.message_digest) {
            (Some(attrs), Some(md)) => {
                if self.digest.hash(body) != *md {
                    return Err(IdentityError::SignatureMismatch);
                }
                attrs
            }
            (None, None) => body,
            _ => return Err(IdentityError::SignatureMismatch),
        };
        let mut v = openssl::sign::Verifier::new(self.digest.md(), key)?;
        v.update(signed)?;
        match v.verify(&self.signature) {
            Ok(true) => Ok(()),
            _ => Err(IdentityError::SignatureMismatch),
        }
    }
}

fn decode_header(header: &str) -> Result<Vec<u8>, IdentityError> {
    // Headers normally carry no whitespace: copy only when they do.
    let compact: std::borrow::Cow<'_, str> = if header.bytes().any(|b| b.is_ascii_whitespace()) {
        header.split_ascii_whitespace().collect::<String>().into()
    } else {
        header.into()
    };
    STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| STANDARD_NO_PAD.decode(compact.trim_end_matches('=')))
        .map_err(|e| IdentityError::BadSignatureEncoding(e.to_string()))
}

/// The fields of a detached SignedData (RFC 5652 §5), or `None` for shapes left to OpenSSL.
fn parse_cms(der: &[u8]) -> Result<Option<ParsedSignature>, super::der::DerError> {
    use super::der::{DerError, Tlv};
    const SEQ: u8 = 0x30;
    const SET: u8 = 0x31;
    const INT: u8 = 0x02;
    const OID: u8 = 0x06;
    const OCTETS: u8 = 0x04;
    const CTX0: u8 = 0xa0;
    let bad = DerError;
    // Every element must carry exactly the tag RFC 5652 gives it.
    let expect = |t: &Tlv<'_>, tag: u8, what: &'static str| {
        if t.tag == tag { Ok(()) } else { Err(bad(what)) }
    };
    let top = Tlv::parse(der)?;
    expect(&top, SEQ, "content info")?;
    let ci = top.children()?;
    let [oid, explicit] = ci.as_slice() else {
        return Err(bad("content info"));
    };
    expect(oid, OID, "content type")?;
    if oid.content != OID_SIGNED_DATA {
        return Ok(None);
    }
    expect(explicit, CTX0, "signed data")?;
    let sd_outer = explicit.children()?;
    let [sd] = sd_outer.as_slice() else {
        return Err(bad("signed data"));
    };
    expect(sd, SEQ, "signed data")?;
    let sd = sd.children()?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    if sd.len() < 4 {
        return Ok(None);
    }
    expect(&sd[0], INT, "version")?;
    expect(&sd[1], SET, "digest algorithms")?;
    expect(&sd[2], SEQ, "encapsulated content")?;
    let encap = sd[2].children()?;
    if encap.len() != 1 || encap[0].tag != OID || encap[0].content != OID_DATA {
        return Ok(None); // not detached, or not id-data
    }
    let mut certs = Vec::new();
    for t in &sd[3..sd.len() - 1] {
        match t.tag {
            CTX0 => certs = t.children()?,
            0xa1 => {}
            _ => return Err(bad("certificates")),
        }
    }
    if certs.is_empty() {
        return Ok(None);
    }
    let signer_infos = &sd[sd.len() - 1];
    expect(signer_infos, SET, "signer infos")?;
    let sis = signer_infos.children()?;
    let [si] = sis.as_slice() else {
        return Ok(None);
    };
    expect(si, SEQ, "signer info")?;
    let f = si.children()?;
    // version, sid, digestAlgorithm, [0] signedAttrs?, signatureAlgorithm, signature, [1]?
    if f.len() < 5 {
        return Err(bad("signer info"));
    }
    expect(&f[0], INT, "signer version")?;
    if f[1].tag != SEQ {
        return Ok(None); // a subjectKeyIdentifier sid: left to OpenSSL
    }
    let sid = f[1].children()?;
    let [issuer, serial] = sid.as_slice() else {
        return Err(bad("signer id"));
    };
    expect(issuer, SEQ, "issuer")?;
    expect(serial, INT, "serial number")?;
    expect(&f[2], SEQ, "digest algorithm")?;
    let digest_oid = f[2]
        .children()?
        .first()
        .copied()
        .ok_or(bad("digest algorithm"))?;
    expect(&digest_oid, OID, "digest algorithm")?;
    let Some(digest) = Digest::of_oid(digest_oid.content) else {
        return Ok(None);
    };
    // As OpenSSL does: every listed digest algorithm is one it can compute, and the signer's is
    // among them.
    let mut listed = false;
    for alg in sd[1].children()? {
        expect(&alg, SEQ, "digest algorithm")?;
        let id = alg
            .children()?
            .first()
            .copied()
            .ok_or(bad("digest algorithm"))?;
        expect(&id, OID, "digest algorithm")?;
        match Digest::of_oid(id.content) {
            Some(d) => listed |= d == digest,
            None => return Ok(None),
        }
    }
    if !listed {
        return Ok(None);
    }
    let (signed_attrs, rest) = if f[3].tag == CTX0 {
        (Some(f[3]), &f[4..])
    } else {
        (None, &f[3..])
    };
    let (sig_alg, signature) = match rest {
        [a, s] => (a, s),
        [a, s, u] if u.tag == 0xa1 => (a, s),
        _ => return Err(bad("signature")),
    };
    expect(sig_alg, SEQ, "signature algorithm")?;
    let sig_oid = sig_alg
        .children()?
        .first()
        .copied()
        .ok_or(bad("signature algorithm"))?;
    expect(&sig_oid, OID, "signature algorithm")?;
    let pkcs1 = sig_oid.content.strip_prefix(OID_PKCS1_PREFIX);
    let consistent = matches!(
        (pkcs1, digest),
        (Some([1]), _)
            | (Some([5]), Digest::Sha1)
            | (Some([11]), Digest::Sha256)
            | (Some([12]), Digest::Sha384)
            | (Some([13]), Digest::Sha512)
    );
    if !consistent {
        return Ok(None);
    }
    expect(signature, OCTETS, "signature")?;
    // The signer's certificate: issuer and serial number as in its TBSCertificate.
    let mut cert_der = None;
    for c in &certs {
        expect(c, SEQ, "certificate")?;
        let parts = c.children()?;
        let tbs = parts.first().ok_or(bad("certificate"))?;
        expect(tbs, SEQ, "certificate")?;
        let tbs = tbs.children()?;
        let skip = usize::from(tbs.first().is_some_and(|t| t.tag == CTX0));
        let (Some(ser), Some(iss)) = (tbs.get(skip), tbs.get(skip + 2)) else {
            continue;
        };
        if ser.raw == serial.raw && iss.raw == issuer.raw {
            cert_der = Some(c.raw.to_vec());
            break;
        }
    }
    let Some(cert_der) = cert_der else {
        return Ok(None);
    };
    let (attrs, message_digest) = match signed_attrs {
        Some(a) => {
            let mut content_type_ok = false;
            let mut md = None;
            for attr in a.children()? {
                expect(&attr, SEQ, "attribute")?;
                let kv = attr.children()?;
                let [k, v] = kv.as_slice() else {
                    return Err(bad("attribute"));
                };
                expect(k, OID, "attribute type")?;
                expect(v, SET, "attribute values")?;
                let values = v.children()?;
                if k.content == OID_CONTENT_TYPE {
                    // Exactly once, one value, id-data (RFC 5652 §11.1).
                    if content_type_ok
                        || values.len() != 1
                        || values[0].tag != OID
                        || values[0].content != OID_DATA
                    {
                        return Err(bad("content type attribute"));
                    }
                    content_type_ok = true;
                } else if k.content == OID_MESSAGE_DIGEST {
                    if md.is_some() || values.len() != 1 || values[0].tag != OCTETS {
                        return Err(bad("message digest attribute"));
                    }
                    md = Some(values[0].content.to_vec());
                }
            }
            if !content_type_ok || md.is_none() {
                return Err(bad(
                    "signed attributes without content type or message digest",
                ));
            }
            // The signature covers the attributes encoded as a SET OF (tag 0x31), not as the
            // [0] IMPLICIT field they travel in (RFC 5652 §5.4).
            let mut set = a.raw.to_vec();
            set[0] = SET;
            (Some(set), md)
        }
        None => (None, None),
    };
    Ok(Some(ParsedSignature {
        cert_der,
        digest,
        signed_attrs: attrs,
        message_digest,
        signature: signature.content.to_vec(),
    }))
}

/// Sign `body` the way a device does for `Mdm-Signature` (used by the device simulator).
pub fn sign_mdm_body(
    body: &[u8],
    cert: &X509,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<String, IdentityError> {
    let no_certs = Stack::new()?;
    let p7 = Pkcs7::sign(
        cert,
        key,
        &no_certs,
        body,
        Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
    )?;
    Ok(STANDARD.encode(p7.to_der()?))
}

/// The DER of a certificate a proxy forwarded in a header: RFC 9440 (`:base64 DER:`),
/// URL-escaped PEM (nginx `$ssl_client_escaped_cert`), raw PEM, or bare base64 DER. Not decoded
/// as a certificate here: a known certificate is recognized by its fingerprint.
pub fn cert_header_der(value: &str) -> Result<Vec<u8>, IdentityError> {
    let v = value.trim();
    let bad = |e: String| IdentityError::BadHeader(e);
    if let Some(inner) = v.strip_prefix(':').and_then(|s| s.strip_suffix(':')) {
        STANDARD.decode(inner).map_err(|e| bad(e.to_string()))
    } else if v.contains("BEGIN") {
        let pem = percent_decode(v);
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        STANDARD.decode(body).map_err(|e| bad(e.to_string()))
    } else {
        STANDARD.decode(v).map_err(|e| bad(e.to_string()))
    }
}

/// Parse a certificate a proxy forwarded in a header (see [`cert_header_der`]).
pub fn parse_cert_header(value: &str) -> Result<Presented, IdentityError> {
    let der = cert_header_der(value)?;
    let cert = X509::from_der(&der).map_err(|e| IdentityError::BadHeader(e.to_string()))?;
    Ok(Presented {
        cert,
        chain: Vec::new(),
        via: "client certificate header",
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                // Some proxies encode spaces as `+` in the PEM header lines.
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A certificate that chains to a trusted CA and is valid now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub sha256: String,
    pub not_after: Timestamp,
    /// Issued by the CA that issues new identities (not an imported or earlier one).
    pub by_issuing_ca: bool,
}

/// The CAs whose identities the server accepts: the issuing one and every trusted one.
pub struct TrustAnchors {
    store: X509Store,
    issuing: Option<String>,
    count: usize,
}

impl TrustAnchors {
    /// `cas`: each CA certificate and whether it is the issuing one.
    pub fn new(cas: &[(X509, bool)]) -> Result<Self, IdentityError> {
        let mut b = X509StoreBuilder::new()?;
        // Device identities are TLS client certificates: when a certificate carries an extended
        // key usage it must allow clientAuth (OpenSSL's SSL client purpose).
        b.set_purpose(X509PurposeId::SSL_CLIENT)?;
        let mut issuing = None;
        for (ca, active) in cas {
            b.add_cert(ca.clone())?;
            if *active {
                issuing = Some(
                    fingerprint_sha256(ca)
                        .map_err(|_| IdentityError::OpenSsl(openssl::error::ErrorStack::get()))?,
                );
            }
        }
        Ok(Self {
            store: b.build(),
            issuing,
            count: cas.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Check `presented` chains to a trusted CA and is valid now.
    pub fn verify(&self, presented: &Presented) -> Result<Verified, IdentityError> {
        let cert = &presented.cert;
        let subject = CertInfo::of(cert)
            .map(|i| i.subject)
            .unwrap_or_else(|_| "?".into());
        let mut untrusted = Stack::new()?;
        for c in &presented.chain {
            untrusted.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        let (ok, reason, root) = ctx.init(&self.store, cert, &untrusted, |c| {
            let ok = c.verify_cert()?;
            let root = c
                .chain()
                .and_then(|chain: &StackRef<X509>| chain.iter().last().map(|r| r.to_owned()));
            Ok((ok, c.error().error_string().to_string(), root))
        })?;
        if !ok {
            return Err(IdentityError::Untrusted { subject, reason });
        }
        let info = CertInfo::of(cert).map_err(|e| IdentityError::Untrusted {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        let root_fp = root.as_ref().and_then(|r| fingerprint_sha256(r).ok());
        Ok(Verified {
            sha256: info.sha256,
            not_after: info.not_after,
            by_issuing_ca: root_fp.is_some() && root_fp == self.issuing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaSpec, generate_rsa, new_ca};
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::extension::ExtendedKeyUsage;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn ca(name: &str) -> (X509, openssl::pkey::PKey<openssl::pkey::Private>) {
        new_ca(&CaSpec {
            common_name: name.into(),
            organization: "Test".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 1,
        })
        .unwrap()
    }

    fn leaf(
        ca: &(X509, openssl::pkey::PKey<openssl::pkey::Private>),
        days: (i64, i64),
        eku_server: bool,
    ) -> (X509, openssl::pkey::PKey<openssl::pkey::Private>) {
        let key = generate_rsa(2048).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "device").unwrap();
        let n = n.build();
        let now = Timestamp::now().0;
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(crate::pki::random_serial().unwrap().as_ref())
            .unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(ca.0.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(Asn1Time::from_unix(now + days.0 * 86_400).unwrap().as_ref())
            .unwrap();
        b.set_not_after(Asn1Time::from_unix(now + days.1 * 86_400).unwrap().as_ref())
            .unwrap();
        let eku = if eku_server {
            ExtendedKeyUsage::new().server_auth().build().unwrap()
        } else {
            ExtendedKeyUsage::new().client_auth().build().unwrap()
        };
        b.append_extension(eku).unwrap();
        b.sign(&ca.1, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    #[test]
    fn signature_round_trip_and_tampering() {
        let old = ca("old");
        let (cert, key) = leaf(&old, (-1, 365), false);
        let body = b"<plist>Idle</plist>";
        let header = sign_mdm_body(body, &cert, &key).unwrap();
        let p = verify_mdm_signature(&header, body).unwrap();
        assert_eq!(p.cert.to_der().unwrap(), cert.to_der().unwrap());
        assert!(matches!(
            verify_mdm_signature(&header, b"<plist>Other</plist>"),
            Err(IdentityError::SignatureMismatch)
        ));
        assert!(matches!(
            verify_mdm_signature("bm90IGNtcw==", body),
            Err(IdentityError::BadSignatureEncoding(_))
        ));
    }

    #[test]
    fn trust_anchors_accept_known_cas_only() {
        let old = ca("old");
        let new = ca("new");
        let stranger = ca("stranger");
        let anchors = TrustAnchors::new(&[(old.0.clone(), false), (new.0.clone(), true)]).unwrap();
        let p = |c: X509| Presented {
            cert: c,
            chain: vec![],
            via: "test",
        };
        let v = anchors.verify(&p(leaf(&old, (-1, 365), false).0)).unwrap();
        assert!(!v.by_issuing_ca);
        assert!(
            anchors
                .verify(&p(leaf(&new, (-1, 365), false).0))
                .unwrap()
                .by_issuing_ca
        );
        let e = anchors
            .verify(&p(leaf(&stranger, (-1, 365), false).0))
            .unwrap_err();
        assert!(matches!(e, IdentityError::Untrusted { .. }), "{e}");
        let e = anchors
            .verify(&p(leaf(&old, (-30, -1), false).0))
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let e = anchors
            .verify(&p(leaf(&old, (-1, 365), true).0))
            .unwrap_err();
        assert!(e.to_string().contains("purpose"), "{e}");
    }

    #[test]
    fn fast_path_agrees_with_openssl_and_never_accepts_more() {
        let old = ca("old");
        let (cert, key) = leaf(&old, (-1, 365), false);
        let pubkey = cert.public_key().unwrap();
        let body = b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>";
        for flags in [
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOATTR,
        ] {
            let no_certs = Stack::new().unwrap();
            let der = Pkcs7::sign(&cert, &key, &no_certs, body, flags)
                .unwrap()
                .to_der()
                .unwrap();
            let header = STANDARD.encode(&der);
            let p = ParsedSignature::parse(&header)
                .unwrap()
                .expect("the usual shape");
            assert_eq!(p.cert_der, cert.to_der().unwrap());
            assert_eq!(
                p.signed_attrs.is_some(),
                !flags.contains(Pkcs7Flags::NOATTR)
            );
            p.check(body, &pubkey).unwrap();
            assert!(p.check(b"another body", &pubkey).is_err());
            let other = generate_rsa(2048).unwrap();
            let other_pub = PKey::public_key_from_der(&other.public_key_to_der().unwrap()).unwrap();
            assert!(
                p.check(body, &other_pub).is_err(),
                "another key does not verify"
            );
            // Every single-byte corruption: whatever OpenSSL rejects, the fast path rejects too.
            for i in 0..der.len() {
                let mut bad = der.clone();
                bad[i] ^= 0x5a;
                let h = STANDARD.encode(&bad);
                let slow_ok = verify_mdm_signature(&h, body)
                    .is_ok_and(|s| s.cert.to_der().unwrap() == cert.to_der().unwrap());
                let fast_ok = matches!(ParsedSignature::parse(&h), Ok(Some(ref f)) if f.cert_der == cert.to_der().unwrap() && f.check(body, &pubkey).is_ok());
                assert!(
                    slow_ok || !fast_ok,
                    "byte {i}: the fast path accepted what OpenSSL rejects"
                );
            }
        }
    }

    #[test]
    fn proxy_header_forms() {
        let old = ca("old");
        let (cert, _) = leaf(&old, (-1, 365), false);
        let der = cert.to_der().unwrap();
        let rfc9440 = format!(":{}:", STANDARD.encode(&der));
        assert_eq!(
            parse_cert_header(&rfc9440).unwrap().cert.to_der().unwrap(),
            der
        );
        let pem = String::from_utf8(cert.to_pem().unwrap()).unwrap();
        let escaped: String = pem
            .chars()
            .map(|c| match c {
                '\n' => "%0A".to_string(),
                ' ' => "%20".to_string(),
                '+' => "%2B".to_string(),
                '/' => "%2F".to_string(),
                '=' => "%3D".to_string(),
                c => c.to_string(),
            })
            .collect();
        assert_eq!(
            parse_cert_header(&escaped).unwrap().cert.to_der().unwrap(),
            der
        );
        assert!(parse_cert_header(":not base64!:").is_err());
    }
}
