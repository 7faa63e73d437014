//! Commands and what devices answer to them.
//!
//! A command is the plist `{CommandUUID, Command: {RequestType, …}}` served as the reply to a
//! device's request on the ServerURL; the device answers with a report (`Status` `Idle`,
//! `Acknowledged`, `Error`, `CommandFormatError` or `NotNow`, plus the command's response keys
//! at the top level).

use serde::{Deserialize, Serialize};

use super::ProtocolError;
use super::checkin::{Header, Sender, decode, value_of};

/// `Status` of a command report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
    Other(String),
}

impl Status {
    fn parse(s: &str) -> Self {
        match s {
            "Idle" => Status::Idle,
            "Acknowledged" => Status::Acknowledged,
            "Error" => Status::Error,
            "CommandFormatError" => Status::CommandFormatError,
            "NotNow" => Status::NotNow,
            other => Status::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Idle => "Idle",
            Status::Acknowledged => "Acknowledged",
            Status::Error => "Error",
            Status::CommandFormatError => "CommandFormatError",
            Status::NotNow => "NotNow",
            Status::Other(s) => s,
        }
    }
}

/// One entry of Apple's `ErrorChain`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ErrorChainItem {
    #[serde(rename = "ErrorCode", default)]
    pub code: i64,
    #[serde(rename = "ErrorDomain", default)]
    pub domain: String,
    #[serde(rename = "LocalizedDescription", default)]
    pub localized_description: String,
    #[serde(
        rename = "USEnglishDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub us_english_description: Option<String>,
}

/// A device's report on the command channel.
#[derive(Clone, Debug)]
pub struct Report {
    pub sender: Sender,
    pub status: Status,
    pub command_uuid: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
}

#[derive(Deserialize)]
struct ReportWire {
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "CommandUUID")]
    command_uuid: Option<String>,
    #[serde(rename = "ErrorChain", default)]
    error_chain: Vec<ErrorChainItem>,
}

/// Decode a command report (the raw bytes are the command's result and are kept by the caller).
pub fn parse_report(body: &[u8]) -> Result<Report, ProtocolError> {
    let value = value_of(body)?;
    let mut header: Header = decode(&value)?;
    let w: ReportWire = decode(&value)?;
    let status = w.status.ok_or(ProtocolError::Field {
        field: "Status",
        expected: "a string",
    })?;
    let status = Status::parse(&status);
    let command_uuid = w.command_uuid.filter(|u| !u.is_empty());
    if status != Status::Idle && command_uuid.is_none() {
        return Err(ProtocolError::Field {
            field: "CommandUUID",
            expected: "a string (every status but Idle answers a command)",
        });
    }
    Ok(Report {
        sender: header.sender(),
        status,
        command_uuid,
        error_chain: w.error_chain,
    })
}

/// A command ready to queue: its UUID, type, and the full plist served to devices.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub uuid: String,
    pub request_type: String,
    pub plist: Vec<u8>,
}

impl Command {
    /// `{CommandUUID, Command: {RequestType, …params}}` with a fresh UUID.
    pub fn new(request_type: &str, params: plist::Dictionary) -> Self {
        let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
        let mut command = params;
        command.insert("RequestType".into(), request_type.into());
        let mut top = plist::Dictionary::new();
        top.insert("CommandUUID".into(), uuid.clone().into());
        top.insert("Command".into(), plist::Value::Dictionary(command));
        let mut xml = Vec::new();
        // Writing a dictionary of strings and data into a Vec cannot fail.
        let _ = plist::Value::Dictionary(top).to_writer_xml(&mut xml);
        Command {
            uuid,
            request_type: request_type.to_string(),
            plist: xml,
        }
    }

    /// A command an admin wrote as a plist: `{Command: {RequestType …}}` with or without a
    /// `CommandUUID` (a fresh one is assigned when missing), or just the inner `{RequestType …}`.
    pub fn from_plist(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let value = value_of(bytes)?;
        let dict = value.into_dictionary().ok_or(ProtocolError::Invalid(
            "the command must be a dictionary".into(),
        ))?;
        let (mut inner, uuid) = match dict.get("Command").cloned() {
            Some(plist::Value::Dictionary(c)) => {
                let uuid = dict
                    .get("CommandUUID")
                    .and_then(|u| u.as_string())
                    .map(str::to_string);
                (c, uuid)
            }
            Some(_) => {
                return Err(ProtocolError::Field {
                    field: "Command",
                    expected: "a dictionary",
                });
            }
            None => (dict, None),
        };
        let request_type = inner
            .get("RequestType")
            .and_then(|r| r.as_string())
            .filter(|r| !r.is_empty())
            .ok_or(ProtocolError::Field {
                field: "RequestType",
                expected: "a string",
            })?
            .to_string();
        inner.remove("RequestType");
        let mut c = Command::new(&request_type, inner);
        if let Some(u) = uuid.filter(|u| !u.trim().is_empty()) {
            c = c.with_uuid(&u);
        }
        Ok(c)
    }

