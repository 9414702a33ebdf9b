//! Delivering a message into a Maildir the way an MTA's local delivery does: write it under
//! `tmp/` with a unique name, then rename it into `new/`.
//!
//! The rename is what makes the delivery atomic for a reader such as Dovecot serving the same
//! directory: it never sees a half-written file in `new/`. Missing `tmp/`, `new/` and `cur/`
//! directories are created; existing ones are left with their owner and mode, because the
//! IMAP server that serves them may run as another user and must keep being able to move and
//! delete files there.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Writes `message` into `maildir`'s `new/` and returns the file's path.
pub fn deliver_to_maildir(maildir: &Path, message: &[u8]) -> std::io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        let dir = maildir.join(sub);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
        }
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // The Maildir naming convention: time, then something unique on this host.
    let name = format!(
        "{}.M{}P{}Q{}R{:08x}.tw-sim,S={}",
        since_epoch.as_secs(),
        since_epoch.subsec_micros(),
        std::process::id(),
        DELIVERIES.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..),
        message.len()
    );
    let tmp = maildir.join("tmp").join(&name);
    let new = maildir.join("new").join(&name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(message)?;
        file.sync_all()?;
    }
    if let Err(err) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_lands_in_new_with_a_unique_name_and_leaves_tmp_empty() {
        let dir = std::env::temp_dir().join(format!("tw-sim-maildir-{:016x}", fastrand::u64(..)));
        let first = deliver_to_maildir(&dir, b"Subject: one\r\n\r\nx\r\n").unwrap();
        let second = deliver_to_maildir(&dir, b"Subject: two\r\n\r\ny\r\n").unwrap();
        assert_ne!(first, second);
        assert_eq!(first.parent().unwrap(), dir.join("new"));
        assert_eq!(
            std::fs::read(&second).unwrap(),
            b"Subject: two\r\n\r\ny\r\n"
        );
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(dir.join("cur").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
