//! Reading what a user names on the command line (scenario files, saved
//! JSON lines): only regular files, never more than a cap, and never a
//! blocking open. A FIFO, a device such as /dev/zero or a directory is one
//! clear error at once instead of a hang or an unbounded read.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest scenario file read: far above any real one (a few KiB).
pub const MAX_SCENARIO_FILE: u64 = 1 << 20;

/// Largest JSON-lines input read (`closelab ladder`).
pub const MAX_JSONL: u64 = 256 << 20;

/// Longest line of JSON-lines input: an event is a few hundred bytes.
pub const MAX_JSONL_LINE: usize = 1 << 20;

/// Errors of [`read_regular`] and [`read_stream`]; `Display` names the
/// object (`what`) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {what}: {reason}")]
    Open { what: String, reason: String },
    #[error("cannot read {what}: not a regular file ({kind})")]
    NotRegular { what: String, kind: &'static str },
    #[error("cannot read {what}: larger than {cap} bytes")]
    TooLarge { what: String, cap: u64 },
    #[error("cannot read {what}: line {line} is longer than {cap} bytes")]
    LineTooLong { what: String, line: usize, cap: usize },
}

/// The OS's wording without "(os error N)", lowercase first letter:
/// `no such file or directory`.
pub fn reason(e: &io::Error) -> String {
    crate::config::os_error_text(e)
}

/// Reads a regular file of at most `cap` bytes. The open is non-blocking
/// (a FIFO without a writer would otherwise block in open() for ever) and
/// the type is checked on the open fd, so nothing can change in between.
pub fn read_regular(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let what = what.to_string();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| ReadError::Open { what: what.clone(), reason: reason(&e) })?;
    let meta = f.metadata().map_err(|e| ReadError::Open { what: what.clone(), reason: reason(&e) })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a plain file"
        };
        return Err(ReadError::NotRegular { what, kind });
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge { what, cap });
    }
    read_capped(f, cap, &what)
}

/// Reads at most `cap` bytes from a stream (stdin); more is an error, not
/// a truncation.
pub fn read_capped(r: impl Read, cap: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let mut v = Vec::new();
    r.take(cap.saturating_add(1))
        .read_to_end(&mut v)
        .map_err(|e| ReadError::Open { what: what.to_string(), reason: reason(&e) })?;
    if v.len() as u64 > cap {
        return Err(ReadError::TooLarge { what: what.to_string(), cap });
    }
    Ok(v)
}

/// Checks that no line of `bytes` is longer than `cap` (the JSON-lines
/// reader's line cap, applied before any line is parsed).
pub fn check_lines(bytes: &[u8], cap: usize, what: &str) -> Result<(), ReadError> {
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.len() > cap {
            return Err(ReadError::LineTooLong { what: what.to_string(), line: i + 1, cap });
        }
    }
    Ok(())
}

/// Reads a scenario file (UTF-8, at most [`MAX_SCENARIO_FILE`]).
pub fn read_scenario(path: &Path) -> Result<String, ReadError> {
    let what = format!("scenario file {}", path.display());
    let bytes = read_regular(path, MAX_SCENARIO_FILE, &what)?;
    String::from_utf8(bytes).map_err(|_| ReadError::Open { what, reason: "not UTF-8 text".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_read_regular_refuses_devices_and_directories() {
        let e = read_regular(Path::new("/dev/zero"), 100, "x").unwrap_err();
        assert_eq!(e.to_string(), "cannot read x: not a regular file (a character device)");
        let e = read_regular(Path::new("/"), 100, "x").unwrap_err();
        assert_eq!(e.to_string(), "cannot read x: not a regular file (a directory)");
        let e = read_regular(Path::new("/nonexistent/file"), 100, "x").unwrap_err();
        assert_eq!(e.to_string(), "cannot read x: no such file or directory");
    }

    #[test]
    fn test_read_capped_and_lines() {
        assert_eq!(read_capped(&b"abc"[..], 3, "x").unwrap(), b"abc");
        assert_eq!(read_capped(&b"abcd"[..], 3, "x").unwrap_err().to_string(), "cannot read x: larger than 3 bytes");
        let e = read_capped(std::io::repeat(0), 1000, "stdin").unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }));
        assert!(check_lines(b"ab\ncd\n", 2, "x").is_ok());
        assert_eq!(
            check_lines(b"ab\ncde\n", 2, "x").unwrap_err().to_string(),
            "cannot read x: line 2 is longer than 2 bytes"
        );
    }
}
