//! The small SQL surface both backends expose, so every role trait is written once.
//!
//! Statements use `?` placeholders (rewritten to `$n` for PostgreSQL) and the portable subset
//! both databases share: `ON CONFLICT … DO UPDATE`, `RETURNING`, partial indexes. Values cross
//! as [`Val`] and come back as [`Row`]s of [`Cell`]s; each backend maps its own types.

use super::{Backend, StoreError};

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<&'a str> for Val<'a> {
    fn from(s: &'a str) -> Self {
        Val::Text(s)
    }
}
impl<'a> From<&'a String> for Val<'a> {
    fn from(s: &'a String) -> Self {
        Val::Text(s)
    }
}
impl<'a> From<&'a [u8]> for Val<'a> {
    fn from(b: &'a [u8]) -> Self {
        Val::Blob(b)
    }
}
impl<'a> From<&'a Vec<u8>> for Val<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Val::Blob(b)
    }
}
impl From<i64> for Val<'_> {
    fn from(i: i64) -> Self {
        Val::Int(i)
    }
}
impl From<bool> for Val<'_> {
    fn from(b: bool) -> Self {
        Val::Bool(b)
    }
}
impl<'a, T: Into<Val<'a>>> From<Option<T>> for Val<'a> {
    fn from(o: Option<T>) -> Self {
        o.map_or(Val::Null, Into::into)
    }
}
impl From<crate::timestamp::Timestamp> for Val<'_> {
    fn from(t: crate::timestamp::Timestamp) -> Self {
        Val::Int(t.0)
    }
}

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Decode(format!("column {i} missing")))
    }

    fn wrong(&self, i: usize, want: &str) -> StoreError {
        StoreError::Decode(format!(
            "column {i}: expected {want}, found {:?}",
            self.0.get(i)
        ))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(i, "text")),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| self.wrong(i, "text"))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            _ => Err(self.wrong(i, "integer")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| self.wrong(i, "integer"))
    }

    pub fn opt_ts(&self, i: usize) -> Result<Option<crate::timestamp::Timestamp>, StoreError> {
        Ok(self.opt_int(i)?.map(crate::timestamp::Timestamp))
    }

    pub fn ts(&self, i: usize) -> Result<crate::timestamp::Timestamp, StoreError> {
        Ok(crate::timestamp::Timestamp(self.int(i)?))
    }

    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.cell(i)? {
            Cell::Bool(b) => Ok(*b),
            // SQLite keeps booleans as 0/1.
            Cell::Int(v) => Ok(*v != 0),
            _ => Err(self.wrong(i, "boolean")),
        }
    }

    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.bool(i).map(Some),
        }
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Blob(b) => Ok(Some(b.clone())),
            _ => Err(self.wrong(i, "bytes")),
        }
    }
}

/// A connection inside a transaction.
pub(crate) trait Conn {
    fn backend(&self) -> Backend;
    /// Run several `;`-separated statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Run a statement; returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, StoreError>;
    /// Run a query and collect its rows.
    fn query(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Run a query and hand each row to `f` without collecting (large listings, exports).
    fn query_each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

impl dyn Conn + '_ {
    pub fn query_opt(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Decode("query returned no row".into()))
    }
}

/// Rewrite `?` placeholders as PostgreSQL's `$1, $2, …`. Our statements never put `?` inside
/// string literals, so a plain scan is enough.
/// Narrow a query over `devices d LEFT JOIN teams t` to a scope: `None` every device,
/// `Some(None)` devices in no team, `Some(Some(team))` that team's.
pub(crate) fn push_scope<'a>(
    scope: Option<Option<&'a str>>,
    sql: &mut String,
    params: &mut Vec<Val<'a>>,
) {
    match scope {
        None => {}
        Some(None) => sql.push_str(" WHERE d.team_id IS NULL"),
        Some(Some(team)) => {
            sql.push_str(" WHERE t.name = ?");
            params.push(team.into());
        }
    }
}

pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

/// `?, ?, …`: `n` placeholders, for an `IN (…)` list or a row of values.
pub(crate) fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The most parameters one multi-row statement carries: under SQLite's limit (32,766) and
/// PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// How many rows of `width` values go in one multi-row statement: at most 500 (larger
/// statements gain nothing measurable and cost memory to build).
pub(crate) fn rows_per_statement(width: usize) -> usize {
    (MAX_PARAMS / width.max(1)).clamp(1, 500)
}

/// `head VALUES (?, …), (?, …) … tail`: `rows` tuples of `width` placeholders. One round trip
/// for many rows (a bulk import on PostgreSQL is otherwise one round trip per row). `tail` may
/// hold an `ON CONFLICT … DO UPDATE`, which needs the rows' keys to be distinct.
pub(crate) fn insert_rows(head: &str, width: usize, rows: usize, tail: &str) -> String {
    let tuple = format!("({})", marks(width));
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (tuple.len() + 2) + 8);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_have_one_tuple_per_row() {
        assert_eq!(
            insert_rows("INSERT INTO t (a, b)", 2, 3, "ON CONFLICT (a) DO NOTHING"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT (a) DO NOTHING"
        );
        assert_eq!(rows_per_statement(21), 500);
        assert_eq!(rows_per_statement(100), 300);
        assert_eq!(rows_per_statement(100_000), 1);
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered_placeholders("SELECT a FROM t WHERE b = ? AND c IN (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
        );
    }
}
