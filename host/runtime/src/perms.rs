//! Who may write the files that become code: decoder files, their
//! sidecars, and the compiled-component cache (loaded without
//! re-verification). Refused, as ssh refuses a private key others can
//! write, when anyone but the agent's user (or root) could change them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that only the agent's user or root can change `path` (a file or a
/// directory; symlinks are followed, as opening it would): owned by one of
/// them, and not writable by group or others unless its filesystem is
/// mounted read-only (a Kubernetes ConfigMap volume). `Err` names the path,
/// its mode and owner, and what to do.
pub fn only_agent_writes(path: &Path) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    let mode = m.mode() & 0o7777;
    if m.uid() != me && m.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not by the agent's user (uid {me}) or root: refused (chown it)",
            path.display(),
            m.uid()
        ));
    }
    if mode & 0o022 != 0 && !read_only(path) {
        return Err(format!(
            "{} has mode {mode:04o}: writable by {}: refused (chmod go-w {})",
            path.display(),
            match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                _ => "others",
            },
            path.display()
        ));
    }
    Ok(())
}

fn read_only(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_writable_paths_are_refused() {
        let dir = std::env::temp_dir().join(format!("wasmtap-perms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.wasm");
        std::fs::write(&f, b"x").unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&dir, 0o755);
        set(&f, 0o644);
        assert_eq!(only_agent_writes(&dir), Ok(()));
        assert_eq!(only_agent_writes(&f), Ok(()));
        set(&f, 0o666);
        let e = only_agent_writes(&f).unwrap_err();
        assert!(
            e.contains("mode 0666") && e.contains("group and others"),
            "{e}"
        );
        set(&dir, 0o775);
        let e = only_agent_writes(&dir).unwrap_err();
        assert!(e.contains("mode 0775") && e.contains("its group"), "{e}");
        assert!(only_agent_writes(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
