//! Apple's public certificates, embedded so the push request chain needs no download, and the
//! CA whose device certificates sign MachineInfo.
//!
//! The Push Certificates Portal wants the vendor certificate followed by Apple's WWDR
//! intermediate (G3, which issues "MDM CSR" vendor certificates) and Apple's root.

pub const APPLE_WWDR_G3_PEM: &str = include_str!("apple/AppleWWDRCAG3.pem");
pub const APPLE_ROOT_CA_PEM: &str = include_str!("apple/AppleIncRootCertificate.pem");
/// "Apple iPhone Device CA": the issuer of the certificates Macs and iPhones sign their
/// MachineInfo with during automated enrollment (expired in 2014 and still used, by design).
pub const APPLE_IPHONE_DEVICE_CA_PEM: &str = include_str!("apple/AppleiPhoneDeviceCA.pem");

/// The chain that follows a vendor certificate in `PushCertCertificateChain`.
pub fn apple_chain_pem() -> String {
    let mut chain = String::new();
    for pem in [APPLE_WWDR_G3_PEM, APPLE_ROOT_CA_PEM] {
        chain.push_str(pem.trim_end());
        chain.push('\n');
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509;

    #[test]
    fn embedded_certificates_are_apple_wwdr_g3_and_root() {
        let wwdr = X509::from_pem(APPLE_WWDR_G3_PEM.as_bytes()).unwrap();
        let root = X509::from_pem(APPLE_ROOT_CA_PEM.as_bytes()).unwrap();
        let cn = |c: &X509| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .unwrap()
                .data()
                .to_string()
                .unwrap()
        };
        assert_eq!(
            cn(&wwdr),
            "Apple Worldwide Developer Relations Certification Authority"
        );
        assert_eq!(cn(&root), "Apple Root CA");
        // The intermediate really is signed by the root.
        assert!(wwdr.verify(&root.public_key().unwrap()).unwrap());
    }
}
