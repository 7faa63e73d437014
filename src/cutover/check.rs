//! `mdmctl cutover check`: go / no-go before DNS moves. Each check looks at the store, at the
//! `serve` configuration it is given (the same flags) and, where it must, at the network, and
//! says `pass`, `warn`, `fail` or `skipped` (a check that could not look never passes), with a
//! hint naming the flag or command that fixes what it found. Any `fail` is a no-go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use openssl::x509::X509;
use plist::Value;
use serde::Serialize;

use super::{dns, probe};
use crate::store::{ActivityQuery, AssetKind, Store, StoreError};
use crate::timestamp::Timestamp;

/// Items listed under a check at most; the rest are counted.
pub const LIST_MAX: usize = 10;

const DAY: i64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// A stable name scripts can match on (`push.certificate`).
    pub name: &'static str,
    pub status: Status,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What the summary counts (at most [`LIST_MAX`], then how many more).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self {
            name,
            status,
            summary: summary.into(),
            hint: None,
            items: Vec::new(),
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn items(mut self, items: Vec<String>) -> Self {
        let total = items.len();
        self.items = items.into_iter().take(LIST_MAX).collect();
        if total > LIST_MAX {
            self.items.push(format!("… and {} more", total - LIST_MAX));
        }
        self
    }
}

/// Every check, and whether the cutover may go ahead (no `fail`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub go: bool,
    pub checks: Vec<Check>,
}

/// What the old enrollment profile tells: the URLs devices use, and the certificates it told
/// them to trust.
#[derive(Clone, Debug)]
pub struct OldProfile {
    pub server_url: String,
    pub check_in_url: Option<String>,
    pub scep_url: Option<String>,
    pub anchors: Vec<X509>,
}

impl OldProfile {
    /// Read an enrollment profile (XML, binary or signed `.mobileconfig`).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let m = crate::reconcile::renewal::parse_migration_profile(bytes)?;
        let mut anchors = Vec::new();
        for p in &m.certificates {
            let Some(data) = p.get("PayloadContent").and_then(Value::as_data) else {
                continue;
            };
            let certs = crate::pki::parse_certs(data).map_err(|e| {
                let name = p
                    .get("PayloadDisplayName")
                    .and_then(Value::as_string)
                    .unwrap_or("a certificate payload");
                format!("{name}: {e}")
            })?;
            anchors.extend(certs);
        }
        let content = match crate::apple::profile::unwrap_signed(bytes) {
            Some(Ok(inner)) => inner,
            _ => bytes.to_vec(),
        };
        let scep_url = crate::apple::plist_in::from_bytes(&content)
            .ok()
            .and_then(|v: Value| {
                v.as_dictionary()?
                    .get("PayloadContent")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_dictionary)
                    .find(|p| {
                        p.get("PayloadType").and_then(Value::as_string)
                            == Some("com.apple.security.scep")
                    })?
                    .get("PayloadContent")?
                    .as_dictionary()?
                    .get("URL")?
                    .as_string()
                    .map(str::to_string)
            });
        Ok(Self {
            server_url: m.server_url,
            check_in_url: m.check_in_url,
            scep_url,
            anchors,
        })
    }
}

/// The `serve` configuration to check against, and how far to look.
#[derive(Clone, Debug)]
pub struct Options {
    /// The public URL devices reach the new server at (`serve --url`).
    pub url: Option<String>,
    /// `serve --mdm-path`, besides the default paths.
    pub mdm_paths: Vec<String>,
    /// `serve --tls-cert`: the chain the server will present (leaf first).
    pub tls_chain: Option<Vec<X509>>,
    /// Fetch the chain from `url` when no `tls_chain` is given.
    pub fetch_tls: bool,
    pub profile: Option<OldProfile>,
    /// The old server, for staged mode.
    pub upstream: Option<String>,
    /// Its migration endpoint, where check-ins are mirrored back (`--upstream-migration-url`).
    pub mirror_url: Option<String>,
    pub apns_url: String,
    pub apns_ca: Option<X509>,
    /// `serve --allow-retro-association`.
    pub allow_retro_association: bool,
    /// `serve --renew-before-days` (0: renewal off).
    pub renew_before_days: u32,
    /// Identities and certificates expiring within this many days are reported.
    pub expiry_days: u32,
    /// Imported devices the old server has not seen for this many days are reported.
    pub stale_days: u32,
    /// The DNS resolver to ask (default: the system's first).
    pub resolver: Option<SocketAddr>,
    /// Skip every network probe (TLS fetch, old server, APNs, DNS): they say `skipped`.
    pub offline: bool,
    pub timeout: Duration,
}