    /// The same command under a given UUID.
    pub fn with_uuid(self, uuid: &str) -> Self {
        let Ok(plist::Value::Dictionary(mut top)) = plist::from_bytes::<plist::Value>(&self.plist)
        else {
            return self;
        };
        top.insert("CommandUUID".into(), uuid.into());
        let mut xml = Vec::new();
        let _ = plist::Value::Dictionary(top).to_writer_xml(&mut xml);
        Command {
            uuid: uuid.to_string(),
            request_type: self.request_type,
            plist: xml,
        }
    }
}

/// The commands mdmctl can build by name.
pub mod named {
    use super::Command;
    use plist::{Dictionary, Value};

    /// The device facts mdmctl asks for by default.
    pub const DEFAULT_QUERIES: &[&str] = &[
        "DeviceName",
        "OSVersion",
        "BuildVersion",
        "ModelName",
        "Model",
        "ProductName",
        "SerialNumber",
        "UDID",
        "IsSupervised",
        "IsMDMLostModeEnabled",
        "AvailableDeviceCapacity",
        "DeviceCapacity",
    ];

    pub fn device_information(queries: &[&str]) -> Command {
        let mut d = Dictionary::new();
        d.insert(
            "Queries".into(),
            Value::Array(queries.iter().map(|q| Value::String((*q).into())).collect()),
        );
        Command::new("DeviceInformation", d)
    }

    pub fn profile_list(managed_only: bool) -> Command {
        let mut d = Dictionary::new();
        d.insert("ManagedOnly".into(), managed_only.into());
        Command::new("ProfileList", d)
    }

    pub fn security_info() -> Command {
        Command::new("SecurityInfo", Dictionary::new())
    }

    pub fn install_profile(payload: Vec<u8>) -> Command {
        let mut d = Dictionary::new();
        d.insert("Payload".into(), Value::Data(payload));
        Command::new("InstallProfile", d)
    }

    pub fn remove_profile(identifier: &str) -> Command {
        let mut d = Dictionary::new();
        d.insert("Identifier".into(), identifier.into());
        Command::new("RemoveProfile", d)
    }

    /// `ProductVersion`/`ProductKey` may be empty: the device picks the latest update.
    pub fn schedule_os_update(
        product_version: Option<&str>,
        product_key: Option<&str>,
        action: &str,
    ) -> Command {
        let mut u = Dictionary::new();
        u.insert("InstallAction".into(), action.into());
        if let Some(v) = product_version {
            u.insert("ProductVersion".into(), v.into());
        }
        if let Some(k) = product_key {
            u.insert("ProductKey".into(), k.into());
        }
        let mut d = Dictionary::new();
        d.insert("Updates".into(), Value::Array(vec![Value::Dictionary(u)]));
        Command::new("ScheduleOSUpdate", d)
    }

    /// Rotate the personal FileVault recovery key, unlocking with `password` (a FileVault
    /// user's password or the current recovery key); the device returns the new key encrypted to
    /// `reply_cert_der`.
    pub fn rotate_filevault_key(password: &str, reply_cert_der: &[u8]) -> Command {
        let mut unlock = Dictionary::new();
        unlock.insert("Password".into(), password.into());
        let mut d = Dictionary::new();
        d.insert("KeyType".into(), "personal".into());
        d.insert("FileVaultUnlock".into(), Value::Dictionary(unlock));
        d.insert(
            "ReplyEncryptionCertificate".into(),
            Value::Data(reply_cert_der.to_vec()),
        );
        Command::new("RotateFileVaultKey", d)
    }

    /// Tell the device to sync its declarations (it asks for the tokens first).
    pub fn declarative_management() -> Command {
        Command::new("DeclarativeManagement", Dictionary::new())
    }

    pub fn available_os_updates() -> Command {
        Command::new("AvailableOSUpdates", Dictionary::new())
    }

    pub fn device_lock(message: Option<&str>, phone: Option<&str>, pin: Option<&str>) -> Command {
        let mut d = Dictionary::new();
        for (k, v) in [("Message", message), ("PhoneNumber", phone), ("PIN", pin)] {
            if let Some(v) = v {
                d.insert(k.into(), v.into());
            }
        }
        Command::new("DeviceLock", d)
    }

    pub fn erase_device(pin: Option<&str>) -> Command {
        let mut d = Dictionary::new();
        if let Some(p) = pin {
            d.insert("PIN".into(), p.into());
        }
        Command::new("EraseDevice", d)
    }

    /// Lets a device waiting in Setup Assistant (`AwaitingConfiguration`) continue.
    pub fn device_configured() -> Command {
        Command::new("DeviceConfigured", Dictionary::new())
    }

