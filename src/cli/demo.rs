//! `mdmctl demo`: the whole migration on a throwaway store in a new directory: an old NanoMDM
//! with a few hundred Macs (its mysqldump and SCEP CA), `import-devices`, the push certificate
//! renewed at a pretend Apple, Apple Business Manager, `apply -f` of the example GitOps
//! repository, then the DNS cutover with `serve` on localhost and the simulated Macs carrying on
//! with their old identities. A report of what happened and what to try next; it leaves nothing
//! running.

use std::path::PathBuf;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::Ctx;
use super::files::{OutputFile, write_all};
use super::output::print_lines;
use crate::assets::abm::set_abm_token;
use crate::assets::apns::{SetMdmApple, set_mdm_apple};
use crate::assets::generate::{self, MdmAppleRequest, Vendor};
use crate::diagnose::UserError;
use crate::pki;
use crate::sim::apple::FakeApple;
use crate::store::{self, Location, NewKey};
use crate::timestamp::Timestamp;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A new (or empty) directory for the demo's store and files.
    #[arg(long, default_value = "mdmctl-demo")]
    pub dir: PathBuf,
    /// How many Macs the old MDM manages.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub devices: u32,
}

/// `examples/gitops/`, carried in the binary so the demo runs anywhere.
const GITOPS: &[(&str, &[u8])] = &[
    (
        "default.yml",
        include_bytes!("../../examples/gitops/default.yml"),
    ),
    (
        "teams/lab.yml",
        include_bytes!("../../examples/gitops/teams/lab.yml"),
    ),
    (
        "teams/workstations.yml",
        include_bytes!("../../examples/gitops/teams/workstations.yml"),
    ),
    (
        "setup/workstations.json",
        include_bytes!("../../examples/gitops/setup/workstations.json"),
    ),
    (
        "profiles/firewall-signed.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/firewall-signed.mobileconfig"),
    ),
    (
        "profiles/loginwindow.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/loginwindow.mobileconfig"),
    ),
    (
        "profiles/pppc-zoom.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/pppc-zoom.mobileconfig"),
    ),
    (
        "profiles/restrictions.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/restrictions.mobileconfig"),
    ),
    (
        "profiles/screensaver.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/screensaver.mobileconfig"),
    ),
    (
        "profiles/wifi.mobileconfig",
        include_bytes!("../../examples/gitops/profiles/wifi.mobileconfig"),
    ),
];

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
            scep_ca: true,
        },
        Some(&vendor),
    )?;
    let actor = ctx.actor();
    store.write(|tx| generate::save_mdm_apple(tx, &g, &actor))?;
    let mut files = vec![
        OutputFile::private("mdm-apple-apns.key", g.apns_key_pem()?, "APNs key"),
        OutputFile::public("mdm-apple-apns.csr", g.apns_csr_pem()?, "APNs CSR"),
        OutputFile::public(
            "mdm-apple-push-request.b64",
            g.push_request_b64.clone().unwrap_or_default().into_bytes(),
            "push request",
        ),
    ];
    if let Some((cert, key)) = g.scep_pem()? {
        files.push(OutputFile::public("mdm-apple-scep.crt", cert, "SCEP CA"));
        files.push(OutputFile::private(
            "mdm-apple-scep.key",
            key,
            "SCEP CA key",
        ));
    }
    write_all(dir, &files, false)?;
    step.done(
        "generated the APNs push key and CSR, a vendor-signed push request, and a SCEP CA".into(),
    );

    // 3. The old MDM: a NanoMDM whose Macs were enrolled to the URL this machine will answer.
    //    The listener is bound now so the Macs' enrollment (and the cutover) use its port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1")?;
    let url = format!("http://{}", listener.local_addr()?);
    let old = crate::sim::nanomdm::OldNanoMdm::new(
        &apple,
        &url,
        args.devices as usize,
        200,
        crate::sim::device::http_client(&[])?,
        &[],
    )?;
    let old_dir = dir.join("old-mdm");
    std::fs::create_dir_all(&old_dir)?;
    let dump = old_dir.join("nanomdm.sql");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&dump)?);
    old.write_mysqldump(&mut out)?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    old.write_scep_depot(&old_dir.join("scep-depot"))?;
    let topic = old.topic.clone();
    step.done(format!(
        "built an old NanoMDM at {url}: {} Macs with identities from its own SCEP CA, dumped as `old-mdm/nanomdm.sql` (mysqldump format) with its SCEP CA in `old-mdm/scep-depot/`",
        old.devices.len()
    ));

    // 4. import-devices: devices, push certificate and the old CA, in one transaction.
    let sources = vec![crate::import::source::open(
        &dump.display().to_string(),
        None,
    )?];
    let cert = std::fs::read(old_dir.join("scep-depot/ca.pem"))?;
    let key = std::fs::read(old_dir.join("scep-depot/ca.key"))?;
    let scep = vec![("old-mdm/scep-depot".to_string(), cert, key)];
    let opts = crate::import::ImportOptions {
        actor: actor.clone(),
        ..Default::default()
    };
    let summary =
        store.write(|tx| crate::import::import_into(tx, &sources, &opts, &scep, &mut |_| {}))?;
    step.done(format!(
        "imported {} devices and {} enrollments, the old push certificate (topic `{topic}`) and the old SCEP CA (trusted next to the new one)",
        summary.devices.imported, summary.enrollments.imported
    ));

    // 5. The push certificate renewed at "Apple" with the new CSR: same topic, so accepted.
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
    step.done(
        "renewed the push certificate for the same topic with the new CSR (its key came from the store)".into(),
    );

    // 6. A certificate with another topic is refused: the mistake that strands fleets.
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

    // 7. Apple Business Manager: key pair, then the server token encrypted to it.
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
    // The stand-in for Apple's ABM service answers for the token as installed.
    let abm_token = store.read(crate::assets::abm::server_token)?;
    step.done("generated the Apple Business Manager key pair and installed a server token encrypted to it".into());

    // 8. apply -f: the example GitOps repository.
    let gitops_dir = dir.join("gitops");
    for (path, bytes) in GITOPS {
        let p = gitops_dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
    }
    let loaded = crate::gitops::load(
        std::slice::from_ref(&gitops_dir),
        &crate::gitops::LoadOptions::default(),
        &|_| None,
    );
    let applied = crate::gitops::run(store.as_ref(), loaded, false, &actor)?;
    // A third of the Macs go to the Workstations team (as `mdmctl transfer --team …` does):
    // FileVault on, macOS 15.2 at least.
    let workstations: Vec<String> = old
        .devices
        .iter()
        .step_by(3)
        .map(|d| d.udid.clone())
        .collect();
    let moved = store
        .write(|tx| crate::mdm::transfer(tx, Some("Workstations"), &workstations, &actor))?
        .map_err(|team| anyhow::anyhow!("the example repository has no team `{team}`"))?;
    step.done(format!(
        "applied `gitops/` (the repository in examples/gitops): {}; moved {} Macs to the Workstations team (`mdmctl transfer`)",
        applied.plan.summary().trim_start_matches("plan: "),
        moved.moved.len()
    ));

    // 9. The cutover: serve answers at the old URL; the Macs carry on.
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::sim::cutover::run(
            store.clone(),
            listener,
            crate::sim::cutover::Scenario {
                url: &url,
                apple_ca: apple.ca_cert.clone(),
                devices: &old.devices,
                organization: "Example Inc",
                old_ca: Some(old.ca_cert.clone()),
                abm: abm_token.map(|token| crate::sim::cutover::AbmDemo {
                    token,
                    apple: &apple,
                    new_macs: 3,
                }),
            },
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    drop(runtime);
    if let Some(st) = &report.staged {
        step.done(format!(
            "staged cutover (`serve --upstream` in front of the old NanoMDM, check-ins mirrored back): at 0 % the old server answered {}/{} Macs through mdmctl; at 10 % mdmctl answered {} and the old server {}; after `cutover rollback` the old server answered {}/{} again; then `cutover set --all`",
            st.zero_old, report.devices, st.ten_moved, st.ten_old, st.rolled_back_old, report.devices
        ));
    }
    step.done(format!(
        "cut over: `serve` answered at {url}; {}/{} Macs checked in with their old identity (no re-enrollment), {} recorded as migrated",
        report.accepted, report.devices, report.migrated
    ));
    step.done(format!(
        "sent DeviceInformation to all: {} pushes through the old push topic, {}/{} acknowledged, in {:.1} s overall",
        report.pushes_delivered, report.acknowledged, report.devices, report.elapsed.as_secs_f64()
    ));
    step.done(format!(
        "delivered the desired profiles: {} installed and verified by ProfileList, {} failed, {} from the old MDM left alone",
        report.profiles_verified, report.profiles_failed, report.profiles_unmanaged
    ));
    step.done(format!(
        "FileVault: {} of {} Macs with the FileVault profile turned it on at logout and escrowed their recovery key (`get disk-encryption-key`); {} Macs on macOS 14+ below their team's minimum report the update declaration active",
        report.filevault_escrowed, report.filevault_profiles, report.declarations_active
    ));
    step.done(format!(
        "refused a Mac with a certificate from an unknown CA (HTTP {})",
        report.impostor_status
    ));
    if let Some(a) = &report.abm {
        step.done(format!(
            "Apple Business Manager (a stand-in): synced {} new Macs into the default team and assigned them its enrollment profile ({} assigned)",
            a.synced, a.assigned
        ));
        step.done(format!(
            "a new Mac enrolled from Setup Assistant at the profile's URL ({}) into the {} team and got DeviceConfigured once its {} profiles were verified ({:.1} s); the server has stopped",
            a.enroll_url,
            a.team.as_deref().unwrap_or("(no)"),
            a.released_with,
            a.released_after.as_secs_f64()
        ));
    }

    let db_flag = format!(
        "--db {} --passphrase-file {}",
        db.display(),
        dir.join("passphrase").display()
    );
    let mut lines = vec![format!("mdmctl demo in `{}`:", dir.display())];
    lines.extend(step.lines);
    lines.push(String::new());
    lines.push("Try next:".into());
    lines.push(format!("  mdmctl {db_flag} get devices --migrated true"));
    lines.push(format!(
        "  mdmctl {db_flag} get device {}",
        old.devices[0].serial
    ));
    lines.push(format!("  mdmctl {db_flag} get mdm-apple"));
    lines.push(format!(
        "  mdmctl {db_flag} cutover status                    # where the staged cutover ended"
    ));
    lines.push(format!(
        "  mdmctl {db_flag} get activities --type cutover.    # each cutover set and rollback"
    ));
    lines.push(format!(
        "  mdmctl {db_flag} get profiles --team Workstations"
    ));
    lines.push(format!(
        "  mdmctl {db_flag} get abm-devices                   # the new Macs from Apple Business Manager"
    ));
    lines.push(format!(
        "  mdmctl {db_flag} import-devices {} --dry-run   # again: everything unchanged or kept newer",
        dump.display()
    ));
    lines.push(format!(
        "  mdmctl {db_flag} apply -f {} --dry-run          # no changes",
        gitops_dir.display()
    ));
    lines.push(format!(
        "  mdmctl {db_flag} serve --url http://127.0.0.1:8080 --listen 127.0.0.1:8080"
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
