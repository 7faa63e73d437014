//! `/cutover`: the page admins watch during a staged cutover. Plain HTML and CSS, no script, no
//! external asset; it reloads itself every 5 seconds. It needs an admin API token: a login form
//! takes it and keeps it in an HttpOnly, SameSite=Strict cookie scoped to `/cutover` (Secure on
//! an https URL); every view checks it again, so a revoked token logs the page out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::cutover::status::{self, Status};
use crate::store::{Activity, ActivityQuery, Role, StoreError};

const COOKIE: &str = "mdmctl_cutover";
const REFRESH_SECONDS: u32 = 5;

/// Escape text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}\
h1{font-size:1.4em}table{border-collapse:collapse;margin:1em 0}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}\
td.n{text-align:right}.bar{background:#eee;border-radius:4px;height:1.4em;width:100%}\
.fill{background:#2a7;height:100%;border-radius:4px}.problems li{color:#a30}\
form{margin:2em 0}input[type=password]{width:30em;padding:.3em}.err{color:#a30}.muted{color:#777}";

fn page(title: &str, refresh: bool, body: &str) -> String {
    let meta = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
    } else {
        String::new()
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

fn login_page(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "mdmctl cutover: log in",
        false,
        &format!(
            "<h1>mdmctl cutover</h1>{err}<form method=\"post\" action=\"/cutover/login\">\
             <label for=\"token\">Admin API token</label><br>\
             <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required> \
             <button type=\"submit\" id=\"login\">Log in</button></form>\
             <p class=\"muted\">Make one with <code>mdmctl token create --name NAME --role admin</code>.</p>"
        ),
    )
}

/// The token in the request's cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether `token` is an admin API token.
async fn is_admin(st: &Arc<AppState>, token: &str) -> Result<bool, StoreError> {
    let hash = crate::secrets::credential_hash(token);
    let store = st.store.clone();
    let found = tokio::task::spawn_blocking(move || store.read(|tx| tx.api_token_by_hash(&hash)))
        .await
        .map_err(|e| StoreError::Decode(e.to_string()))??;
    Ok(found.is_some_and(|t| t.role == Role::Admin))
}

/// `GET /cutover`.
pub(crate) async fn view(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = cookie_token(&headers) else {
        return html(StatusCode::OK, login_page(None));
    };
    match is_admin(&st, &token).await {
        Ok(true) => {}
        Ok(false) => {
            return html(
                StatusCode::UNAUTHORIZED,
                login_page(Some("that token is not an admin token (or it was revoked)")),
            );
        }
        Err(e) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                page(
                    "mdmctl cutover",
                    true,
                    &format!(
                        "<p class=\"err\">the store cannot be read: {}</p>",
                        esc(&e.to_string())
                    ),
                ),
            );
        }
    }
    let store = st.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.read(|tx| -> Result<(Status, Vec<Activity>), StoreError> {
            let s = status::read(tx)?;
            let recent = tx.activities(&ActivityQuery {
                kind: Some("cutover.".into()),
                limit: Some(10),
                latest: true,
                ..Default::default()
            })?;
            Ok((s, recent))
        })
    })
    .await;
    match read {
        Ok(Ok((s, recent))) => html(StatusCode::OK, status_page(&s, &recent)),
        Ok(Err(e)) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                "mdmctl cutover",
                true,
                &format!(
                    "<p class=\"err\">the store cannot be read: {}</p>",
                    esc(&e.to_string())
                ),
            ),
        ),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn status_page(s: &Status, recent: &[Activity]) -> String {
    let f = &s.fleet;
    let permille = s.migrated_permille();
    let row = |k: &str, id: &str, v: String| {
        format!(
            "<tr><th>{}</th><td class=\"n\" id=\"{id}\">{}</td></tr>",
            esc(k),
            esc(&v)
        )
    };
    let set = if s.set.all {
        "every device".to_string()
    } else {
        format!(
            "{} % of devices, and devices moved one by one",
            s.set.percent
        )
    };
    let mut problems = Vec::new();
    for r in &s.push_failures {
        problems.push(format!(
            "{} channel(s): last push failed ({})",
            r.count, r.reason
        ));
    }
    if let Some(e) = &s.mirror_back.last_error {
        problems.push(format!(
            "{} check-in(s) not yet taken by the old server: {e}",
            s.mirror_back.failing
        ));
    }
    for r in &s.refused {
        problems.push(format!("{} request(s) refused: {}", r.count, r.reason));
    }
    if s.renewals.failed > 0 {
        problems.push(format!("{} identity renewal(s) failed", s.renewals.failed));
    }
    if let Some(w) = &s.longest_waiting {
        problems.push(format!(
            "{} device(s) in the set not seen yet; the longest waiting: {}{}",
            f.waiting,
            w.udid,
            w.serial
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        ));
    }
    let problems = if problems.is_empty() {
        "<p id=\"problems\">None.</p>".to_string()
    } else {
        format!(
            "<ul class=\"problems\" id=\"problems\">{}</ul>",
            problems
                .iter()
                .map(|p| format!("<li>{}</li>", esc(p)))
                .collect::<String>()
        )
    };
    let teams: String = s
        .teams
        .iter()
        .map(|t| {
            format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(t.team.as_deref().unwrap_or("(no team)")),
                t.counts.devices,
                t.counts.in_set,
                t.counts.migrated,
                t.counts.waiting
            )
        })
        .collect();
    let changes: String = recent
        .iter()
        .rev()
        .map(|a| {
            format!(
                "<li>{} {}: {}</li>",
                esc(&a.at.to_string()),
                esc(&a.actor),
                esc(&a.summary)
            )
        })
        .collect();
    let body = format!(
        "<h1>mdmctl cutover</h1>\
         <p>Cutover set: <span id=\"set\">{set}</span>. Updated {at}; this page reloads every {REFRESH_SECONDS} s.</p>\
         <div class=\"bar\" title=\"migrated\"><div class=\"fill\" id=\"progress\" style=\"width:{pct}.{pct_frac}%\"></div></div>\
         <p><strong id=\"migrated-fraction\">{pct}.{pct_frac} %</strong> of the imported devices migrated.</p>\
         <table>{rows}</table>\
         <h2>Problems</h2>{problems}\
         <h2>Teams</h2><table><tr><th>team</th><th>devices</th><th>in set</th><th>migrated</th><th>waiting</th></tr>{teams}</table>\
         <h2>Latest changes</h2><ul id=\"changes\">{changes}</ul>\
         <form method=\"post\" action=\"/cutover/logout\"><button type=\"submit\">Log out</button></form>",
        set = esc(&set),
        at = esc(&s.at.to_string()),
        pct = permille / 10,
        pct_frac = permille % 10,
        rows = [
            row("devices", "devices", f.devices.to_string()),
            row("imported", "imported", f.imported.to_string()),
            row("answered by mdmctl", "in-set", f.in_set.to_string()),
            row("migrated", "migrated", f.migrated.to_string()),
            row("in the set, not seen yet", "waiting", f.waiting.to_string()),
            row(
                "routed to the old server, last hour",
                "routed",
                s.routed_last_hour.to_string()
            ),
            row(
                "identities expiring within 30 days",
                "expiring",
                s.identities_expiring_30d.to_string()
            ),
            row(
                "renewals done / pending / failed",
                "renewals",
                format!(
                    "{} / {} / {}",
                    s.renewals.renewed, s.renewals.pending, s.renewals.failed
                )
            ),
            row(
                "waiting to be mirrored back",
                "mirror",
                s.mirror_back.waiting.to_string()
            ),
        ]
        .concat(),
    );
    page("mdmctl cutover", true, &body)
}