/// Run every check.
pub fn run(store: &dyn Store, o: &Options) -> Result<Report, StoreError> {
    let now = Timestamp::now();
    let mut checks = Vec::new();
    let facts = Facts::read(store)?;
    checks.push(push_certificate(store, &facts, now, o)?);
    checks.push(push_topics(&facts));
    checks.extend(identities(&facts, o));
    checks.push(identity_expiry(&facts, now, o));
    checks.push(urls(o));
    checks.push(tls(o, now));
    checks.push(upstream(o));
    checks.push(rollback_loss(o));
    checks.push(apns(o));
    checks.push(stale_devices(&facts, now, o));
    checks.push(push_tokens(&facts));
    checks.push(user_channels(&facts));
    checks.extend(import_skips(&facts));
    checks.push(dns_answer(o));
    let go = !checks.iter().any(|c| c.status == Status::Fail);
    Ok(Report { go, checks })
}

/// What the checks read from the store, in one read transaction.
struct Facts {
    apns: Option<crate::store::Asset>,
    cas: Vec<crate::store::Asset>,
    devices: Vec<crate::store::DeviceSummary>,
    channels: Vec<crate::store::ChannelOverview>,
    last_import: Option<crate::store::Activity>,
}

impl Facts {
    fn read(store: &dyn Store) -> Result<Self, StoreError> {
        store.read(|tx| {
            Ok(Self {
                apns: tx.active_asset(AssetKind::Apns)?,
                cas: tx.assets(AssetKind::ScepCa)?,
                devices: tx.device_summaries()?,
                channels: tx.channel_overview()?,
                last_import: tx
                    .activities(&ActivityQuery {
                        kind: Some("devices.import".into()),
                        limit: Some(1),
                        latest: true,
                        ..Default::default()
                    })?
                    .pop(),
            })
        })
    }

    fn imported(&self) -> impl Iterator<Item = &crate::store::DeviceSummary> {
        self.devices
            .iter()
            .filter(|d| d.source.starts_with("imported"))
    }
}

fn days_until(t: Timestamp, now: Timestamp) -> i64 {
    (t.0 - now.0).div_euclid(DAY)
}

fn push_certificate(
    store: &dyn Store,
    f: &Facts,
    now: Timestamp,
    o: &Options,
) -> Result<Check, StoreError> {
    const NAME: &str = "push.certificate";
    let set = "import it with the devices (`mdmctl import-devices SOURCE`) or install it with `mdmctl set mdm-apple --apns-cert F --apns-key F`";
    let Some(asset) = &f.apns else {
        return Ok(Check::new(NAME, Status::Fail, "no push certificate in the store").hint(set));
    };
    let Some(pem) = &asset.cert_pem else {
        return Ok(Check::new(
            NAME,
            Status::Fail,
            "the push certificate is not in the store yet (only its key and CSR)",
        )
        .hint(set));
    };
    let topic = asset.topic.clone().unwrap_or_default();
    if !asset.has_key {
        return Ok(Check::new(
            NAME,
            Status::Fail,
            format!("the push certificate for `{topic}` has no private key in the store"),
        )
        .hint(set));
    }
    let key = store.read(|tx| tx.asset_key(asset.id))?;
    let matches = match (crate::pki::parse_certs(pem.as_bytes()), key) {
        (Ok(certs), Some(key)) => match (certs.first(), crate::pki::load_private_key(&key, None)) {
            (Some(leaf), Ok(key)) => leaf.public_key().is_ok_and(|p| p.public_eq(&key)),
            _ => false,
        },
        _ => false,
    };
    if !matches {
        return Ok(Check::new(
            NAME,
            Status::Fail,
            format!("the push certificate for `{topic}` and the key stored with it do not match"),
        )
        .hint(set));
    }
    let Some(not_after) = asset.not_after else {
        return Ok(Check::new(
            NAME,
            Status::Fail,
            "the push certificate has no expiry date",
        ));
    };
    let days = days_until(not_after, now);
    Ok(if not_after.0 <= now.0 {
        Check::new(
            NAME,
            Status::Fail,
            format!("the push certificate for `{topic}` expired on {not_after}"),
        )
        .hint("renew it at identity.apple.com with the same Apple ID (the topic stays), then `mdmctl set mdm-apple --apns-cert F`")
    } else if days < i64::from(o.expiry_days) {
        Check::new(
            NAME,
            Status::Warn,
            format!("the push certificate for `{topic}` expires in {days} days ({not_after})"),
        )
        .hint("renew it at identity.apple.com with the same Apple ID (the topic stays), then `mdmctl set mdm-apple --apns-cert F`")
    } else {
        Check::new(
            NAME,
            Status::Pass,
            format!("`{topic}`, key matches, valid for {days} days ({not_after})"),
        )
    })
}

