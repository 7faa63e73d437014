//! What operators and their monitoring see: `/livez`, `/readyz` (`/healthz`), and `/metrics`
//! (behind an API token; `serve --metrics-listen` puts it on its own address without one).

use mdmctl::sim::device::IdentityMode;

use crate::api::token_as;
use crate::harness::{Ca, Options, Server};

/// The value of an exposition line that starts with `prefix` (metric name and labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_say_what_an_operator_needs() {
    let s = Server::start(Options::default()).await;
    let http = s.http();
    for (path, status) in [("/livez", 200), ("/readyz", 200), ("/healthz", 200)] {
        let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }

    // Traffic to count: a migrated Mac's first contact and a command it answers, an unknown
    // identity, a body that is not a plist.
    let old = Ca::new("Old MDM CA");
    s.trust_old_ca(&old);
    let mac = s.migrated(1, &old, IdentityMode::Signature);
    let _other = s.migrated(2, &old, IdentityMode::Signature);
    assert_eq!(mac.session().await.unwrap(), 200);
    let cmd = mdmctl::apple::command::named::security_info();
    mdmctl::mdm::queue(s.store.as_ref(), &cmd, std::slice::from_ref(&mac.udid), "t").unwrap();
    assert_eq!(mac.session().await.unwrap(), 200);
    let stranger = Ca::new("Stranger CA");
    let intruder = s.migrated(3, &stranger, IdentityMode::Signature);
    assert_eq!(intruder.session().await.unwrap(), 403);
    let garbage = mac.identity_headers(b"not a plist").unwrap();
    let (status, _) = mac
        .send_with(false, b"not a plist".to_vec(), garbage)
        .await
        .unwrap();
    assert_eq!(status, 400);

    // No token: 401. A team token: 403 (the figures are the whole fleet's).
    let url = format!("{}/metrics", s.url);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    s.store
        .write(|tx| tx.put_team("Lab", &Default::default()))
        .unwrap();
    let team = token_as(&s, "lab-observer", "observer", Some("Lab")).await;
    let r = http.get(&url).bearer_auth(&team).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let observer = token_as(&s, "prometheus", "observer", None).await;
    let r = http.get(&url).bearer_auth(&observer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    let get = |p: &str| value(&text, p).unwrap_or_else(|| panic!("{p} missing:\n{text}"));
    assert!(get(r#"mdmctl_checkins_total{endpoint="command",message="Idle",outcome="ok"}"#) >= 2.0);
    assert!(
        get(r#"mdmctl_checkins_total{endpoint="command",message="Acknowledged",outcome="ok"}"#)
            >= 1.0
    );
    assert!(
        get(r#"mdmctl_checkins_total{endpoint="command",message="unparsed",outcome="refused"}"#)
            >= 1.0
    );
    assert!(get(r#"mdmctl_identity_refusals_total{reason="untrusted"}"#) >= 1.0);
    assert!(get(r#"mdmctl_command_results_total{status="acknowledged"}"#) >= 1.0);
    assert_eq!(get("mdmctl_store_up"), 1.0);
    assert_eq!(get("mdmctl_devices"), 3.0);
    assert_eq!(
        get("mdmctl_devices_migrated"),
        1.0,
        "the Mac that checked in"
    );
    assert_eq!(get("mdmctl_devices_not_yet_migrated"), 2.0);
    let apns_days = get(r#"mdmctl_certificate_expiry_days{certificate="apns"}"#);
    assert!(apns_days > 300.0, "{apns_days}");
    assert!(get(r#"mdmctl_certificate_expiry_days{certificate="scep_ca"}"#) > 1000.0);
    crate::reconcile::wait_for(10, "the reconciler has run", || {
        s.store
            .read(|tx| tx.job_runs())
            .unwrap()
            .iter()
            .any(|j| j.name == "reconcile")
    })
    .await;
    let text = http
        .get(&url)
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        value(&text, r#"mdmctl_job_last_run_seconds{job="reconcile"}"#).is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"mdmctl_job_last_run_ok{job="reconcile"}"#),
        Some(1.0)
    );
    s.stop().await;
}
