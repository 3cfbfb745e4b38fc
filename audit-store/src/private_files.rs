//! Files and directories only the process's user may read: the store's databases, spool and
//! checkpoints hold every audited action, and whoever may write them may try to rewrite it.
//! Modes are given when each file is created (0700 for directories, 0600 for files), so they
//! hold whatever the process's umask; existing files keep the mode their owner gave them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

/// Creates `dir` and its missing parents, each accessible by the owner only. An existing
/// directory is left as it is.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a missing file readable and writable by the owner only.
pub(crate) fn options() -> OpenOptions {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates a new private file at `path` (an existing one is an error) holding `bytes`,
/// synced to disk.
pub(crate) fn create_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = options().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates, or truncates, the private file at `path` for writing.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Creates an empty private file at `path` unless something is there already, and the
/// directory it goes in (private) when missing. (For SQLite's database file.)
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn directories_are_0700_and_files_0600_and_existing_files_are_left_alone() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir)?;
        assert_eq!(mode(&tmp.path().join("a"))?, 0o700);
        assert_eq!(mode(&dir)?, 0o700);
        let file = dir.join("new");
        create_new(&file, b"x")?;
        assert_eq!(mode(&file)?, 0o600);
        assert!(
            create_new(&file, b"y").is_err(),
            "an existing file is not replaced"
        );
        assert_eq!(std::fs::read(&file)?, b"x");
        let touched = tmp.path().join("c/db");
        touch(&touched)?;
        assert_eq!(mode(&touched)?, 0o600);
        assert_eq!(mode(&tmp.path().join("c"))?, 0o700);
        std::fs::write(&touched, b"data")?;
        std::fs::set_permissions(&touched, std::fs::Permissions::from_mode(0o640))?;
        touch(&touched)?;
        assert_eq!(std::fs::read(&touched)?, b"data");
        assert_eq!(mode(&touched)?, 0o640);
        drop(create(&tmp.path().join("t"))?);
        assert_eq!(mode(&tmp.path().join("t"))?, 0o600);
        Ok(())
    }
}