fn push_topics(f: &Facts) -> Check {
    const NAME: &str = "push.topics";
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &f.channels {
        *by_topic.entry(c.topic.as_str()).or_default() += 1;
    }
    if by_topic.is_empty() {
        return Check::new(
            NAME,
            Status::Warn,
            "no channels in the store: nothing to migrate",
        )
        .hint("import the devices first: `mdmctl import-devices SOURCE`");
    }
    let ours = f.apns.as_ref().and_then(|a| a.topic.as_deref());
    let other: Vec<String> = by_topic
        .iter()
        .filter(|(t, _)| Some(**t) != ours)
        .map(|(t, n)| format!("{t}: {n} channel(s)"))
        .collect();
    if other.is_empty() {
        return Check::new(
            NAME,
            Status::Pass,
            format!(
                "all {} channels use the push certificate's topic",
                f.channels.len()
            ),
        );
    }
    Check::new(
        NAME,
        Status::Fail,
        format!(
            "{} topic(s) in use that the stored push certificate cannot push",
            other.len()
        ),
    )
    .hint("these channels enrolled with another push certificate: install that one (`mdmctl set mdm-apple --apns-cert F --apns-key F`), or they can only be reached when they check in on their own")
    .items(other)
}

fn identities(f: &Facts, o: &Options) -> Vec<Check> {
    let mut out = Vec::new();
    let with_key = f.cas.iter().filter(|c| c.has_key).count();
    out.push(if f.cas.is_empty() {
        Check::new(
            "identity.ca",
            Status::Fail,
            "no SCEP CA in the store: no device identity can be verified",
        )
        .hint("import the old MDM's CA with the devices (`mdmctl import-devices SOURCE`, or `--scep-depot DIR`), or `mdmctl set mdm-apple --scep-cert F --scep-key F`")
    } else if with_key == 0 {
        Check::new(
            "identity.ca",
            Status::Warn,
            format!(
                "{} CA(s) verify identities, none with its key: identities cannot be renewed and no device can enroll",
                f.cas.len()
            ),
        )
        .hint("make an issuing CA with `mdmctl generate mdm-apple --scep-ca`, or install the old CA's key with `mdmctl set mdm-apple --scep-cert F --scep-key F`")
    } else {
        Check::new(
            "identity.ca",
            Status::Pass,
            format!(
                "{} CA(s) verify identities, {with_key} with its key (renewals and enrollment)",
                f.cas.len()
            ),
        )
    });
    let unrecorded: Vec<String> = f
        .imported()
        .filter(|d| !d.identity_recorded && d.migrated_at.is_none())
        .map(|d| d.id.clone())
        .collect();
    let total = f.imported().count();
    out.push(if unrecorded.is_empty() {
        Check::new(
            "identity.recorded",
            Status::Pass,
            format!("all {total} imported devices have their identity certificate's hash"),
        )
    } else if o.allow_retro_association {
        Check::new(
            "identity.recorded",
            Status::Warn,
            format!(
                "{} of {total} imported devices have no recorded identity: each will be bound to the first certificate from a store CA it presents (--allow-retro-association)",
                unrecorded.len()
            ),
        )
        .hint("import the hashes from the old MDM's database (`mdmctl import-devices SOURCE`) to close that window")
        .items(unrecorded)
    } else {
        Check::new(
            "identity.recorded",
            Status::Fail,
            format!(
                "{} of {total} imported devices have no recorded identity: serve will refuse them",
                unrecorded.len()
            ),
        )
        .hint("import the hashes from the old MDM's database (`mdmctl import-devices SOURCE`), or run serve (and this check) with --allow-retro-association")
        .items(unrecorded)
    });
    out
}

