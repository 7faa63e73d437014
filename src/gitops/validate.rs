//! From YAML documents to a validated [`Config`]: every key checked (unknown ones with a "did you
//! mean"), every value checked, every profile read and checked, and every problem collected, so
//! one run reports them all. The same code serves `--dry-run` and the real run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::load::{Document, Node, Value, collect_files, expand_env, parse_documents};
use super::{Issue, did_you_mean};
use crate::apple::profile::{ParsedProfile, check_profile};
use crate::store::Settings;

/// Everything the files say.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The `config` document, if one was given (else the global scope is left as it is).
    pub global: Option<ScopeConfig>,
    /// `team` documents, in file order.
    pub teams: Vec<ScopeConfig>,
}

/// One scope's desired state: the global config or one team.
#[derive(Clone, Debug, Default)]
pub struct ScopeConfig {
    /// `None` for the global config.
    pub team: Option<String>,
    pub settings: Settings,
    /// Global only: the team devices from Apple Business Manager land in.
    pub apple_bm_default_team: Option<String>,
    pub profiles: Vec<ProfileFile>,
    /// Where `apple_bm_default_team` was written (for later checks against the store).
    pub default_team_at: Option<(super::Loc, String)>,
    /// Where the team's name was written.
    pub name_at: Option<super::Loc>,
}

/// A `.mobileconfig` named by `custom_settings`.
#[derive(Clone, Debug)]
pub struct ProfileFile {
    /// Absolute (resolved relative to the YAML file that names it).
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub parsed: ParsedProfile,
    /// Where the YAML names it, and that document and key path.
    pub at: super::Loc,
    pub label: String,
}

/// How `apply` reads a repository.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Report unknown keys as warnings (`--allow-unknown-keys`).
    pub allow_unknown_keys: bool,
    /// The largest profile read (`--max-profile-size`).
    pub max_profile_size: u64,
    /// Read profiles from outside the repository, symlinks out of it included
    /// (`--allow-outside-repo`).
    pub allow_outside_repo: bool,
}

/// The default largest profile: far above real ones (a few KB to a few hundred KB), far below
/// what would strain a store or a device.
pub const DEFAULT_MAX_PROFILE: u64 = 8 * 1024 * 1024;
/// The largest YAML file read.
pub const MAX_YAML: u64 = 16 * 1024 * 1024;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            allow_unknown_keys: false,
            max_profile_size: DEFAULT_MAX_PROFILE,
            allow_outside_repo: false,
        }
    }
}

/// Read and validate the files and directories named by `-f`. `Ok` carries the config and the
/// warnings (unknown keys with `allow_unknown_keys`); `Err` carries every problem.
pub fn load_config(
    paths: &[PathBuf],
    opts: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Issue>), Vec<Issue>> {
    let loaded = load(paths, opts, env);
    if loaded.issues.is_empty() {
        Ok((loaded.config, loaded.warnings))
    } else {
        Err(loaded.issues)
    }
}

/// What [`load`] found: the config as far as it could be read, and every problem.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub issues: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

/// Like [`load_config`], but keeps the partial config beside the problems, so checks against
/// the store ([`check_against_store`]) can add theirs and a run reports everything at once.
pub fn load(paths: &[PathBuf], opts: &LoadOptions, env: &dyn Fn(&str) -> Option<String>) -> Loaded {
    load_with(&Disk, paths, opts, env)
}

/// Where [`load`] reads YAML and profiles from: the disk, or a [`Bundle`] a remote `apply`
/// sent (so the server validates with exactly the bytes the client validated).
pub trait Files {
    /// A path as the validator should name and read it (canonical on disk).
    fn resolve(&self, path: &Path) -> PathBuf;
    /// A whole file of at most `limit` bytes; regular files only.
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, crate::input::InputError>;
    /// The repository a YAML file belongs to (profiles must stay inside it), when known:
    /// the nearest directory above it holding `.git`, else the `-f` argument it came from.
    fn repository(&self, _yaml: &Path, _args: &[PathBuf]) -> Option<PathBuf> {
        None
    }
}

/// The local filesystem.
pub struct Disk;

