//! MicroMDM v1's BoltDB file (`micromdm.db`), read without MicroMDM: a read-only reader of the
//! bolt page format (meta pages, branch and leaf pages, nested and inline buckets, overflow
//! pages) and a hand-written protobuf decoder for the values MicroMDM keeps.
//!
//! What comes across: every enrolled device of `mdm.Devices` (UDID, serial, OS, model, name,
//! push topic, push magic, token, unlock token, bootstrap token, last seen) with its identity
//! hash from `mdm.UDIDCertAuth`; the push certificate and key from `mdm.ServerConfig`; the
//! SCEP CA certificate and key from `scep_certificates`; user channels from `mdm.Users` and
//! their push info in `mdm.PushInfo` (keyed by UserID).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine as _;

use super::sqldump::decode_hex;
use super::{ImportError, Importer, SrcDevice, SrcEnrollment};
use crate::timestamp::Timestamp;

const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Deepest tree the reader follows (bolt trees are a handful of levels deep).
const MAX_DEPTH: usize = 32;

/// Whether the first bytes of a file are a bolt meta page.
pub fn is_bolt(head: &[u8]) -> bool {
    head.len() >= 20 && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == MAGIC
}

struct Bolt {
    file: File,
    page_size: u64,
    len: u64,
    root: u64,
    path: String,
}

/// Called with each (key, value, is_bucket) of a tree.
type Visit<'f> = dyn FnMut(&[u8], &[u8], bool) -> Result<(), ImportError> + 'f;

/// Where a bucket's tree lives.
enum Tree {
    Page(u64),
    /// An inline bucket: its single leaf page is inside the parent's value.
    Inline(Vec<u8>),
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl Bolt {
    fn bad(&self, what: impl Into<String>) -> ImportError {
        ImportError::DamagedBolt {
            path: self.path.clone(),
            reason: what.into(),
        }
    }

    fn open(path: &Path, label: &str) -> Result<Self, ImportError> {
        let file = crate::input::open_regular(path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut b = Bolt {
            file,
            page_size: 4096,
            len,
            root: 0,
            path: label.into(),
        };
        let mut head = vec![0u8; 64];
        b.file
            .read_exact_at(&mut head, 0)
            .map_err(|_| b.bad("shorter than a meta page"))?;
        if !is_bolt(&head) {
            return Err(b.bad("no bolt magic"));
        }
        b.page_size = u64::from(u32_at(&head, 24).unwrap_or(0));
        if !(512..=65536).contains(&b.page_size) {
            return Err(b.bad(format!("page size {}", b.page_size)));
        }
        // The newer of the two meta pages that is intact.
        let mut best: Option<(u64, u64)> = None;
        for id in 0..2u64 {
            let mut m = vec![0u8; 80];
            if b.file.read_exact_at(&mut m, id * b.page_size).is_err() {
                continue;
            }
            let meta = &m[16..];
            if u32_at(meta, 0) != Some(MAGIC) {
                continue;
            }
            let sum = fnv64a(&meta[..56]);
            if u64_at(meta, 56) != Some(sum) {
                continue;
            }
            let (root, txid) = (u64_at(meta, 16).unwrap_or(0), u64_at(meta, 48).unwrap_or(0));
            if best.is_none_or(|(_, t)| txid > t) {
                best = Some((root, txid));
            }
        }
        b.root = best.ok_or_else(|| b.bad("no valid meta page"))?.0;
        Ok(b)
    }

    /// A page with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, ImportError> {
        let off = id
            .checked_mul(self.page_size)
            .filter(|o| o + 16 <= self.len)
            .ok_or_else(|| self.bad(format!("page {id} is past the end")))?;
        let mut head = [0u8; 16];
        self.file
            .read_exact_at(&mut head, off)
            .map_err(|_| self.bad(format!("page {id} unreadable")))?;
        let overflow = u64::from(u32_at(&head, 12).unwrap_or(0));
        let size = (overflow + 1) * self.page_size;
        if off + size > self.len {
            return Err(self.bad(format!("page {id} overflows the file")));
        }
        let mut p = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut p, off)
            .map_err(|_| self.bad(format!("page {id} unreadable")))?;
        Ok(p)
    }