fn identity_expiry(f: &Facts, now: Timestamp, o: &Options) -> Check {
    const NAME: &str = "identity.expiry";
    let horizon = now.0 + i64::from(o.expiry_days) * DAY;
    let mut expired = Vec::new();
    let mut soon = Vec::new();
    for d in &f.devices {
        match d.identity_not_after {
            Some(t) if t.0 <= now.0 => expired.push(format!("{} expired {t}", d.id)),
            Some(t) if t.0 <= horizon => soon.push(format!("{} expires {t}", d.id)),
            _ => {}
        }
    }
    let renewal = o.renew_before_days > 0 && o.profile.is_some() && f.cas.iter().any(|c| c.has_key);
    let how = if renewal && o.upstream.is_some() {
        format!(
            "renewal is configured ({} days before expiry) and starts when serve runs without --upstream (finish the staged cutover before these expire)",
            o.renew_before_days
        )
    } else if renewal {
        format!(
            "renewal is configured ({} days before expiry)",
            o.renew_before_days
        )
    } else {
        "renewal is not configured".to_string()
    };
    let hint_renew = "renew identities before they expire: serve --renew-before-days N --migration-enrollment-profile F (with an issuing CA: `mdmctl generate mdm-apple --scep-ca`); pass the same flags here (--renew-before-days, --enrollment-profile)";
    if expired.is_empty() && soon.is_empty() {
        return Check::new(
            NAME,
            Status::Pass,
            format!("no identity expires within {} days; {how}", o.expiry_days),
        );
    }
    let mut items = expired.clone();
    items.extend(soon.iter().cloned());
    let summary = format!(
        "{} identit(ies) expired, {} expire within {} days; {how}",
        expired.len(),
        soon.len(),
        o.expiry_days
    );
    let status = if !expired.is_empty() || !renewal {
        Status::Fail
    } else {
        Status::Warn
    };
    let c = Check::new(NAME, status, summary).items(items);
    if !expired.is_empty() {
        c.hint("a device whose identity expired cannot check in: it must enroll again (`/enroll`); renew the others before they expire (serve --renew-before-days)")
    } else if renewal {
        c
    } else {
        c.hint(hint_renew)
    }
}

/// The paths `serve` answers MDM requests on, with these `--mdm-path`s.
fn mdm_paths(o: &Options) -> Vec<String> {
    let mut p: Vec<String> = crate::apple::paths::DEFAULT_MDM_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    p.extend(o.mdm_paths.iter().cloned());
    p
}

fn urls(o: &Options) -> Check {
    const NAME: &str = "urls.served";
    let Some(profile) = &o.profile else {
        return Check::new(
            NAME,
            Status::Skipped,
            "no old enrollment profile given: the URLs the devices use are in it",
        )
        .hint("pass --enrollment-profile F (the .mobileconfig the old MDM installed)");
    };
    let ours = o.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok());
    let paths = mdm_paths(o);
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    let mut warns = Vec::new();
    let mut look = |what: &str, url: &str, served: &[String], must: bool| {
        let Ok(u) = reqwest::Url::parse(url) else {
            problems.push(format!("{what} `{url}` is not a URL"));
            return;
        };
        if let Some(ours) = &ours
            && (u.host_str() != ours.host_str()
                || u.port_or_known_default() != ours.port_or_known_default())
        {
            let line = format!(
                "{what} `{url}` is not on this server's name ({})",
                ours.host_str().unwrap_or("")
            );
            if must {
                problems.push(line)
            } else {
                warns.push(line)
            }
            return;
        }
        if served.iter().any(|p| p == u.path()) {
            fine.push(format!("{what} {}", u.path()));
        } else {
            let line = format!("{what} path `{}` is not served", u.path());
            if must {
                problems.push(line)
            } else {
                warns.push(line)
            }
        }
    };
    look("ServerURL", &profile.server_url, &paths, true);
    if let Some(c) = &profile.check_in_url {
        look("CheckInURL", c, &paths, true);
    }
    let scep: Vec<String> = crate::apple::paths::SCEP_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(s) = &profile.scep_url {
        // Devices do not come back to it by themselves; only a reinstall of the old profile does.
        look("SCEP URL", s, &scep, false);
    }
    if !problems.is_empty() {
        let mut items = problems;
        items.extend(warns);
        return Check::new(NAME, Status::Fail, "devices would ask for URLs this server does not answer")
            .hint("serve must answer at the old DNS name (--url) on every path: add the missing ones with --mdm-path PATH (on serve and here)")
            .items(items);
    }
    let base = if ours.is_none() {
        " (host not compared: no --url)"
    } else {
        ""
    };
    if !warns.is_empty() {
        return Check::new(
            NAME,
            Status::Warn,
            format!("the MDM URLs are served{base}; the old SCEP URL is not (only a reinstall of the old profile would use it)"),
        )
        .items(warns);
    }
    Check::new(
        NAME,
        Status::Pass,
        format!("served: {}{base}", fine.join(", ")),
    )
}

