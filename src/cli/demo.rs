//! `mdmctl demo`: the whole flow on a throwaway store in a new directory, with a pretend
//! Apple standing in for identity.apple.com and Apple Business Manager, then a report of what
//! happened and what to try next. It leaves nothing running.

use std::path::PathBuf;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::Ctx;
use super::files::{OutputFile, write_all};
use super::output::print_lines;
use crate::assets::abm::set_abm_token;
use crate::assets::apns::{SetMdmApple, mdm_apple_status, set_mdm_apple};
use crate::assets::generate::{self, MdmAppleRequest, Vendor};
use crate::error::UserError;
use crate::pki;
use crate::sim::apple::FakeApple;
use crate::store::{self, Location, NewKey};
use crate::timestamp::Timestamp;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A new (or empty) directory for the demo's store and files.
    #[arg(long, default_value = "mdmctl-demo")]
    pub dir: PathBuf,
}

pub fn run(ctx: &Ctx, args: DemoArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(UserError::new(format!(
            "`{}` already exists and is not empty",
            dir.display()
        ))
        .with_hint("remove it, or pass `--dir NEW_DIR`")
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let mut step = Steps::default();

    // 1. A store with its own passphrase, written next to it for the commands printed at the end.
    let passphrase = Zeroizing::new(format!("demo-{}", uuid::Uuid::new_v4().simple()));
    write_all(
        dir,
        &[OutputFile::private(
            "passphrase",
            Zeroizing::new(format!("{}\n", *passphrase).into_bytes()),
            "passphrase",
        )],
        false,
    )?;
    let db = dir.join("mdmctl.db");
    let location = Location::Sqlite(db.clone());
    let (store, created) = store::create(&location, NewKey::Passphrase(passphrase))?;
    step.done(format!(
        "created a store at `{}` (SQLite, secrets sealed with AES-256-GCM)",
        created.location
    ));

    // 2. The APNs CSR, signed by a throwaway "vendor", and a SCEP CA.
    let apple = FakeApple::new()?;
    let (vendor_cert, vendor_key) = pki::new_ca(&pki::CaSpec {
        common_name: "DEMO MDM vendor (not Apple-issued)".into(),
        organization: "DEMO".into(),
        country: "US".into(),
        key_bits: 2048,
        years: 1,
    })?;
    let vendor = Vendor {
        cert: vendor_cert,
        key: vendor_key,
    };
    let g = generate::generate_mdm_apple(
        &MdmAppleRequest {
            email: "it@example.com".into(),
            org: "Example Inc".into(),
            country: "US".into(),
            scep_key_bits: 2048,
        },
        Some(&vendor),
    )?;
    let actor = ctx.actor();
    store.write(|tx| generate::save_mdm_apple(tx, &g, &actor))?;
    write_all(
        dir,
        &[
            OutputFile::private("mdm-apple-apns.key", g.apns_key_pem()?, "APNs key"),
            OutputFile::public("mdm-apple-apns.csr", g.apns_csr_pem()?, "APNs CSR"),
            OutputFile::public(
                "mdm-apple-push-request.b64",
                g.push_request_b64.clone().unwrap_or_default().into_bytes(),
                "push request",
            ),
            OutputFile::public("mdm-apple-scep.crt", g.scep_cert_pem()?, "SCEP CA"),
            OutputFile::private("mdm-apple-scep.key", g.scep_key_pem()?, "SCEP CA key"),
        ],
        false,
    )?;
    step.done(
        "generated the APNs push key and CSR, a vendor-signed push request, and a SCEP CA".into(),
    );

    // 3. "Apple" signs the CSR; the certificate goes into the store with only the cert file.
    let topic = FakeApple::new_topic();
    let push_cert = apple.issue_push_cert(&g.apns_csr, &topic, 365)?;
    let push_pem = pki::cert_pem(&push_cert)?;
    write_all(
        dir,
        &[OutputFile::public(
            "apple-push-cert.pem",
            push_pem.into_bytes(),
            "push cert",
        )],
        false,
    )?;
    store.write(|tx| {
        set_mdm_apple(
            tx,
            &SetMdmApple {
                apns_cert: Some(push_cert.clone()),
                apns_key: None,
                scep: None,
                force: false,
                actor: actor.clone(),
            },
        )
    })?;
    step.done(format!(
        "installed the push certificate for topic `{topic}` (its key came from the store)"
    ));

    // 4. A second certificate with another topic is refused: the mistake that strands fleets.
    let wrong = apple.issue_push_cert(&g.apns_csr, &FakeApple::new_topic(), 365)?;
    let refused = store.write(|tx| {
        set_mdm_apple(
            tx,
            &SetMdmApple {
                apns_cert: Some(wrong.clone()),
                apns_key: Some(g.apns_key.clone()),
                scep: None,
                force: false,
                actor: actor.clone(),
            },
        )
    });
    match refused {
        Err(crate::assets::AssetError::TopicChanged { .. }) => {
            step.done("refused a push certificate with a different topic (a \"Create\" instead of a \"Renew\")".into())
        }
        other => anyhow::bail!("the demo expected a topic change to be refused, got {:?}", other.map(|_| ())),
    }

    // 5. Apple Business Manager: key pair, then the server token encrypted to it.
    let bm = generate::generate_mdm_apple_bm()?;
    store.write(|tx| generate::save_mdm_apple_bm(tx, &bm, &actor))?;
    let token = FakeApple::abm_token(&bm.cert, "CK_demo", Timestamp::now().plus_days(365))?;
    write_all(
        dir,
        &[OutputFile::public(
            "abm-token.p7m",
            token.clone(),
            "ABM token",
        )],
        false,
    )?;
    store.write(|tx| set_abm_token(tx, &token, &actor))?;
    step.done("generated the Apple Business Manager key pair and installed a server token encrypted to it".into());

    let status = store.read(|tx| mdm_apple_status(tx))?;
    let days = status.apns.as_ref().map(|a| a.days_left).unwrap_or(0);
    step.done(format!(
        "the store now holds the push certificate ({days} days left) and {} SCEP CA(s)",
        status.scep_cas.len()
    ));

    let db_flag = format!(
        "--db {} --passphrase-file {}",
        db.display(),
        dir.join("passphrase").display()
    );
    let mut lines = vec![format!("mdmctl demo in `{}`:", dir.display())];
    lines.extend(step.lines);
    lines.push(String::new());
    lines.push("Try next:".into());
    lines.push(format!("  mdmctl {db_flag} get mdm-apple"));
    lines.push(format!("  mdmctl {db_flag} get mdm-apple-bm --format json"));
    lines.push(format!(
        "  mdmctl {db_flag} set mdm-apple --apns-cert {}   # already set: nothing changes",
        dir.join("apple-push-cert.pem").display()
    ));
    print_lines(&lines)
}

#[derive(Default)]
struct Steps {
    lines: Vec<String>,
}

impl Steps {
    fn done(&mut self, what: String) {
        self.lines
            .push(format!("  {:>2}. {what}", self.lines.len() + 1));
    }
}
