//! Decrypting S/MIME and CMS enveloped data: Apple Business Manager's server token (`.p7m`),
//! and later FileVault recovery keys.

use openssl::cms::CmsContentInfo;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use zeroize::Zeroizing;

use super::PkiError;

/// Decrypt enveloped data (S/MIME, PEM or DER CMS) with `key`/`cert`. Returns the raw content.
pub fn decrypt_smime(
    data: &[u8],
    key: &PKey<Private>,
    cert: &X509,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let cms = CmsContentInfo::smime_read_cms(data)
        .or_else(|_| CmsContentInfo::from_der(data))
        .or_else(|_| CmsContentInfo::from_pem(data))
        .map_err(|_| PkiError::NotEncrypted)?;
    cms.decrypt(key, cert)
        .map(Zeroizing::new)
        .map_err(|_| PkiError::CannotDecrypt)
}

/// Sign `data` as CMS SignedData with the content attached (signed configuration profiles).
pub fn sign_attached(
    data: &[u8],
    cert: &X509,
    key: &PKey<Private>,
    chain: &[X509],
) -> Result<Vec<u8>, PkiError> {
    let mut certs = openssl::stack::Stack::new()?;
    for c in chain {
        certs.push(c.clone())?;
    }
    let p7 =
        openssl::pkcs7::Pkcs7::sign(cert, key, &certs, data, openssl::pkcs7::Pkcs7Flags::BINARY)?;
    Ok(p7.to_der()?)
}