    /// Every key/value of a bucket's tree, in key order; `f` gets (key, value, is_bucket).
    fn each(&self, tree: &Tree, f: &mut Visit<'_>) -> Result<(), ImportError> {
        match tree {
            Tree::Page(id) => {
                // A well-formed tree visits each page once: a damaged one whose branches point
                // back at each other would otherwise be walked an exponential number of times.
                let mut budget = self.len / self.page_size + 1;
                self.walk(*id, 0, &mut budget, f)
            }
            Tree::Inline(p) => self.leaf(p, f),
        }
    }

    fn walk(
        &self,
        id: u64,
        depth: usize,
        budget: &mut u64,
        f: &mut Visit<'_>,
    ) -> Result<(), ImportError> {
        if depth > MAX_DEPTH {
            return Err(self.bad("tree too deep (a loop?)"));
        }
        if *budget == 0 {
            return Err(self.bad("the tree visits more pages than the file has (a loop?)"));
        }
        *budget -= 1;
        let p = self.page(id)?;
        let flags = u16_at(&p, 8).unwrap_or(0);
        if flags & BRANCH != 0 {
            let count = usize::from(u16_at(&p, 10).unwrap_or(0));
            for i in 0..count {
                let child = u64_at(&p, 16 + i * 16 + 8)
                    .ok_or_else(|| self.bad(format!("branch page {id}")))?;
                self.walk(child, depth + 1, budget, f)?;
            }
            Ok(())
        } else if flags & LEAF != 0 {
            self.leaf(&p, f)
        } else {
            Err(self.bad(format!("page {id} is neither a branch nor a leaf")))
        }
    }

    fn leaf(&self, p: &[u8], f: &mut Visit<'_>) -> Result<(), ImportError> {
        let count = usize::from(u16_at(p, 10).unwrap_or(0));
        for i in 0..count {
            let e = 16 + i * 16;
            let (Some(flags), Some(pos), Some(ks), Some(vs)) = (
                u32_at(p, e),
                u32_at(p, e + 4),
                u32_at(p, e + 8),
                u32_at(p, e + 12),
            ) else {
                return Err(self.bad("leaf element past the page"));
            };
            let k0 = e + pos as usize;
            let k1 = k0 + ks as usize;
            let v1 = k1 + vs as usize;
            let (Some(k), Some(v)) = (p.get(k0..k1), p.get(k1..v1)) else {
                return Err(self.bad("leaf key or value past the page"));
            };
            f(k, v, flags & BUCKET_LEAF != 0)?;
        }
        Ok(())
    }

    /// A top-level bucket by name.
    fn bucket(&self, name: &str) -> Result<Option<Tree>, ImportError> {
        let mut found = None;
        self.each(&Tree::Page(self.root), &mut |k, v, is_bucket| {
            if is_bucket && k == name.as_bytes() {
                let root = u64_at(v, 0).unwrap_or(0);
                found = Some(if root == 0 {
                    Tree::Inline(v.get(16..).unwrap_or_default().to_vec())
                } else {
                    Tree::Page(root)
                });
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The names of the top-level buckets (to say what a BoltDB holds when it is not MicroMDM's).
    fn bucket_names(&self) -> Result<Vec<String>, ImportError> {
        let mut names = Vec::new();
        self.each(&Tree::Page(self.root), &mut |k, _, is_bucket| {
            if is_bucket && names.len() < 20 {
                names.push(String::from_utf8_lossy(k).into_owned());
            }
            Ok(())
        })?;
        Ok(names)
    }
}

fn fnv64a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Protobuf fields: (number, varint value, bytes) — one of the two set by wire type.
fn proto_fields(mut b: &[u8]) -> Option<Vec<(u64, u64, &[u8])>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, varint(&mut b)?, &[][..])),
            1 => {
                let v = u64_at(b, 0)?;
                b = &b[8..];
                out.push((num, v, &[][..]));
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                b = &b[n..];
                out.push((num, 0, v));
            }
            5 => {
                let v = u64::from(u32_at(b, 0)?);
                b = &b[4..];
                out.push((num, v, &[][..]));
            }
            _ => return None,
        }
    }
    Some(out)
}

fn text(v: &[u8]) -> Option<String> {
    Some(String::from_utf8_lossy(v).into_owned()).filter(|s| !s.is_empty())
}

