//! `mdmctl apply -f`: validation (every problem at once, with file, line, key path and what is
//! expected), the plan, dry runs that write nothing, idempotence, removal, the YAML round trip,
//! mdmctl's own profiles read back by the plist crate and Python's plistlib, and the examples.
//! The store-level behaviour runs on SQLite and, with `MDMCTL_TEST_POSTGRES_URL`, PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod errors;
mod own_profiles;
mod plan;
mod robustness;

use std::path::Path;
use std::sync::Arc;

use mdmctl::secrets::FixedPassphrase;
use mdmctl::store::{self, Location, Store};
use zeroize::Zeroizing;

use common::{PASSPHRASE, TestContext};
pub use common::{profile, wifi};

/// The store of a test context, opened as the library would (to look underneath the CLI).
pub fn open_store(location: &str) -> Arc<dyn Store> {
    store::open(
        &Location::parse(location),
        Box::new(FixedPassphrase(Zeroizing::new(PASSPHRASE.into()))),
    )
    .expect("open store")
}

/// Every row of every table of a SQLite store, in a stable order.
pub fn sqlite_dump(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open sqlite");
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for t in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut cells = Vec::new();
                for i in 0..n {
                    cells.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.push_str(&format!("## {t}\n{}\n", rows.join("\n")));
    }
    out
}

/// A small repository: a global config and one team, with Wi-Fi and restrictions profiles.
pub fn small_repo(ctx: &TestContext) {
    ctx.write(
        "repo/profiles/wifi.mobileconfig",
        wifi("com.example.wifi", "Wi-Fi", "Corp"),
    );
    ctx.write(
        "repo/profiles/restrictions.mobileconfig",
        profile(
            "com.example.restrictions",
            "Restrictions",
            "com.apple.applicationaccess",
            "<key>allowAirDrop</key><false/>",
        ),
    );
    ctx.write(
        "repo/default.yml",
        r#"apiVersion: v1
kind: config
spec:
  mdm:
    apple_bm_default_team: Workstations
    macos_updates:
      minimum_version: "15.1"
      deadline: "2026-12-01"
    macos_settings:
      custom_settings:
        - path: profiles/wifi.mobileconfig
---
apiVersion: v1
kind: team
spec:
  team:
    name: Workstations
    mdm:
      macos_updates: {minimum_version: "15.2", deadline: "2027-01-15"}
      macos_settings:
        enable_disk_encryption: true
        custom_settings: [{path: profiles/wifi.mobileconfig}, profiles/restrictions.mobileconfig]
"#,
    );
}
