//! The signed pkiMessage shared by requests and replies (RFC 8894 §3.2):
//! a CMS SignedData over `id-data` whose SignerInfo carries the SCEP
//! attributes. Writing uses the RustCrypto `cms` types and an OpenSSL
//! signature; reading uses `cms` for the SignerInfo and OpenSSL
//! `PKCS7_verify` for the signature and messageDigest check.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode, Sequence, Tag, Tagged};
use openssl::hash::hash;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::asn1::{self, Tlv};
use super::{ContentCipher, DigestAlgorithm, Result, ScepError};

/// SignedData as we write it. Same fields as `cms::signed_data::SignedData`
/// minus `crls`, except that `certificates` is written as an ordered list:
/// a `SetOfVec` would re-sort the certificates by encoding, and clients
/// that take "the first certificate" as the issued one (or the RA) need
/// our order. The `[0] IMPLICIT` tag makes the SEQUENCE OF and SET OF
/// encodings identical on the wire; OpenSSL does the same.
#[derive(Sequence)]
struct SignedDataOut {
    version: CmsVersion,
    digest_algorithms: DigestAlgorithmIdentifiers,
    encap_content_info: EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<Vec<Any>>,
    signer_infos: SignerInfos,
}

/// Wraps a SignedData in a ContentInfo and encodes it.
fn content_info(sd: &SignedDataOut) -> Result<Vec<u8>> {
    Ok(ContentInfo {
        content_type: asn1::ID_SIGNED_DATA,
        content: Any::encode_from(sd)?,
    }
    .to_der()?)
}

/// A degenerate certificates-only SignedData (RFC 8894 §3.4): no digest
/// algorithms, no eContent, no signers, the certificates in the given
/// order.
pub(crate) fn certs_only(certs_der: &[Vec<u8>]) -> Result<Vec<u8>> {
    let certificates = certs_der
        .iter()
        .map(|der| Any::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    content_info(&SignedDataOut {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: asn1::ID_DATA,
            econtent: None,
        },
        certificates: Some(certificates),
        signer_infos: SignerInfos(SetOfVec::new()),
    })
}

/// A single-valued attribute holding a PrintableString (messageType,
/// pkiStatus, failInfo, transactionID: RFC 8894 §3.2.1).
pub(crate) fn printable_attr(oid: ObjectIdentifier, value: &str) -> Result<Attribute> {
    single_attr(oid, Any::encode_from(&PrintableStringRef::new(value)?)?)
}

/// A single-valued attribute holding an OCTET STRING (the nonces and
/// messageDigest).
pub(crate) fn octet_attr(oid: ObjectIdentifier, value: &[u8]) -> Result<Attribute> {
    single_attr(oid, Any::encode_from(&OctetString::new(value)?)?)
}

/// A single-valued string attribute: PrintableString (what RFC 8894
/// specifies and every client reads) when the alphabet allows, else
/// UTF8String, so an echoed transactionID keeps its exact characters.
pub(crate) fn string_attr(oid: ObjectIdentifier, value: &str) -> Result<Attribute> {
    match PrintableStringRef::new(value) {
        Ok(p) => single_attr(oid, Any::encode_from(&p)?),
        Err(_) => single_attr(oid, Any::encode_from(&Utf8StringRef::new(value)?)?),
    }
}

fn single_attr(oid: ObjectIdentifier, value: Any) -> Result<Attribute> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Ok(Attribute { oid, values })
}

/// A fresh 16-byte nonce (RFC 8894 §3.2.1.5).
pub(crate) fn new_nonce() -> Result<Vec<u8>> {
    let mut nonce = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    Ok(nonce)
}

/// The signer's IssuerAndSerialNumber, read from the certificate with the
/// DER walker rather than a full `x509-cert` decode (see `asn1`).
fn issuer_and_serial(cert: &X509) -> Result<IssuerAndSerialNumber> {
    let der = cert.to_der()?;
    let tbs = Tlv::parse(&der)?.child(0, "certificate without tbsCertificate")?;
    let fields = tbs.children()?;
    // tbsCertificate: [0] version OPTIONAL, serialNumber, signature, issuer.
    let skip = usize::from(fields.first().is_some_and(|f| f.tag == 0xa0));
    let serial = fields
        .get(skip)
        .ok_or(ScepError::Malformed("certificate without serial number"))?;
    let issuer = fields
        .get(skip + 2)
        .ok_or(ScepError::Malformed("certificate without issuer"))?;
    Ok(IssuerAndSerialNumber {
        issuer: Name::from_der(issuer.raw)?,
        serial_number: SerialNumber::from_der(serial.raw)?,
    })
}

