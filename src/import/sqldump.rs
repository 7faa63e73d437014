//! A streaming reader of plain-text SQL dumps: what `mysqldump` and `pg_dump` write.
//!
//! Owns: tokenizing a dump statement by statement with constant memory (one row at a time),
//! table layouts from `CREATE TABLE`, rows from `INSERT … VALUES` (extended or one per line,
//! with or without a column list, `_binary` introducers, `0x…`/`X'…'` hex, backslash escapes)
//! and from PostgreSQL `COPY … FROM stdin` blocks (text format, `\N`, bytea `\x…` hex), and
//! precise errors (line, byte offset, table, excerpt). It knows nothing about NanoMDM: rows go
//! to a [`RowSink`].
//!
//! A hand-written byte scanner over an own buffer: general SQL parsers reject whole dumps
//! (`/*!40000 ALTER TABLE … DISABLE KEYS */`, `COPY` data), and regexes are too slow.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

/// Which database wrote the dump; it decides how string literals escape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL / MariaDB: backslash escapes inside `'…'`.
    MySql,
    /// PostgreSQL: standard strings (`''` only), `E'…'` escapes, `COPY` blocks.
    Postgres,
}

/// One column value: NULL or bytes (numbers and booleans as their text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Data(Vec<u8>),
}

impl Value {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Null => None,
            Value::Data(d) => Some(d),
        }
    }
}

/// Where the reader is, for errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub offset: u64,
    pub table: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, byte {}", self.line, self.offset)?;
        if let Some(t) = &self.table {
            write!(f, ", table `{t}`")?;
        }
        Ok(())
    }
}

/// A malformed or truncated dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpError {
    pub reason: String,
    pub at: Position,
    pub excerpt: String,
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.reason, self.at)?;
        if !self.excerpt.is_empty() {
            write!(f, " near `{}`", self.excerpt)?;
        }
        Ok(())
    }
}

impl std::error::Error for DumpError {}

/// Where rows go. Errors of the sink stop the reader and come back unchanged.
pub trait RowSink {
    type Error: From<DumpError>;
    /// Whether the rows of `table` are wanted; the others are only counted.
    fn wants(&mut self, table: &str) -> bool;
    fn row(
        &mut self,
        table: &str,
        columns: &[String],
        values: Vec<Value>,
        at: &Position,
    ) -> Result<(), Self::Error>;
    /// A row of a table that is not wanted.
    fn other_row(&mut self, _table: &str) {}
    /// The largest row (and so value) read into memory; a larger one is an error naming the
    /// limit. Values of tables that are not wanted are skipped without being kept.
    fn max_row_size(&self) -> usize {
        DEFAULT_MAX_ROW
    }
    /// Bytes read so far (called every few MB, for progress bars).
    fn progress(&mut self, _bytes: u64) {}
}

/// What a whole dump held, besides its rows.
#[derive(Clone, Debug, Default)]
pub struct DumpSummary {
    pub bytes: u64,
    pub statements: u64,
    /// Tables that had rows, with their row counts.
    pub tables: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default)]
struct TableInfo {
    columns: Vec<String>,
    bytea: Vec<bool>,
}

const BUF: usize = 256 * 1024;
/// The default of [`RowSink::max_row_size`] (and `import-devices --max-row-size`).
pub const DEFAULT_MAX_ROW: usize = 64 * 1024 * 1024;
const PROGRESS_EVERY: u64 = 4 * 1024 * 1024;

struct Scanner<R> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Bytes consumed before `buf[0]`.
    base: u64,
    line: u64,
    table: Option<String>,
    next_progress: u64,
    /// Largest value or row kept in memory.
    max: usize,
    /// Skipping a statement: quoted values are passed over, not kept.
    discard: bool,
}

