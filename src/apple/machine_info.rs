//! The MachineInfo a Mac in Setup Assistant sends the automated-enrollment URL: a CMS
//! SignedData over a property list (`UDID`, `SERIAL`, `PRODUCT`, `VERSION`, `OS_VERSION`,
//! `LANGUAGE`, …; apple/device-management `other/machineinfo.yaml`), in the
//! `x-apple-aspen-deviceinfo` header (base64) of a GET, or as the body of a POST
//! (`application/pkcs7-signature`).
//!
//! The signature is checked with the embedded signer certificate, and that certificate must be
//! issued by Apple's iPhone Device CA (or a CA a test trusts instead). Validity dates are not
//! checked: the device certificates are expired by design, and so is the Device CA (Apple's
//! guidance, followed by MicroMDM and Fleet).

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use serde::Deserialize;

use super::plist_in;

/// The largest MachineInfo read (real ones are 3–5 KiB with the signer's certificates).
pub const MAX_BYTES: usize = 64 * 1024;

/// What mdmctl uses of a MachineInfo.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MachineInfo {
    #[serde(rename = "UDID")]
    pub udid: String,
    #[serde(rename = "SERIAL")]
    pub serial: String,
    #[serde(rename = "PRODUCT", default)]
    pub product: Option<String>,
    #[serde(rename = "VERSION", default)]
    pub version: Option<String>,
    #[serde(rename = "OS_VERSION", default)]
    pub os_version: Option<String>,
    #[serde(rename = "LANGUAGE", default)]
    pub language: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MachineInfoError {
    #[error("the device information is larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("the device information is not base64")]
    NotBase64,
    #[error("the device information is not a CMS signature: {0}")]
    NotCms(String),
    #[error("the device information's signature does not match its content")]
    BadSignature,
    #[error("the device information is not signed by Apple's device CA (signer: {0})")]
    NotApple(String),
    #[error("the device information is not a MachineInfo property list: {0}")]
    NotMachineInfo(String),
}

/// The base64 of the `x-apple-aspen-deviceinfo` header (or `?deviceinfo=`), decoded.
pub fn decode_header(value: &str) -> Result<Vec<u8>, MachineInfoError> {
    use base64::Engine;
    if value.len() > MAX_BYTES * 4 / 3 + 4 {
        return Err(MachineInfoError::TooLarge);
    }
    let cleaned: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(cleaned.as_bytes()))
        .map_err(|_| MachineInfoError::NotBase64)
}

