//! SCEP (RFC 8894) PKI-message layer: everything between the HTTP body of a
//! `PKIOperation` and a certificate, in both directions.
//!
//! This module owns:
//! - the `GetCACaps` and `GetCACert` response bodies ([`ca_caps`],
//!   [`ca_cert_response`]);
//! - reading a client's pkiMessage ([`ScepRequest::parse`]), checking its
//!   signature, and opening its pkcsPKIEnvelope with the CA key
//!   ([`ScepRequest::decrypt`]);
//! - issuing the client certificate ([`issue_certificate`]);
//! - building the signed `CertRep` reply ([`cert_rep_success`],
//!   [`cert_rep_failure`]);
//! - the client side of the same exchange ([`client`]), used by the device
//!   simulator and the tests.
//!
//! It does not own HTTP routing, challenge-password policy or the decision
//! whether a renewal is allowed: those belong to the caller, which gets
//! everything it needs to decide from [`CsrRequest`].
//!
//! All private-key operations (signing, decrypting, issuing) go through
//! OpenSSL. The RustCrypto `cms` types are used only to read and write the
//! SignedData structure with its signed attributes, which rust-openssl
//! cannot do. Inputs are untrusted: malformed bytes give a [`ScepError`],
//! never a panic.
//!
//! RA mode: every function that takes `ca_cert`/`ca_key` uses them as the
//! key that decrypts requests and signs replies. A deployment with a
//! separate RA passes the RA certificate and key there and issues with the
//! CA key.
//!
//! # Serving PKIOperation
//!
//! ```text
//! // GET: let body = decode_get_message(raw_message_param)?; POST: raw body.
//! let req = match ScepRequest::parse(&body) {
//!     Ok(req) => req,
//!     Err(_) => return http_400(), // nothing authenticated to answer
//! };
//! let reply = match req.decrypt(&ca_cert, &ca_key) {
//!     Err(e) => cert_rep_failure(&req, e.fail_info(), &ca_cert, &ca_key)?,
//!     Ok(csr) => {
//!         // Caller policy: challenge for PKCSReq; for RenewalReq,
//!         // csr.renewal_identity() must chain to our CA or the old MDM's.
//!         let cert = issue_certificate(&csr.csr, &ca_cert, &ca_key, 365)?;
//!         cert_rep_success(&req, &cert, &ca_cert, &ca_key)?
//!     }
//! };
//! // 200 OK, Content-Type: application/x-pki-message (CONTENT_TYPE_PKI_MESSAGE)
//! ```
//!
//! # Client behaviour this code accommodates
//!
//! - Apple devices send BER (indefinite lengths, chunked OCTET STRINGs)
//!   and read a multi-certificate GetCACert reply as "separate RA
//!   certificates" (public reports; not tested against a device here).
//!   Both are handled: BER is normalised before the `der` crate sees it,
//!   and [`ca_cert_response`] sends a single CA as bare DER.
//! - micromdm scepclient 2.1.0 (Debian `scep`) always encrypts with single
//!   DES and signs with SHA-1, and sends GET messages in URL-safe base64:
//!   see [`enable_legacy_des`] and [`decode_get_message`].
//! - certmonger 0.79.17 `scep-submit` always uses GET, even when
//!   `POSTPKIOperation` is advertised, and chain-verifies the CertRep
//!   signer against the CA certificate.

mod asn1;
pub mod client;
mod issue;
mod message;

use std::fmt;
use std::sync::OnceLock;

use der::Decode;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509, X509Req, X509VerifyResult};
use x509_cert::attr::Attribute;

pub use issue::issue_certificate;