/// Signs `content` as a pkiMessage: signed attributes are the SCEP
/// `attrs` plus contentType and messageDigest (RFC 5652 §5.3), and the
/// signature covers their DER encoding as an explicit SET OF (§5.4), not
/// the `[0] IMPLICIT` form that appears in the SignerInfo.
pub(crate) fn sign(
    content: &[u8],
    mut attrs: Vec<Attribute>,
    digest: DigestAlgorithm,
    signer_cert: &X509,
    signer_key: &PKey<Private>,
    certs: &[&X509],
) -> Result<Vec<u8>> {
    let md = digest.message_digest();
    attrs.push(single_attr(
        asn1::ATTR_CONTENT_TYPE,
        Any::encode_from(&asn1::ID_DATA)?,
    )?);
    attrs.push(octet_attr(asn1::ATTR_MESSAGE_DIGEST, &hash(md, content)?)?);
    let signed_attrs = SetOfVec::try_from(attrs)?;

    let mut signer = Signer::new(md, signer_key)?;
    signer.update(&signed_attrs.to_der()?)?;
    let signature = signer.sign_to_vec()?;

    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        // OpenSSL and older clients write (and some expect) NULL here.
        parameters: Some(Any::null()),
    };
    let signature_algorithm = match signer_key.id() {
        // rsaEncryption with NULL parameters: what PKCS #7 v1.5 and the
        // older SCEP clients expect, rather than sha256WithRSAEncryption.
        Id::RSA => AlgorithmIdentifierOwned {
            oid: asn1::OID_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        Id::EC => AlgorithmIdentifierOwned {
            oid: match digest {
                DigestAlgorithm::Sha1 => asn1::OID_ECDSA_SHA1,
                DigestAlgorithm::Sha256 => asn1::OID_ECDSA_SHA256,
                DigestAlgorithm::Sha384 => asn1::OID_ECDSA_SHA384,
                DigestAlgorithm::Sha512 => asn1::OID_ECDSA_SHA512,
            },
            parameters: None,
        },
        _ => return Err(ScepError::UnsupportedKey),
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(signer_cert)?),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm,
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(digest_alg)?;
    let certificates = certs
        .iter()
        .map(|c| Ok(Any::from_der(&c.to_der()?)?))
        .collect::<Result<Vec<_>>>()?;
    let mut signer_infos = SetOfVec::new();
    signer_infos.insert(signer_info)?;
    content_info(&SignedDataOut {
        version: CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: asn1::ID_DATA,
            econtent: Some(Any::encode_from(&OctetString::new(content)?)?),
        },
        certificates: (!certificates.is_empty()).then_some(certificates),
        signer_infos: SignerInfos(signer_infos),
    })
}

/// SCEP attributes read from a SignerInfo (RFC 8894 §3.2.1).
#[derive(Debug, Default)]
pub(crate) struct ScepAttributes {
    pub message_type: Option<String>,
    pub pki_status: Option<String>,
    pub fail_info: Option<String>,
    pub fail_info_text: Option<String>,
    pub transaction_id: Option<String>,
    pub sender_nonce: Option<Vec<u8>>,
    pub recipient_nonce: Option<Vec<u8>>,
}

/// A pkiMessage whose signature verified.
#[derive(Debug)]
pub(crate) struct VerifiedMessage {
    pub digest: DigestAlgorithm,
    pub signer: X509,
    /// The eContent octets (the pkcsPKIEnvelope, or empty).
    pub content: Vec<u8>,
    pub attrs: ScepAttributes,
}