impl Files for Disk {
    fn resolve(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, crate::input::InputError> {
        crate::input::read_limited(path, limit)
    }
    fn repository(&self, yaml: &Path, args: &[PathBuf]) -> Option<PathBuf> {
        let yaml = std::fs::canonicalize(yaml).ok()?;
        if let Some(git) = yaml.ancestors().skip(1).find(|d| d.join(".git").exists()) {
            return Some(git.to_path_buf());
        }
        args.iter()
            .filter_map(|a| std::fs::canonicalize(a).ok())
            .map(|a| {
                if a.is_dir() {
                    a
                } else {
                    a.parent().map(Path::to_path_buf).unwrap_or(a)
                }
            })
            .filter(|root| yaml.starts_with(root))
            .min_by_key(|root| root.components().count())
    }
}

/// Everything one `apply` read: the YAML files in order, every file's bytes by the path it was
/// read at, and the environment variables the YAML used. Loading a bundle gives the same
/// [`Config`] (and the same problems) as loading the files did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    pub yaml: Vec<PathBuf>,
    /// Path → base64 of the bytes.
    pub files: BTreeMap<PathBuf, String>,
    pub env: BTreeMap<String, String>,
    /// Paths as the YAML wrote them (joined to its directory) → the path they resolved to.
    #[serde(default)]
    pub resolved: BTreeMap<PathBuf, PathBuf>,
    pub allow_unknown_keys: bool,
    /// The client's `--max-profile-size` (the server's body limit bounds it too).
    #[serde(default = "default_max_profile")]
    pub max_profile_size: u64,
}

fn default_max_profile() -> u64 {
    DEFAULT_MAX_PROFILE
}

impl Bundle {
    /// Load from disk as [`load`] does, recording what was read.
    pub fn record(
        paths: &[PathBuf],
        opts: &LoadOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Loaded, Bundle) {
        let recorder = Recorder::default();
        let used = std::cell::RefCell::new(BTreeMap::new());
        let recording_env = |name: &str| {
            let v = env(name);
            if let Some(v) = &v {
                used.borrow_mut().insert(name.to_string(), v.clone());
            }
            v
        };
        let mut issues = Vec::new();
        let mut streams = BTreeMap::new();
        let yaml = collect_files(paths, &mut issues, &mut streams);
        let with_streams = Streams {
            files: &recorder,
            streams: &streams,
        };
        let loaded = load_files(
            &with_streams,
            paths,
            yaml.clone(),
            issues,
            opts,
            &recording_env,
        );
        // What came from a stream travels with the bundle like a file.
        recorder.read.borrow_mut().extend(streams);
        use base64::Engine as _;
        let resolved = recorder.resolved.into_inner();
        let files = recorder
            .read
            .into_inner()
            .into_iter()
            .map(|(p, b)| (p, base64::engine::general_purpose::STANDARD.encode(b)))
            .collect();
        let bundle = Bundle {
            yaml: yaml
                .iter()
                .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
                .collect(),
            files,
            env: used.into_inner(),
            resolved,
            allow_unknown_keys: opts.allow_unknown_keys,
            max_profile_size: opts.max_profile_size,
        };
        (loaded, bundle)
    }

    /// Validate the bundle as the client did: same code, same bytes, same environment.
    pub fn load(&self) -> Loaded {
        let env = |name: &str| self.env.get(name).cloned();
        // Where the files came from was checked by the client, which read them.
        let opts = LoadOptions {
            allow_unknown_keys: self.allow_unknown_keys,
            max_profile_size: self.max_profile_size,
            allow_outside_repo: true,
        };
        load_files(self, &self.yaml, self.yaml.clone(), Vec::new(), &opts, &env)
    }
}

impl Files for Bundle {
    fn resolve(&self, path: &Path) -> PathBuf {
        // The client recorded how it resolved each path.
        self.resolved
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_path_buf())
    }
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, crate::input::InputError> {
        use base64::Engine as _;
        let io = |source| crate::input::InputError::Io {
            path: path.to_path_buf(),
            source,
        };
        let b64 = self.files.get(path).ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not in the files the client sent",
            ))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if bytes.len() as u64 > limit {
            return Err(crate::input::InputError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                limit,
            });
        }
        Ok(bytes)
    }
}

/// The disk, remembering every file read (by resolved path).
#[derive(Default)]
struct Recorder {
    read: std::cell::RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    resolved: std::cell::RefCell<BTreeMap<PathBuf, PathBuf>>,
}

impl Files for Recorder {
    fn resolve(&self, path: &Path) -> PathBuf {
        let r = Disk.resolve(path);
        self.resolved
            .borrow_mut()
            .insert(path.to_path_buf(), r.clone());
        r
    }
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, crate::input::InputError> {
        let b = Disk.read(path, limit)?;
        self.read.borrow_mut().insert(path.to_path_buf(), b.clone());
        Ok(b)
    }
    fn repository(&self, yaml: &Path, args: &[PathBuf]) -> Option<PathBuf> {
        Disk.repository(yaml, args)
    }
}

/// [`load`] reading through `files`.
pub fn load_with(
    files: &dyn Files,
    paths: &[PathBuf],
    opts: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let mut issues = Vec::new();
    let mut streams = BTreeMap::new();
    let yaml = collect_files(paths, &mut issues, &mut streams);
    let with_streams = Streams {
        files,
        streams: &streams,
    };
    load_files(&with_streams, paths, yaml, issues, opts, env)
}

