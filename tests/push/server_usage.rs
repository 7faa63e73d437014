//! How `mdmctl serve` is meant to use the push module, end to end against
//! the stand-in (the same code the demo runs): load the identity from the
//! files an operator gives, hold the client as `Arc<dyn Pusher>`, wake a
//! batch of enrollments and act on each outcome.

use std::sync::Arc;

use mdmctl::push::{
    ApnsClient, ApnsConfig, DeviceToken, PushIdentity, PushOutcome, PushTarget, Pusher,
};
use mdmctl::sim::apns::{ApnsStandIn, PushCertOptions, Script, StandInConfig, TestPushCa};

struct Enrollment {
    udid: String,
    token: DeviceToken,
    push_magic: String,
    enabled: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    woken: usize,
    disabled: Vec<String>,
    bad_tokens: Vec<String>,
    retry_later: Vec<String>,
    certificate_problem: Option<String>,
}

/// What the server does with a batch.
async fn wake(pusher: &dyn Pusher, enrollments: &mut [Enrollment]) -> Report {
    let (indexes, targets): (Vec<usize>, Vec<PushTarget>) = enrollments
        .iter()
        .enumerate()
        .filter(|(_, e)| e.enabled)
        .map(|(i, e)| (i, PushTarget::new(e.token.clone(), e.push_magic.clone())))
        .unzip();
    let outcomes = pusher.push_many(&targets).await;
    let mut report = Report::default();
    for (i, outcome) in indexes.into_iter().zip(outcomes) {
        let e = &mut enrollments[i];
        if outcome.affects_all_devices() {
            report.certificate_problem = Some(format!("{outcome:?}"));
            continue;
        }
        match outcome {
            PushOutcome::Delivered { .. } => report.woken += 1,
            PushOutcome::Unregistered { .. } => {
                e.enabled = false;
                report.disabled.push(e.udid.clone());
            }
            PushOutcome::BadToken { .. } => report.bad_tokens.push(e.udid.clone()),
            PushOutcome::Rejected { .. }
            | PushOutcome::CertificateRefused { .. }
            | PushOutcome::Failed { .. } => report.retry_later.push(e.udid.clone()),
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_wakes_enrollments_and_disables_the_gone() {
    // Demo / test set-up: a fake Apple CA, a push certificate on disk, the
    // stand-in. In production only the two files and the config differ.
    let ca = TestPushCa::generate().expect("ca");
    let minted = ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let stand_in = ApnsStandIn::start(ca.certificate().clone(), StandInConfig::default())
        .await
        .expect("stand-in");
    let dir = std::env::temp_dir().join(format!("apns-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("push.pem"), dir.join("push.key"));
    std::fs::write(&cert_path, minted.cert_pem().expect("pem")).expect("write");
    std::fs::write(&key_path, minted.key_pem_pkcs1().expect("pem")).expect("write");

    // `mdmctl serve` start-up.
    let identity = PushIdentity::from_pem_files(&cert_path, &key_path).expect("identity");
    let config = ApnsConfig::local(stand_in.base_url(), vec![stand_in.server_ca().to_owned()]);
    // Production: ApnsConfig::production() (or development()).
    let pusher: Arc<dyn Pusher> = Arc::new(ApnsClient::new(&identity, config).expect("client"));
    let _ = std::fs::remove_dir_all(&dir);

    let mut enrollments: Vec<Enrollment> = (0..50)
        .map(|i| Enrollment {
            udid: format!("UDID-{i}"),
            token: crate::support::token(i),
            push_magic: format!("magic-{i}"),
            enabled: true,
        })
        .collect();
    stand_in.script(&crate::support::token(3).to_hex(), Script::Unregistered);
    stand_in.script(&crate::support::token(4).to_hex(), Script::BadDeviceToken);

    let report = wake(pusher.as_ref(), &mut enrollments).await;
    assert_eq!(report.woken, 48);
    assert_eq!(report.disabled, ["UDID-3"]);
    assert_eq!(report.bad_tokens, ["UDID-4"]);
    assert!(report.retry_later.is_empty() && report.certificate_problem.is_none());
    assert!(!enrollments[3].enabled);

    // The next round skips the disabled enrollment.
    let report = wake(pusher.as_ref(), &mut enrollments).await;
    assert_eq!(report.woken, 48);
    assert!(report.disabled.is_empty());
    assert_eq!(stand_in.push_count(), 96);
    stand_in.shutdown().await;
}