/// Reads a string-valued attribute leniently: RFC 8894 says
/// PrintableString, but some clients use UTF8String or IA5String.
pub(crate) fn any_to_string(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString => {
            String::from_utf8(value.value().to_vec()).ok()
        }
        Tag::BmpString => {
            let units = value.value();
            if !units.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = units
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    match slot.replace(value) {
        Some(_) => Err(ScepError::Malformed("duplicate attribute")),
        None => Ok(()),
    }
}

fn read_attributes(attrs: &x509_cert::attr::Attributes) -> Result<(ScepAttributes, bool)> {
    let mut out = ScepAttributes::default();
    let mut content_type_ok = false;
    for attr in attrs.iter() {
        // Each of these attributes is single-valued.
        let [value] = attr.values.as_slice() else {
            return Err(ScepError::Malformed("attribute without exactly one value"));
        };
        let string = |name| any_to_string(value).ok_or(ScepError::InvalidAttribute(name));
        let octets = |name| {
            value
                .decode_as::<OctetString>()
                .map(|o| o.as_bytes().to_vec())
                .map_err(|_| ScepError::InvalidAttribute(name))
        };
        match attr.oid {
            o if o == asn1::SCEP_MESSAGE_TYPE => {
                set_once(&mut out.message_type, string("messageType")?)?
            }
            o if o == asn1::SCEP_PKI_STATUS => set_once(&mut out.pki_status, string("pkiStatus")?)?,
            o if o == asn1::SCEP_FAIL_INFO => set_once(&mut out.fail_info, string("failInfo")?)?,
            o if o == asn1::SCEP_FAIL_INFO_TEXT => {
                set_once(&mut out.fail_info_text, string("failInfoText")?)?
            }
            o if o == asn1::SCEP_TRANSACTION_ID => {
                set_once(&mut out.transaction_id, string("transactionID")?)?
            }
            o if o == asn1::SCEP_SENDER_NONCE => {
                set_once(&mut out.sender_nonce, octets("senderNonce")?)?
            }
            o if o == asn1::SCEP_RECIPIENT_NONCE => {
                set_once(&mut out.recipient_nonce, octets("recipientNonce")?)?
            }
            o if o == asn1::ATTR_CONTENT_TYPE => {
                // RFC 5652 §5.3: must name the eContentType, id-data here.
                let ct = value
                    .decode_as::<ObjectIdentifier>()
                    .map_err(|_| ScepError::InvalidAttribute("contentType"))?;
                if ct != asn1::ID_DATA {
                    return Err(ScepError::InvalidAttribute("contentType"));
                }
                content_type_ok = true;
            }
            // messageDigest is checked by OpenSSL; signingTime and others
            // are allowed and ignored.
            _ => {}
        }
    }
    Ok((out, content_type_ok))
}

/// Parses a pkiMessage and verifies its signature. `extra_certs` are
/// candidate signer certificates besides those embedded in the message.
pub(crate) fn verify(der: &[u8], extra_certs: &[X509]) -> Result<VerifiedMessage> {
    // Structure first, with the cms types, on a DER-normalised copy.
    let normalized = asn1::ber_to_der(der)?;
    let ci = ContentInfo::from_der(&normalized)?;
    if ci.content_type != asn1::ID_SIGNED_DATA {
        return Err(ScepError::Malformed("not a signed-data content info"));
    }
    let sd_der = ci.content.to_der()?;
    let sd = Tlv::parse(&sd_der)?;
    let fields = sd.children()?;
    let encap = fields
        .get(2)
        .ok_or(ScepError::Malformed("signed-data without content info"))?;
    let encap = EncapsulatedContentInfo::from_der(encap.raw)?;
    if encap.econtent_type != asn1::ID_DATA {
        return Err(ScepError::Malformed("signed content is not id-data"));
    }
    let signer_infos = fields
        .last()
        .ok_or(ScepError::Malformed("signed-data without signer infos"))?;
    let signer_infos = SignerInfos::from_der(signer_infos.raw)?;
    // RFC 8894 §3.2: exactly one signer.
    let [signer_info] = signer_infos.0.as_slice() else {
        return Err(ScepError::Malformed("expected exactly one signer"));
    };
    let digest = DigestAlgorithm::from_oid(&signer_info.digest_alg.oid)
        .ok_or_else(|| ScepError::UnsupportedDigest(signer_info.digest_alg.oid.to_string()))?;
    let signed_attrs = signer_info
        .signed_attrs
        .as_ref()
        .ok_or(ScepError::MissingAttribute("signedAttrs"))?;
    let (attrs, content_type_ok) = read_attributes(signed_attrs)?;
    if !content_type_ok {
        return Err(ScepError::MissingAttribute("contentType"));
    }

    // Then the signature, with OpenSSL on the original bytes: it checks
    // messageDigest against the eContent and the signature over the DER
    // SET OF signed attributes. NOVERIFY: no chain building here, trust
    // in the signer is decided by the caller.
    let p7 = Pkcs7::from_der(der).map_err(|_| ScepError::Malformed("unreadable pkcs#7"))?;
    let mut certs = Stack::new()?;
    for cert in extra_certs {
        certs.push(cert.clone())?;
    }
    let store = X509StoreBuilder::new()?.build();
    let mut content = Vec::new();
    p7.verify(
        &certs,
        &store,
        None,
        Some(&mut content),
        Pkcs7Flags::NOVERIFY,
    )
    .map_err(|_| ScepError::BadSignature)?;
    let signers = p7
        .signers(&certs, Pkcs7Flags::empty())
        .map_err(|_| ScepError::BadSignature)?;
    let signer = match signers.iter().collect::<Vec<_>>().as_slice() {
        [one] => (*one).to_owned(),
        _ => return Err(ScepError::BadSignature),
    };
    Ok(VerifiedMessage {
        digest,
        signer,
        content,
        attrs,
    })
}

/// The content-encryption algorithm of an EnvelopedData (RFC 5652 §6.1),
/// read with the walker so BER from Apple clients works too.
pub(crate) fn envelope_cipher(envelope: &[u8]) -> Option<ContentCipher> {
    let der = asn1::ber_to_der(envelope).ok()?;
    let ci = Tlv::parse(&der).ok()?;
    let oid = ObjectIdentifier::from_der(ci.child(0, "").ok()?.raw).ok()?;
    if oid != asn1::ID_ENVELOPED_DATA {
        return None;
    }
    let ed = ci.child(1, "").ok()?.child(0, "").ok()?;
    // EnvelopedData: version, [0] originatorInfo OPTIONAL, recipientInfos
    // (a SET), encryptedContentInfo.
    let fields = ed.children().ok()?;
    let recipients = fields.iter().position(|f| f.tag == 0x31)?;
    let eci = fields.get(recipients + 1)?;
    let alg = eci.child(1, "").ok()?.child(0, "").ok()?;
    ContentCipher::from_oid(&ObjectIdentifier::from_der(alg.raw).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    #[test]
    fn string_attributes_keep_their_characters() {
        for (value, tag) in [
            ("0A1B2C", Tag::PrintableString),
            ("base64+/=", Tag::PrintableString),
            ("url_safe-id", Tag::Utf8String),
        ] {
            let attr = string_attr(asn1::SCEP_TRANSACTION_ID, value).unwrap();
            let [any] = attr.values.as_slice() else {
                panic!("one value")
            };
            assert_eq!(any.tag(), tag, "{value}");
            assert_eq!(any_to_string(any).as_deref(), Some(value));
        }
    }

    /// Re-encodes DER with indefinite lengths on every constructed
    /// element, as NSS-style encoders do.
    fn to_indefinite(der: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for tlv in crate::pki::der::Tlvs::new(der) {
            let tlv = tlv.unwrap();
            if tlv.tag & 0x20 != 0 {
                out.extend_from_slice(&[tlv.tag, 0x80]);
                out.extend(to_indefinite(tlv.content));
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(tlv.raw);
            }
        }
        out
    }

    #[test]
    fn envelope_cipher_reads_der_and_ber() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "envelope test").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        let serial = openssl::bn::BigNum::from_u32(7)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        let mut recipients = Stack::new().unwrap();
        recipients.push(cert.clone()).unwrap();
        for cipher in [
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
            ContentCipher::DesEde3Cbc,
        ] {
            let der = Pkcs7::encrypt(&recipients, b"csr", cipher.cipher(), Pkcs7Flags::BINARY)
                .unwrap()
                .to_der()
                .unwrap();
            assert_eq!(envelope_cipher(&der), Some(cipher));
            let ber = to_indefinite(&der);
            assert_ne!(ber, der);
            assert_eq!(envelope_cipher(&ber), Some(cipher));
            // OpenSSL opens the BER form too.
            let plain = Pkcs7::from_der(&ber)
                .unwrap()
                .decrypt(&key, &cert, Pkcs7Flags::empty())
                .unwrap();
            assert_eq!(plain, b"csr");
        }
        assert_eq!(envelope_cipher(b"\x30\x00"), None);
    }
}