/// `files`, with the YAML read from streams (`-`, FIFOs) answered from memory.
struct Streams<'a> {
    files: &'a dyn Files,
    streams: &'a BTreeMap<PathBuf, Vec<u8>>,
}

impl Files for Streams<'_> {
    fn resolve(&self, path: &Path) -> PathBuf {
        self.files.resolve(path)
    }
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, crate::input::InputError> {
        match self.streams.get(path) {
            Some(b) if b.len() as u64 > limit => Err(crate::input::InputError::TooLarge {
                path: path.to_path_buf(),
                size: b.len() as u64,
                limit,
            }),
            Some(b) => Ok(b.clone()),
            None => self.files.read(path, limit),
        }
    }
    fn repository(&self, yaml: &Path, args: &[PathBuf]) -> Option<PathBuf> {
        if self.streams.contains_key(yaml) {
            // A stream lives nowhere: its profiles stay inside the current directory.
            return std::env::current_dir().ok();
        }
        self.files.repository(yaml, args)
    }
}

fn load_files(
    source: &dyn Files,
    paths: &[PathBuf],
    files: Vec<PathBuf>,
    mut issues: Vec<Issue>,
    opts: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    if files.is_empty() && issues.is_empty() {
        for p in paths {
            issues.push(Issue::at_file(
                p,
                "no `.yml` or `.yaml` files here",
                "YAML files with `apiVersion: v1` documents",
            ));
        }
    }
    let mut docs = Vec::new();
    for f in &files {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        let text = match source.read(&abs, MAX_YAML).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                issues.push(Issue::at_file(
                    &abs,
                    "not UTF-8 text",
                    "a readable UTF-8 YAML file",
                ));
                continue;
            }
            Err(e) => {
                issues.push(Issue::at_file(
                    &abs,
                    &e.to_string(),
                    "a readable UTF-8 YAML file",
                ));
                continue;
            }
        };
        let expanded = expand_env(&abs, &text, env, &mut issues);
        let repo = (!opts.allow_outside_repo)
            .then(|| source.repository(&abs, paths))
            .flatten();
        for mut d in parse_documents(&abs, &expanded, &mut issues) {
            d.repository = repo.clone();
            docs.push(d);
        }
    }
    let mut v = Validator {
        files: source,
        issues,
        warnings: Vec::new(),
        allow_unknown_keys: opts.allow_unknown_keys,
        max_profile_size: opts.max_profile_size,
    };
    let mut config = Config::default();
    for doc in &docs {
        v.document(doc, &mut config);
    }
    v.cross_checks(&config);
    Loaded {
        config,
        issues: v.issues,
        warnings: v.warnings,
    }
}

/// Checks that need the store: `apple_bm_default_team` must name a team that exists after the
/// apply (in the files, or already in the store).
pub fn check_against_store<'a>(
    config: &'a Config,
    stored_teams: impl Iterator<Item = &'a str>,
) -> Vec<Issue> {
    let teams_after: std::collections::BTreeSet<&str> = stored_teams
        .chain(config.teams.iter().filter_map(|t| t.team.as_deref()))
        .collect();
    let mut issues = Vec::new();
    if let Some(g) = &config.global
        && let (Some(t), Some((loc, label))) = (&g.apple_bm_default_team, &g.default_team_at)
        && !teams_after.contains(t.as_str())
    {
        let known: Vec<&str> = teams_after.iter().copied().collect();
        let expected = match did_you_mean(t, &known) {
            Some(s) => format!("did you mean `{s}`? (a team defined in the files or the store)"),
            None if known.is_empty() => "a team: add a `kind: team` document for it".into(),
            None => list(&known),
        };
        issues.push(Issue::at(
            loc.clone(),
            label,
            &format!("team `{t}` does not exist"),
            &expected,
        ));
    }
    issues
}

struct Validator<'s> {
    files: &'s dyn Files,
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
    allow_unknown_keys: bool,
    max_profile_size: u64,
}

/// A document and a key path inside it, for messages.
#[derive(Clone)]
struct Ctx<'a> {
    doc: &'a Document,
    /// `config`, `team Workstations`, or `document 2` before the kind is known.
    name: String,
    path: String,
}

impl<'a> Ctx<'a> {
    fn child(&self, key: &str) -> Ctx<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else if key.starts_with('[') {
            format!("{}{key}", self.path)
        } else {
            format!("{}.{key}", self.path)
        };
        Ctx {
            doc: self.doc,
            name: self.name.clone(),
            path,
        }
    }

    fn label(&self) -> String {
        if self.path.is_empty() {
            self.name.clone()
        } else {
            format!("{} › {}", self.name, self.path)
        }
    }
}

