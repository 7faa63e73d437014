//! The store conformance suite: every role-trait method, run against SQLite always and against
//! PostgreSQL when `MDMCTL_TEST_POSTGRES_URL` is set (CI always sets it). Each test gets its own
//! SQLite file or PostgreSQL schema and removes it afterwards.

#[path = "../common/mod.rs"]
mod common;

mod cases;

use std::sync::Arc;

use mdmctl::secrets::FixedPassphrase;
use mdmctl::store::{self, Location, NewKey, Store};
use zeroize::Zeroizing;

use common::{PASSPHRASE, PgSchema};

/// A fresh store on one backend, and what is needed to look underneath it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub location: Location,
    pub backend: Backend,
}

pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(PgSchema),
}

impl TestStore {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = Location::Sqlite(dir.path().join("store.db"));
        Self::create(location, Backend::Sqlite(dir))
    }

    fn postgres() -> Option<Self> {
        let schema = PgSchema::create()?;
        let location = Location::parse(&schema.url());
        Some(Self::create(location, Backend::Postgres(schema)))
    }

    fn create(location: Location, backend: Backend) -> Self {
        let (store, _) = store::create(
            &location,
            NewKey::Passphrase(Zeroizing::new(PASSPHRASE.into())),
        )
        .expect("create store");
        Self {
            store,
            location,
            backend,
        }
    }

    /// The same store opened again, as another process would, with this passphrase.
    pub fn reopen(&self, passphrase: &str) -> Result<Arc<dyn Store>, store::StoreError> {
        store::open(
            &self.location,
            Box::new(FixedPassphrase(Zeroizing::new(passphrase.into()))),
        )
    }

    /// Run raw SQL underneath the store (to tamper, or to check what the database enforces).
    pub fn raw_execute(&self, sql: &str) -> Result<(), String> {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("store.db"))
                    .map_err(|e| e.to_string())?;
                c.execute_batch(sql).map_err(|e| e.to_string())
            }
            Backend::Postgres(schema) => {
                schema
                    .client()
                    .batch_execute(sql)
                    .map_err(|e| match e.as_db_error() {
                        Some(db) => db.message().to_string(),
                        None => e.to_string(),
                    })
            }
        }
    }

    /// Every byte the database holds for this store: the SQLite file and WAL, or `pg_dump`.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match &self.backend {
            Backend::Sqlite(dir) => common::sqlite_bytes(&dir.path().join("store.db")),
            Backend::Postgres(schema) => schema.dump(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}

/// One `#[test]` per case and backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { crate::cases::$case(&crate::TestStore::sqlite()); })*
        }
        mod postgres {
            $(#[test] fn $case() {
                if let Some(s) = crate::TestStore::postgres() { crate::cases::$case(&s); }
            })*
        }
    };
}

conformance!(
    fresh_store_is_at_the_latest_schema,
    create_refuses_an_existing_store,
    newer_schema_is_refused,
    meta_get_set_and_store_info,
    secrets_need_the_right_passphrase,
    wrong_passphrase_changes_nothing,
    assets_round_trip_with_sealed_keys,
    one_active_asset_per_kind,
    asset_state_cert_and_token_updates,
    devices_and_enrollments_round_trip,
    device_lookup_by_serial_and_summaries,
    identity_certificate_belongs_to_one_device,
    enrollment_needs_its_device,
    enrollment_topics_are_counted,
    activities_are_appended_and_filtered,
    activities_cannot_be_changed,
    failed_transaction_writes_nothing,
    concurrent_writers_do_not_lose_updates,
    secrets_are_not_stored_in_clear,
    tampered_secret_is_reported,
    commands_queue_per_enrollment_in_order,
    push_outbox_holds_channels_until_fetched_or_pushed,
    cutover_set_and_moves_round_trip,
    abm_devices_and_cursor_round_trip,
    abm_assignment_state,
    queueing_to_thousands_of_enrollments,
    api_tokens_and_scep_challenges,
    enrollment_secrets_issued_certificates_and_rebind_grants,
    tokens_become_admin_on_upgrade_and_it_is_recorded,
    checkin_primitives,
    desired_settings_and_teams_round_trip,
    desired_profiles_per_scope,
    devices_belong_to_teams,
    desired_state_migration_applies_to_an_older_store,
    bulk_writes_span_statements_and_update_in_place,
    device_facts_change_only_what_is_reported,
    import_fingerprints_state_and_user_channels,
    profile_status_rows_dirty_marks_and_counts,
    disk_encryption_state_and_sealed_keys,
    declaration_tokens_and_status_reports,
    reconcile_reads_many_devices_at_once,
    identity_renewals_come_due_once_per_identity,
    devices_under_update_enforcement_are_asked_for_facts_daily,
    job_leases_have_one_holder_and_lapse,
);
