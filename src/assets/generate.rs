//! Making new assets: the APNs push key and CSR (and the vendor-signed request Apple's portal
//! takes), the SCEP CA, the Apple Business Manager key pair, and a vendor "MDM CSR" request.
//! Generation is pure; [`save_mdm_apple`] and [`save_mdm_apple_bm`] put the results in a store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Req};
use zeroize::Zeroizing;

use super::{AssetError, check_validity, validate_email};
use crate::pki::{self, CaSpec, CertInfo, Subject};
use crate::store::{AssetKind, AssetState, NewActivity, NewAsset, Tx};
use crate::timestamp::Timestamp;

/// Apple only accepts 2048-bit RSA push keys.
pub const APNS_KEY_BITS: u32 = 2048;
const SCEP_CA_YEARS: i32 = 10;
const ABM_CERT_DAYS: i64 = 365;

/// Who the push certificate is for.
#[derive(Clone, Debug)]
pub struct MdmAppleRequest {
    pub email: String,
    pub org: String,
    pub country: String,
    pub scep_key_bits: u32,
    /// Make a SCEP CA too (when the store has no issuing CA, or the admin asked for one).
    pub scep_ca: bool,
}

/// The MDM vendor identity that signs push requests.
pub struct Vendor {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// A CA's certificate and (zeroized) private key, both PEM.
pub type CaPem = (Vec<u8>, Zeroizing<Vec<u8>>);

pub struct GeneratedMdmApple {
    pub apns_key: PKey<Private>,
    pub apns_csr: X509Req,
    /// The new SCEP CA, when one was asked for.
    pub scep: Option<(X509, PKey<Private>)>,
    /// Base64 of the XML plist for identity.apple.com, when a vendor signed it.
    pub push_request_b64: Option<String>,
    /// Things the admin should know (a vendor certificate not issued by Apple, say).
    pub warnings: Vec<String>,
}

impl GeneratedMdmApple {
    pub fn apns_key_pem(&self) -> Result<Zeroizing<Vec<u8>>, AssetError> {
        Ok(pki::private_key_pem(&self.apns_key)?)
    }
    pub fn apns_csr_pem(&self) -> Result<Vec<u8>, AssetError> {
        Ok(self.apns_csr.to_pem().map_err(pki::PkiError::from)?)
    }
    /// The SCEP CA's certificate and key (PEM), when one was made.
    pub fn scep_pem(&self) -> Result<Option<CaPem>, AssetError> {
        self.scep
            .as_ref()
            .map(|(c, k)| {
                Ok((
                    c.to_pem().map_err(pki::PkiError::from)?,
                    pki::private_key_pem(k)?,
                ))
            })
            .transpose()
    }
}

fn require(value: &str, what: &'static str) -> Result<(), AssetError> {
    if value.trim().is_empty() {
        Err(AssetError::Empty { what })
    } else {
        Ok(())
    }
}

/// Check a vendor identity before anything is generated: its key matches and it is current.
pub fn check_vendor(vendor: &Vendor) -> Result<Vec<String>, AssetError> {
    let info = CertInfo::of(&vendor.cert)?;
    if !pki::key_matches_cert(&vendor.key, &vendor.cert)? {
        return Err(pki::PkiError::KeyMismatch {
            subject: info.subject,
        }
        .into());
    }
    if info.expired_at(Timestamp::now()) {
        return Err(AssetError::VendorExpired {
            subject: info.subject,
            not_after: info.not_after,
        });
    }
    let mut warnings = Vec::new();
    let wwdr = X509::from_pem(pki::APPLE_WWDR_G3_PEM.as_bytes()).map_err(pki::PkiError::from)?;
    let issued_by_apple = vendor
        .cert
        .verify(wwdr.public_key().map_err(pki::PkiError::from)?.as_ref())
        .unwrap_or(false);
    if !issued_by_apple {
        warnings.push(format!(
            "the vendor certificate `{}` is not issued by Apple WWDR G3; Apple's portal accepts only requests signed by an Apple \"MDM CSR\" certificate",
            info.subject
        ));
    }
    Ok(warnings)
}

/// APNs key + CSR, a SCEP CA when asked, and (with a vendor) the signed push request.
pub fn generate_mdm_apple(
    req: &MdmAppleRequest,
    vendor: Option<&Vendor>,
) -> Result<GeneratedMdmApple, AssetError> {
    validate_email(&req.email)?;
    require(&req.org, "organization (`--org`)")?;
    let warnings = match vendor {
        Some(v) => check_vendor(v)?,
        None => Vec::new(),
    };
    let apns_key = pki::generate_rsa(APNS_KEY_BITS)?;
    let apns_csr = pki::build_csr(
        &apns_key,
        &Subject {
            organization: req.org.clone(),
            email: req.email.clone(),
            ..Default::default()
        },
    )?;
    let scep = req
        .scep_ca
        .then(|| {
            pki::new_ca(&CaSpec {
                common_name: format!("{} MDM SCEP CA", req.org),
                organization: req.org.clone(),
                country: req.country.clone(),
                key_bits: req.scep_key_bits,
                years: SCEP_CA_YEARS,
            })
        })
        .transpose()?;
    let push_request_b64 = vendor
        .map(|v| pki::push_request_plist(&apns_csr, &v.cert, &v.key).map(|xml| B64.encode(xml)))
        .transpose()?;
    Ok(GeneratedMdmApple {
        apns_key,
        apns_csr,
        scep,
        push_request_b64,
        warnings,
    })
}

/// What [`save_mdm_apple`] stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SavedMdmApple {
    pub apns_pending_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scep_ca_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scep_ca_sha256: Option<String>,
}

