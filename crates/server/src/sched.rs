//! Scheduling hints for the server's latency-sensitive threads: the HTTP workers, the threads
//! that read replication steps on the primary, and the replica's threads. Each wakes, does a
//! little, and sleeps; on a machine whose cores are busy with CPU-bound work (SQL, an embedding
//! application) a woken thread waits for a busy one's slice to end, and a replication step
//! crosses half a dozen such wake-ups. Linux 6.12 and later let a thread of the fair scheduler
//! ask for a shorter slice (`sched_setattr`'s `sched_runtime`, no privilege needed); its
//! wake-ups then preempt the CPU-bound threads sooner. It changes no thread's share of the CPU,
//! only when it runs. Where the kernel has no such slice (older kernels ignore it, others refuse)
//! the threads run as they would have: nothing depends on it.

/// The slice asked for: the shortest the kernel takes.
#[cfg(target_os = "linux")]
const SLICE_NS: u64 = 100_000;

/// Asks for a short slice for this thread, once per thread; keeps the thread's policy and nice
/// value, and leaves a thread of another policy than the default alone.
pub(crate) fn latency_sensitive() {
    thread_local!(static ASKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if ASKED.with(|asked| asked.replace(true)) {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = linux::ask_for_slice(SLICE_NS) {
        tracing::debug!(error = %e, "the kernel keeps this thread's slice");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// `struct sched_attr` as the kernel's first version has it (`SCHED_ATTR_SIZE_VER0`).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    /// `SCHED_OTHER`, the default policy.
    const SCHED_OTHER: u32 = 0;
    /// `SCHED_FLAG_RESET_ON_FORK`, which an unprivileged thread may not clear.
    const SCHED_FLAG_RESET_ON_FORK: u64 = 1;

    /// This thread's scheduling attributes.
    fn attributes() -> std::io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        // SAFETY: the kernel writes at most `size` bytes into `attr`, a live `repr(C)` struct
        // of that size; pid 0 is this thread.
        #[allow(unsafe_code)]
        let read = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0 as libc::c_long,
                &mut attr as *mut SchedAttr,
                size_of::<SchedAttr>() as libc::c_long,
                0 as libc::c_long,
            )
        };
        if read != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(attr)
    }

    /// Sets this thread's slice to `slice_ns`, reading its attributes first so that only the
    /// slice changes.
    pub(super) fn ask_for_slice(slice_ns: u64) -> std::io::Result<()> {
        let mut attr = attributes()?;
        if attr.policy != SCHED_OTHER {
            return Ok(());
        }
        attr.size = size_of::<SchedAttr>() as u32;
        attr.flags &= SCHED_FLAG_RESET_ON_FORK;
        attr.runtime = slice_ns;
        // SAFETY: the kernel reads `attr.size` bytes of `attr`, a live, initialised `repr(C)`
        // struct of that size; pid 0 is this thread, whose policy and nice value are kept.
        #[allow(unsafe_code)]
        let set = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0 as libc::c_long,
                &attr as *const SchedAttr,
                0 as libc::c_long,
            )
        };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn asking_for_a_slice_keeps_the_threads_policy_and_nice_value() {
            std::thread::spawn(|| {
                let before = attributes().expect("attributes");
                match ask_for_slice(super::super::SLICE_NS) {
                    // A sandbox without the call, or one that forbids it: nothing changes.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {}
                    asked => asked.expect("a slice"),
                }
                let after = attributes().expect("attributes");
                assert_eq!((after.policy, after.nice), (before.policy, before.nice));
                // Kernels with custom slices report the one asked for; others ignore it.
                assert!(
                    after.runtime == super::super::SLICE_NS || after.runtime == before.runtime,
                    "{} ns",
                    after.runtime
                );
            })
            .join()
            .expect("the test thread");
        }
    }
}
