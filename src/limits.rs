//! Process limits raised at start.

/// Raises the soft limit on open files to the hard limit (at most `cap`): every TFTP
/// transfer holds two sockets and every HTTP download a socket and a file, and a
/// default soft limit of 1024 is reached by a single rack booting at once. Returns
/// the soft limit before and after.
pub fn raise_nofile(cap: u64) -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted = limit.rlim_max.min(cap);
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the soft limit stays within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok((limit.rlim_cur, wanted));
    }
    Ok((limit.rlim_cur, limit.rlim_cur))
}

/// Makes large freed blocks go back to the kernel at once. glibc raises its mmap
/// threshold each time a large mapped block is freed; after that, blocks of that
/// size come from its heaps and stay resident when freed. Each 19 MiB argon2 check
/// of a login then grew the process for good (measured: 30 logins, +500 MB, even
/// with two checks at a time). A fixed threshold keeps every block of 1 MiB or
/// more in its own mapping, unmapped on free. Returns whether it was set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn return_large_allocations() -> bool {
    // SAFETY: mallopt only sets an allocator parameter; any value is accepted or refused.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) == 1 }
}

/// Other allocators have no such threshold to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_allocations() -> bool {
    true
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; statvfs writes `stat`
    // and it is read only when the call succeeded.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // Both are u64 here, narrower on some targets: `from` is lossless on each.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_never_goes_down() {
        let (before, unchanged) = super::raise_nofile(0).expect("getrlimit");
        assert_eq!(before, unchanged, "a cap of 0 never lowers the limit");
        let (_, after) = super::raise_nofile(1 << 20).expect("setrlimit");
        assert!(after >= before);
        assert_eq!(super::raise_nofile(0).expect("getrlimit"), (after, after));
    }
}
