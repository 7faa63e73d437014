//! NanoMDM's file storages, read from the directory: `filekv` (the default; diskv key/value
//! files `<id>.<field>` under `devices/`, `enrollments/`, `cert_auth/`, `push_cert/`, sharded
//! into sub-directories, which the reader does not depend on) and the legacy `file` storage
//! (one directory per enrollment with `Authenticate.plist`, `TokenUpdate.plist`,
//! `Identity.pem`, …, user channels under `SubEnrollments/`; at the top of the store the push
//! certificate and key as `<topic>.pem` and `<topic>.key`, and the identity associations as
//! `ID,hash` lines in `CertAuth.txt`). File names as NanoMDM's storage/file writes them
//! (file.go, pushcert.go, certauth.go, bstoken.go).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::identity::parse_sql_time;
use super::{ImportError, Importer, SrcDevice, SrcEnrollment};

/// Which file storage a directory holds, if any.
pub fn detect(dir: &Path) -> Option<&'static str> {
    if dir.join("devices").is_dir() && dir.join("enrollments").is_dir() {
        return Some("filekv");
    }
    let entries = fs::read_dir(dir).ok()?;
    for e in entries.flatten().take(50) {
        let p = e.path();
        if p.join("Authenticate.plist").is_file() {
            return Some("file");
        }
    }
    None
}

fn read_err(p: &Path, e: std::io::Error) -> ImportError {
    ImportError::Read {
        path: p.display().to_string(),
        reason: e.to_string(),
    }
}

/// Every file under `dir` (any depth), by file name.
fn files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ImportError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&d, e)),
        };
        for e in rd {
            let e = e.map_err(|err| read_err(&d, err))?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                out.insert(name.to_string(), p);
            }
        }
    }
    Ok(out)
}

/// Group `<id>.<field>` file names by ID (the last `.` separates the field).
fn by_id(files: BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut out: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (name, path) in files {
        if let Some((id, field)) = name.rsplit_once('.') {
            out.entry(id.to_string())
                .or_default()
                .insert(field.to_string(), path);
        }
    }
    out
}

