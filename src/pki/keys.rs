//! RSA keys: generation, loading from whatever an admin has at hand, and matching to a
//! certificate.

use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use zeroize::Zeroizing;

use super::{PkiError, is_p12, looks_like_pem, parse_p12};

/// A fresh RSA key. Apple's push CSR must be 2048 bits; CAs may be 4096.
pub fn generate_rsa(bits: u32) -> Result<PKey<Private>, PkiError> {
    Ok(PKey::from_rsa(Rsa::generate(bits)?)?)
}

/// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), zeroized when dropped.
pub fn private_key_pem(key: &PKey<Private>) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    Ok(Zeroizing::new(key.private_key_to_pem_pkcs8()?))
}

/// Load a private key from PEM (PKCS#1, PKCS#8, encrypted PKCS#8 or legacy `Proc-Type: 4,ENCRYPTED`
/// PEM), DER, or a PKCS#12 file. Only RSA keys are accepted: every Apple MDM key is RSA.
///
/// An encrypted key with no password given is tried with the empty password: micromdm/scep's
/// `scepserver ca -init` encrypts `ca.key` (3DES) with an empty password unless one was chosen,
/// so every NanoMDM depot that followed its docs holds exactly such a key.
pub fn load_private_key(bytes: &[u8], password: Option<&str>) -> Result<PKey<Private>, PkiError> {
    let key = if is_p12(bytes) {
        parse_p12(bytes, password.unwrap_or(""))?.1
    } else if looks_like_pem(bytes) {
        let encrypted = bytes.windows(9).any(|w| w == b"ENCRYPTED")
            || bytes.windows(9).any(|w| w == b"Proc-Type");
        match (encrypted, password) {
            (true, None) => PKey::private_key_from_pem_passphrase(bytes, b"")
                .map_err(|_| PkiError::KeyNeedsPassword)?,
            (true, Some(pw)) => PKey::private_key_from_pem_passphrase(bytes, pw.as_bytes())
                .map_err(|_| PkiError::WrongKeyPassword)?,
            (false, _) => {
                PKey::private_key_from_pem(bytes).map_err(|_| PkiError::NotAPrivateKey)?
            }
        }
    } else {
        PKey::private_key_from_der(bytes)
            .or_else(|_| Rsa::private_key_from_der(bytes).and_then(PKey::from_rsa))
            .map_err(|_| PkiError::NotAPrivateKey)?
    };
    if key.id() != Id::RSA {
        return Err(PkiError::NotRsa {
            found: format!("{:?}", key.id()),
        });
    }
    Ok(key)
}

/// Whether `key` is the private half of `cert`'s public key.
pub fn key_matches_cert(key: &PKey<Private>, cert: &X509) -> Result<bool, PkiError> {
    Ok(cert.public_key()?.public_eq(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pkcs1_pkcs8_der_and_encrypted_pem() {
        let key = generate_rsa(2048).unwrap();
        let rsa = key.rsa().unwrap();
        let pkcs1 = rsa.private_key_to_pem().unwrap();
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let der = key.private_key_to_der().unwrap();
        let enc = key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        for bytes in [&pkcs1, &pkcs8, &der] {
            assert!(load_private_key(bytes, None).unwrap().public_eq(&key));
        }
        assert!(matches!(
            load_private_key(&enc, None),
            Err(PkiError::KeyNeedsPassword)
        ));
        assert!(matches!(
            load_private_key(&enc, Some("wrong")),
            Err(PkiError::WrongKeyPassword)
        ));
        assert!(
            load_private_key(&enc, Some("secret"))
                .unwrap()
                .public_eq(&key)
        );
        assert!(matches!(
            load_private_key(b"-----BEGIN PRIVATE KEY-----\ngarbage\n", None),
            Err(PkiError::NotAPrivateKey)
        ));
    }

    #[test]
    fn an_encrypted_key_without_a_password_opens_with_the_empty_one() {
        // As micromdm/scep's `scepserver ca -init` writes `ca.key`: PKCS#1 in legacy PEM
        // encryption (`Proc-Type: 4,ENCRYPTED`, DES-EDE3-CBC) under the empty password.
        let key = generate_rsa(2048).unwrap();
        let pem = key
            .rsa()
            .unwrap()
            .private_key_to_pem_passphrase(openssl::symm::Cipher::des_ede3_cbc(), b"")
            .unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("Proc-Type: 4,ENCRYPTED"));
        assert!(load_private_key(&pem, None).unwrap().public_eq(&key));
        assert!(load_private_key(&pem, Some("")).unwrap().public_eq(&key));
        assert!(matches!(
            load_private_key(&pem, Some("not it")),
            Err(PkiError::WrongKeyPassword)
        ));
    }

    #[test]
    fn refuses_non_rsa_keys() {
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let pem = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert!(matches!(
            load_private_key(&pem, None),
            Err(PkiError::NotRsa { .. })
        ));
    }
}