impl<R: Read> Scanner<R> {
    fn new(r: R) -> Self {
        Self {
            max: DEFAULT_MAX_ROW,
            discard: false,
            r,
            buf: vec![0; BUF],
            pos: 0,
            len: 0,
            eof: false,
            base: 0,
            line: 1,
            table: None,
            next_progress: PROGRESS_EVERY,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn position(&self) -> Position {
        Position {
            line: self.line,
            offset: self.offset(),
            table: self.table.clone(),
        }
    }

    fn excerpt(&self) -> String {
        let start = self.pos.saturating_sub(24);
        let end = (self.pos + 24).min(self.len);
        redacted_excerpt(&self.buf[start..end])
    }

    fn err(&self, reason: impl Into<String>) -> DumpError {
        DumpError {
            reason: reason.into(),
            at: self.position(),
            excerpt: self.excerpt(),
        }
    }

    fn too_large(&self) -> DumpError {
        self.err(format!(
            "a row or value larger than {} MiB: not what an MDM database holds (raise the limit with `--max-row-size` if it is)",
            self.max / (1024 * 1024)
        ))
    }

    fn eof_err(&self, inside: &str) -> DumpError {
        self.err(format!(
            "the dump ends inside {inside}: it is truncated or damaged"
        ))
    }

    /// Make at least `n` bytes available from `pos` unless the input ends first.
    fn ensure(&mut self, n: usize) -> Result<bool, DumpError> {
        while self.len - self.pos < n && !self.eof {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.base += self.pos as u64;
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let got = loop {
                match self.r.read(&mut self.buf[self.len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.err(format!("cannot read the dump: {e}"))),
                }
            };
            if got == 0 {
                self.eof = true;
            }
            self.len += got;
        }
        Ok(self.len - self.pos >= n)
    }

    #[inline]
    fn peek(&mut self) -> Result<Option<u8>, DumpError> {
        if self.pos < self.len {
            return Ok(Some(self.buf[self.pos]));
        }
        Ok(if self.ensure(1)? {
            Some(self.buf[self.pos])
        } else {
            None
        })
    }

    fn peek_at(&mut self, i: usize) -> Result<Option<u8>, DumpError> {
        Ok(if self.ensure(i + 1)? {
            Some(self.buf[self.pos + i])
        } else {
            None
        })
    }

    #[inline]
    fn bump(&mut self) -> Result<Option<u8>, DumpError> {
        let b = self.peek()?;
        if let Some(c) = b {
            self.pos += 1;
            if c == b'\n' {
                self.line += 1;
            }
        }
        Ok(b)
    }

    fn expect_byte(&mut self, want: u8, inside: &str) -> Result<(), DumpError> {
        match self.bump()? {
            Some(b) if b == want => Ok(()),
            Some(_) => {
                self.pos -= 1;
                Err(self.err(format!("expected `{}` in {inside}", want as char)))
            }
            None => Err(self.eof_err(inside)),
        }
    }

    fn skip_ws(&mut self) -> Result<(), DumpError> {
        while let Some(b) = self.peek()? {
            if b.is_ascii_whitespace() {
                self.bump()?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Skip to the end of the line; returns up to 80 bytes of it.
    fn skip_line(&mut self) -> Result<Vec<u8>, DumpError> {
        let mut head = Vec::new();
        loop {
            if self.pos == self.len && !self.ensure(1)? {
                return Ok(head);
            }
            let slice = &self.buf[self.pos..self.len];
            match slice.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let take = i.min(80usize.saturating_sub(head.len()));
                    head.extend_from_slice(&slice[..take]);
                    self.pos += i + 1;
                    self.line += 1;
                    return Ok(head);
                }
                None => {
                    let take = slice.len().min(80usize.saturating_sub(head.len()));
                    head.extend_from_slice(&slice[..take]);
                    self.pos = self.len;
                }
            }
        }
    }

    /// Skip a `/* … */` comment; the opening `/*` is next.
    fn skip_block_comment(&mut self) -> Result<(), DumpError> {
        self.pos += 2;
        loop {
            match self.bump()? {
                Some(b'*') if self.peek()? == Some(b'/') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => {}
                None => return Err(self.eof_err("a `/* … */` comment")),
            }
        }
    }

    fn count_lines(&mut self, from: usize, to: usize) {
        self.line += self.buf[from..to].iter().filter(|&&b| b == b'\n').count() as u64;
    }

    /// Read a quoted literal whose opening quote was consumed, unescaping into `out`.
    fn quoted(&mut self, quote: u8, backslash: bool, out: &mut Vec<u8>) -> Result<(), DumpError> {
        loop {
            if out.len() > self.max {
                return Err(self.too_large());
            }
            if self.pos == self.len && !self.ensure(1)? {
                return Err(self.eof_err("a quoted string"));
            }
            let start = self.pos;
            let slice = &self.buf[start..self.len];
            let stop = slice
                .iter()
                .position(|&b| b == quote || (backslash && b == b'\\'));
            match stop {
                None => {
                    if !self.discard {
                        out.extend_from_slice(slice);
                    }
                    let end = self.len;
                    self.count_lines(start, end);
                    self.pos = end;
                }
                Some(i) => {
                    if !self.discard {
                        out.extend_from_slice(&slice[..i]);
                    }
                    let c = slice[i];
                    self.count_lines(start, start + i);
                    self.pos = start + i + 1;
                    if c == quote {
                        if self.peek()? == Some(quote) {
                            out.push(quote);
                            self.pos += 1;
                        } else {
                            return Ok(());
                        }
                    } else {
                        let e = self
                            .bump()?
                            .ok_or_else(|| self.eof_err("a quoted string"))?;
                        out.push(match e {
                            b'0' => 0,
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'f' => 12,
                            b'Z' => 26,
                            other => other,
                        });
                    }
                }
            }
        }
    }

    /// A bare word (letters, digits, `_`, `$`), as written.
    fn word(&mut self) -> Result<String, DumpError> {
        let mut w = String::new();
        while let Some(b) = self.peek()? {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
                if w.len() >= self.max {
                    return Err(self.too_large());
                }
                w.push(b as char);
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(w)
    }

    /// A possibly schema-qualified, possibly quoted identifier; returns its last part.
    fn identifier(&mut self) -> Result<String, DumpError> {
        self.skip_ws()?;
        loop {
            let part = match self.peek()? {
                Some(q @ (b'`' | b'"')) => {
                    self.pos += 1;
                    let mut v = Vec::new();
                    self.quoted(q, false, &mut v)?;
                    String::from_utf8_lossy(&v).into_owned()
                }
                Some(_) => self.word()?,
                None => return Err(self.eof_err("a statement")),
            };
            if part.is_empty() {
                return Err(self.err("expected a table or column name"));
            }
            if self.peek()? == Some(b'.') {
                self.pos += 1;
                continue;
            }
            return Ok(part);
        }
    }

    /// Skip the rest of a statement up to and including its delimiter, minding quotes,
    /// comments and PostgreSQL dollar quotes.
    fn skip_statement(&mut self, dialect: Dialect, delimiter: &[u8]) -> Result<(), DumpError> {
        let discarding = std::mem::replace(&mut self.discard, true);
        let r = self.skip_statement_inner(dialect, delimiter);
        self.discard = discarding;
        r
    }

    fn skip_statement_inner(
        &mut self,
        dialect: Dialect,
        delimiter: &[u8],
    ) -> Result<(), DumpError> {
        let mut scratch = Vec::new();
        loop {
            let Some(b) = self.peek()? else {
                return Err(self.eof_err("a statement"));
            };
            if b == delimiter[0] {
                if delimiter.len() == 1 {
                    self.pos += 1;
                    return Ok(());
                }
                if self.ensure(delimiter.len())?
                    && &self.buf[self.pos..self.pos + delimiter.len()] == delimiter
                {
                    self.pos += delimiter.len();
                    return Ok(());
                }
            }
            match b {
                b'\'' | b'"' | b'`' => {
                    self.pos += 1;
                    scratch.clear();
                    let bs = dialect == Dialect::MySql && b != b'`';
                    self.quoted(b, bs, &mut scratch)?;
                }
                b'-' if self.peek_at(1)? == Some(b'-') => {
                    self.skip_line()?;
                }
                b'/' if self.peek_at(1)? == Some(b'*') => self.skip_block_comment()?,
                b'$' if dialect == Dialect::Postgres => self.dollar_quoted()?,
                _ => {
                    self.bump()?;
                }
            }
        }
    }

    /// `$tag$ … $tag$` (PostgreSQL function bodies); `$` is next.
    fn dollar_quoted(&mut self) -> Result<(), DumpError> {
        let mut tag = vec![b'$'];
        self.pos += 1;
        loop {
            match self.bump()? {
                Some(b'$') => {
                    tag.push(b'$');
                    break;
                }
                Some(c) if c.is_ascii_alphanumeric() || c == b'_' => tag.push(c),
                // A lone `$` (e.g. `$1`): not a quote.
                Some(_) => return Ok(()),
                None => return Err(self.eof_err("a statement")),
            }
        }
        loop {
            match self.bump()? {
                Some(b'$') => {
                    if self.ensure(tag.len() - 1)?
                        && self.buf[self.pos..self.pos + tag.len() - 1] == tag[1..]
                    {
                        self.pos += tag.len() - 1;
                        return Ok(());
                    }
                }
                Some(_) => {}
                None => return Err(self.eof_err("a `$$`-quoted body")),
            }
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode hex digits (even count).
pub fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

/// Statements a dump may hold besides data; anything else is not a dump.
const KNOWN: &[&str] = &[
    "SET",
    "LOCK",
    "UNLOCK",
    "DROP",
    "ALTER",
    "SELECT",
    "CREATE",
    "INSERT",
    "REPLACE",
    "COPY",
    "COMMENT",
    "GRANT",
    "REVOKE",
    "USE",
    "START",
    "COMMIT",
    "BEGIN",
    "TRUNCATE",
    "DELETE",
    "UPDATE",
    "WITH",
    "DO",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "REFRESH",
    "ANALYZE",
    "VACUUM",
    "DELIMITER",
    "FLUSH",
    "SHOW",
];

/// Read a whole dump, handing rows to `sink`.
pub fn read_dump<R: Read, S: RowSink>(
    input: R,
    dialect: Dialect,
    sink: &mut S,
) -> Result<DumpSummary, S::Error> {
    let mut sc = Scanner::new(input);
    sc.max = sink.max_row_size();
    let mut tables: HashMap<String, TableInfo> = HashMap::new();
    let mut counts: Vec<(String, u64)> = Vec::new();
    let mut summary = DumpSummary::default();
    let mut delimiter: Vec<u8> = b";".to_vec();
    let mut has_header = false;
    let mut complete = false;
    let mut first = true;
    loop {
        if sc.offset() >= sc.next_progress {
            sink.progress(sc.offset());
            sc.next_progress = sc.offset() + PROGRESS_EVERY;
        }
        sc.skip_ws()?;
        sc.table = None;
        let Some(b) = sc.peek()? else { break };
        match b {
            b'-' if sc.peek_at(1)? == Some(b'-') => {
                let text = sc.skip_line()?;
                let text = String::from_utf8_lossy(&text);
                if text.contains("MySQL dump")
                    || text.contains("MariaDB dump")
                    || text.contains("PostgreSQL database dump")
                {
                    if text.contains("dump complete") {
                        complete = true;
                    } else {
                        has_header = true;
                    }
                } else if text.starts_with("-- Dump completed") {
                    complete = true;
                }
                continue;
            }
            b'#' if dialect == Dialect::MySql => {
                sc.skip_line()?;
                continue;
            }
            b'/' if sc.peek_at(1)? == Some(b'*') => {
                sc.skip_block_comment()?;
                // `/*!…*/;` leaves a lone delimiter.
                sc.skip_ws()?;
                if sc.peek()? == Some(b';') {
                    sc.pos += 1;
                }
                continue;
            }
            b'\\' => {
                // psql meta-commands (`\connect`, `\restrict`) in pg_dump output.
                sc.skip_line()?;
                continue;
            }
            b';' => {
                sc.pos += 1;
                continue;
            }
            _ => {}
        }
        let word = sc.word()?.to_ascii_uppercase();
        if word.is_empty() || !KNOWN.contains(&word.as_str()) {
            let what = if first {
                "this is not a SQL dump (no SQL statement at its start)"
            } else {
                "unexpected text where a SQL statement should start"
            };
            return Err(sc.err(what).into());
        }
        first = false;
        summary.statements += 1;
        match word.as_str() {
            "DELIMITER" => {
                sc.skip_ws()?;
                let line = sc.skip_line()?;
                let d: Vec<u8> = line
                    .iter()
                    .copied()
                    .take_while(|b| !b.is_ascii_whitespace())
                    .collect();
                if d.is_empty() {
                    return Err(sc.err("`DELIMITER` without a delimiter").into());
                }
                delimiter = d;
            }
            "CREATE" => {
                sc.skip_ws()?;
                let next = sc.word()?.to_ascii_uppercase();
                if next == "TABLE" {
                    let info = create_table(&mut sc, dialect)?;
                    if let Some((name, info)) = info {
                        tables.insert(name, info);
                    }
                    sc.skip_statement(dialect, &delimiter)?;
                } else {
                    sc.skip_statement(dialect, &delimiter)?;
                }
            }
            "INSERT" | "REPLACE" => {
                insert(&mut sc, dialect, &tables, &mut counts, sink, &delimiter)?;
            }
            "COPY" if dialect == Dialect::Postgres => {
                copy(&mut sc, &tables, &mut counts, sink)?;
            }
            _ => sc.skip_statement(dialect, &delimiter)?,
        }
    }
    sc.table = None;
    if has_header && !complete {
        return Err(sc
            .err(match dialect {
                Dialect::MySql => "the dump ends before mysqldump's `-- Dump completed` line: it is truncated",
                Dialect::Postgres => "the dump ends before pg_dump's `-- PostgreSQL database dump complete` line: it is truncated",
            })
            .into());
    }
    summary.bytes = sc.offset();
    summary.tables = counts;
    sink.progress(summary.bytes);
    Ok(summary)
}

fn bump_count(counts: &mut Vec<(String, u64)>, table: &str) {
    match counts.iter_mut().find(|(t, _)| t == table) {
        Some((_, n)) => *n += 1,
        None => counts.push((table.to_string(), 1)),
    }
}

/// `CREATE TABLE name ( … )`: column names and which are `bytea`. `TABLE` was read.
fn create_table<R: Read>(
    sc: &mut Scanner<R>,
    dialect: Dialect,
) -> Result<Option<(String, TableInfo)>, DumpError> {
    sc.skip_ws()?;
    // IF NOT EXISTS
    let save = sc.pos;
    let w = sc.word()?;
    if w.eq_ignore_ascii_case("IF") {
        sc.skip_ws()?;
        sc.word()?;
        sc.skip_ws()?;
        sc.word()?;
    } else {
        sc.pos = save;
    }
    let name = sc.identifier()?;
    sc.table = Some(name.clone());
    sc.skip_ws()?;
    if sc.peek()? != Some(b'(') {
        // `CREATE TABLE … AS`, `PARTITION OF` …: nothing we read rows of.
        return Ok(None);
    }
    sc.pos += 1;
    let mut info = TableInfo::default();
    let mut scratch = Vec::new();
    loop {
        sc.skip_ws()?;
        // Skip comments between definitions.
        while sc.peek()? == Some(b'-') && sc.peek_at(1)? == Some(b'-') {
            sc.skip_line()?;
            sc.skip_ws()?;
        }
        let (name, quoted) = match sc.peek()? {
            Some(q @ (b'`' | b'"')) => {
                sc.pos += 1;
                scratch.clear();
                sc.quoted(q, false, &mut scratch)?;
                (String::from_utf8_lossy(&scratch).into_owned(), true)
            }
            Some(b')') => {
                sc.pos += 1;
                break;
            }
            Some(_) => (sc.word()?, false),
            None => return Err(sc.eof_err("a `CREATE TABLE` statement")),
        };
        let keyword = !quoted
            && matches!(
                name.to_ascii_uppercase().as_str(),
                "PRIMARY"
                    | "KEY"
                    | "UNIQUE"
                    | "CONSTRAINT"
                    | "INDEX"
                    | "FOREIGN"
                    | "CHECK"
                    | "FULLTEXT"
                    | "SPATIAL"
                    | "EXCLUDE"
                    | "LIKE"
                    | "PERIOD"
            );
        if name.is_empty() {
            return Err(sc.err("expected a column definition"));
        }
        if !keyword {
            sc.skip_ws()?;
            let ty = sc.word()?;
            info.columns.push(name);
            info.bytea.push(ty.eq_ignore_ascii_case("bytea"));
        }
        // To the next top-level `,` or the closing `)`.
        let mut depth = 0usize;
        loop {
            match sc.peek()? {
                None => return Err(sc.eof_err("a `CREATE TABLE` statement")),
                Some(b'(') => {
                    depth += 1;
                    sc.pos += 1;
                }
                Some(b')') if depth == 0 => break,
                Some(b')') => {
                    depth -= 1;
                    sc.pos += 1;
                }
                Some(b',') if depth == 0 => break,
                Some(q @ (b'\'' | b'"' | b'`')) => {
                    sc.pos += 1;
                    scratch.clear();
                    sc.quoted(q, dialect == Dialect::MySql && q == b'\'', &mut scratch)?;
                }
                Some(_) => {
                    sc.bump()?;
                }
            }
        }
        if sc.peek()? == Some(b',') {
            sc.pos += 1;
        }
    }
    Ok(Some((name, info)))
}

fn column_list<R: Read>(sc: &mut Scanner<R>) -> Result<Vec<String>, DumpError> {
    // `(` was consumed.
    let mut cols = Vec::new();
    loop {
        cols.push(sc.identifier()?);
        sc.skip_ws()?;
        match sc.bump()? {
            Some(b',') => continue,
            Some(b')') => return Ok(cols),
            Some(_) => {
                sc.pos -= 1;
                return Err(sc.err("expected `,` or `)` in a column list"));
            }
            None => return Err(sc.eof_err("a column list")),
        }
    }
}

fn insert<R: Read, S: RowSink>(
    sc: &mut Scanner<R>,
    dialect: Dialect,
    tables: &HashMap<String, TableInfo>,
    counts: &mut Vec<(String, u64)>,
    sink: &mut S,
    delimiter: &[u8],
) -> Result<(), S::Error> {
    // Modifiers up to INTO.
    loop {
        sc.skip_ws()?;
        let w = sc.word()?.to_ascii_uppercase();
        match w.as_str() {
            "INTO" => break,
            "IGNORE" | "LOW_PRIORITY" | "DELAYED" | "HIGH_PRIORITY" => continue,
            _ => return Err(sc.err("expected `INTO` after `INSERT`").into()),
        }
    }
    let table = sc.identifier()?;
    sc.table = Some(table.clone());
    sc.skip_ws()?;
    let explicit = if sc.peek()? == Some(b'(') {
        sc.pos += 1;
        Some(column_list(sc)?)
    } else {
        None
    };
    let info = tables.get(&table);
    let columns: Vec<String> = match (&explicit, info) {
        (Some(c), _) => c.clone(),
        (None, Some(i)) => i.columns.clone(),
        (None, None) => {
            return Err(sc
                .err(format!(
                    "`INSERT INTO {table}` has no column list and the dump has no `CREATE TABLE {table}` before it"
                ))
                .into());
        }
    };
    let bytea: Vec<bool> = columns
        .iter()
        .map(|c| {
            info.and_then(|i| i.columns.iter().position(|x| x == c).map(|p| i.bytea[p]))
                .unwrap_or(false)
        })
        .collect();
    sc.skip_ws()?;
    let w = sc.word()?.to_ascii_uppercase();
    if w != "VALUES" && w != "VALUE" {
        // `INSERT … SELECT`: no literal rows.
        sc.skip_statement(dialect, delimiter)?;
        return Ok(());
    }
    let wanted = sink.wants(&table);
    let mut values: Vec<Value> = Vec::with_capacity(columns.len());
    loop {
        sc.skip_ws()?;
        sc.expect_byte(b'(', "an `INSERT` row")?;
        values.clear();
        let mut row_bytes = 0usize;
        loop {
            sc.skip_ws()?;
            let v = value(sc, dialect)?;
            row_bytes += v.bytes().map_or(0, <[u8]>::len);
            if row_bytes > sc.max {
                return Err(sc.too_large().into());
            }
            values.push(v);
            sc.skip_ws()?;
            match sc.bump()? {
                Some(b',') => continue,
                Some(b')') => break,
                Some(_) => {
                    sc.pos -= 1;
                    return Err(sc.err("expected `,` or `)` after a value").into());
                }
                None => return Err(sc.eof_err("an `INSERT` row").into()),
            }
        }
        if values.len() != columns.len() {
            return Err(sc
                .err(format!(
                    "a row of `{table}` has {} values for {} columns",
                    values.len(),
                    columns.len()
                ))
                .into());
        }
        bump_count(counts, &table);
        if wanted {
            for (v, is_bytea) in values.iter_mut().zip(&bytea) {
                if *is_bytea {
                    decode_bytea(v).map_err(|e| sc.err(e))?;
                }
            }
            let pos = sc.position();
            let row = std::mem::replace(&mut values, Vec::with_capacity(columns.len()));
            sink.row(&table, &columns, row, &pos)?;
        } else {
            sink.other_row(&table);
        }
        sc.skip_ws()?;
        match sc.peek()? {
            Some(b',') => {
                sc.pos += 1;
            }
            Some(b';') => {
                sc.pos += 1;
                return Ok(());
            }
            Some(_) => {
                // `ON DUPLICATE KEY UPDATE …` / `ON CONFLICT …`
                sc.skip_statement(dialect, delimiter)?;
                return Ok(());
            }
            None => return Err(sc.eof_err("an `INSERT` statement").into()),
        }
    }
}

/// A bytea text value `\x0a0b…` becomes its bytes.
fn decode_bytea(v: &mut Value) -> Result<(), String> {
    if let Value::Data(d) = v
        && d.starts_with(b"\\x")
    {
        *d = decode_hex(&d[2..]).ok_or("a bytea value is not valid hex")?;
    }
    Ok(())
}

/// One literal inside an `INSERT` row.
fn value<R: Read>(sc: &mut Scanner<R>, dialect: Dialect) -> Result<Value, DumpError> {
    let mut out = Vec::new();
    let b = sc.peek()?.ok_or_else(|| sc.eof_err("an `INSERT` row"))?;
    let v = match b {
        b'\'' => {
            sc.pos += 1;
            sc.quoted(b'\'', dialect == Dialect::MySql, &mut out)?;
            Value::Data(out)
        }
        b'"' if dialect == Dialect::MySql => {
            sc.pos += 1;
            sc.quoted(b'"', true, &mut out)?;
            Value::Data(out)
        }
        b'0' if matches!(sc.peek_at(1)?, Some(b'x' | b'X')) => {
            sc.pos += 2;
            let digits = sc.word()?;
            Value::Data(
                decode_hex(digits.as_bytes())
                    .ok_or_else(|| sc.err("a `0x…` literal is not valid hex"))?,
            )
        }
        b'-' | b'+' | b'.' | b'0'..=b'9' => {
            while let Some(c) = sc.peek()? {
                if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+') {
                    out.push(c);
                    sc.pos += 1;
                } else {
                    break;
                }
            }
            Value::Data(out)
        }
        c if c.is_ascii_alphabetic() || c == b'_' => {
            let w = sc.word()?;
            let upper = w.to_ascii_uppercase();
            let next = sc.peek()?;
            if (upper == "X" || upper == "B") && next == Some(b'\'') {
                sc.pos += 1;
                sc.quoted(b'\'', false, &mut out)?;
                if upper == "X" {
                    Value::Data(
                        decode_hex(&out)
                            .ok_or_else(|| sc.err("an `X'…'` literal is not valid hex"))?,
                    )
                } else {
                    Value::Data(bits_to_bytes(&out))
                }
            } else if upper == "E" && next == Some(b'\'') {
                sc.pos += 1;
                sc.quoted(b'\'', true, &mut out)?;
                Value::Data(out)
            } else if upper == "N" && next == Some(b'\'') {
                sc.pos += 1;
                sc.quoted(b'\'', dialect == Dialect::MySql, &mut out)?;
                Value::Data(out)
            } else if w.starts_with('_') {
                // A charset introducer: `_binary '…'`, `_utf8mb4 0x…`.
                sc.skip_ws()?;
                return value(sc, dialect);
            } else if upper == "NULL" {
                Value::Null
            } else {
                // TRUE/FALSE, t/f and other bare words as written.
                Value::Data(w.into_bytes())
            }
        }
        _ => return Err(sc.err("expected a value")),
    };
    // PostgreSQL casts: `'…'::bytea`.
    if sc.peek()? == Some(b':') && sc.peek_at(1)? == Some(b':') {
        sc.pos += 2;
        sc.identifier()?;
        while matches!(sc.peek()?, Some(b'[' | b']')) {
            sc.pos += 1;
        }
    }
    Ok(v)
}

fn bits_to_bytes(bits: &[u8]) -> Vec<u8> {
    let mut n: u128 = 0;
    for b in bits {
        n = n << 1 | u128::from(*b == b'1');
    }
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(15);
    bytes[first..].to_vec()
}

/// `COPY name (cols) FROM stdin;` and its data lines up to `\.`. `COPY` was read.
fn copy<R: Read, S: RowSink>(
    sc: &mut Scanner<R>,
    tables: &HashMap<String, TableInfo>,
    counts: &mut Vec<(String, u64)>,
    sink: &mut S,
) -> Result<(), S::Error> {
    let table = sc.identifier()?;
    sc.table = Some(table.clone());
    sc.skip_ws()?;
    let columns = if sc.peek()? == Some(b'(') {
        sc.pos += 1;
        column_list(sc)?
    } else {
        match tables.get(&table) {
            Some(i) => i.columns.clone(),
            None => {
                return Err(sc
                    .err(format!(
                        "`COPY {table}` has no column list and the dump has no `CREATE TABLE` for it"
                    ))
                    .into());
            }
        }
    };
    let info = tables.get(&table);
    let bytea: Vec<bool> = columns
        .iter()
        .map(|c| {
            info.and_then(|i| i.columns.iter().position(|x| x == c).map(|p| i.bytea[p]))
                .unwrap_or(false)
        })
        .collect();
    // The rest of the line: `FROM stdin;`
    let rest = sc.skip_line()?;
    let rest = String::from_utf8_lossy(&rest).to_ascii_uppercase();
    if !rest.contains("FROM STDIN") {
        // `COPY … TO …` or from a file: no inline data.
        return Ok(());
    }
    let wanted = sink.wants(&table);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line of an unwanted table is not kept whole: only whether it was cut matters.
        let mut cut = false;
        let start_line = sc.line;
        // Read one data line.
        loop {
            if sc.pos == sc.len && !sc.ensure(1)? {
                return Err(sc.eof_err("a `COPY` block (no `\\.` line)").into());
            }
            let slice = &sc.buf[sc.pos..sc.len];
            match slice.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&slice[..i]);
                    sc.pos += i + 1;
                    sc.line += 1;
                    break;
                }
                None => {
                    if wanted {
                        line.extend_from_slice(slice);
                    } else {
                        cut = true;
                    }
                    sc.pos = sc.len;
                }
            }
            if line.len() > sc.max {
                return Err(sc.too_large().into());
            }
        }
        if line == b"\\." && !cut {
            return Ok(());
        }
        bump_count(counts, &table);
        if !wanted {
            sink.other_row(&table);
            continue;
        }
        let mut values = Vec::with_capacity(columns.len());
        for field in line.split(|&b| b == b'\t') {
            values.push(copy_field(field));
        }
        if values.len() != columns.len() {
            let mut e = sc.err(format!(
                "a `COPY` row of `{table}` has {} fields for {} columns",
                values.len(),
                columns.len()
            ));
            e.at.line = start_line;
            e.excerpt = redacted_excerpt(&line[..line.len().min(48)]);
            return Err(e.into());
        }
        for (v, is_bytea) in values.iter_mut().zip(&bytea) {
            if *is_bytea {
                decode_bytea(v).map_err(|e| sc.err(e))?;
            }
        }
        let mut pos = sc.position();
        pos.line = start_line;
        sink.row(&table, &columns, values, &pos)?;
    }
}

/// One field of COPY's text format.
fn copy_field(f: &[u8]) -> Value {
    if f == b"\\N" {
        return Value::Null;
    }
    if !f.contains(&b'\\') {
        return Value::Data(f.to_vec());
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let c = f[i];
        if c != b'\\' || i + 1 == f.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = f[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut n = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    n = n * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(n as u8);
            }
            b'x' if i < f.len() && hex_val(f[i]).is_some() => {
                let mut n = hex_val(f[i]).unwrap_or(0);
                i += 1;
                if i < f.len()
                    && let Some(d) = hex_val(f[i])
                {
                    n = n << 4 | d;
                    i += 1;
                }
                out.push(n);
            }
            other => out.push(other),
        }
    }
    Value::Data(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, Vec<String>, Vec<Value>)>);