/// Errors from the SCEP message layer. [`ScepError::fail_info`] maps each
/// to the `failInfo` a CertRep should carry when the request itself could
/// be read.
#[derive(Debug, thiserror::Error)]
pub enum ScepError {
    /// The bytes are not a well-formed SCEP message.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// An ASN.1 structure could not be decoded or encoded.
    #[error("asn.1 error: {0}")]
    Asn1(#[from] der::Error),
    /// OpenSSL reported an error.
    #[error("openssl error: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The CMS signature or the messageDigest attribute does not match.
    #[error("message signature does not verify")]
    BadSignature,
    /// The message is signed with a digest we do not accept.
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(String),
    /// A content-encryption algorithm we refuse or cannot use.
    #[error("unsupported content cipher {0}")]
    UnsupportedCipher(&'static str),
    /// A key type we cannot sign or encrypt with.
    #[error("unsupported key type")]
    UnsupportedKey,
    /// A signed attribute required by RFC 8894 §3.2.1 is absent.
    #[error("missing signed attribute {0}")]
    MissingAttribute(&'static str),
    /// A signed attribute is present but its value is unusable.
    #[error("invalid signed attribute {0}")]
    InvalidAttribute(&'static str),
    /// The messageType is unknown, or not valid in this direction.
    #[error("unsupported message type {0}")]
    UnsupportedMessageType(String),
    /// The pkcsPKIEnvelope could not be opened. Deliberately carries no
    /// detail: RFC 8894 §3.3.2 answers every decryption problem with a
    /// generic badMessageCheck, which also avoids a padding oracle.
    #[error("envelope could not be decrypted")]
    Decrypt,
    /// The decrypted content is not a usable PKCS #10 request.
    #[error("invalid certificate request: {0}")]
    InvalidCsr(&'static str),
    /// The certificate request's own signature does not verify.
    #[error("certificate request signature does not verify")]
    CsrSignature,
    /// Certificate issuance was refused (validity, CA expiry).
    #[error("cannot issue certificate: {0}")]
    Issue(&'static str),
    /// Client side: the reply does not belong to our request or is not
    /// signed by the CA (or an RA it certified).
    #[error("reply rejected: {0}")]
    ReplyRejected(&'static str),
}

impl ScepError {
    /// The `failInfo` to answer with, for errors raised after the request
    /// was parsed (RFC 8894 §3.2.1.4).
    pub fn fail_info(&self) -> FailInfo {
        match self {
            ScepError::UnsupportedDigest(_)
            | ScepError::UnsupportedCipher(_)
            | ScepError::UnsupportedKey => FailInfo::BadAlg,
            ScepError::BadSignature | ScepError::Decrypt | ScepError::CsrSignature => {
                FailInfo::BadMessageCheck
            }
            _ => FailInfo::BadRequest,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = ScepError> = std::result::Result<T, E>;

/// The `messageType` attribute (RFC 8894 §3.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 3: the CA's reply.
    CertRep,
    /// 17: renewal request signed with an existing certificate.
    RenewalReq,
    /// 19: initial enrollment request.
    PkcsReq,
    /// 20: poll for a pending request (GetCertInitial).
    CertPoll,
    /// 21: fetch a certificate by issuer and serial.
    GetCert,
    /// 22: fetch a CRL.
    GetCrl,
}

impl MessageType {
    /// The decimal string carried in the attribute.
    pub fn code(self) -> &'static str {
        match self {
            MessageType::CertRep => "3",
            MessageType::RenewalReq => "17",
            MessageType::PkcsReq => "19",
            MessageType::CertPoll => "20",
            MessageType::GetCert => "21",
            MessageType::GetCrl => "22",
        }
    }

    /// Parses the attribute value.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "3" => MessageType::CertRep,
            "17" => MessageType::RenewalReq,
            "19" => MessageType::PkcsReq,
            "20" => MessageType::CertPoll,
            "21" => MessageType::GetCert,
            "22" => MessageType::GetCrl,
            _ => return None,
        })
    }
}

/// The two request types that carry a PKCS #10 request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Initial enrollment, normally signed with a self-signed certificate.
    PkcsReq,
    /// Renewal, signed with the identity being renewed (RFC 8894 §3.3.1.2).
    RenewalReq,
}

impl RequestKind {
    fn message_type(self) -> MessageType {
        match self {
            RequestKind::PkcsReq => MessageType::PkcsReq,
            RequestKind::RenewalReq => MessageType::RenewalReq,
        }
    }
}

/// The `pkiStatus` attribute (RFC 8894 §3.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PkiStatus {
    /// "0": the request was granted.
    Success,
    /// "2": the request was rejected; `failInfo` says why.
    Failure,
    /// "3": manual approval pending.
    Pending,
}

impl PkiStatus {
    /// The decimal string carried in the attribute.
    pub fn code(self) -> &'static str {
        match self {
            PkiStatus::Success => "0",
            PkiStatus::Failure => "2",
            PkiStatus::Pending => "3",
        }
    }
}

/// The `failInfo` attribute (RFC 8894 §3.2.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailInfo {
    /// 0: unrecognized or unsupported algorithm.
    BadAlg,
    /// 1: integrity check (signature or decryption) failed.
    BadMessageCheck,
    /// 2: transaction not permitted or supported.
    BadRequest,
    /// 3: the message time was not close enough to the system time.
    BadTime,
    /// 4: no certificate matched the criteria.
    BadCertId,
}

impl FailInfo {
    /// The decimal string carried in the attribute.
    pub fn code(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "0",
            FailInfo::BadMessageCheck => "1",
            FailInfo::BadRequest => "2",
            FailInfo::BadTime => "3",
            FailInfo::BadCertId => "4",
        }
    }

