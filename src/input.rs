//! Files named by people and pipelines (a profile in a GitOps repository, a dump, a key), read
//! safely: regular files only (a FIFO would block forever, `/dev/zero` never ends) and within a
//! size limit checked before reading and enforced while reading (the file may grow meanwhile).
//! Errors name the file; the caller adds which flag raises the limit. Depends on nothing but
//! `std`, so every module may use it.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Certificates, keys and tokens: far below this.
pub const MAX_SMALL: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("`{path}` is {what}, not a regular file")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("`{path}` is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InputError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        InputError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl crate::diagnose::Diagnose for InputError {
    fn hint(&self) -> Option<String> {
        match self {
            InputError::NotRegular { .. } => {
                Some("give a regular file (save a stream to a file first)".into())
            }
            InputError::TooLarge { .. } | InputError::Io { .. } => None,
        }
    }
}

fn kind(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// The file's metadata if it is a regular file (symlinks followed).
pub fn regular(path: &Path) -> Result<Metadata, InputError> {
    let m = std::fs::metadata(path).map_err(|e| InputError::io(path, e))?;
    if !m.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            what: kind(&m),
        });
    }
    Ok(m)
}

/// Open a regular file for streaming (no size limit: the reader bounds what it keeps).
pub fn open_regular(path: &Path) -> Result<File, InputError> {
    regular(path)?;
    File::open(path).map_err(|e| InputError::io(path, e))
}

/// Read a whole regular file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let m = regular(path)?;
    let too_large = |size| InputError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    if m.len() > limit {
        return Err(too_large(m.len()));
    }
    let f = File::open(path).map_err(|e| InputError::io(path, e))?;
    let mut out = Vec::with_capacity(m.len() as usize);
    f.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| InputError::io(path, e))?;
    if out.len() as u64 > limit {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// Read a stream the user named on purpose (`-` for stdin, a FIFO such as `<(…)`'s
/// `/dev/fd/63`, `/dev/stdin`): whatever it is, at most `limit` bytes are kept, and a longer one is
/// refused. (Paths found by walking a directory or named inside a file are regular files only.)
pub fn read_stream_limited(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
    } else {
        File::open(path).and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut out))
    };
    read.map_err(|e| InputError::io(path, e))?;
    if out.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("small");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_limited(&f, 5).unwrap(), b"hello");
        assert!(matches!(
            read_limited(&f, 4),
            Err(InputError::TooLarge {
                size: 5,
                limit: 4,
                ..
            })
        ));
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 1 << 20),
            Err(InputError::NotRegular {
                what: "a character device",
                ..
            })
        ));
        assert!(matches!(
            read_limited(dir.path(), 10),
            Err(InputError::NotRegular {
                what: "a directory",
                ..
            })
        ));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Refused before opening: opening a FIFO with no writer would block.
            assert!(matches!(
                open_regular(&fifo),
                Err(InputError::NotRegular {
                    what: "a FIFO (named pipe)",
                    ..
                })
            ));
        }
        assert!(matches!(
            read_limited(&dir.path().join("missing"), 10),
            Err(InputError::Io { .. })
        ));
    }
}