    impl RowSink for Collect {
        type Error = DumpError;
        fn wants(&mut self, _: &str) -> bool {
            true
        }
        fn row(
            &mut self,
            t: &str,
            c: &[String],
            v: Vec<Value>,
            _: &Position,
        ) -> Result<(), DumpError> {
            self.0.push((t.into(), c.to_vec(), v));
            Ok(())
        }
    }

    fn d(s: &[u8]) -> Value {
        Value::Data(s.to_vec())
    }

    #[test]
    fn mysql_extended_insert_with_escapes_and_hex() {
        let sql = b"-- MySQL dump 10.13\n/*!40101 SET NAMES utf8mb4 */;\nCREATE TABLE `t` (\n  `a` varchar(10) NOT NULL,\n  `b` mediumblob,\n  `c` int DEFAULT '0',\n  PRIMARY KEY (`a`)\n) ENGINE=InnoDB;\nLOCK TABLES `t` WRITE;\n/*!40000 ALTER TABLE `t` DISABLE KEYS */;\nINSERT INTO `t` VALUES ('x\\'y\\n',_binary '\\0\\\\z',12),('q',0x0aff,NULL),('r',X'00',-1);\n/*!40000 ALTER TABLE `t` ENABLE KEYS */;\nUNLOCK TABLES;\n-- Dump completed on 2026-11-23\n";
        let mut c = Collect::default();
        read_dump(&sql[..], Dialect::MySql, &mut c).unwrap();
        assert_eq!(c.0.len(), 3);
        assert_eq!(c.0[0].1, vec!["a", "b", "c"]);
        assert_eq!(c.0[0].2, vec![d(b"x'y\n"), d(b"\0\\z"), d(b"12")]);
        assert_eq!(c.0[1].2, vec![d(b"q"), d(&[0x0a, 0xff]), Value::Null]);
        assert_eq!(c.0[2].2, vec![d(b"r"), d(&[0]), d(b"-1")]);
    }