fn host_of(o: &Options) -> Option<String> {
    o.url
        .as_deref()
        .or(o.profile.as_ref().map(|p| p.server_url.as_str()))
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
}

fn tls(o: &Options, now: Timestamp) -> Check {
    const NAME: &str = "tls.certificate";
    let Some(host) = host_of(o) else {
        return Check::new(
            NAME,
            Status::Skipped,
            "no DNS name to check the certificate for",
        )
        .hint("pass --url https://NAME (the old MDM's DNS name)");
    };
    let chain = match (&o.tls_chain, o.fetch_tls && !o.offline) {
        (Some(c), _) => c.clone(),
        (None, true) => {
            let port = o
                .url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .and_then(|u| u.port_or_known_default())
                .unwrap_or(443);
            match probe::fetch_chain(&host, port, o.timeout) {
                Ok(c) => c,
                Err(e) => {
                    return Check::new(NAME, Status::Fail, format!("cannot fetch the certificate from {host}: {e}"))
                        .hint("pass the certificate serve will present with --tls-cert F, or check that serve runs at --url");
                }
            }
        }
        (None, false) => {
            return Check::new(
                NAME,
                Status::Skipped,
                "no certificate given and not fetched",
            )
            .hint("pass --tls-cert F (serve's certificate chain), or --url without --offline to fetch it");
        }
    };
    let anchors = o
        .profile
        .as_ref()
        .map(|p| p.anchors.as_slice())
        .unwrap_or(&[]);
    let days = chain
        .first()
        .and_then(|c| crate::pki::CertInfo::of(c).ok())
        .map(|i| (i.not_after, days_until(i.not_after, now)));
    match probe::verify_chain(&chain, anchors, &host) {
        Err(why) => Check::new(
            NAME,
            Status::Fail,
            format!("the certificate for {host} would be refused by the devices: {why}"),
        )
        .hint(if anchors.is_empty() {
            "use a certificate for the old DNS name from a public CA, or pass --enrollment-profile F when the old profile installed a private root"
        } else {
            "use a certificate for the old DNS name that chains to a public root or to a root the old enrollment profile installed"
        }),
        Ok(()) => match days {
            Some((t, d)) if d < i64::from(o.expiry_days) => Check::new(
                NAME,
                Status::Warn,
                format!("valid for {host}, trusted by the devices, but expires in {d} days ({t})"),
            )
            .hint("renew it before the cutover; serve takes a new one on restart"),
            Some((t, d)) => Check::new(
                NAME,
                Status::Pass,
                format!(
                    "valid for {host} and trusted by the devices ({}), {d} days left ({t})",
                    if anchors.is_empty() { "public roots" } else { "public roots or the old profile's anchors" }
                ),
            ),
            None => Check::new(NAME, Status::Fail, "the certificate's dates cannot be read"),
        },
    }
}

fn upstream(o: &Options) -> Check {
    const NAME: &str = "upstream.reachable";
    let Some(url) = &o.upstream else {
        return Check::new(
            NAME,
            Status::Skipped,
            "staged mode not configured: no old server to reach",
        )
        .hint("pass --upstream URL (the old server's internal address) for a staged cutover");
    };
    if o.offline {
        return Check::new(
            NAME,
            Status::Skipped,
            "--offline: the old server was not asked",
        );
    }
    match probe::http_status(url, o.timeout) {
        Ok(code) => Check::new(NAME, Status::Pass, format!("{url} answers (HTTP {code})")),
        Err(e) => Check::new(NAME, Status::Fail, format!("{url} does not answer: {e}"))
            .hint("check --upstream: the old server must stay reachable from mdmctl until every device has moved"),
    }
}