    /// Parses the attribute value.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "0" => FailInfo::BadAlg,
            "1" => FailInfo::BadMessageCheck,
            "2" => FailInfo::BadRequest,
            "3" => FailInfo::BadTime,
            "4" => FailInfo::BadCertId,
            _ => return None,
        })
    }
}

impl fmt::Display for FailInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        })
    }
}

/// Digest algorithms accepted in SignerInfo (RFC 8894 §3.5.2 lists SHA-1
/// and the SHA-2 family; MD5 is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-1, still the default of several older clients.
    Sha1,
    /// SHA-256, required by the `SCEPStandard` capability.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    pub(crate) fn oid(self) -> der::asn1::ObjectIdentifier {
        match self {
            DigestAlgorithm::Sha1 => asn1::OID_SHA1,
            DigestAlgorithm::Sha256 => asn1::OID_SHA256,
            DigestAlgorithm::Sha384 => asn1::OID_SHA384,
            DigestAlgorithm::Sha512 => asn1::OID_SHA512,
        }
    }

    pub(crate) fn from_oid(oid: &der::asn1::ObjectIdentifier) -> Option<Self> {
        [
            DigestAlgorithm::Sha1,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha384,
            DigestAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|d| d.oid() == *oid)
    }

    /// The OpenSSL digest.
    pub fn message_digest(self) -> MessageDigest {
        match self {
            DigestAlgorithm::Sha1 => MessageDigest::sha1(),
            DigestAlgorithm::Sha256 => MessageDigest::sha256(),
            DigestAlgorithm::Sha384 => MessageDigest::sha384(),
            DigestAlgorithm::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// Content-encryption algorithms for the pkcsPKIEnvelope (RFC 8894
/// §3.5.2: `AES` means AES-128-CBC at least; `DES3` is for old clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentCipher {
    /// AES-128-CBC, the one every `SCEPStandard` client supports.
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC.
    Aes256Cbc,
    /// Triple DES (DES-EDE3-CBC), for clients that lack the `AES` cap.
    DesEde3Cbc,
    /// Single DES (DES-CBC). Broken (56-bit keys) and absent from OpenSSL
    /// 3's default provider; some old clients still send it (micromdm's
    /// scepclient 2.1.0 always does). Read only after
    /// [`enable_legacy_des`]; replies to such clients use
    /// [`ContentCipher::DesEde3Cbc`] instead.
    DesCbc,
}

impl ContentCipher {
    /// The OpenSSL cipher.
    pub fn cipher(self) -> Cipher {
        match self {
            ContentCipher::Aes128Cbc => Cipher::aes_128_cbc(),
            ContentCipher::Aes192Cbc => Cipher::aes_192_cbc(),
            ContentCipher::Aes256Cbc => Cipher::aes_256_cbc(),
            ContentCipher::DesEde3Cbc => Cipher::des_ede3_cbc(),
            ContentCipher::DesCbc => Cipher::des_cbc(),
        }
    }

    /// The cipher for our reply to a client that used `self`: the same
    /// one, except that single DES is never sent (a client that can do
    /// DES-CBC can do DES-EDE3-CBC).
    fn for_reply(self) -> Self {
        match self {
            ContentCipher::DesCbc => ContentCipher::DesEde3Cbc,
            other => other,
        }
    }

    pub(crate) fn from_oid(oid: &der::asn1::ObjectIdentifier) -> Option<Self> {
        Some(match *oid {
            o if o == asn1::OID_AES128_CBC => ContentCipher::Aes128Cbc,
            o if o == asn1::OID_AES192_CBC => ContentCipher::Aes192Cbc,
            o if o == asn1::OID_AES256_CBC => ContentCipher::Aes256Cbc,
            o if o == asn1::OID_DES_EDE3_CBC => ContentCipher::DesEde3Cbc,
            o if o == asn1::OID_DES_CBC => ContentCipher::DesCbc,
            _ => return None,
        })
    }
}

static LEGACY_DES: OnceLock<()> = OnceLock::new();

/// Loads OpenSSL's legacy provider (next to the default one) so that
/// requests encrypted with single DES can be opened. This is process-wide
/// and makes other legacy algorithms available too, so call it only to
/// serve clients that need it: Apple devices never do.
pub fn enable_legacy_des() -> Result<()> {
    if LEGACY_DES.get().is_some() {
        return Ok(());
    }
    // Load "default" explicitly as well: loading any provider disables the
    // implicit fallback, and the legacy provider's child library context
    // only sees providers loaded this way (its DES key generation needs
    // the default provider's DRBG).
    let default = openssl::provider::Provider::load(None, "default")?;
    let legacy = openssl::provider::Provider::load(None, "legacy")?;
    // Unloading happens on drop; keep both for the life of the process.
    std::mem::forget(default);
    std::mem::forget(legacy);
    let _ = LEGACY_DES.set(());
    Ok(())
}

fn legacy_des_enabled() -> bool {
    LEGACY_DES.get().is_some()
}

/// Decodes the `message` parameter of a GET PKIOperation (RFC 8894
/// §4.1: base64, then URL-encoded). Accepts the value raw or already
/// percent-decoded, and the quirks seen in clients: the URL-safe
/// alphabet (micromdm scepclient), missing padding, line breaks, and a
/// `+` that a form decoder turned into a space.
pub fn decode_get_message(value: &str) -> Result<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut text = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let hex = |b: u8| char::from(b).to_digit(16);
        let escaped = (c == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        let c = match escaped {
            Some((hi, lo)) => {
                i += 3;
                // Two hex digits: at most 0xff.
                (hi * 16 + lo) as u8
            }
            None => {
                i += 1;
                c
            }
        };
        match c {
            b'\r' | b'\n' | b'\t' => {}
            b' ' | b'-' => text.push('+'),
            b'_' => text.push('/'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {
                text.push(char::from(c))
            }
            _ => return Err(ScepError::Malformed("invalid base64 in message")),
        }
    }
    let unpadded = text.trim_end_matches('=').len();
    text.truncate(unpadded);
    match unpadded % 4 {
        0 => {}
        2 => text.push_str("=="),
        3 => text.push('='),
        _ => return Err(ScepError::Malformed("invalid base64 length in message")),
    }
    if text.is_empty() {
        return Err(ScepError::Malformed("empty message"));
    }
    openssl::base64::decode_block(&text)
        .map_err(|_| ScepError::Malformed("invalid base64 in message"))
}

/// GetCACaps body (RFC 8894 §3.5.2). `Renewal` advertises RenewalReq;
/// `SCEPStandard` implies AES, SHA-256 and POSTPKIOperation.
pub fn ca_caps() -> &'static str {
    "POSTPKIOperation\nSHA-256\nSHA-1\nAES\nDES3\nSCEPStandard\nRenewal"
}