    #[test]
    fn postgres_copy_and_inserts() {
        let sql = b"--\n-- PostgreSQL database dump\n--\nSET standard_conforming_strings = on;\nCREATE FUNCTION f() RETURNS trigger AS $$ BEGIN NEW.x = 1; RETURN NEW; END; $$ LANGUAGE plpgsql;\nCREATE TABLE public.t (\n    a character varying(10) NOT NULL,\n    b bytea\n);\nCOPY public.t (a, b) FROM stdin;\nx\\ty\t\\\\x0102\nz\t\\N\n\\.\nINSERT INTO public.t VALUES ('it''s \\n', '\\x0a');\nINSERT INTO public.t (a, b) VALUES (E'e\\n', NULL);\n--\n-- PostgreSQL database dump complete\n--\n";
        let mut c = Collect::default();
        read_dump(&sql[..], Dialect::Postgres, &mut c).unwrap();
        assert_eq!(c.0.len(), 4);
        assert_eq!(c.0[0].2, vec![d(b"x\ty"), d(&[1, 2])]);
        assert_eq!(c.0[1].2, vec![d(b"z"), Value::Null]);
        assert_eq!(c.0[2].2, vec![d(b"it's \\n"), d(&[0x0a])]);
        assert_eq!(c.0[3].2, vec![d(b"e\n"), Value::Null]);
    }

