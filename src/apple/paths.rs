//! The URL paths Apple devices were enrolled with by the MDM servers mdmctl replaces: the paths
//! `serve` answers, and the ones `cutover check` compares an old enrollment profile against.

/// The old servers' paths, all served by the same handler (told apart by Content-Type): MicroMDM
/// (`/mdm/checkin`, `/mdm/connect`), NanoMDM (`/mdm`, `/checkin`), Fleet (`/mdm/apple/mdm`).
pub const DEFAULT_MDM_PATHS: &[&str] = &[
    "/mdm",
    "/mdm/checkin",
    "/mdm/connect",
    "/checkin",
    "/mdm/apple/mdm",
];
/// Automated (ABM) enrollment: mdmctl's own (MicroMDM's, so a Mac still assigned MicroMDM's
/// profile finds this server) and Fleet's.
pub const DEP_ENROLL_PATHS: &[&str] = &["/mdm/enroll", "/api/mdm/apple/enroll"];
/// SCEP: mdmctl's own path and Fleet's.
pub const SCEP_PATHS: &[&str] = &["/scep", "/mdm/apple/scep"];