/// What going back to the old server would lose, in staged mode.
fn rollback_loss(o: &Options) -> Check {
    const NAME: &str = "rollback.losses";
    if o.upstream.is_none() {
        return Check::new(
            NAME,
            Status::Skipped,
            "staged mode not configured: a rollback means pointing DNS back",
        )
        .hint("pass --upstream URL for a staged cutover with `mdmctl cutover rollback`");
    }
    if let Some(url) = &o.mirror_url {
        if !o.offline
            && let Err(e) = probe::http_status(url, o.timeout)
        {
            return Check::new(NAME, Status::Fail, format!("the migration endpoint {url} does not answer: {e}"))
                .hint("check --upstream-migration-url (NanoMDM: https://OLD/migration, run with -migration and -api)");
        }
        return Check::new(
            NAME,
            Status::Pass,
            format!(
                "Authenticate, TokenUpdate, SetBootstrapToken and CheckOut are mirrored to {url}; identity renewals wait until serve runs without --upstream"
            ),
        );
    }
    Check::new(
        NAME,
        Status::Warn,
        "what devices send to mdmctl is not sent back to the old server: after a rollback it has their push token, push magic, unlock and bootstrap tokens as of the cutover, and does not know of a CheckOut",
    )
    .hint("mirror check-ins back with --upstream-migration-url (NanoMDM's PUT /migration); else roll back soon after a device moved")
    .items(vec![
        "TokenUpdate: the old server pushes a token the device may have rotated".into(),
        "SetBootstrapToken: the old server keeps the bootstrap token it had".into(),
        "CheckOut: the old server still counts the device as enrolled".into(),
    ])
}

fn apns(o: &Options) -> Check {
    const NAME: &str = "apns.reachable";
    if o.offline {
        return Check::new(NAME, Status::Skipped, "--offline: APNs was not asked");
    }
    let Ok(u) = reqwest::Url::parse(&o.apns_url) else {
        return Check::new(NAME, Status::Fail, format!("`{}` is not a URL", o.apns_url))
            .hint("--apns-url takes https://HOST[:PORT]");
    };
    let host = u.host_str().unwrap_or_default().to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    match probe::handshake(&host, port, o.apns_ca.as_ref(), o.timeout) {
        Ok(()) => Check::new(NAME, Status::Pass, format!("{host}:{port} answers with a trusted certificate")),
        Err(e) => Check::new(NAME, Status::Fail, format!("{host}:{port}: {e}"))
            .hint("serve must reach APNs (TCP 443 to api.push.apple.com); open the firewall or set the proxy, or point --apns-url at the right gateway"),
    }
}

fn stale_devices(f: &Facts, now: Timestamp, o: &Options) -> Check {
    const NAME: &str = "devices.stale";
    let before = now.0 - i64::from(o.stale_days) * DAY;
    let waiting: Vec<&crate::store::DeviceSummary> =
        f.imported().filter(|d| d.migrated_at.is_none()).collect();
    let stale: Vec<String> = waiting
        .iter()
        .filter(|d| d.last_seen_at.is_none_or(|t| t.0 < before))
        .map(|d| match d.last_seen_at {
            Some(t) => format!("{} last seen {t}", d.id),
            None => format!("{} never seen", d.id),
        })
        .collect();
    if stale.is_empty() {
        return Check::new(
            NAME,
            Status::Pass,
            format!(
                "every device still to migrate ({}) was seen by the old server within {} days",
                waiting.len(),
                o.stale_days
            ),
        );
    }
    Check::new(
        NAME,
        Status::Warn,
        format!(
            "{} of {} devices still to migrate were not seen by the old server for {} days: they will not migrate soon",
            stale.len(),
            waiting.len(),
            o.stale_days
        ),
    )
    .hint("list them with `mdmctl get devices --migrated false --not-seen-since TIME`; they migrate whenever they come back")
    .items(stale)
}

fn push_tokens(f: &Facts) -> Check {
    const NAME: &str = "channels.push-token";
    let missing: Vec<String> = f
        .channels
        .iter()
        .filter(|c| c.enabled && !c.pushable)
        .map(|c| c.id.clone())
        .collect();
    if missing.is_empty() {
        return Check::new(
            NAME,
            Status::Pass,
            format!(
                "every enabled channel ({}) has a push token",
                f.channels.iter().filter(|c| c.enabled).count()
            ),
        );
    }
    Check::new(
        NAME,
        Status::Warn,
        format!("{} enabled channel(s) have no push token or push magic: they cannot be woken, only served when they check in", missing.len()),
    )
    .hint("a TokenUpdate gives them one; re-import from the old MDM if it has them (`mdmctl import-devices SOURCE`)")
    .items(missing)
}