fn cookie(st: &AppState, value: &str, max_age: i64) -> String {
    let secure = if st.config.url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/cutover; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The largest login form read (a token is under 100 bytes).
const LOGIN_MAX: usize = 4096;

/// `POST /cutover/login` (a form with `token`), read within the body limit and timeout the MDM
/// endpoints use (413 past 4 KiB, 408 when it trickles in).
pub(crate) async fn login(
    State(st): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let body: Bytes =
        match super::read_body(request.into_body(), LOGIN_MAX, st.config.body_timeout).await {
            Ok(b) => b,
            Err(status) => return status.into_response(),
        };
    let token = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| reqwest::Url::parse(&format!("http://form/?{b}")).ok())
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|t| {
            !t.is_empty() && t.len() < 512 && t.chars().all(|c| c.is_ascii_graphic() && c != ';')
        });
    let Some(token) = token else {
        return html(
            StatusCode::BAD_REQUEST,
            login_page(Some("enter an admin API token")),
        );
    };
    match is_admin(&st, &token).await {
        Ok(true) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/cutover".to_string()),
                (header::SET_COOKIE, cookie(&st, &token, 8 * 3600)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response(),
        Ok(false) => {
            tracing::warn!("refused a /cutover login: not an admin token");
            html(
                StatusCode::UNAUTHORIZED,
                login_page(Some("that token is not an admin token (or it was revoked)")),
            )
        }
        Err(e) => super::device::store_failure(e).into_response(),
    }
}

/// `POST /cutover/logout`.
pub(crate) async fn logout(State(st): State<Arc<AppState>>) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/cutover".to_string()),
            (header::SET_COOKIE, cookie(&st, "", 0)),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
