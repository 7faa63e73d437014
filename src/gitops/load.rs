//! Reading GitOps YAML: files and directories, `$VAR`/`${VAR}` expansion, several documents per
//! file, and a value tree that remembers the line and column of every node so later checks can
//! point at the exact place.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Issue;

/// Where a node is: file, line and column (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Loc {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        Ok(())
    }
}

/// A YAML value with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What the value is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: s.value,
            line: s.referenced.line(),
            column: s.referenced.column(),
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = a.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// One YAML document of one file.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: PathBuf,
    /// 1-based position in its file.
    pub index: usize,
    pub root: Node,
    /// The repository its profiles must stay inside (`None`: anywhere).
    pub repository: Option<PathBuf>,
}

impl Document {
    pub fn loc(&self, n: &Node) -> Loc {
        Loc {
            file: self.file.clone(),
            line: n.line,
            column: n.column,
        }
    }
}

/// The YAML files named by `-f`: files as given, directories walked for `*.yml`/`*.yaml` (sorted,
/// not recursive into hidden directories). `-` is stdin, and a stream named on purpose (a FIFO,
/// `/dev/stdin`, `<(…)`) is read once here, bounded, into `streams`, under a path in the current
/// directory (`./-`, `./stdin`, `./63`), so profile paths in it resolve from there. Missing paths
/// are issues.
pub fn collect_files(
    paths: &[PathBuf],
    issues: &mut Vec<Issue>,
    streams: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, issues);
        } else if p.is_file() {
            out.push(p.clone());
        } else if p.as_os_str() == "-" || p.exists() {
            // Named as if in the current directory: profile paths in a stream resolve from there.
            let name = p
                .file_name()
                .map_or_else(|| "-".into(), |n| n.to_os_string());
            let key = std::env::current_dir()
                .map(|d| d.join(&name))
                .unwrap_or_else(|_| PathBuf::from(&name));
            match crate::input::read_stream_limited(p, super::validate::MAX_YAML) {
                Ok(bytes) => {
                    streams.insert(key.clone(), bytes);
                    out.push(key);
                }
                Err(e) => issues.push(Issue::at_file(
                    p,
                    &e.to_string(),
                    "a YAML file, a directory of them, or `-` for stdin",
                )),
            }
        } else {
            issues.push(Issue::at_file(
                p,
                "no such file or directory",
                "a YAML file or a directory of them",
            ));
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, issues: &mut Vec<Issue>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            issues.push(Issue::at_file(
                dir,
                &format!("cannot read the directory: {e}"),
                "a readable directory",
            ));
            return;
        }
    };
    entries.sort();
    for e in entries {
        let hidden = e
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if e.is_dir() {
            walk(&e, out, issues);
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yml" || x == "yaml")
        {
            out.push(e);
        }
    }
}

/// Replace `$VAR` and `${VAR}` with the environment's values; `$$` is a literal `$`. Comment lines
/// are left alone. Unset variables are issues naming the variable and where it is used.
pub fn expand_env(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            if c != '$' {
                out.push(c);
                j += 1;
                continue;
            }
            let column = j as u64 + 1;
            match chars.get(j + 1) {
                Some('$') => {
                    out.push('$');
                    j += 2;
                }
                Some('{') => {
                    let end = chars[j + 2..].iter().position(|&c| c == '}');
                    match end {
                        Some(len) => {
                            let name: String = chars[j + 2..j + 2 + len].iter().collect();
                            substitute(file, i, column, &name, lookup, issues, &mut out);
                            j += len + 3;
                        }
                        None => {
                            issues.push(Issue::at(
                                Loc {
                                    file: file.to_path_buf(),
                                    line: i as u64 + 1,
                                    column,
                                },
                                "",
                                "`${` without a closing `}`",
                                "`${NAME}`, or `$$` for a literal `$`",
                            ));
                            j = chars.len();
                        }
                    }
                }
                Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                    let len = chars[j + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                        .count();
                    let name: String = chars[j + 1..j + 1 + len].iter().collect();
                    substitute(file, i, column, &name, lookup, issues, &mut out);
                    j += len + 1;
                }
                _ => {
                    out.push('$');
                    j += 1;
                }
            }
        }
    }
    out
}

