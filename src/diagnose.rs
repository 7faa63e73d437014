//! What an error knows about its own fix ([`Diagnose`]), the plain error a command raises
//! about its input ([`UserError`], [`bail_user!`](crate::bail_user)), and "did you mean"
//! suggestions. Depends on nothing in the crate: every module may use it, and `error` (which
//! turns any module's error into the message, hint and exit code) sits above them all.

use std::fmt;

/// What an error knows about its own fix.
pub trait Diagnose {
    /// A short instruction that fixes the problem, naming the flag, env var or command.
    fn hint(&self) -> Option<String> {
        None
    }
    /// True when the error means mdmctl itself is wrong (exit code 2), not the input.
    fn unexpected(&self) -> bool {
        false
    }
}

/// A plain error raised by a command about its input, with an optional hint.
#[derive(Debug)]
pub struct UserError {
    message: String,
    hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

impl Diagnose for UserError {
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// Shorthand for `Err(UserError::new(..).with_hint(..).into())`.
#[macro_export]
macro_rules! bail_user {
    ($msg:expr) => {
        return Err($crate::diagnose::UserError::new($msg).into())
    };
    ($msg:expr, hint: $hint:expr) => {
        return Err($crate::diagnose::UserError::new($msg)
            .with_hint($hint)
            .into())
    };
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