    #[test]
    fn truncation_is_reported_with_position() {
        let sql =
            b"-- MySQL dump 10.13\nCREATE TABLE `t` (`a` text);\nINSERT INTO `t` VALUES ('abc";
        let e = read_dump(&sql[..], Dialect::MySql, &mut Collect::default()).unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
        assert_eq!(e.at.line, 3);
        assert_eq!(e.at.table.as_deref(), Some("t"));
        let sql =
            b"-- MySQL dump 10.13\nCREATE TABLE `t` (`a` text);\nINSERT INTO `t` VALUES ('abc');\n";
        let e = read_dump(&sql[..], Dialect::MySql, &mut Collect::default()).unwrap_err();
        assert!(e.reason.contains("Dump completed"), "{e}");
    }

    #[test]
    fn garbage_is_not_a_dump() {
        let e = read_dump(
            &b"\x01\x02garbage"[..],
            Dialect::MySql,
            &mut Collect::default(),
        )
        .unwrap_err();
        assert!(e.reason.contains("not a SQL dump"), "{e}");
    }
}

/// A few bytes of the dump around an error, printable, with every long run of key-, token- or
/// hash-like characters (base64, hex: private keys, push tokens, unlock tokens) cut to its
/// first four characters, so an error message never carries a secret.
fn redacted_excerpt(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let secretish = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() > 16 {
            out.extend(run.chars().take(4));
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if secretish(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out.trim().to_string()
}

/// Property tests: no dump panics; rows written as mysqldump and pg_dump write them come back
/// byte for byte; the row limit holds.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::{config, mutate};

    struct Rows {
        rows: Vec<Vec<Value>>,
        max: usize,
    }

    impl RowSink for Rows {
        type Error = DumpError;
        fn wants(&mut self, _: &str) -> bool {
            true
        }
        fn row(
            &mut self,
            _: &str,
            _: &[String],
            v: Vec<Value>,
            _: &Position,
        ) -> Result<(), DumpError> {
            self.rows.push(v);
            Ok(())
        }
        fn max_row_size(&self) -> usize {
            self.max
        }
    }

    fn sink(max: usize) -> Rows {
        Rows {
            rows: Vec::new(),
            max,
        }
    }

    type Table = Vec<Vec<Option<Vec<u8>>>>;

    fn table() -> impl Strategy<Value = Table> {
        let value = proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..64));
        proptest::collection::vec(proptest::collection::vec(value, 3), 1..12)
    }

    /// `mysqldump`'s extended INSERT with mysql_real_escape_string's escapes.
    fn mysqldump(rows: &Table) -> Vec<u8> {
        let mut out = b"-- MySQL dump 10.19\nCREATE TABLE `t` (\n  `a` blob,\n  `b` blob,\n  `c` blob\n);\nLOCK TABLES `t` WRITE;\nINSERT INTO `t` VALUES ".to_vec();
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'(');
            for (j, v) in row.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                match v {
                    None => out.extend_from_slice(b"NULL"),
                    Some(bytes) => {
                        out.extend_from_slice(b"_binary '");
                        for &b in bytes {
                            match b {
                                0 => out.extend_from_slice(b"\\0"),
                                b'\n' => out.extend_from_slice(b"\\n"),
                                b'\r' => out.extend_from_slice(b"\\r"),
                                b'\\' => out.extend_from_slice(b"\\\\"),
                                b'\'' => out.extend_from_slice(b"\\'"),
                                b'"' => out.extend_from_slice(b"\\\""),
                                0x1a => out.extend_from_slice(b"\\Z"),
                                _ => out.push(b),
                            }
                        }
                        out.push(b'\'');
                    }
                }
            }
            out.push(b')');
        }
        out.extend_from_slice(b";\nUNLOCK TABLES;\n-- Dump completed on 2026-12-03 10:00:00\n");
        out
    }

    /// `pg_dump`'s COPY text format: `\N`, bytea as `\\x…` hex.
    fn pg_dump(rows: &Table) -> Vec<u8> {
        let mut out = b"--\n-- PostgreSQL database dump\n--\nCREATE TABLE public.t (\n    a bytea,\n    b bytea,\n    c bytea\n);\nCOPY public.t (a, b, c) FROM stdin;\n".to_vec();
        for row in rows {
            let fields: Vec<String> = row
                .iter()
                .map(|v| match v {
                    None => "\\N".to_string(),
                    Some(b) => format!("\\\\x{}", hex::encode(b)),
                })
                .collect();
            out.extend_from_slice(fields.join("\t").as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n");
        out
    }

    fn as_values(rows: &Table) -> Vec<Vec<Value>> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.clone().map_or(Value::Null, Value::Data))
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for dialect in [Dialect::MySql, Dialect::Postgres] {
                let _ = read_dump(&bytes[..], dialect, &mut sink(DEFAULT_MAX_ROW));
            }
        }

        #[test]
        fn rows_round_trip_through_both_dump_formats(rows in table()) {
            let mut got = sink(DEFAULT_MAX_ROW);
            read_dump(&mysqldump(&rows)[..], Dialect::MySql, &mut got).unwrap();
            prop_assert_eq!(&got.rows, &as_values(&rows));
            let mut got = sink(DEFAULT_MAX_ROW);
            read_dump(&pg_dump(&rows)[..], Dialect::Postgres, &mut got).unwrap();
            prop_assert_eq!(&got.rows, &as_values(&rows));
        }

        #[test]
        fn mutated_dumps_never_panic(
            rows in table(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..10),
        ) {
            let _ = read_dump(&mutate(&mysqldump(&rows), &edits)[..], Dialect::MySql, &mut sink(DEFAULT_MAX_ROW));
            let _ = read_dump(&mutate(&pg_dump(&rows), &edits)[..], Dialect::Postgres, &mut sink(DEFAULT_MAX_ROW));
        }

        #[test]
        fn no_row_larger_than_the_limit_is_held(rows in table(), max in 1usize..256) {
            let largest = rows
                .iter()
                .map(|r| r.iter().flatten().map(Vec::len).sum::<usize>())
                .max()
                .unwrap_or(0);
            let mut got = sink(max);
            let r = read_dump(&mysqldump(&rows)[..], Dialect::MySql, &mut got);
            if largest > max {
                prop_assert!(r.is_err());
            } else {
                prop_assert!(r.is_ok(), "{:?}", r.err());
            }
        }
    }
}

#[cfg(test)]
mod excerpt_tests {
    use super::redacted_excerpt;

    #[test]
    fn excerpts_keep_sql_and_cut_secrets() {
        let e = redacted_excerpt(b"VALUES ('UDID-1','3f1c9a0b5e7d2c4a9b8e7f6a5d4c3b2a1f0e9d8c', x");
        assert!(e.contains("VALUES ('UDID-1','3f1c…'"), "{e}");
        assert!(!e.contains("9b8e7f6a5d4c"), "{e}");
        let k = redacted_excerpt(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
        assert!(!k.contains("ADANBgkqhkiG9w0"), "{k}");
        assert!(k.contains("BEGIN PRIVATE KEY"), "{k}");
    }
}
