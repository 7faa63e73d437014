//! `mdmctl generate mdm-apple`: the APNs push key and CSR, the vendor-signed push request
//! when a vendor certificate is given, and a SCEP CA.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use super::required;
use crate::assets::generate::{self, MdmAppleRequest, Vendor};
use crate::cli::Ctx;
use crate::cli::files::{OutputFile, check_targets, load_key, read_input, write_all};
use crate::cli::output::{print_json, print_lines, table};
use crate::diagnose::UserError;
use crate::pki;

pub const APNS_KEY: &str = "mdm-apple-apns.key";
pub const APNS_CSR: &str = "mdm-apple-apns.csr";
pub const PUSH_REQUEST: &str = "mdm-apple-push-request.b64";
pub const SCEP_CERT: &str = "mdm-apple-scep.crt";
pub const SCEP_KEY: &str = "mdm-apple-scep.key";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Apple ID email that will own the push certificate (use the same one to renew).
    #[arg(long, env = "MDMCTL_APNS_EMAIL")]
    pub email: Option<String>,
    /// Your organization's name.
    #[arg(long, env = "MDMCTL_APNS_ORG")]
    pub org: Option<String>,
    /// Country code for the SCEP CA's subject.
    #[arg(long, default_value = "US")]
    pub country: String,
    /// Directory to write the files to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// MDM vendor certificate ("MDM CSR" from developer.apple.com): PEM, DER or .p12.
    #[arg(long, value_name = "FILE")]
    pub vendor_cert: Option<PathBuf>,
    /// The vendor certificate's private key: PEM, DER or .p12.
    #[arg(long, value_name = "FILE")]
    pub vendor_key: Option<PathBuf>,
    /// Password of the vendor key or .p12.
    #[arg(long, env = "MDMCTL_VENDOR_KEY_PASSWORD", hide_env_values = true)]
    pub vendor_key_password: Option<String>,
    /// RSA key size of the SCEP CA (the push key is always 2048 bits, as Apple requires).
    #[arg(long, default_value_t = 2048, value_parser = parse_key_size)]
    pub key_size: u32,
    /// Also make a new SCEP CA and make it the issuing CA (the current one stays trusted).
    /// Without this, a SCEP CA is made only when the store has no issuing CA.
    #[arg(long)]
    pub scep_ca: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

fn parse_key_size(s: &str) -> Result<u32, String> {
    match s {
        "2048" => Ok(2048),
        "4096" => Ok(4096),
        _ => Err("the SCEP CA key size must be 2048 or 4096".into()),
    }
}

#[derive(Serialize)]
struct Report {
    files: Vec<FileReport>,
    store: Option<StoreReport>,
    warnings: Vec<String>,
    next_steps: Vec<String>,
}

#[derive(Serialize)]
struct FileReport {
    path: String,
    what: &'static str,
}

#[derive(Serialize)]
struct StoreReport {
    location: String,
    #[serde(flatten)]
    saved: generate::SavedMdmApple,
}