fn substitute(
    file: &Path,
    line_index: usize,
    column: u64,
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
    out: &mut String,
) {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    let loc = Loc {
        file: file.to_path_buf(),
        line: line_index as u64 + 1,
        column,
    };
    if !valid {
        issues.push(Issue::at(
            loc,
            "",
            &format!("`${{{name}}}` is not a variable name"),
            "letters, digits and `_`, e.g. `${WIFI_PASSWORD}`",
        ));
        return;
    }
    match lookup(name) {
        Some(v) => out.push_str(&v),
        None => issues.push(Issue::at(
            loc,
            "",
            &format!("environment variable `{name}` is not set"),
            &format!("`{name}` set in the environment of `mdmctl apply`, or `$${name}` for a literal `${name}`"),
        )),
    }
}

/// The deepest YAML nesting read.
pub const MAX_YAML_DEPTH: usize = 24;

/// Parse every document of one (expanded) file. A syntax error is one issue with the line,
/// column and offending line; the file's other documents are then not read.
pub fn parse_documents(file: &Path, text: &str, issues: &mut Vec<Issue>) -> Vec<Document> {
    // GitOps documents nest about eight levels (`spec.team.mdm.macos_settings.custom_settings
    // [0].path`); each level costs the deserializer several kilobytes of stack, and `serve`
    // validates a remote apply on a 2 MB blocking thread. Deeper input is refused, not followed.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    budget.flow_nesting_limit = MAX_YAML_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    match serde_saphyr::from_multiple_with_options::<Node>(text, options) {
        Ok(nodes) => nodes
            .into_iter()
            .enumerate()
            .filter(|(_, n)| !matches!(n.value, Value::Null))
            .map(|(i, root)| Document {
                repository: None,
                file: file.to_path_buf(),
                index: i + 1,
                root,
            })
            .collect(),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mut message = first_line(&e.without_snippet().to_string());
            if message.contains("budget breached: Depth") || message.contains("recursion limit") {
                message = format!("it nests deeper than {MAX_YAML_DEPTH} levels");
            }
            let offending = text
                .lines()
                .nth(line.saturating_sub(1) as usize)
                .filter(|_| line > 0)
                .map(|l| {
                    let l = l.trim();
                    match l.char_indices().nth(60) {
                        Some((i, _)) => format!(" in `{}…`", &l[..i]),
                        None => format!(" in `{l}`"),
                    }
                })
                .unwrap_or_default();
            issues.push(Issue::at(
                Loc {
                    file: file.to_path_buf(),
                    line,
                    column,
                },
                "",
                &format!("invalid YAML{offending}: {message}"),
                if message.starts_with("duplicate key") {
                    "each key once per mapping"
                } else {
                    "well-formed YAML (check indentation, quotes and `:`)"
                },
            ));
            Vec::new()
        }
    }
}

fn first_line(s: &str) -> String {
    let mut l = s.lines().next().unwrap_or("").trim();
    // serde-saphyr may prefix or suffix its own position; ours is already in the location.
    l = l.trim_start_matches("error: ");
    if let Some(i) = l.rfind(" at line ") {
        l = &l[..i];
    }
    // Its advice names a library option, not something the user can set.
    l.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .replace("duplicate mapping key: ", "duplicate key: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_keep_positions() {
        let mut issues = Vec::new();
        let docs = parse_documents(
            Path::new("x.yml"),
            "a: 1\n---\nkind: team\nspec:\n  team:\n    name: W\n",
            &mut issues,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(docs.len(), 2);
        let Value::Map(m) = &docs[1].root.value else {
            panic!()
        };
        assert_eq!((m[1].0.line, m[1].0.column), (4, 1));
        let Value::Map(spec) = &m[1].1.value else {
            panic!()
        };
        assert_eq!((spec[0].0.line, spec[0].0.column), (5, 3));
    }

    #[test]
    fn env_expansion() {
        let mut issues = Vec::new();
        let look = |n: &str| (n == "A").then(|| "x".to_string());
        let out = expand_env(
            Path::new("f.yml"),
            "a: $A ${A} $$A\n# $NOPE\nb: ${MISSING}\n",
            &look,
            &mut issues,
        );
        assert_eq!(out, "a: x x $A\n# $NOPE\nb: \n");
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("`MISSING`"));
        assert_eq!(issues[0].loc.as_ref().map(|l| l.line), Some(3));
    }
}
