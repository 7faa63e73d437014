//! How errors reach the user: one line saying what went wrong, a `hint:` line saying how to fix
//! it, and an exit code (1 for errors the user can fix, 2 for bugs).
//!
//! Library modules keep their own `thiserror` enums (`PkiError`, `StoreError`, …) and implement
//! [`Diagnose`] (in `crate::diagnose`, which depends on nothing, so the arrows run one way:
//! modules import `diagnose`, and this module imports the modules) to supply the hint; the CLI wraps them with `anyhow` context naming the file,
//! device or flag. [`diagnose`] walks the chain and picks the first hint it finds.

pub use crate::diagnose::{Diagnose, UserError, did_you_mean};

/// The message, hint and exit code for an error chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub message: String,
    pub hint: Option<String>,
    pub exit_code: u8,
}

/// Classify an error chain: the message is the whole chain on one line, the hint is the first
/// one any error in the chain offers.
pub fn diagnose(err: &anyhow::Error) -> Diagnosis {
    let mut hint = None;
    let mut unexpected = false;
    for cause in err.chain() {
        if let Some(d) = as_diagnose(cause) {
            if hint.is_none() {
                hint = d.hint();
            }
            unexpected |= d.unexpected();
        }
    }
    Diagnosis {
        message: one_line(&format!("{err:#}")),
        hint,
        exit_code: if unexpected { 2 } else { 1 },
    }
}

/// The errors that know their fix. Each module's error type is listed once here.
fn as_diagnose<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn Diagnose> {
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {
            $(if let Some(d) = e.downcast_ref::<$t>() { return Some(d); })*
        };
    }
    try_types!(
        UserError,
        crate::pki::PkiError,
        crate::secrets::SecretsError,
        crate::store::StoreError,
        crate::assets::AssetError,
        crate::import::ImportError,
        crate::apple::ProtocolError,
        crate::push::PushError,
        crate::mdm::api::ApiClientError,
        crate::gitops::GitopsError,
        crate::input::InputError,
        crate::cutover::stage::StageError,
        crate::abm::DepError,
        crate::abm::sync::SyncError,
        crate::abm::assign::AssignError,
    );
    None
}

/// Error messages stay on one line: embedded newlines (from a tool's output, say) become `; `.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_comes_from_the_innermost_error_that_has_one() {
        let err = anyhow::Error::new(UserError::new("bad file").with_hint("use another file"))
            .context("reading `x.pem`");
        let d = diagnose(&err);
        assert_eq!(d.message, "reading `x.pem`: bad file");
        assert_eq!(d.hint.as_deref(), Some("use another file"));
        assert_eq!(d.exit_code, 1);
    }

    #[test]
    fn multi_line_messages_are_folded() {
        let err = anyhow::anyhow!("first\n\n  second  \nthird");
        assert_eq!(diagnose(&err).message, "first; second; third");
    }
}
