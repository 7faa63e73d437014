//! The client side of SCEP: build a PKCSReq/RenewalReq and read the
//! CertRep. Used by the device simulator and the tests; it exercises the
//! server code from the other direction and talks to other SCEP servers.

use der::asn1::{BitString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::x509::{X509, X509Builder, X509NameRef, X509Req};
use x509_cert::attr::Attribute;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::message::{self, octet_attr, printable_attr};
use super::{
    CONTENT_TYPE_CA_CERT, CONTENT_TYPE_CA_RA_CERT, ContentCipher, DigestAlgorithm, FailInfo,
    MessageType, RequestKind, Result, ScepError, asn1,
};

/// A signed request ready to POST, and what to match the reply with.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// The pkiMessage (DER ContentInfo).
    pub der: Vec<u8>,
    /// The transactionID we chose.
    pub transaction_id: String,
    /// The senderNonce we chose; the reply must echo it as recipientNonce.
    pub sender_nonce: Vec<u8>,
}

/// What the CA answered.
#[derive(Debug)]
pub enum CertRepOutcome {
    /// pkiStatus SUCCESS: the issued certificate.
    Issued(X509),
    /// pkiStatus FAILURE with its failInfo.
    Failed(FailInfo),
    /// pkiStatus PENDING: poll later with the same transactionID.
    Pending,
}

/// Builds a PKCS #10 request for `key` with `subject` and, if given, the
/// challengePassword attribute (RFC 8894 §2.2, RFC 2985 §5.4.1) as a
/// UTF8String. rust-openssl cannot add CSR attributes, so the request
/// info is assembled with `x509-cert` types and signed with OpenSSL
/// (SHA-256).
pub fn build_csr(
    key: &PKey<Private>,
    subject: &X509NameRef,
    challenge: Option<&str>,
) -> Result<X509Req> {
    let mut attributes = SetOfVec::new();
    if let Some(challenge) = challenge {
        let mut values = SetOfVec::new();
        values.insert(Any::encode_from(&Utf8StringRef::new(challenge)?)?)?;
        attributes.insert(Attribute {
            oid: asn1::ATTR_CHALLENGE_PASSWORD,
            values,
        })?;
    }
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: Name::from_der(&subject.to_der()?)?,
        public_key: SubjectPublicKeyInfoOwned::from_der(&key.public_key_to_der()?)?,
        attributes,
    };
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(&info.to_der()?)?;
    let signature = signer.sign_to_vec()?;
    let algorithm = match key.id() {
        Id::RSA => AlgorithmIdentifierOwned {
            oid: asn1::OID_SHA256_WITH_RSA,
            parameters: Some(Any::null()),
        },
        Id::EC => AlgorithmIdentifierOwned {
            oid: asn1::OID_ECDSA_SHA256,
            parameters: None,
        },
        _ => return Err(ScepError::UnsupportedKey),
    };
    let req = CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(X509Req::from_der(&req.to_der()?)?)
}

/// A self-signed certificate for the CSR's key, to sign a PKCSReq with
/// (RFC 8894 §2.3). Subject is the CSR subject, valid for a day.
pub fn self_signed_signer(csr: &X509Req, key: &PKey<Private>) -> Result<X509> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = [0u8; 8];
    openssl::rand::rand_bytes(&mut serial)?;
    serial[0] &= 0x7f;
    let serial = openssl::bn::BigNum::from_slice(&serial)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(csr.subject_name())?;
    b.set_issuer_name(csr.subject_name())?;
    b.set_pubkey(key)?;
    let not_before = openssl::asn1::Asn1Time::days_from_now(0)?;
    let not_after = openssl::asn1::Asn1Time::days_from_now(1)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// Builds a PKCSReq or RenewalReq (RFC 8894 §3.3.1): the CSR enveloped to
/// `ca_cert` (the CA, or the RA's encryption certificate) with `cipher`,
/// signed by `key` with `digest`. `signer_cert` is a self-signed
/// certificate for `key` (PKCSReq) or the identity being renewed
/// (RenewalReq); it is embedded and the reply is encrypted to it.
pub fn pkcs_req(
    csr: &X509Req,
    key: &PKey<Private>,
    signer_cert: &X509,
    ca_cert: &X509,
    kind: RequestKind,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
) -> Result<ClientRequest> {
    let mut recipients = Stack::new()?;
    recipients.push(ca_cert.clone())?;
    let envelope = Pkcs7::encrypt(
        &recipients,
        &csr.to_der()?,
        cipher.cipher(),
        Pkcs7Flags::BINARY,
    )?
    .to_der()?;

    // RFC 8894 §3.2.1.1 only asks for uniqueness; a random value is
    // unique without tying transactions to a key.
    let mut tid = [0u8; 16];
    openssl::rand::rand_bytes(&mut tid)?;
    let transaction_id: String = tid.iter().map(|b| format!("{b:02X}")).collect();
    let sender_nonce = message::new_nonce()?;

    let attrs = vec![
        printable_attr(asn1::SCEP_MESSAGE_TYPE, kind.message_type().code())?,
        printable_attr(asn1::SCEP_TRANSACTION_ID, &transaction_id)?,
        octet_attr(asn1::SCEP_SENDER_NONCE, &sender_nonce)?,
    ];
    let der = message::sign(&envelope, attrs, digest, signer_cert, key, &[signer_cert])?;
    Ok(ClientRequest {
        der,
        transaction_id,
        sender_nonce,
    })
}