fn get(
    fields: &BTreeMap<String, PathBuf>,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ImportError> {
    match fields.get(name) {
        Some(p) => Ok(Some(crate::input::read_limited(p, limit)?)),
        None => Ok(None),
    }
}

fn text(b: Option<Vec<u8>>) -> Option<String> {
    b.map(|v| String::from_utf8_lossy(&v).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn disabled(b: Option<Vec<u8>>) -> bool {
    match b {
        None => false,
        Some(v) => !matches!(v.trim_ascii(), b"0" | b"false"),
    }
}

/// Read a NanoMDM file storage directory into the importer.
pub fn read(dir: &Path, label: &str, imp: &mut Importer<'_>) -> Result<(), ImportError> {
    match detect(dir) {
        Some("filekv") => read_filekv(dir, imp),
        Some(_) => read_file(dir, imp),
        None => Err(ImportError::Unknown {
            path: label.into(),
            reason: "a directory that is neither NanoMDM `filekv` nor `file` storage".into(),
        }),
    }
}

fn read_filekv(dir: &Path, imp: &mut Importer<'_>) -> Result<(), ImportError> {
    let lim = imp.max_row_size() as u64;
    for (id, f) in by_id(files(&dir.join("cert_auth"))?) {
        if let Some(h) = text(get(&f, "cert_hash", lim)?) {
            imp.cert_auth(id, h, None)?;
        }
    }
    for (id, f) in by_id(files(&dir.join("devices"))?) {
        imp.device(SrcDevice {
            id,
            serial: text(get(&f, "serial", lim)?),
            identity_cert: get(&f, "cert", lim)?,
            authenticate_raw: get(&f, "auth", lim)?,
            token_update_raw: get(&f, "tok_upd", lim)?,
            ..SrcDevice::default()
        })?;
    }
    for (id, f) in by_id(files(&dir.join("enrollments"))?) {
        let device_id = id.split(':').next().unwrap_or(&id).to_string();
        let user_id = id.split_once(':').map(|(_, u)| u.to_string());
        let unlock = get(&f, "unl_tok", lim)?;
        imp.enrollment(SrcEnrollment {
            kind: text(get(&f, "type", lim)?)
                .unwrap_or_else(|| if user_id.is_some() { "User" } else { "Device" }.into()),
            topic: text(get(&f, "topic", lim)?).unwrap_or_default(),
            push_magic: text(get(&f, "push_magic", lim)?),
            token: get(&f, "token", lim)?.filter(|t| !t.is_empty()),
            unlock_token: unlock,
            enabled: !disabled(get(&f, "disabled", lim)?),
            last_seen: get(&f, "last_seen_at", lim)?.and_then(|v| parse_sql_time(v.trim_ascii())),
            id,
            device_id,
            user_id,
            ..SrcEnrollment::default()
        })?;
    }
    for (_topic, f) in by_id(files(&dir.join("push_cert"))?) {
        if let (Some(c), Some(k)) = (get(&f, "pem", lim)?, get(&f, "key", lim)?) {
            imp.push_cert(c, k);
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TokenUpdate {
    topic: Option<String>,
    push_magic: Option<String>,
    token: Option<plist::Data>,
    unlock_token: Option<plist::Data>,
    #[serde(rename = "UserID")]
    user_id: Option<String>,
    user_short_name: Option<String>,
    user_long_name: Option<String>,
}

fn read_file(dir: &Path, imp: &mut Importer<'_>) -> Result<(), ImportError> {
    let lim = imp.max_row_size() as u64;
    // Associations appended over time (certauth.go): a later line for an ID wins.
    let assoc = dir.join("CertAuth.txt");
    if assoc.exists() {
        // Streamed line by line (it has a line per association ever made): a line longer
        // than any `ID,hash` is damage, not something to hold in memory.
        use std::io::BufRead as _;
        let mut r = std::io::BufReader::new(crate::input::open_regular(&assoc)?);
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let got = (&mut r)
                .take(4096)
                .read_until(b'\n', &mut line)
                .map_err(|e| read_err(&assoc, e))?;
            if got == 0 {
                break;
            }
            n += 1;
            if !line.ends_with(b"\n") && got == 4096 {
                return Err(ImportError::Read {
                    path: assoc.display().to_string(),
                    reason: format!("line {n} is longer than an `ID,hash` association"),
                });
            }
            let text = String::from_utf8_lossy(&line);
            if let Some((id, hash)) = text.trim().split_once(',') {
                imp.cert_auth(id.to_string(), hash.to_string(), Some(format!("{n:012}")))?;
            }
        }
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Authenticate.plist").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let id = d
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let rd = |name: &str| -> Result<Option<Vec<u8>>, ImportError> {
            let p = d.join(name);
            match crate::input::read_limited(&p, lim) {
                Ok(b) => Ok(Some(b)),
                Err(crate::input::InputError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            }
        };
        let tu_raw = rd("TokenUpdate.plist")?;
        let unlock = rd("UnlockToken.dat")?;
        imp.device(SrcDevice {
            id: id.clone(),
            serial: text(rd("SerialNumber.txt")?),
            identity_cert: rd("Identity.pem")?,
            identity_sha256: text(rd("CertAuth.sha256.txt")?),
            unlock_token: unlock.clone(),
            authenticate_raw: rd("Authenticate.plist")?,
            token_update_raw: tu_raw.clone(),
            bootstrap_token: rd("BootstrapToken.dat")?,
            ..SrcDevice::default()
        })?;
        let enabled = rd("Disabled")?.is_none();
        if let Some(raw) = &tu_raw {
            channel(imp, &id, &id, raw, None, unlock, enabled)?;
        }
        let subs = d.join("SubEnrollments");
        if let Ok(rd_sub) = fs::read_dir(&subs) {
            let mut subs: Vec<PathBuf> = rd_sub.flatten().map(|e| e.path()).collect();
            subs.sort();
            for s in subs {
                let tu = if s.is_dir() {
                    s.join("TokenUpdate.plist")
                } else {
                    s.clone()
                };
                if let Ok(raw) = crate::input::read_limited(&tu, lim) {
                    let uid = s
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string();
                    channel(
                        imp,
                        &format!("{id}:{uid}"),
                        &id,
                        &raw,
                        Some(raw.clone()),
                        None,
                        enabled,
                    )?;
                }
            }
        }
    }
    read_file_push_certs(dir, imp)
}

/// The push certificates at the top of a `file` store: `<topic>.pem` beside `<topic>.key`
/// (pushcert.go writes them there, named by the certificate's topic).
fn read_file_push_certs(dir: &Path, imp: &mut Importer<'_>) -> Result<(), ImportError> {
    let mut pems: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "pem"))
        .collect();
    pems.sort();
    for pem in pems {
        let key = pem.with_extension("key");
        if !key.is_file() {
            continue;
        }
        let cert = crate::input::read_limited(&pem, crate::input::MAX_SMALL)?;
        let key = crate::input::read_limited(&key, crate::input::MAX_SMALL)?;
        imp.push_cert(cert, key);
    }
    Ok(())
}

/// An enrollment from a raw TokenUpdate message.
fn channel(
    imp: &mut Importer<'_>,
    id: &str,
    device_id: &str,
    raw: &[u8],
    own_raw: Option<Vec<u8>>,
    unlock: Option<Vec<u8>>,
    enabled: bool,
) -> Result<(), ImportError> {
    let Ok(t) = crate::apple::plist_in::from_bytes::<TokenUpdate>(raw) else {
        imp.summary.enrollments.found += 1;
        imp.skip(
            "enrollment",
            id,
            "damaged TokenUpdate.plist: not a property list".into(),
        );
        return Ok(());
    };
    imp.enrollment(SrcEnrollment {
        id: id.into(),
        device_id: device_id.into(),
        kind: if t.user_id.is_some() {
            "User"
        } else {
            "Device"
        }
        .into(),
        user_id: t.user_id,
        user_short_name: t.user_short_name,
        user_long_name: t.user_long_name,
        topic: t.topic.unwrap_or_default(),
        push_magic: t.push_magic,
        token: t.token.map(Vec::from),
        unlock_token: unlock.or(t.unlock_token.map(Vec::from)),
        token_update_raw: own_raw,
        enabled,
        last_seen: None,
    })
}