type Fields<'n> = BTreeMap<&'n str, &'n Node>;

impl Validator<'_> {
    fn issue(&mut self, c: &Ctx<'_>, at: &Node, message: &str, expected: &str) {
        self.issues
            .push(Issue::at(c.doc.loc(at), &c.label(), message, expected));
    }

    /// A mapping's fields; unknown keys are issues (or warnings), with a suggestion.
    fn fields<'n>(&mut self, c: &Ctx<'_>, node: &'n Node, allowed: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            let expected = format!("a mapping with {}", list(allowed));
            self.issue(c, node, &format!("found {}", node.value.kind()), &expected);
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let Value::Str(key) = &k.value else {
                self.issue(c, k, "a key is not a string", &list(allowed));
                continue;
            };
            if allowed.contains(&key.as_str()) {
                out.insert(key.as_str(), v);
                continue;
            }
            let suggestion = did_you_mean(key, allowed)
                .map(|s| format!("did you mean `{s}`? ({})", list(allowed)))
                .unwrap_or_else(|| list(allowed));
            let issue = Issue::at(
                c.doc.loc(k),
                &c.child(key).label(),
                &format!("unknown key `{key}`"),
                &suggestion,
            );
            if self.allow_unknown_keys {
                self.warnings.push(issue);
            } else {
                self.issues.push(issue);
            }
        }
        Some(out)
    }

    fn string(&mut self, c: &Ctx<'_>, node: &Node, expected: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            // `minimum_version: 15.1` unquoted is a number to YAML; take it as written.
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            other => {
                let m = format!("found {}", other.kind());
                self.issue(c, node, &m, expected);
                None
            }
        }
    }

    fn boolean(&mut self, c: &Ctx<'_>, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                let m = format!("found {}", other.kind());
                self.issue(c, node, &m, "`true` or `false`");
                None
            }
        }
    }

    fn document(&mut self, doc: &Document, config: &mut Config) {
        let top = Ctx {
            doc,
            name: format!("document {}", doc.index),
            path: String::new(),
        };
        // Fleet's newer GitOps layout (fleetdm/fleet-gitops: `name`, `controls`, `policies`,
        // `agent_options`, `org_settings`…): one clear problem naming it and the mapping,
        // rather than an unknown key per line.
        if let Value::Map(entries) = &doc.root.value {
            let keys: Vec<&str> = entries
                .iter()
                .filter_map(|(k, _)| match &k.value {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            let fleet = [
                "controls",
                "policies",
                "agent_options",
                "org_settings",
                "queries",
                "software",
            ];
            if !keys.contains(&"apiVersion") && keys.iter().any(|k| fleet.contains(k)) {
                self.issue(
                    &top,
                    &doc.root,
                    "this is Fleet's newer GitOps layout (fleetdm/fleet-gitops: `name`, `controls`, `policies`, `agent_options`…), which mdmctl does not read",
                    "`apiVersion: v1` documents: `kind: config` (from `org_settings`/`controls`) and `kind: team` (a team file's `name`), with `controls.macos_settings`, `controls.macos_updates`, `controls.enable_disk_encryption` and `controls.macos_setup` under `spec.mdm` (`spec.team.mdm` for a team): see examples/gitops",
                );
                return;
            }
        }
        let Some(f) = self.fields(&top, &doc.root, &["apiVersion", "kind", "spec"]) else {
            return;
        };
        match f.get("apiVersion") {
            None => self.issue(
                &top,
                &doc.root,
                "`apiVersion` is missing",
                "`apiVersion: v1`",
            ),
            Some(n) => {
                if self.string(&top.child("apiVersion"), n, "`v1`").as_deref() != Some("v1") {
                    let c = top.child("apiVersion");
                    if matches!(&n.value, Value::Str(_) | Value::Int(_) | Value::Float(_)) {
                        self.issue(&c, n, "unsupported `apiVersion`", "`v1`");
                    }
                }
            }
        }
        let kind = match f.get("kind") {
            None => {
                self.issue(&top, &doc.root, "`kind` is missing", "`config` or `team`");
                return;
            }
            Some(n) => match self.string(&top.child("kind"), n, "`config` or `team`") {
                Some(k) => (k, *n),
                None => return,
            },
        };
        let Some(spec) = f.get("spec").copied() else {
            self.issue(&top, &doc.root, "`spec` is missing", "a `spec:` mapping");
            return;
        };
        match kind.0.as_str() {
            "config" => {
                let c = Ctx {
                    doc,
                    name: "config".into(),
                    path: String::new(),
                };
                if config.global.is_some() {
                    self.issue(
                        &c,
                        kind.1,
                        "a second `config` document",
                        "one `config` document across all files",
                    );
                }
                let scope = self.config_spec(&c, spec);
                config.global.get_or_insert(scope);
            }
            "team" => {
                if let Some(scope) = self.team_spec(doc, spec) {
                    config.teams.push(scope);
                }
            }
            other => {
                let s = did_you_mean(other, &["config", "team"])
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "`config` or `team`".into());
                self.issue(
                    &top.child("kind"),
                    kind.1,
                    &format!("unknown kind `{other}`"),
                    &s,
                );
            }
        }
    }

    fn config_spec(&mut self, c: &Ctx<'_>, spec: &Node) -> ScopeConfig {
        let mut scope = ScopeConfig::default();
        let Some(f) = self.fields(c, spec, &["mdm"]) else {
            return scope;
        };
        let Some(mdm) = f.get("mdm") else {
            return scope;
        };
        let c = c.child("mdm");
        let Some(m) = self.fields(
            &c,
            mdm,
            &[
                "apple_bm_default_team",
                "macos_updates",
                "macos_settings",
                "macos_setup",
            ],
        ) else {
            return scope;
        };
        if let Some(n) = m.get("apple_bm_default_team") {
            let cc = c.child("apple_bm_default_team");
            if let Some(t) = self.string(&cc, n, "a team name") {
                scope.default_team_at = Some((c.doc.loc(n), cc.label()));
                scope.apple_bm_default_team = Some(t);
            }
        }
        self.mdm_common(&c, &m, &mut scope);
        scope
    }

    fn team_spec(&mut self, doc: &Document, spec: &Node) -> Option<ScopeConfig> {
        let c = Ctx {
            doc,
            name: format!("document {}", doc.index),
            path: String::new(),
        };
        let f = self.fields(&c, spec, &["team"])?;
        let Some(team) = f.get("team") else {
            self.issue(
                &c,
                spec,
                "`spec.team` is missing",
                "`spec: {team: {name: …}}`",
            );
            return None;
        };
        let t = self.fields(&c.child("team"), team, &["name", "mdm"])?;
        let name = match t.get("name") {
            Some(n) => {
                let name = self.string(&c.child("team.name"), n, "a team name")?;
                if name.trim().is_empty() {
                    self.issue(&c.child("team.name"), n, "the team name is empty", "a name");
                    return None;
                }
                name
            }
            None => {
                self.issue(
                    &c.child("team"),
                    team,
                    "`name` is missing",
                    "`name: <team name>`",
                );
                return None;
            }
        };
        let c = Ctx {
            doc,
            name: format!("team {name}"),
            path: String::new(),
        };
        let mut scope = ScopeConfig {
            team: Some(name),
            name_at: t.get("name").map(|n| doc.loc(n)),
            ..Default::default()
        };
        if let Some(mdm) = t.get("mdm") {
            let c = c.child("mdm");
            if let Some(m) =
                self.fields(&c, mdm, &["macos_updates", "macos_settings", "macos_setup"])
            {
                self.mdm_common(&c, &m, &mut scope);
            }
        }
        Some(scope)
    }

    fn mdm_common(&mut self, c: &Ctx<'_>, m: &Fields<'_>, scope: &mut ScopeConfig) {
        if let Some(n) = m.get("macos_setup") {
            self.macos_setup(&c.child("macos_setup"), n, scope);
        }
        if let Some(u) = m.get("macos_updates") {
            let c = c.child("macos_updates");
            if let Some(f) = self.fields(&c, u, &["minimum_version", "deadline"]) {
                let version = f.get("minimum_version").and_then(|n| {
                    let cc = c.child("minimum_version");
                    if let Value::Float(x) = n.value {
                        // YAML reads `15.10` as the number 15.1: the text is lost, so ask for it.
                        self.issue(
                            &cc,
                            n,
                            &format!(
                                "an unquoted number (YAML reads it as {x}, and `15.10` as 15.1)"
                            ),
                            "the version in quotes, e.g. `minimum_version: \"15.1\"`",
                        );
                        return None;
                    }
                    let v = self.string(&cc, n, "a version such as `\"15.1\"`")?;
                    if valid_version(&v) {
                        Some(v)
                    } else {
                        self.issue(
                            &cc,
                            n,
                            &format!("`{v}` is not a macOS version"),
                            "1 to 3 dot-separated numbers such as `\"15.1\"`",
                        );
                        None
                    }
                });
                let deadline = f.get("deadline").and_then(|n| {
                    let cc = c.child("deadline");
                    let v = self.string(&cc, n, "a date such as `\"2026-12-01\"`")?;
                    if valid_date(&v) {
                        // ISO dates compare as text; "today" is UTC's.
                        if v <= crate::timestamp::Timestamp::now().date() {
                            self.warnings.push(Issue::at(
                                cc.doc.loc(n),
                                &cc.label(),
                                &format!(
                                    "the deadline `{v}` is today or past: Macs below the minimum version get no more reminders, the update is enforced at once"
                                ),
                                "a future date",
                            ));
                        }
                        Some(v)
                    } else {
                        self.issue(
                            &cc,
                            n,
                            &format!("`{v}` is not a date"),
                            "`YYYY-MM-DD`, e.g. `\"2026-12-01\"`",
                        );
                        None
                    }
                });
                match (f.get("minimum_version"), f.get("deadline")) {
                    (Some(_), None) => self.issue(
                        &c,
                        u,
                        "`minimum_version` without `deadline`",
                        "both `minimum_version` and `deadline`, or neither",
                    ),
                    (None, Some(_)) => self.issue(
                        &c,
                        u,
                        "`deadline` without `minimum_version`",
                        "both `minimum_version` and `deadline`, or neither",
                    ),
                    _ => {}
                }
                scope.settings.minimum_version = version;
                scope.settings.deadline = deadline;
            }
        }
        if let Some(s) = m.get("macos_settings") {
            let c = c.child("macos_settings");
            if let Some(f) = self.fields(&c, s, &["enable_disk_encryption", "custom_settings"]) {
                if let Some(n) = f.get("enable_disk_encryption") {
                    let cc = c.child("enable_disk_encryption");
                    scope.settings.enable_disk_encryption = self.boolean(&cc, n).unwrap_or(false);
                }
                if let Some(n) = f.get("custom_settings") {
                    let cc = c.child("custom_settings");
                    self.custom_settings(&cc, n, scope);
                }
            }
        }
    }

    /// Read a file a YAML document names (relative to it), inside the repository unless
    /// `--allow-outside-repo`; a problem is reported at `node`. `what` names the file in
    /// problems: (a kind, its size limit, the expected kind of path).
    fn read_repo_file(
        &mut self,
        ci: &Ctx<'_>,
        node: &Node,
        path: &str,
        limit: u64,
        what: (&str, &str, &str),
    ) -> Option<(PathBuf, Vec<u8>)> {
        let base = ci.doc.file.parent().unwrap_or(Path::new("."));
        let joined = base.join(path);
        // Resolved with symlinks followed: where the bytes really come from.
        let full = self.files.resolve(&joined);
        if let Some(repo) = &ci.doc.repository
            && !full.starts_with(repo)
        {
            // A repository driven by pull requests must not read the runner's files.
            self.issue(
                ci,
                node,
                &format!(
                    "`{path}` leads outside the repository `{}` (to `{}`)",
                    repo.display(),
                    full.display()
                ),
                &format!(
                    "{} inside the repository (`--allow-outside-repo` lifts this)",
                    what.0
                ),
            );
            return None;
        }
        match self.files.read(&full, limit) {
            Ok(b) => Some((full, b)),
            Err(e @ crate::input::InputError::TooLarge { .. }) => {
                self.issue(
                    ci,
                    node,
                    &e.to_string(),
                    &format!("{} no larger than {}", what.0, what.1),
                );
                None
            }
            Err(e) => {
                self.issue(
                    ci,
                    node,
                    &e.to_string(),
                    &format!("{} path relative to this YAML file", what.2),
                );
                None
            }
        }
    }

    /// `macos_setup: {macos_setup_assistant: file.json}`: the automated-enrollment profile
    /// Apple Business Manager gives the scope's new devices, checked against Apple's keys.
    fn macos_setup(&mut self, c: &Ctx<'_>, node: &Node, scope: &mut ScopeConfig) {
        let Some(f) = self.fields(c, node, &["macos_setup_assistant"]) else {
            return;
        };
        let Some(n) = f.get("macos_setup_assistant") else {
            return;
        };
        let cc = c.child("macos_setup_assistant");
        if matches!(n.value, Value::Null) {
            return;
        }
        let Some(path) = self.string(&cc, n, "a path to a `.json` file") else {
            return;
        };
        let Some((full, bytes)) = self.read_repo_file(
            &cc,
            n,
            &path,
            crate::abm::profile::MAX_JSON,
            ("a setup-assistant JSON", "256 KiB", "a `.json`"),
        ) else {
            return;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.issue(
                &cc,
                n,
                &format!("`{path}` is not UTF-8 text"),
                "a JSON file",
            );
            return;
        };
        match crate::abm::profile::validate(&text) {
            Ok(map) => {
                scope.settings.setup_assistant = Some(crate::abm::profile::canonical(&map));
                scope.settings.setup_assistant_source = Some(full.display().to_string());
            }
            Err(problems) => {
                for p in problems {
                    let loc = super::Loc {
                        file: full.clone(),
                        line: p.line as u64,
                        column: p.column as u64,
                    };
                    let key = if p.key.is_empty() {
                        String::new()
                    } else {
                        format!("`{}`: ", p.key)
                    };
                    self.issues.push(Issue::at(
                        loc,
                        &format!("{} (named at {})", cc.label(), c.doc.loc(n)),
                        &format!("{key}{}", p.message),
                        &p.expected,
                    ));
                }
            }
        }
    }

    fn custom_settings(&mut self, c: &Ctx<'_>, node: &Node, scope: &mut ScopeConfig) {
        let items = match &node.value {
            Value::Seq(items) => items,
            Value::Null => return,
            other => {
                let m = format!("found {}", other.kind());
                self.issue(c, node, &m, "a list of profile paths");
                return;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let ci = c.child(&format!("[{i}]"));
            let (path_node, path) = match &item.value {
                Value::Str(p) => (item, p.clone()),
                Value::Map(_) => {
                    let Some(f) = self.fields(&ci, item, &["path"]) else {
                        continue;
                    };
                    let Some(p) = f.get("path") else {
                        self.issue(
                            &ci,
                            item,
                            "`path` is missing",
                            "`- path: profiles/x.mobileconfig`",
                        );
                        continue;
                    };
                    let Some(s) = self.string(&ci.child("path"), p, "a file path") else {
                        continue;
                    };
                    (*p, s)
                }
                other => {
                    let m = format!("found {}", other.kind());
                    self.issue(&ci, item, &m, "a path, or `path: <file>`");
                    continue;
                }
            };
            let Some((full, bytes)) = self.read_repo_file(
                &ci,
                path_node,
                &path,
                self.max_profile_size,
                ("a profile", "`--max-profile-size`", "a `.mobileconfig`"),
            ) else {
                continue;
            };
            match check_profile(&bytes) {
                Ok(parsed) => scope.profiles.push(ProfileFile {
                    path: full,
                    content: bytes,
                    parsed,
                    at: ci.doc.loc(path_node),
                    label: ci.label(),
                }),
                Err(problems) => {
                    for p in problems {
                        let m = format!("profile `{path}`: {}", p.message);
                        self.issue(&ci, path_node, &m, &p.expected);
                    }
                }
            }
        }
    }

    /// Checks across documents: unique team names, and identifiers and display names that
    /// name one profile each.
    fn cross_checks(&mut self, config: &Config) {
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for t in &config.teams {
            let name = t.team.as_deref().unwrap_or_default();
            if seen.insert(name, ()).is_some() {
                self.issues.push(Issue {
                    loc: t.name_at.clone(),
                    context: format!("team {name} › team.name"),
                    message: format!("team `{name}` is defined more than once"),
                    expected: "one `team` document per team name".into(),
                });
            }
        }
        // Within a scope, identifiers and display names are unique. Across scopes an identifier
        // may repeat only for the very same profile (one Wi-Fi profile for two teams), so an
        // identifier always means one profile, and a display name one identifier.
        let mut by_id: HashMap<&str, (&ProfileFile, String)> = HashMap::new();
        let mut by_name: HashMap<&str, (&str, String)> = HashMap::new();
        for scope in config.global.iter().chain(&config.teams) {
            let label = scope_label(scope.team.as_deref());
            let mut ids_here = HashMap::new();
            let mut names_here = HashMap::new();
            for p in &scope.profiles {
                let id = p.parsed.identifier.as_str();
                let name = p.parsed.display_name.as_str();
                let mut push = |message: String, expected: &str| {
                    self.issues
                        .push(Issue::at(p.at.clone(), &p.label, &message, expected));
                };
                if let Some(first) = ids_here.insert(id, &p.path) {
                    push(
                        format!(
                            "`PayloadIdentifier` `{id}` is also used by `{}`",
                            first.display()
                        ),
                        "unique `PayloadIdentifier`s",
                    );
                } else if let Some((other, where_)) = by_id.get(id) {
                    if other.content != p.content {
                        push(
                            format!(
                                "`PayloadIdentifier` `{id}` names a different profile in {where_} (`{}`)",
                                other.path.display()
                            ),
                            "one identifier per profile: rename one of them",
                        );
                    }
                } else {
                    by_id.insert(id, (p, label.clone()));
                }
                if let Some(first) = names_here.insert(name, &p.path) {
                    push(
                        format!(
                            "`PayloadDisplayName` `{name}` is also used by `{}`",
                            first.display()
                        ),
                        "unique `PayloadDisplayName`s",
                    );
                } else if let Some((other_id, where_)) = by_name.get(name) {
                    if *other_id != id {
                        push(
                            format!(
                                "`PayloadDisplayName` `{name}` is also the name of `{other_id}` in {where_}"
                            ),
                            "unique `PayloadDisplayName`s",
                        );
                    }
                } else {
                    by_name.insert(name, (id, label.clone()));
                }
            }
        }
    }
}

/// `config` or `team NAME`, as messages and plans name a scope.
pub fn scope_label(team: Option<&str>) -> String {
    match team {
        Some(t) => format!("team {t}"),
        None => "config".into(),
    }
}

fn list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!("one of {}", quoted.join(", "))
}