    /// The commands that can be asked for by name (API and CLI), with their parameters.
    pub const NAMES: &[&str] = &[
        "DeviceInformation",
        "ProfileList",
        "SecurityInfo",
        "InstallProfile",
        "RemoveProfile",
        "ScheduleOSUpdate",
        "AvailableOSUpdates",
        "DeviceLock",
        "EraseDevice",
    ];

    /// Build a named command from JSON parameters: `queries` (DeviceInformation),
    /// `managed_only` (ProfileList), `payload` base64 (InstallProfile), `identifier`
    /// (RemoveProfile), `version`/`product_key`/`action` (ScheduleOSUpdate),
    /// `message`/`phone`/`pin` (DeviceLock), `pin` (EraseDevice).
    pub fn by_name(
        request_type: &str,
        params: &serde_json::Value,
    ) -> Result<Command, super::ProtocolError> {
        use base64::Engine;
        let s = |k: &str| params.get(k).and_then(|v| v.as_str());
        let need = |k: &'static str| {
            s(k).filter(|v| !v.is_empty())
                .ok_or(super::ProtocolError::Field {
                    field: k,
                    expected: "a string parameter",
                })
        };
        Ok(match request_type {
            "DeviceInformation" => match params.get("queries").and_then(|q| q.as_array()) {
                Some(q) => {
                    let q: Vec<&str> = q.iter().filter_map(|v| v.as_str()).collect();
                    device_information(&q)
                }
                None => device_information(DEFAULT_QUERIES),
            },
            "ProfileList" => profile_list(
                params
                    .get("managed_only")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            ),
            "SecurityInfo" => security_info(),
            "InstallProfile" => {
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(need("payload")?)
                    .map_err(|e| {
                        super::ProtocolError::Invalid(format!("`payload` is not base64: {e}"))
                    })?;
                install_profile(payload)
            }
            "RemoveProfile" => remove_profile(need("identifier")?),
            "ScheduleOSUpdate" => schedule_os_update(
                s("version"),
                s("product_key"),
                s("action").unwrap_or("Default"),
            ),
            "AvailableOSUpdates" => available_os_updates(),
            "DeviceLock" => device_lock(s("message"), s("phone"), s("pin")),
            "EraseDevice" => erase_device(s("pin")),
            other => {
                return Err(super::ProtocolError::Invalid(format!(
                    "`{other}` is not a command mdmctl builds by name (one of: {}); send it as a plist instead",
                    NAMES.join(", ")
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_apple_shaped() {
        let c = named::remove_profile("com.example.wifi");
        let v: plist::Value = plist::from_bytes(&c.plist).unwrap();
        let d = v.as_dictionary().unwrap();
        assert_eq!(d["CommandUUID"].as_string(), Some(c.uuid.as_str()));
        let inner = d["Command"].as_dictionary().unwrap();
        assert_eq!(inner["RequestType"].as_string(), Some("RemoveProfile"));
        assert_eq!(inner["Identifier"].as_string(), Some("com.example.wifi"));
    }

    #[test]
    fn raw_plists_keep_or_get_a_uuid() {
        let with = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>CommandUUID</key><string>abc</string><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>"#;
        let c = Command::from_plist(with).unwrap();
        assert_eq!(
            (c.uuid.as_str(), c.request_type.as_str()),
            ("abc", "ProfileList")
        );
        let bare = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>RequestType</key><string>SecurityInfo</string></dict></plist>"#;
        let c = Command::from_plist(bare).unwrap();
        assert_eq!(c.request_type, "SecurityInfo");
        assert_eq!(c.uuid.len(), 36);
        let none = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>Command</key><dict/></dict></plist>"#;
        assert!(matches!(
            Command::from_plist(none),
            Err(ProtocolError::Field {
                field: "RequestType",
                ..
            })
        ));
    }

    #[test]
    fn reports_need_a_uuid_unless_idle() {
        let idle = br#"<plist version="1.0"><dict><key>UDID</key><string>U</string><key>Status</key><string>Idle</string></dict></plist>"#;
        let r = parse_report(idle).unwrap();
        assert_eq!(r.status, Status::Idle);
        let err = br#"<plist version="1.0"><dict><key>UDID</key><string>U</string><key>Status</key><string>Error</string><key>CommandUUID</key><string>C</string><key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>4001</integer><key>ErrorDomain</key><string>MCProfileErrorDomain</string><key>LocalizedDescription</key><string>Bad</string></dict></array></dict></plist>"#;
        let r = parse_report(err).unwrap();
        assert_eq!(r.error_chain[0].code, 4001);
        let bad = br#"<plist version="1.0"><dict><key>UDID</key><string>U</string><key>Status</key><string>Acknowledged</string></dict></plist>"#;
        assert!(parse_report(bad).is_err());
    }
}
