//! Certificate authorities and self-signed certificates mdmctl creates: the SCEP CA that
//! issues device identities, and the self-signed certificate Apple Business Manager encrypts
//! its server token to.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder};
use time::OffsetDateTime;

use super::{PkiError, generate_rsa};

/// What a new CA looks like.
#[derive(Clone, Debug)]
pub struct CaSpec {
    pub common_name: String,
    pub organization: String,
    pub country: String,
    pub key_bits: u32,
    pub years: i32,
}

/// A new self-signed CA: RSA key, SHA-256, valid from ten minutes ago (clock skew on devices)
/// for `years`, basicConstraints CA (critical), keyUsage digitalSignature, keyEncipherment,
/// keyCertSign and cRLSign (critical), subject and authority key identifiers.
///
/// keyUsage also carries digitalSignature and keyEncipherment: a SCEP CA with no separate RA
/// signs its CertRep replies and is the recipient of the devices' encrypted requests, and strict
/// SCEP clients check those bits before encrypting to it.
pub fn new_ca(spec: &CaSpec) -> Result<(X509, PKey<Private>), PkiError> {
    let key = generate_rsa(spec.key_bits)?;
    let name = name(&[
        ("CN", &spec.common_name),
        ("O", &spec.organization),
        ("C", &spec.country),
    ])?;
    let now = OffsetDateTime::now_utc();
    let mut b = builder(
        &name,
        &name,
        &key,
        now.unix_timestamp() - 600,
        add_years(now, spec.years),
    )?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    // Apple's devices do not check these bits: micromdm/scep's CA (keyCertSign and cRLSign
    // only) works with Macs too, and mdmctl trusts such a CA when it is imported.
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    // Self-signed: with no issuer given, OpenSSL takes the certificate itself as issuer.
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(aki)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}

/// A self-signed end-entity certificate for an existing key (Apple Business Manager only uses
/// it to encrypt the server token, so no extensions beyond the key identifier are needed).
pub fn self_signed(common_name: &str, key: &PKey<Private>, days: i64) -> Result<X509, PkiError> {
    let name = name(&[("CN", common_name)])?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut b = builder(&name, &name, key, now - 600, now + days * 86_400)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A random positive 127-bit serial, as RFC 5280 recommends (unpredictable, at most 20 bytes).
pub fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn builder(
    subject: &X509Name,
    issuer: &X509Name,
    key: &PKey<Private>,
    not_before: i64,
    not_after: i64,
) -> Result<X509Builder, PkiError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(random_serial()?.as_ref())?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    b.set_not_before(Asn1Time::from_unix(not_before)?.as_ref())?;
    b.set_not_after(Asn1Time::from_unix(not_after)?.as_ref())?;
    Ok(b)
}

pub(crate) fn name(entries: &[(&str, &str)]) -> Result<X509Name, PkiError> {
    let mut n = X509NameBuilder::new()?;
    for (k, v) in entries {
        if !v.is_empty() {
            n.append_entry_by_text(k, v)?;
        }
    }
    Ok(n.build())
}

fn add_years(now: OffsetDateTime, years: i32) -> i64 {
    let target = now.year() + years;
    now.replace_year(target)
        // 29 February in a year without one: the day before.
        .or_else(|_| (now - time::Duration::days(1)).replace_year(target))
        .map(|t| t.unix_timestamp())
        .unwrap_or_else(|_| now.unix_timestamp() + i64::from(years) * 31_557_600)
}