/// Content type of a GetCACert reply carrying one DER certificate.
pub const CONTENT_TYPE_CA_CERT: &str = "application/x-x509-ca-cert";
/// Content type of a GetCACert reply carrying a certs-only PKCS #7.
pub const CONTENT_TYPE_CA_RA_CERT: &str = "application/x-x509-ca-ra-cert";
/// Content type of a PKIOperation reply.
pub const CONTENT_TYPE_PKI_MESSAGE: &str = "application/x-pki-message";

/// GetCACert body (RFC 8894 §4.2.1): returns `(content type, body)`.
///
/// One certificate is sent as bare DER. Several are sent as a degenerate
/// certs-only SignedData in the order given (RA certificates first, then
/// the CA). Apple clients read the multi-certificate form as "there is a
/// separate RA" and look for RA certificates with the right key usages, so
/// pass a single CA certificate unless a real RA exists.
pub fn ca_cert_response(certs: &[X509]) -> Result<(&'static str, Vec<u8>)> {
    match certs {
        [] => Err(ScepError::Malformed("no ca certificate to send")),
        [one] => Ok((CONTENT_TYPE_CA_CERT, one.to_der()?)),
        many => {
            let ders = many
                .iter()
                .map(|c| c.to_der())
                .collect::<Result<Vec<_>, _>>()?;
            Ok((CONTENT_TYPE_CA_RA_CERT, message::certs_only(&ders)?))
        }
    }
}

