//! Low-level ASN.1 helpers for the SCEP layer: object identifiers, a
//! BER-to-DER normaliser and a tiny DER walker.
//!
//! Why a normaliser: Apple's SCEP client (Security.framework, derived from
//! NSS's CMS encoder) emits BER with indefinite lengths and constructed
//! OCTET STRINGs, while the RustCrypto `der` crate only reads DER. OpenSSL
//! reads BER itself, so the normaliser is only needed on the paths where we
//! read structures with `cms`/`x509-cert` types.
//!
//! Why a walker: we read the SignerInfo and the envelope's algorithm
//! without decoding the embedded certificates with `x509-cert`, which is
//! stricter than OpenSSL about the odd encodings that older CAs (such as
//! the MDM server we migrate from) put in their certificates.

use der::asn1::ObjectIdentifier;

use super::ScepError;

/// `id-data` (RFC 5652 §4).
pub(crate) const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-signedData` (RFC 5652 §5.1).
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `id-envelopedData` (RFC 5652 §6.1).
pub(crate) const ID_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// PKCS #9 contentType attribute (RFC 5652 §11.1).
pub(crate) const ATTR_CONTENT_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// PKCS #9 messageDigest attribute (RFC 5652 §11.2).
pub(crate) const ATTR_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// PKCS #9 challengePassword (RFC 2985 §5.4.1), carried in the CSR
/// attributes (RFC 8894 §2.2).
pub(crate) const ATTR_CHALLENGE_PASSWORD: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

// SCEP authenticated attributes, RFC 8894 §3.2.1.
pub(crate) const SCEP_MESSAGE_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.2");
pub(crate) const SCEP_PKI_STATUS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.3");
pub(crate) const SCEP_FAIL_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.4");
pub(crate) const SCEP_SENDER_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.5");
pub(crate) const SCEP_RECIPIENT_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.6");
pub(crate) const SCEP_TRANSACTION_ID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.7");
pub(crate) const SCEP_FAIL_INFO_TEXT: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.8");

// Digest algorithms (RFC 3370 §2.1, RFC 5754 §2).
pub(crate) const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
pub(crate) const OID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const OID_SHA384: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const OID_SHA512: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

// Signature algorithms.
pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_SHA256_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const OID_ECDSA_SHA1: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
pub(crate) const OID_ECDSA_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const OID_ECDSA_SHA384: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const OID_ECDSA_SHA512: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

// Content-encryption algorithms (RFC 3565 §4.1, RFC 3370 §5.1).
pub(crate) const OID_AES128_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const OID_AES192_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const OID_AES256_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const OID_DES_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.7");
pub(crate) const OID_DES_EDE3_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");

pub(crate) use crate::pki::der::{Tlv, ber_to_der};

impl From<crate::pki::der::DerError> for ScepError {
    fn from(e: crate::pki::der::DerError) -> Self {
        ScepError::Malformed(e.0)
    }
}
