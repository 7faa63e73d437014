//! Input never panics the loader or the profile checks: every prefix and many single-byte
//! corruptions of the example files end in problems reported, not a crash.

use std::path::PathBuf;

use mdmctl::apple::profile::check_profile;
use mdmctl::gitops;

use crate::common::TestContext;

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops"))
}

#[test]
fn corrupted_yaml_is_reported_not_a_crash() {
    let ctx = TestContext::new();
    let src = std::fs::read(examples().join("teams/workstations.yml")).unwrap();
    // Profiles resolve relative to the YAML file: keep the layout.
    std::fs::create_dir_all(ctx.path("teams")).unwrap();
    std::os::unix::fs::symlink(examples().join("profiles"), ctx.path("profiles")).unwrap();
    let file = ctx.path("teams/t.yml");
    let mut outcomes = 0;
    for end in 0..=src.len() {
        std::fs::write(&file, &src[..end]).unwrap();
        let l = gitops::load(std::slice::from_ref(&file), &Default::default(), &|_| None);
        outcomes += l.issues.len();
    }
    for i in (0..src.len()).step_by(3) {
        for b in [b'\t', b':', b'{', b'"', b'$', 0xff, b'-', b'\n'] {
            let mut bytes = src.clone();
            bytes[i] = b;
            std::fs::write(&file, &bytes).unwrap();
            let l = gitops::load(
                std::slice::from_ref(&file),
                &gitops::LoadOptions {
                    allow_unknown_keys: true,
                    ..Default::default()
                },
                &|_| None,
            );
            outcomes += l.issues.len();
        }
    }
    assert!(outcomes > 0);
}

#[test]
fn corrupted_profiles_are_reported_not_a_crash() {
    for name in [
        "wifi.mobileconfig",
        "pppc-zoom.mobileconfig",
        "firewall-signed.mobileconfig",
    ] {
        let src = std::fs::read(examples().join("profiles").join(name)).unwrap();
        assert!(check_profile(&src).is_ok(), "{name}");
        for end in (0..src.len()).step_by(7) {
            assert!(check_profile(&src[..end]).is_err(), "{name} cut at {end}");
        }
        for i in (0..src.len()).step_by(5) {
            let mut bytes = src.clone();
            bytes[i] ^= 0x5a;
            let _ = check_profile(&bytes);
        }
    }
}