/// A client pkiMessage whose signature has been verified, before the
/// envelope is opened (RFC 8894 §3.2).
#[derive(Debug)]
pub struct ScepRequest {
    message_type: MessageType,
    transaction_id: String,
    sender_nonce: Vec<u8>,
    digest: DigestAlgorithm,
    signer_cert: X509,
    envelope: Vec<u8>,
    content_cipher: Option<ContentCipher>,
}

impl ScepRequest {
    /// Parses a PKIOperation body and verifies its CMS signature against
    /// the certificate embedded by the client (self-signed for PKCSReq,
    /// the existing identity for RenewalReq). No chain is checked here:
    /// trust in the signer is the caller's decision.
    ///
    /// Errors here mean there is no authenticated request to answer; the
    /// HTTP layer should reply 400 rather than a CertRep.
    pub fn parse(der: &[u8]) -> Result<Self> {
        let msg = message::verify(der, &[])?;
        let attrs = &msg.attrs;
        let code = attrs
            .message_type
            .as_deref()
            .ok_or(ScepError::MissingAttribute("messageType"))?;
        let message_type = MessageType::from_code(code)
            .filter(|t| *t != MessageType::CertRep)
            .ok_or_else(|| ScepError::UnsupportedMessageType(code.chars().take(16).collect()))?;
        let transaction_id = attrs
            .transaction_id
            .clone()
            .ok_or(ScepError::MissingAttribute("transactionID"))?;
        // RFC 8894 §3.2.1.1: the ID is echoed back, so keep it bounded and
        // free of control characters. Not limited to the PrintableString
        // alphabet: URL-safe base64 IDs contain '_'.
        if transaction_id.is_empty()
            || transaction_id.len() > 256
            || transaction_id.chars().any(char::is_control)
        {
            return Err(ScepError::InvalidAttribute("transactionID"));
        }
        let sender_nonce = attrs
            .sender_nonce
            .clone()
            .ok_or(ScepError::MissingAttribute("senderNonce"))?;
        // §3.2.1.5 specifies 16 bytes; accept a little leeway, not a
        // megabyte that we would echo back.
        if sender_nonce.is_empty() || sender_nonce.len() > 64 {
            return Err(ScepError::InvalidAttribute("senderNonce"));
        }
        let content_cipher = message::envelope_cipher(&msg.content);
        Ok(ScepRequest {
            message_type,
            transaction_id,
            sender_nonce,
            digest: msg.digest,
            signer_cert: msg.signer,
            envelope: msg.content,
            content_cipher,
        })
    }

    /// The request's messageType.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The transactionID, echoed in the reply.
    pub fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    /// The client's senderNonce, returned as recipientNonce.
    pub fn sender_nonce(&self) -> &[u8] {
        &self.sender_nonce
    }