/// Verify a MachineInfo CMS (DER) against `device_cas` and read it.
pub fn verify(der: &[u8], device_cas: &[X509]) -> Result<MachineInfo, MachineInfoError> {
    if der.len() > MAX_BYTES {
        return Err(MachineInfoError::TooLarge);
    }
    let p7 = Pkcs7::from_der(der).map_err(|e| MachineInfoError::NotCms(e.to_string()))?;
    let none = Stack::new().map_err(|e| MachineInfoError::NotCms(e.to_string()))?;
    let store = X509StoreBuilder::new()
        .map_err(|e| MachineInfoError::NotCms(e.to_string()))?
        .build();
    let mut content = Vec::new();
    // NOVERIFY: the signature is checked here; who issued the signer is checked below,
    // without dates.
    p7.verify(
        &none,
        &store,
        None,
        Some(&mut content),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )
    .map_err(|_| MachineInfoError::BadSignature)?;
    let signer = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| MachineInfoError::NotCms(e.to_string()))?
        .iter()
        .next()
        .map(|c| c.to_owned())
        .ok_or_else(|| MachineInfoError::NotCms("no signer certificate".into()))?;
    let issued_by_ca = device_cas.iter().any(|ca| {
        signer.issuer_name().try_cmp(ca.subject_name()).ok() == Some(std::cmp::Ordering::Equal)
            && ca
                .public_key()
                .and_then(|k| signer.verify(&k))
                .unwrap_or(false)
    });
    if !issued_by_ca {
        return Err(MachineInfoError::NotApple(crate::pki::name_line(
            signer.subject_name(),
        )));
    }
    let info: MachineInfo = plist_in::from_bytes_within(
        &content,
        plist_in::Limits {
            max_depth: plist_in::MAX_DEPTH,
            max_bytes: MAX_BYTES,
        },
    )
    .map_err(|e| MachineInfoError::NotMachineInfo(e.to_string()))?;
    if info.udid.trim().is_empty() || info.serial.trim().is_empty() {
        return Err(MachineInfoError::NotMachineInfo(
            "`UDID` or `SERIAL` is empty".into(),
        ));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::apple::FakeApple;

    fn info(serial: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>UDID</key><string>0000FE00-ABCDEF</string><key>SERIAL</key><string>{serial}</string><key>PRODUCT</key><string>Mac14,2</string><key>OS_VERSION</key><string>15.1</string></dict></plist>\n"
        )
        .into_bytes()
    }

    /// What a Mac sends: SHA-1 with RSA by an expired device certificate, made here with the
    /// `openssl` command line, is accepted; the same signed by a CA not trusted is refused.
    #[test]
    fn a_sha1_signature_by_an_expired_device_certificate_is_accepted()
    -> Result<(), Box<dyn std::error::Error>> {
        let apple = FakeApple::new()?;
        let dir = tempfile::tempdir()?;
        let p = |n: &str| dir.path().join(n);
        let (cert, key) = apple.device_certificate("0000FE00-ABCDEF")?;
        std::fs::write(p("dev.pem"), cert.to_pem()?)?;
        std::fs::write(p("dev.key"), key.private_key_to_pem_pkcs8()?)?;
        std::fs::write(p("info.plist"), info("C02EXPIRED1"))?;
        let run = |args: &[&str]| -> std::io::Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()?;
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        run(&[
            "smime",
            "-sign",
            "-md",
            "sha1",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-signer",
            "dev.pem",
            "-inkey",
            "dev.key",
            "-in",
            "info.plist",
            "-out",
            "info.p7s",
        ])?;
        let der = std::fs::read(p("info.p7s"))?;
        let got = verify(&der, std::slice::from_ref(&apple.device_ca_cert))?;
        assert_eq!(
            (got.serial.as_str(), got.udid.as_str()),
            ("C02EXPIRED1", "0000FE00-ABCDEF")
        );
        let stranger = FakeApple::new()?;
        assert!(matches!(
            verify(&der, std::slice::from_ref(&stranger.device_ca_cert)),
            Err(MachineInfoError::NotApple(_))
        ));
        // Apple's real Device CA parses and is what `serve` trusts by default.
        let real = X509::from_pem(crate::pki::APPLE_IPHONE_DEVICE_CA_PEM.as_bytes())?;
        assert!(matches!(
            verify(&der, &[real]),
            Err(MachineInfoError::NotApple(_))
        ));
        Ok(())
    }

    #[test]
    fn garbage_and_tampering_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let apple = FakeApple::new()?;
        let cas = [apple.device_ca_cert.clone()];
        let good = apple.machine_info("U-1", "C02GOOD", "Mac14,2", "15.1")?;
        assert_eq!(verify(&good, &cas)?.serial, "C02GOOD");
        let mut tampered = good.clone();
        let at = tampered
            .windows(7)
            .position(|w| w == b"C02GOOD")
            .ok_or("the serial is not in the signed content")?;
        tampered[at + 3] = b'B';
        assert_eq!(verify(&tampered, &cas), Err(MachineInfoError::BadSignature));
        assert!(matches!(
            verify(b"garbage", &cas),
            Err(MachineInfoError::NotCms(_))
        ));
        assert_eq!(
            verify(&vec![0; MAX_BYTES + 1], &cas),
            Err(MachineInfoError::TooLarge)
        );
        assert_eq!(decode_header("!!!"), Err(MachineInfoError::NotBase64));
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_refused_without_a_panic(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..2048)) {
            let apple_ca = X509::from_pem(crate::pki::APPLE_IPHONE_DEVICE_CA_PEM.as_bytes())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(verify(&bytes, &[apple_ca]).is_err());
        }
    }
}