fn user_channels(f: &Facts) -> Check {
    const NAME: &str = "channels.user";
    let users: Vec<&crate::store::ChannelOverview> =
        f.channels.iter().filter(|c| c.id != c.device_id).collect();
    if users.is_empty() {
        return Check::new(NAME, Status::Pass, "no user channels");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &users {
        *kinds.entry(u.kind.as_str()).or_default() += 1;
    }
    Check::new(
        NAME,
        Status::Pass,
        format!(
            "{} user channel(s), migrated with their device ({})",
            users.len(),
            kinds
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn import_skips(f: &Facts) -> Vec<Check> {
    let Some(a) = &f.last_import else {
        return vec![
            Check::new(
                "import.skipped",
                Status::Warn,
                "no import recorded in this store",
            )
            .hint("import the old MDM's devices: `mdmctl import-devices SOURCE`"),
        ];
    };
    let reasons: BTreeMap<String, u64> = a
        .details
        .get("skip_reasons")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    let skipped = a
        .details
        .get("skipped")
        .and_then(|s| s.as_u64())
        .unwrap_or(0);
    let duplicates: u64 = reasons
        .iter()
        .filter(|(r, _)| r.starts_with("identity certificate in use"))
        .map(|(_, n)| n)
        .sum();
    let report = "see each record with `mdmctl import-devices SOURCE --dry-run --report FILE`";
    let dup = if skipped > 0 && a.details.get("skip_reasons").is_none() {
        Check::new(
            "identity.duplicates",
            Status::Skipped,
            "the last import predates skip reasons being recorded",
        )
        .hint("import again to record them (an unchanged source changes nothing): `mdmctl import-devices SOURCE`")
    } else if duplicates == 0 {
        Check::new(
            "identity.duplicates",
            Status::Pass,
            "no identity certificate is shared by two devices (the store binds each to one)",
        )
    } else {
        Check::new(
            "identity.duplicates",
            Status::Warn,
            format!("the last import skipped {duplicates} device(s) whose identity certificate another device already uses"),
        )
        .hint(report)
    };
    let skip = if skipped == 0 {
        Check::new(
            "import.skipped",
            Status::Pass,
            format!("the last import ({}) skipped nothing", a.at),
        )
    } else {
        Check::new(
            "import.skipped",
            Status::Warn,
            format!(
                "the last import ({}) skipped {skipped} record(s): they will not migrate",
                a.at
            ),
        )
        .hint(report)
        .items(reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect())
    };
    vec![dup, skip]
}

fn dns_answer(o: &Options) -> Check {
    const NAME: &str = "dns.answer";
    let Some(host) = host_of(o) else {
        return Check::new(NAME, Status::Skipped, "no DNS name given")
            .hint("pass --url https://NAME (the old MDM's DNS name)");
    };
    if o.offline {
        return Check::new(
            NAME,
            Status::Skipped,
            "--offline: the resolver was not asked",
        );
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Check::new(
            NAME,
            Status::Skipped,
            format!("{host} is an address, not a DNS name"),
        );
    }
    let Some(resolver) = o.resolver.or_else(dns::system_resolver) else {
        return Check::new(
            NAME,
            Status::Skipped,
            "no resolver: /etc/resolv.conf names none",
        )
        .hint("pass --resolver IP[:PORT]");
    };
    match dns::resolve(&host, resolver, o.timeout) {
        Ok(records) if records.is_empty() => Check::new(
            NAME,
            Status::Warn,
            format!("{host} has no address at {resolver}"),
        ),
        Ok(records) => {
            let max_ttl = records.iter().map(|r| r.ttl).max().unwrap_or(0);
            Check::new(
                NAME,
                Status::Pass,
                format!(
                    "{host} is {} at {resolver}; lower the TTL ({max_ttl} s) well before the switch so devices follow it quickly",
                    records
                        .iter()
                        .map(|r| format!("{} (TTL {} s)", r.address, r.ttl))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
        Err(e) => Check::new(NAME, Status::Warn, format!("cannot resolve {host}: {e}"))
            .hint("pass --resolver IP[:PORT] to ask another resolver"),
    }
}