    /// The digest the client signed with; the reply uses the same one.
    pub fn digest(&self) -> DigestAlgorithm {
        self.digest
    }

    /// The certificate whose key signed the request, and to which the
    /// reply is encrypted.
    pub fn signer_cert(&self) -> &X509 {
        &self.signer_cert
    }

    /// The pkcsPKIEnvelope (DER or BER EnvelopedData), still encrypted.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    /// The content cipher the client used for its envelope, if known. The
    /// reply uses the same one: a client can decrypt what it encrypts.
    pub fn content_cipher(&self) -> Option<ContentCipher> {
        self.content_cipher
    }

    /// Opens the pkcsPKIEnvelope with the CA (or RA) key. Every failure is
    /// the same [`ScepError::Decrypt`] (RFC 8894 §3.3.2: badMessageCheck).
    pub fn decrypt_envelope(&self, ca_cert: &X509, ca_key: &PKey<Private>) -> Result<Vec<u8>> {
        // The algorithm identifier is in the clear, so refusing it by name
        // (badAlg) reveals nothing about the key or padding.
        if self.content_cipher == Some(ContentCipher::DesCbc) && !legacy_des_enabled() {
            return Err(ScepError::UnsupportedCipher("des-cbc"));
        }
        let p7 = Pkcs7::from_der(&self.envelope).map_err(|_| ScepError::Decrypt)?;
        p7.decrypt(ca_key, ca_cert, Pkcs7Flags::empty())
            .map_err(|_| ScepError::Decrypt)
    }

    /// Decrypts a PKCSReq or RenewalReq and returns the verified CSR.
    pub fn decrypt(&self, ca_cert: &X509, ca_key: &PKey<Private>) -> Result<CsrRequest> {
        let kind = match self.message_type {
            MessageType::PkcsReq => RequestKind::PkcsReq,
            MessageType::RenewalReq => RequestKind::RenewalReq,
            other => {
                return Err(ScepError::UnsupportedMessageType(other.code().to_owned()));
            }
        };
        let plain = self.decrypt_envelope(ca_cert, ca_key)?;
        let csr = X509Req::from_der(&plain).map_err(|_| ScepError::InvalidCsr("not pkcs#10"))?;
        let csr_key = csr
            .public_key()
            .map_err(|_| ScepError::InvalidCsr("unreadable public key"))?;
        // Proof of possession of the requested key (RFC 2986 §3).
        if !csr.verify(&csr_key).unwrap_or(false) {
            return Err(ScepError::CsrSignature);
        }
        let challenge_password = challenge_password(&plain)?;
        Ok(CsrRequest {
            csr,
            challenge_password,
            kind,
            signer_cert: self.signer_cert.clone(),
        })
    }
}

/// A decrypted enrollment request. Policy is the caller's: check the
/// challenge for PKCSReq; for RenewalReq check that
/// [`CsrRequest::renewal_identity`] chains to one of its CAs (ours or the
/// old MDM's), is not expired, and matches its subject/key rules.
pub struct CsrRequest {
    /// The PKCS #10 request; its signature has been verified.
    pub csr: X509Req,
    /// The challengePassword attribute, if present.
    pub challenge_password: Option<String>,
    /// PKCSReq or RenewalReq.
    pub kind: RequestKind,
    /// The certificate that signed the pkiMessage.
    pub signer_cert: X509,
}

impl fmt::Debug for CsrRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // X509Req has no Debug; the password is not printed.
        f.debug_struct("CsrRequest")
            .field("subject", &self.csr.subject_name())
            .field("has_challenge_password", &self.challenge_password.is_some())
            .field("kind", &self.kind)
            .field("signer_cert", &self.signer_cert)
            .finish()
    }
}

impl CsrRequest {
    /// For a RenewalReq, the existing identity that signed it. Nothing
    /// about it is checked here beyond the signature.
    pub fn renewal_identity(&self) -> Option<&X509> {
        (self.kind == RequestKind::RenewalReq).then_some(&self.signer_cert)
    }

