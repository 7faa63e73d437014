//! `mdmctl version`: this build (crate version, git commit, build date) and, with `--server`,
//! the server's, with a warning when they differ. MicroMDM's command line is also called
//! `mdmctl`; its `version` prints MicroMDM's v1.x release, so the output tells them apart.

use super::Ctx;
use super::output::{print_json, print_lines};
use crate::version::VersionInfo;

#[derive(serde::Serialize)]
struct Versions {
    client: VersionInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<VersionInfo>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let client = VersionInfo::current();
    let server = match ctx.remote_unchecked()? {
        Some(api) => Some(api.version()?),
        None => None,
    };
    if let Some(s) = &server
        && !s.same_build(&client)
    {
        ctx.warn(&format!(
            "the server runs mdmctl {s}, this is {client}: install the same build on both"
        ));
    }
    let out = Versions { client, server };
    if ctx.json() {
        return print_json(&out);
    }
    let mut lines = vec![format!("mdmctl {}", out.client)];
    if let Some(s) = &out.server {
        lines.push(format!("server {s}"));
    }
    print_lines(&lines)
}