/// `^\d+(\.\d+){0,2}$`
pub fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `YYYY-MM-DD`, a real date.
pub fn valid_date(v: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    v.len() == 10 && time::Date::parse(v, &format).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_dates() {
        for ok in ["15", "15.1", "14.6.1"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["", "15.", "v15", "15.1.2.3", "15.x"] {
            assert!(!valid_version(bad), "{bad}");
        }
        assert!(valid_date("2026-12-01"));
        assert!(!valid_date("2026-13-01"));
        assert!(!valid_date("2026-2-1"));
        assert!(!valid_date("01/12/2026"));
    }
}

/// Property tests: any text as a YAML file ends in a config or problems (never a panic, however
/// deep it nests); configurations written as YAML read back as they were.
#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use proptest::prelude::*;

    use super::*;

    /// Load `yaml` as one file `/repo/default.yml`, as a remote apply's bundle does.
    fn load_text(yaml: &[u8]) -> Loaded {
        let path = PathBuf::from("/repo/default.yml");
        let mut files = BTreeMap::new();
        files.insert(
            path.clone(),
            base64::engine::general_purpose::STANDARD.encode(yaml),
        );
        Bundle {
            yaml: vec![path],
            files,
            env: BTreeMap::new(),
            resolved: BTreeMap::new(),
            allow_unknown_keys: false,
            max_profile_size: DEFAULT_MAX_PROFILE,
        }
        .load()
    }

    proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_text_ends_in_a_config_or_problems(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = load_text(&bytes);
            let mut doc = b"apiVersion: v1\nkind: team\nspec:\n  team:\n    name: x\n    ".to_vec();
            doc.extend(&bytes);
            let _ = load_text(&doc);
        }

        #[test]
        fn deep_nesting_is_a_problem_not_a_crash(depth in 1usize..20_000, flow in any::<bool>()) {
            let yaml = if flow {
                format!("apiVersion: v1\nkind: config\nspec: {}{}\n", "[".repeat(depth), "]".repeat(depth))
            } else {
                let mut s = String::from("apiVersion: v1\nkind: config\nspec:\n");
                for i in 0..depth.min(200) {
                    s.push_str(&" ".repeat(2 * (i + 1)));
                    s.push_str("k:\n");
                }
                s
            };
            let loaded = load_text(yaml.as_bytes());
            // Past the limit it is a problem; within it, a problem of another kind (a list where
            // a mapping belongs, an unknown key), but never a crash.
            prop_assert!(!loaded.issues.is_empty());
        }

        #[test]
        fn teams_round_trip(
            teams in proptest::collection::btree_map(
                "[A-Za-z][A-Za-z0-9 _-]{0,20}[A-Za-z0-9]",
                (10u32..30, 0u32..10, 2026u32..2030, 1u32..13, 1u32..29, any::<bool>()),
                1..5,
            ),
        ) {
            let mut yaml = String::new();
            for (name, (major, minor, y, m, d, fv)) in &teams {
                yaml.push_str(&format!(
                    "---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: \"{name}\"\n    mdm:\n      macos_updates:\n        minimum_version: \"{major}.{minor}\"\n        deadline: \"{y}-{m:02}-{d:02}\"\n      macos_settings:\n        enable_disk_encryption: {fv}\n"
                ));
            }
            let loaded = load_text(yaml.as_bytes());
            prop_assert!(loaded.issues.is_empty(), "{:?}", loaded.issues);
            let got: BTreeMap<String, Settings> = loaded
                .config
                .teams
                .into_iter()
                .map(|t| (t.team.unwrap_or_default(), t.settings))
                .collect();
            let want: BTreeMap<String, Settings> = teams
                .iter()
                .map(|(name, (major, minor, y, m, d, fv))| {
                    (
                        name.clone(),
                        Settings {
                            minimum_version: Some(format!("{major}.{minor}")),
                            deadline: Some(format!("{y}-{m:02}-{d:02}")),
                            enable_disk_encryption: *fv,
                            setup_assistant: None,
                            setup_assistant_source: None,
                        },
                    )
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