    /// Whether the signer is a self-signed certificate (the usual
    /// PKCSReq case). A PKCSReq signed by a CA-issued identity is how some
    /// clients re-enroll (RFC 8894 §2.3), which the caller may treat as a
    /// renewal.
    pub fn signer_is_self_signed(&self) -> bool {
        let cert = &self.signer_cert;
        cert.issued(cert) == X509VerifyResult::OK
            && cert
                .public_key()
                .and_then(|k| cert.verify(&k))
                .unwrap_or(false)
    }

    /// Whether the signer certificate carries the key being certified.
    pub fn signer_key_matches_csr(&self) -> bool {
        match (self.signer_cert.public_key(), self.csr.public_key()) {
            (Ok(a), Ok(b)) => a.public_eq(&b),
            _ => false,
        }
    }
}

/// Reads challengePassword from the CSR attributes (RFC 2985 §5.4.1: a
/// DirectoryString, so any of its string types).
fn challenge_password(csr_der: &[u8]) -> Result<Option<String>> {
    let der = asn1::ber_to_der(csr_der).map_err(|_| ScepError::InvalidCsr("bad encoding"))?;
    let req = x509_cert::request::CertReq::from_der(&der)
        .map_err(|_| ScepError::InvalidCsr("unreadable attributes"))?;
    let Some(attr) = req
        .info
        .attributes
        .iter()
        .find(|a| a.oid == asn1::ATTR_CHALLENGE_PASSWORD)
    else {
        return Ok(None);
    };
    let value = attr
        .values
        .get(0)
        .ok_or(ScepError::InvalidCsr("empty challengePassword"))?;
    message::any_to_string(value)
        .map(Some)
        .ok_or(ScepError::InvalidCsr("challengePassword is not a string"))
}

/// Builds a successful CertRep (RFC 8894 §3.3.2): the issued certificate
/// (then the CA certificate) in a degenerate certs-only SignedData,
/// enveloped to the requester's signer certificate with the cipher the
/// requester used (AES-128-CBC if unknown, 3DES for single DES), signed by the CA with the
/// requester's digest.
pub fn cert_rep_success(
    req: &ScepRequest,
    issued: &X509,
    ca_cert: &X509,
    ca_key: &PKey<Private>,
) -> Result<Vec<u8>> {
    let degenerate = message::certs_only(&[issued.to_der()?, ca_cert.to_der()?])?;
    let mut recipients = Stack::new()?;
    recipients.push(req.signer_cert.clone())?;
    let cipher = req
        .content_cipher
        .map_or(ContentCipher::Aes128Cbc, ContentCipher::for_reply);
    let envelope = Pkcs7::encrypt(
        &recipients,
        &degenerate,
        cipher.cipher(),
        Pkcs7Flags::BINARY,
    )?
    .to_der()?;
    let attrs = reply_attributes(req, PkiStatus::Success)?;
    message::sign(&envelope, attrs, req.digest, ca_cert, ca_key, &[ca_cert])
}

/// Builds a failed CertRep: pkiStatus "2" plus failInfo, and no
/// pkcsPKIEnvelope (RFC 8894 §3.3.2). The eContent is an empty OCTET
/// STRING rather than absent, so verifiers do not treat the signature as
/// detached.
pub fn cert_rep_failure(
    req: &ScepRequest,
    fail: FailInfo,
    ca_cert: &X509,
    ca_key: &PKey<Private>,
) -> Result<Vec<u8>> {
    let mut attrs = reply_attributes(req, PkiStatus::Failure)?;
    attrs.push(message::printable_attr(asn1::SCEP_FAIL_INFO, fail.code())?);
    message::sign(&[], attrs, req.digest, ca_cert, ca_key, &[ca_cert])
}

