//! Issuing the client identity certificate from a verified CSR.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Req};

use super::{Result, ScepError};

/// Backdating of NotBefore, for clients whose clocks run a little slow.
const BACKDATE_SECS: i64 = 10 * 60;

/// Issues a client identity certificate for `csr`, signed by the CA with
/// SHA-256: subject and public key from the CSR (other CSR contents, such
/// as requested extensions, are ignored), a random positive 16-byte
/// serial, NotBefore ten minutes ago, NotAfter `validity_days` from now
/// but never past the CA's own NotAfter, and the extensions an MDM
/// identity needs: basicConstraints CA:FALSE, keyUsage digitalSignature +
/// keyEncipherment, extendedKeyUsage clientAuth, subject and authority
/// key identifiers. The CSR signature is checked again here so the
/// function is safe to call on its own.
pub fn issue_certificate(
    csr: &X509Req,
    ca_cert: &X509,
    ca_key: &PKey<Private>,
    validity_days: u32,
) -> Result<X509> {
    if validity_days == 0 {
        return Err(ScepError::Issue("validity must be at least one day"));
    }
    let public_key = csr
        .public_key()
        .map_err(|_| ScepError::InvalidCsr("unreadable public key"))?;
    if !csr.verify(&public_key).unwrap_or(false) {
        return Err(ScepError::CsrSignature);
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ScepError::Issue("system clock before 1970"))?
        .as_secs();
    let now = i64::try_from(now).map_err(|_| ScepError::Issue("system clock out of range"))?;
    let not_before = Asn1Time::from_unix(now - BACKDATE_SECS)?;
    let wanted = Asn1Time::from_unix(now + i64::from(validity_days) * 86_400)?;
    // A certificate that outlives its issuer stops verifying when the CA
    // expires; say so in the certificate instead.
    let not_after: &Asn1TimeRef = if wanted.compare(ca_cert.not_after())? == Ordering::Greater {
        ca_cert.not_after()
    } else {
        &wanted
    };
    if not_after.compare(&not_before)? != Ordering::Greater {
        return Err(ScepError::Issue("the ca certificate has expired"));
    }

    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(csr.subject_name())?;
    builder.set_issuer_name(ca_cert.subject_name())?;
    builder.set_pubkey(&public_key)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(not_after)?;
    builder.append_extension(BasicConstraints::new().critical().build()?)?;
    builder.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    builder.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(ca_cert), None))?;
    builder.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .issuer(false)
        .build(&builder.x509v3_context(Some(ca_cert), None))?;
    builder.append_extension(aki)?;
    builder.sign(ca_key, MessageDigest::sha256())?;
    Ok(builder.build())
}

/// 16 random bytes with the top bit cleared (positive, RFC 5280
/// §4.1.2.2) and the next one set, so the DER INTEGER is always exactly
/// 16 octets.
fn random_serial() -> Result<Asn1Integer> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}