/// Reads a CertRep (RFC 8894 §3.3.2): checks that it is signed by
/// `ca_cert` (or by an RA certificate that `ca_cert` signed), that it
/// answers our transactionID and echoes our nonce, then opens the
/// envelope with the request's signer key and certificate and returns
/// the issued certificate: the first one in the reply that is neither
/// `ca_cert` nor the issuer of another certificate in the reply.
pub fn parse_cert_rep(
    der: &[u8],
    signer_key: &PKey<Private>,
    signer_cert: &X509,
    expected_transaction_id: &str,
    expected_nonce: &[u8],
    ca_cert: &X509,
) -> Result<CertRepOutcome> {
    let msg = message::verify(der, std::slice::from_ref(ca_cert))?;
    let ca_der = ca_cert.to_der()?;
    let ca_key = ca_cert.public_key()?;
    let trusted = msg.signer.to_der()? == ca_der || msg.signer.verify(&ca_key).unwrap_or(false);
    if !trusted {
        return Err(ScepError::ReplyRejected("not signed by the ca or its ra"));
    }
    let attrs = msg.attrs;
    if attrs.message_type.as_deref() != Some(MessageType::CertRep.code()) {
        return Err(ScepError::ReplyRejected("not a certrep"));
    }
    if attrs.transaction_id.as_deref() != Some(expected_transaction_id) {
        return Err(ScepError::ReplyRejected("transaction id mismatch"));
    }
    if attrs.recipient_nonce.as_deref() != Some(expected_nonce) {
        return Err(ScepError::ReplyRejected("recipient nonce mismatch"));
    }
    if attrs.sender_nonce.is_none() {
        return Err(ScepError::MissingAttribute("senderNonce"));
    }
    match attrs.pki_status.as_deref() {
        Some("0") => {}
        Some("2") => {
            let code = attrs
                .fail_info
                .ok_or(ScepError::MissingAttribute("failInfo"))?;
            return FailInfo::from_code(&code)
                .map(CertRepOutcome::Failed)
                .ok_or(ScepError::InvalidAttribute("failInfo"));
        }
        Some("3") => return Ok(CertRepOutcome::Pending),
        Some(_) => return Err(ScepError::InvalidAttribute("pkiStatus")),
        None => return Err(ScepError::MissingAttribute("pkiStatus")),
    }
    let degenerate = Pkcs7::from_der(&msg.content)
        .and_then(|p7| p7.decrypt(signer_key, signer_cert, Pkcs7Flags::empty()))
        .map_err(|_| ScepError::Decrypt)?;
    let certs = certs_from_pkcs7(&degenerate)?;
    let issued = certs.iter().enumerate().find(|(i, c)| {
        c.to_der().map(|d| d != ca_der).unwrap_or(false)
            && !certs
                .iter()
                .enumerate()
                .any(|(j, other)| j != *i && c.issued(other) == openssl::x509::X509VerifyResult::OK)
    });
    issued
        .map(|(_, c)| CertRepOutcome::Issued(c.clone()))
        .ok_or(ScepError::ReplyRejected("no issued certificate in reply"))
}

/// Certificates of a degenerate certs-only PKCS #7, in encoded order.
pub fn certs_from_pkcs7(der: &[u8]) -> Result<Vec<X509>> {
    let p7 = Pkcs7::from_der(der)?;
    let certs = p7
        .signed()
        .and_then(|s| s.certificates())
        .ok_or(ScepError::Malformed("no certificates in pkcs#7"))?;
    Ok(certs.iter().map(|c| c.to_owned()).collect())
}

/// Decodes a GetCACert reply body by its content type (RFC 8894 §4.2.1).
pub fn parse_ca_cert_response(content_type: &str, body: &[u8]) -> Result<Vec<X509>> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        CONTENT_TYPE_CA_CERT => Ok(vec![X509::from_der(body)?]),
        CONTENT_TYPE_CA_RA_CERT => certs_from_pkcs7(body),
        _ => Err(ScepError::Malformed("unexpected getcacert content type")),
    }
}