fn load_vendor(args: &Args) -> anyhow::Result<Option<Vendor>> {
    let password = args.vendor_key_password.as_deref();
    match (&args.vendor_cert, &args.vendor_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(UserError::new("`--vendor-key` needs `--vendor-cert`")
            .with_hint("pass the vendor certificate with `--vendor-cert FILE`")
            .into()),
        (Some(cert_path), key_path) => {
            let cert_bytes = read_input(cert_path, "--vendor-cert")?;
            let from_p12 = if pki::is_p12(&cert_bytes) {
                Some(
                    pki::parse_p12(&cert_bytes, password.unwrap_or(""))
                        .with_context(|| format!("reading `{}`", cert_path.display()))?,
                )
            } else {
                None
            };
            let cert = match &from_p12 {
                Some((c, _)) => c.clone(),
                None => pki::parse_cert(&cert_bytes)
                    .with_context(|| format!("reading `{}`", cert_path.display()))?,
            };
            let key = match (key_path, from_p12) {
                (Some(kp), _) => load_key(
                    kp,
                    "--vendor-key",
                    password,
                    "give the key's password with `--vendor-key-password` or `MDMCTL_VENDOR_KEY_PASSWORD`",
                )?,
                (None, Some((_, k))) => k,
                (None, None) => {
                    return Err(UserError::new("`--vendor-cert` needs `--vendor-key`")
                        .with_hint("pass the vendor certificate's private key with `--vendor-key FILE` (or give a .p12 holding both)")
                        .into());
                }
            };
            Ok(Some(Vendor { cert, key }))
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let email = required(
        ctx,
        args.email.clone(),
        "--email",
        "Apple ID email",
        "it@example.com",
    )?;
    crate::assets::validate_email(&email)?;
    let org = required(
        ctx,
        args.org.clone(),
        "--org",
        "Organization",
        "\"Example Inc\"",
    )?;
    let vendor = load_vendor(&args)?;
    let store = ctx.open_store_if_any()?;
    // A store that already issues identities keeps its CA (a second one would become the
    // issuer behind the admin's back); a push certificate or devices mean Apple's portal must
    // renew, not create.
    let facts = match &store {
        Some(s) => s.read(generate::StoreFacts::of)?,
        None => generate::StoreFacts::default(),
    };
    let scep_ca = args.scep_ca || !facts.issuing_ca;
    let mut names = vec![APNS_KEY, APNS_CSR];
    if scep_ca {
        names.extend([SCEP_CERT, SCEP_KEY]);
    }
    if vendor.is_some() {
        names.push(PUSH_REQUEST);
    }
    check_targets(&args.out, &names, args.force)?;

    let g = generate::generate_mdm_apple(
        &MdmAppleRequest {
            email: email.clone(),
            org,
            country: args.country.clone(),
            scep_key_bits: args.key_size,
            scep_ca,
        },
        vendor.as_ref(),
    )?;
    for w in &g.warnings {
        ctx.warn(w);
    }

    let saved = match &store {
        Some(s) => {
            s.unlock()?;
            let actor = ctx.actor();
            Some(s.write(|tx| generate::save_mdm_apple(tx, &g, &actor))?)
        }
        None => None,
    };

    let mut files = vec![
        OutputFile::private(APNS_KEY, g.apns_key_pem()?, "APNs push key (private)"),
        OutputFile::public(APNS_CSR, g.apns_csr_pem()?, "APNs push CSR"),
    ];
    if let Some(b64) = &g.push_request_b64 {
        files.push(OutputFile::public(
            PUSH_REQUEST,
            format!("{b64}\n").into_bytes(),
            "signed push request for identity.apple.com",
        ));
    }
    if let Some((cert, key)) = g.scep_pem()? {
        files.push(OutputFile::public(SCEP_CERT, cert, "SCEP CA certificate"));
        files.push(OutputFile::private(SCEP_KEY, key, "SCEP CA key (private)"));
    }
    let written = write_all(&args.out, &files, args.force)?;

    // What to choose at Apple's portal: with a push certificate or devices in the store,
    // only "Renew" keeps the topic every enrolled device listens on.
    let portal = if facts.renewing {
        "choose \"Renew\" next to the push certificate your devices use (never \"Create a Certificate\": a new certificate has a new topic and every enrolled device would have to re-enroll)".to_string()
    } else {
        "choose \"Create a Certificate\" (or \"Renew\" for a certificate devices already use: renewing keeps their topic)".to_string()
    };
    let upload = if g.push_request_b64.is_some() {
        format!(
            "Sign in at https://identity.apple.com with the Apple ID `{email}`, {portal}, and upload `{}`.",
            args.out.join(PUSH_REQUEST).display()
        )
    } else {
        format!(
            "Have `{}` signed by an MDM vendor certificate: with your own Apple \"MDM CSR\" certificate, rerun with `--vendor-cert FILE --vendor-key FILE` (`mdmctl generate mdm-vendor-csr` makes the request for one); or send the CSR to your MDM vendor. Then sign in at https://identity.apple.com with the Apple ID `{email}`, {portal}, and upload the signed request.",
            args.out.join(APNS_CSR).display()
        )
    };
    let key_hint = if store.is_some() {
        String::new()
    } else {
        format!(" --apns-key {}", args.out.join(APNS_KEY).display())
    };
    let next_steps = vec![
        upload,
        "Download the certificate Apple issues (a .pem).".to_string(),
        format!("Run `mdmctl set mdm-apple --apns-cert FILE.pem{key_hint}`."),
    ];

    let report = Report {
        files: written
            .iter()
            .zip(&files)
            .map(|(p, f)| FileReport {
                path: p.display().to_string(),
                what: f.what,
            })
            .collect(),
        store: saved.map(|saved| StoreReport {
            location: ctx.location.to_string(),
            saved,
        }),
        warnings: g.warnings.clone(),
        next_steps,
    };
    if ctx.json() {
        return print_json(&report);
    }
    let mut lines = vec!["Success! Generated:".to_string()];
    let rows: Vec<Vec<String>> = report
        .files
        .iter()
        .map(|f| vec![f.path.clone(), f.what.to_string()])
        .collect();
    lines.extend(
        table(&["FILE", "WHAT"], &rows)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    match &report.store {
        Some(s) if s.saved.scep_ca_id.is_some() => lines.push(format!(
            "The push key and the SCEP CA are also kept, encrypted, in the store `{}`; the SCEP CA is now the issuing CA.",
            s.location
        )),
        Some(s) => lines.push(format!(
            "The push key is also kept, encrypted, in the store `{}`. Its SCEP CA stays the issuing CA (`--scep-ca` makes a new one).",
            s.location
        )),
        None => lines.push(format!(
            "No store at `{}`: the keys exist only in these files (run `mdmctl init` first to keep them in a store).",
            ctx.location
        )),
    }
    lines.push(String::new());
    lines.push("Next:".into());
    for (i, s) in report.next_steps.iter().enumerate() {
        lines.push(format!("  {}. {s}", i + 1));
    }
    print_lines(&lines)
}