/// Read a MicroMDM BoltDB into the importer; returns the file size.
pub fn read(path: &Path, label: &str, imp: &mut Importer<'_>) -> Result<u64, ImportError> {
    let db = Bolt::open(path, label)?;
    if let Some(t) = db.bucket("mdm.UDIDCertAuth")? {
        let mut pairs = Vec::new();
        db.each(&t, &mut |k, v, _| {
            pairs.push((String::from_utf8_lossy(k).into_owned(), hex::encode(v)));
            Ok(())
        })?;
        for (udid, sha) in pairs {
            imp.cert_auth(udid, sha, None)?;
        }
    }
    let Some(devices) = db.bucket("mdm.Devices")? else {
        let names = db.bucket_names()?;
        return Err(ImportError::NotMicroMdm {
            path: label.into(),
            buckets: if names.is_empty() {
                "none".into()
            } else {
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    };
    db.each(&devices, &mut |key, v, is_bucket| {
        if is_bucket {
            return Ok(());
        }
        let Some(fields) = proto_fields(v) else {
            imp.summary.devices.found += 1;
            imp.skip(
                "device",
                &String::from_utf8_lossy(key),
                "not a MicroMDM device record (protobuf does not decode)".into(),
            );
            return Ok(());
        };
        let mut d = SrcDevice::default();
        let (mut token, mut magic, mut topic, mut enrolled) = (None, None, None, false);
        // Text fields that are not UTF-8 are damage to report, not to replace.
        let mut not_text = None;
        for (num, n, b) in fields {
            if matches!(num, 2 | 3 | 9 | 10 | 11) && std::str::from_utf8(b).is_err() {
                not_text.get_or_insert(match num {
                    2 => "the UDID",
                    3 => "the serial number",
                    9 => "the push token",
                    10 => "the push magic",
                    _ => "the topic",
                });
            }
            match num {
                2 => d.id = text(b).unwrap_or_default(),
                3 => d.serial = text(b),
                4 => d.os_version = text(b),
                5 => d.build_version = text(b),
                6 => d.product_name = text(b),
                9 => token = text(b),
                10 => magic = text(b),
                11 => topic = text(b),
                12 => d.unlock_token = text(b).and_then(|h| decode_hex(h.as_bytes())),
                13 => enrolled = n != 0,
                15 => d.device_name = text(b),
                16 => d.model = text(b),
                17 => d.model_name = text(b),
                28 if n > 0 => d.last_seen = Some(Timestamp(n as i64)),
                30 => {
                    d.bootstrap_token = text(b).map(|s| {
                        base64::engine::general_purpose::STANDARD
                            .decode(s.as_bytes())
                            .unwrap_or_else(|_| s.into_bytes())
                    })
                }
                _ => {}
            }
        }
        if d.id.is_empty() {
            d.id = String::from_utf8_lossy(key).into_owned();
        }
        if let Some(what) = not_text {
            imp.summary.devices.found += 1;
            let id = d.id.clone();
            imp.skip(
                "device",
                &id,
                format!("damaged record: {what} is not UTF-8 text"),
            );
            return Ok(());
        }
        if !enrolled {
            imp.summary.devices.found += 1;
            let id = d.id.clone();
            imp.skip(
                "device",
                &id,
                "not enrolled: MicroMDM marks it `enrolled = false`".into(),
            );
            return Ok(());
        }
        d.topic = topic.clone();
        let token_bytes = match token.as_deref().map(|t| decode_hex(t.as_bytes())) {
            Some(Some(t)) => Some(t),
            Some(None) => {
                imp.summary.devices.found += 1;
                let id = d.id.clone();
                imp.skip("device", &id, "invalid push token: not hex".into());
                return Ok(());
            }
            None => None,
        };
        let e = SrcEnrollment {
            id: d.id.clone(),
            device_id: d.id.clone(),
            kind: "Device".into(),
            topic: topic.unwrap_or_default(),
            push_magic: magic,
            token: token_bytes,
            unlock_token: d.unlock_token.clone(),
            enabled: true,
            last_seen: d.last_seen,
            ..SrcEnrollment::default()
        };
        imp.device(d)?;
        imp.enrollment(e)
    })?;
    // User channels: users by UserID, then their push info (keyed by UserID).
    if let Some(t) = db.bucket("mdm.Users")? {
        let mut users: std::collections::HashMap<String, (String, Option<String>, Option<String>)> =
            std::collections::HashMap::new();
        db.each(&t, &mut |_, v, is_bucket| {
            if is_bucket {
                return Ok(());
            }
            let (mut udid, mut uid, mut short, mut long) = (None, None, None, None);
            for (num, _, b) in proto_fields(v).unwrap_or_default() {
                match num {
                    2 => udid = text(b),
                    3 => uid = text(b),
                    4 => short = text(b),
                    5 => long = text(b),
                    _ => {}
                }
            }
            if let (Some(udid), Some(uid)) = (udid, uid) {
                users.insert(uid, (udid, short, long));
            }
            Ok(())
        })?;
        if let Some(p) = db.bucket("mdm.PushInfo")?
            && !users.is_empty()
        {
            db.each(&p, &mut |k, v, is_bucket| {
                if is_bucket {
                    return Ok(());
                }
                let key = String::from_utf8_lossy(k).into_owned();
                let Some((udid, short, long)) = users.remove(&key) else {
                    return Ok(());
                };
                let (mut token, mut magic, mut topic) = (None, None, None);
                for (num, _, b) in proto_fields(v).unwrap_or_default() {
                    match num {
                        2 => token = text(b),
                        3 => magic = text(b),
                        4 => topic = text(b),
                        _ => {}
                    }
                }
                let id = format!("{udid}:{key}");
                let token = match token.map(|t| decode_hex(t.as_bytes())) {
                    Some(Some(t)) => Some(t),
                    Some(None) => {
                        imp.summary.enrollments.found += 1;
                        imp.skip("enrollment", &id, "invalid push token: not hex".into());
                        return Ok(());
                    }
                    None => None,
                };
                imp.enrollment(SrcEnrollment {
                    id,
                    device_id: udid,
                    kind: "User".into(),
                    user_id: Some(key),
                    user_short_name: short,
                    user_long_name: long,
                    topic: topic.unwrap_or_default(),
                    push_magic: magic,
                    token,
                    enabled: true,
                    ..SrcEnrollment::default()
                })
            })?;
        }
    }
    if let Some(t) = db.bucket("mdm.ServerConfig")? {
        let mut found = None;
        db.each(&t, &mut |k, v, _| {
            if k == b"config" {
                let mut cert = None;
                let mut key = None;
                for (num, _, b) in proto_fields(v).unwrap_or_default() {
                    match num {
                        1 => cert = Some(b.to_vec()),
                        2 => key = Some(b.to_vec()),
                        _ => {}
                    }
                }
                if let (Some(c), Some(k)) = (cert, key)
                    && !c.is_empty()
                {
                    found = Some((c, k));
                }
            }
            Ok(())
        })?;
        if let Some((c, k)) = found {
            imp.push_cert(c, k);
        }
    }
    if let Some(t) = db.bucket("scep_certificates")? {
        let (mut cert, mut key) = (None, None);
        db.each(&t, &mut |k, v, _| {
            match k {
                b"ca_certificate" => cert = Some(v.to_vec()),
                b"ca_key" => key = Some(v.to_vec()),
                _ => {}
            }
            Ok(())
        })?;
        if let (Some(c), Some(k)) = (cert, key) {
            imp.scep_ca(&format!("{label} (scep_certificates)"), c, k);
        }
    }
    Ok(db.len)
}

/// A bolt key and its value.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// Every record of `mdm.Devices` in the BoltDB at `path`, each value's protobuf fields
/// decoded (and dropped): the reading half of [`read`], for the property tests and the fuzz
/// targets.
pub(crate) fn device_records(path: &Path) -> Result<Vec<Record>, ImportError> {
    let db = Bolt::open(path, &path.display().to_string())?;
    let _ = db.bucket_names()?;
    let Some(tree) = db.bucket("mdm.Devices")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    db.each(&tree, &mut |k, v, _| {
        let _ = proto_fields(v);
        out.push((k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Property tests: protobuf records and bolt files from a damaged or hostile `micromdm.db`
/// never panic or run away; records round-trip.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Fields as protobuf writes them: `(number, varint)` or `(number, bytes)`.
    fn encode(fields: &[(u64, Result<u64, Vec<u8>>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (num, v) in fields {
            match v {
                Ok(n) => {
                    varint(&mut out, num << 3);
                    varint(&mut out, *n);
                }
                Err(b) => {
                    varint(&mut out, (num << 3) | 2);
                    varint(&mut out, b.len() as u64);
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    fn fields() -> impl Strategy<Value = Vec<(u64, Result<u64, Vec<u8>>)>> {
        let value = prop_oneof![
            any::<u64>().prop_map(Ok),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(Err),
        ];
        proptest::collection::vec((1u64..40, value), 0..12)
    }

    const PAGE: usize = 1024;

    /// A bolt file as go.etcd.io/bbolt lays it out: two meta pages, then the root leaf holding
    /// one inline bucket `mdm.Devices` with `records`.
    fn bolt(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let leaf = |items: &[(Vec<u8>, Vec<u8>, u32)]| {
            let mut p = vec![0u8; 16];
            p[8..10].copy_from_slice(&LEAF.to_le_bytes());
            p[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
            let mut data = Vec::new();
            let header_end = 16 + items.len() * 16;
            for (i, (k, v, flags)) in items.iter().enumerate() {
                let e = 16 + i * 16;
                let pos = (header_end + data.len() - e) as u32;
                let mut el = Vec::new();
                el.extend_from_slice(&flags.to_le_bytes());
                el.extend_from_slice(&pos.to_le_bytes());
                el.extend_from_slice(&(k.len() as u32).to_le_bytes());
                el.extend_from_slice(&(v.len() as u32).to_le_bytes());
                p.extend(el);
                data.extend_from_slice(k);
                data.extend_from_slice(v);
            }
            p.extend(data);
            p
        };
        let inline: Vec<(Vec<u8>, Vec<u8>, u32)> = records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), 0))
            .collect();
        let mut bucket = vec![0u8; 16];
        bucket.extend(leaf(&inline));
        let mut root = leaf(&[(b"mdm.Devices".to_vec(), bucket, BUCKET_LEAF)]);
        root[0..8].copy_from_slice(&2u64.to_le_bytes());
        let pages = 2 + root.len().div_ceil(PAGE);
        let mut file = vec![0u8; pages * PAGE];
        for (id, txid) in [(0u64, 1u64), (1, 2)] {
            let at = id as usize * PAGE;
            file[at..at + 8].copy_from_slice(&id.to_le_bytes());
            file[at + 8..at + 10].copy_from_slice(&0x04u16.to_le_bytes());
            let m = at + 16;
            file[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            file[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
            file[m + 8..m + 12].copy_from_slice(&(PAGE as u32).to_le_bytes());
            file[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes());
            file[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv64a(&file[m..m + 56]);
            file[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        }
        let overflow = (root.len().div_ceil(PAGE) - 1) as u32;
        root[12..16].copy_from_slice(&overflow.to_le_bytes());
        file[2 * PAGE..2 * PAGE + root.len()].copy_from_slice(&root);
        file
    }

    /// Every record of `mdm.Devices`, as the importer reads them.
    fn read_back(bytes: &[u8]) -> Result<Vec<Record>, ImportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("micromdm.db");
        std::fs::write(&path, bytes).unwrap();
        device_records(&path)
    }

    proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn protobuf_records_round_trip(f in fields(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode(&f);
            let got = proto_fields(&bytes).unwrap();
            prop_assert_eq!(got.len(), f.len());
            for ((num, n, b), (want_num, want)) in got.iter().zip(&f) {
                prop_assert_eq!(num, want_num);
                match want {
                    Ok(v) => prop_assert_eq!(n, v),
                    Err(v) => prop_assert_eq!(b, &v.as_slice()),
                }
            }
            let _ = proto_fields(&junk);
        }

        #[test]
        fn bolt_files_round_trip_and_damage_never_panics(
            records in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..16), proptest::collection::vec(any::<u8>(), 0..48)),
                0..12,
            ),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12),
        ) {
            let mut sorted = records.clone();
            sorted.sort();
            sorted.dedup_by(|a, b| a.0 == b.0);
            let file = bolt(&sorted);
            prop_assert_eq!(read_back(&file).unwrap(), sorted);
            let _ = read_back(&crate::fuzz::mutate(&file, &edits));
            // Damage confined to the pages, so the file still opens and the walk is exercised.
            let mut pages = file.clone();
            for (at, _, byte) in &edits {
                let i = 2 * PAGE + at % (pages.len() - 2 * PAGE);
                pages[i] ^= byte | 1;
            }
            let _ = read_back(&pages);
        }
    }
}