/// What the store already holds that decides what `generate mdm-apple` makes and says.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreFacts {
    /// A SCEP CA issues identities (generated, or an imported one chosen to issue).
    pub issuing_ca: bool,
    /// A push certificate is set, or devices are enrolled or imported: Apple's portal must
    /// *renew* that certificate (a new one has a new topic and strands every device).
    pub renewing: bool,
}

impl StoreFacts {
    pub fn of(tx: &mut dyn Tx) -> Result<Self, AssetError> {
        Ok(Self {
            issuing_ca: tx.active_asset(AssetKind::ScepCa)?.is_some(),
            renewing: tx.active_asset(AssetKind::Apns)?.is_some()
                || tx.count_devices()? > 0
                || !tx.enrollment_topics()?.is_empty(),
        })
    }
}

/// Keep the push key (pending until Apple's certificate is set) and, when one was made, the
/// SCEP CA (the new issuing CA; any earlier CA stays trusted so existing identities keep
/// working).
pub fn save_mdm_apple(
    tx: &mut dyn Tx,
    g: &GeneratedMdmApple,
    actor: &str,
) -> Result<SavedMdmApple, AssetError> {
    let mut apns = NewAsset::new(AssetKind::Apns, AssetState::Pending, "generated");
    apns.key_pem = Some(g.apns_key_pem()?);
    apns.csr_pem = Some(String::from_utf8_lossy(&g.apns_csr_pem()?).into_owned());
    let apns_pending_id = tx.insert_asset(&apns)?;

    let (mut scep_ca_id, mut scep_ca_sha256) = (None, None);
    if let (Some((cert, _)), Some((cert_pem, key_pem))) = (&g.scep, g.scep_pem()?) {
        let info = CertInfo::of(cert)?;
        if let Some(active) = tx.active_asset(AssetKind::ScepCa)? {
            tx.set_asset_state(active.id, AssetState::Trusted)?;
        }
        let mut ca = NewAsset::new(AssetKind::ScepCa, AssetState::Active, "generated");
        ca.cert_pem = Some(String::from_utf8_lossy(&cert_pem).into_owned());
        ca.key_pem = Some(key_pem);
        ca.sha256 = Some(info.sha256.clone());
        ca.not_after = Some(info.not_after);
        scep_ca_id = Some(tx.insert_asset(&ca)?);
        scep_ca_sha256 = Some(info.sha256);
    }
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "assets.generated".into(),
        device_id: None,
        summary: if scep_ca_id.is_some() {
            "generated an APNs push key and CSR and a SCEP CA".into()
        } else {
            "generated an APNs push key and CSR".into()
        },
        details: serde_json::json!({
            "apns_pending_asset": apns_pending_id,
            "scep_ca_asset": scep_ca_id,
            "scep_ca_sha256": scep_ca_sha256,
            "vendor_signed": g.push_request_b64.is_some(),
        }),
    })?;
    Ok(SavedMdmApple {
        apns_pending_id,
        scep_ca_id,
        scep_ca_sha256,
    })
}

/// The key pair Apple Business Manager encrypts its server token to.
pub struct GeneratedMdmAppleBm {
    pub key: PKey<Private>,
    pub cert: X509,
}

pub fn generate_mdm_apple_bm() -> Result<GeneratedMdmAppleBm, AssetError> {
    let key = pki::generate_rsa(2048)?;
    let cert = pki::self_signed("mdmctl Apple Business Manager", &key, ABM_CERT_DAYS)?;
    Ok(GeneratedMdmAppleBm { key, cert })
}

pub fn save_mdm_apple_bm(
    tx: &mut dyn Tx,
    g: &GeneratedMdmAppleBm,
    actor: &str,
) -> Result<i64, AssetError> {
    let info = CertInfo::of(&g.cert)?;
    let mut a = NewAsset::new(AssetKind::Abm, AssetState::Pending, "generated");
    a.cert_pem = Some(pki::cert_pem(&g.cert)?);
    a.key_pem = Some(pki::private_key_pem(&g.key)?);
    a.sha256 = Some(info.sha256.clone());
    let id = tx.insert_asset(&a)?;
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "assets.generated".into(),
        device_id: None,
        summary: "generated an Apple Business Manager key pair".into(),
        details: serde_json::json!({ "abm_asset": id, "sha256": info.sha256 }),
    })?;
    Ok(id)
}

/// Key and CSR for Apple's "MDM CSR" vendor certificate (developer.apple.com), for
/// organisations that sign their own push requests.
pub fn generate_vendor_csr(
    email: &str,
    org: &str,
    country: &str,
) -> Result<(PKey<Private>, X509Req), AssetError> {
    validate_email(email)?;
    require(org, "organization (`--org`)")?;
    let key = pki::generate_rsa(2048)?;
    let csr = pki::build_csr(
        &key,
        &Subject {
            common_name: format!("{org} MDM vendor"),
            organization: org.to_string(),
            country: country.to_string(),
            email: email.to_string(),
        },
    )?;
    Ok((key, csr))
}

/// Validity of a certificate an admin hands us, as the asset errors phrase it.
pub fn check_current(cert: &X509, what: &'static str) -> Result<CertInfo, AssetError> {
    let info = CertInfo::of(cert)?;
    check_validity(&info, what, Timestamp::now())?;
    Ok(info)
}