/// The SCEP attributes shared by every CertRep (RFC 8894 §3.3.2).
fn reply_attributes(req: &ScepRequest, status: PkiStatus) -> Result<Vec<Attribute>> {
    Ok(vec![
        message::printable_attr(asn1::SCEP_MESSAGE_TYPE, MessageType::CertRep.code())?,
        message::printable_attr(asn1::SCEP_PKI_STATUS, status.code())?,
        message::string_attr(asn1::SCEP_TRANSACTION_ID, &req.transaction_id)?,
        message::octet_attr(asn1::SCEP_SENDER_NONCE, &message::new_nonce()?)?,
        message::octet_attr(asn1::SCEP_RECIPIENT_NONCE, &req.sender_nonce)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_message_quirks() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0xfb, 0xff, 0xfe];
        let std_b64 = openssl::base64::encode_block(&der);
        assert_eq!(std_b64, "MAMCAfv//g==");
        for encoded in [
            "MAMCAfv//g==",
            "MAMCAfv%2F%2Fg%3D%3D",
            "MAMCAfv__g",
            "MAMCAfv__g==",
            "MAMC\r\nAfv//g==",
            "MAMCAfv%2f%2fg",
        ] {
            assert_eq!(decode_get_message(encoded).unwrap(), der, "{encoded}");
        }
        // '+' survives both raw and as a form-decoded space.
        let der = [0xfb, 0xef, 0xbe];
        assert_eq!(openssl::base64::encode_block(&der), "++++");
        for encoded in ["++++", "%2B%2B%2B%2B", "    ", "----"] {
            assert_eq!(decode_get_message(encoded).unwrap(), der, "{encoded:?}");
        }
        for bad in ["", "=", "A", "AB*C", "%zz", "%", "ABCDE"] {
            assert!(decode_get_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn single_des_is_refused_with_bad_alg_unless_enabled() {
        let ca_key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_pubkey(&ca_key).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let req = ScepRequest {
            message_type: MessageType::PkcsReq,
            transaction_id: "T".into(),
            sender_nonce: vec![1; 16],
            digest: DigestAlgorithm::Sha256,
            signer_cert: cert.clone(),
            envelope: vec![0x30, 0x00],
            content_cipher: Some(ContentCipher::DesCbc),
        };
        // No unit test enables the legacy provider.
        let err = req.decrypt(&cert, &ca_key).unwrap_err();
        assert!(matches!(err, ScepError::UnsupportedCipher(_)), "{err:?}");
        assert_eq!(err.fail_info(), FailInfo::BadAlg);
        assert_eq!(ContentCipher::DesCbc.for_reply(), ContentCipher::DesEde3Cbc);
        assert_eq!(
            ContentCipher::Aes256Cbc.for_reply(),
            ContentCipher::Aes256Cbc
        );
    }
}

/// Property tests: SCEP requests from the network (random, or a real PKCSReq with bytes
/// flipped) never panic, and a real one still parses.
#[cfg(test)]
mod props {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    /// A real PKCSReq (made once: RSA keys are slow to generate).
    fn request() -> &'static Vec<u8> {
        static REQ: OnceLock<Vec<u8>> = OnceLock::new();
        REQ.get_or_init(|| {
            let (ca, _) = crate::pki::new_ca(&crate::pki::CaSpec {
                common_name: "Fuzz CA".into(),
                organization: "Test".into(),
                country: "US".into(),
                key_bits: 2048,
                years: 1,
            })
            .unwrap();
            let key = crate::pki::generate_rsa(2048).unwrap();
            let mut name = openssl::x509::X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", "device").unwrap();
            let csr = client::build_csr(&key, &name.build(), Some("challenge")).unwrap();
            let signer = client::self_signed_signer(&csr, &key).unwrap();
            client::pkcs_req(
                &csr,
                &key,
                &signer,
                &ca,
                RequestKind::PkcsReq,
                ContentCipher::Aes128Cbc,
                DigestAlgorithm::Sha256,
            )
            .unwrap()
            .der
        })
    }

    proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn scep_messages_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        ) {
            let _ = ScepRequest::parse(&bytes);
            let _ = ScepRequest::parse(&crate::fuzz::mutate(request(), &edits));
            let _ = decode_get_message(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_real_request_parses() {
        let r = ScepRequest::parse(request()).unwrap();
        assert!(!r.transaction_id().is_empty());
    }
}
