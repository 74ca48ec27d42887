//! Statement time limits: one thread interrupts the SQLite connections whose request has run
//! past its deadline (`sqlite3_interrupt`: the statement fails with `SQLITE_INTERRUPT`, and an
//! open transaction's state is SQLite's to report, as for any failed statement).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use libsql_sys::rusqlite::InterruptHandle;

struct Armed {
    handle: InterruptHandle,
    fired: Arc<AtomicBool>,
}

#[derive(Default)]
struct Deadlines {
    armed: BTreeMap<(Instant, u64), Armed>,
    stopping: bool,
}

struct Shared {
    deadlines: Mutex<Deadlines>,
    changed: Condvar,
}

/// Interrupts statements that run longer than their limit.
pub struct Watchdog {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A request's deadline: disarmed when dropped.
pub struct Guard<'a> {
    watchdog: &'a Watchdog,
    key: (Instant, u64),
    fired: Arc<AtomicBool>,
}

impl Guard<'_> {
    /// Whether the deadline passed and the connection was interrupted.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.watchdog
            .shared
            .deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .armed
            .remove(&self.key);
    }
}

impl Watchdog {
    /// Starts the watchdog's thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            deadlines: Mutex::new(Deadlines::default()),
            changed: Condvar::new(),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("libsql-wal-watchdog".into())
            .spawn(move || watch(&for_thread))?;
        Ok(Watchdog {
            shared,
            next_id: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Interrupts `conn` if it still runs `limit` from now, unless the guard is dropped first.
    pub fn arm(&self, conn: &libsql_sys::rusqlite::Connection, limit: Duration) -> Guard<'_> {
        let key = (
            Instant::now() + limit,
            self.next_id.fetch_add(1, Ordering::Relaxed),
        );
        let fired = Arc::new(AtomicBool::new(false));
        let mut deadlines = self
            .shared
            .deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let earliest = deadlines
            .armed
            .keys()
            .next()
            .is_none_or(|first| key < *first);
        deadlines.armed.insert(
            key,
            Armed {
                handle: conn.get_interrupt_handle(),
                fired: fired.clone(),
            },
        );
        drop(deadlines);
        if earliest {
            self.shared.changed.notify_one();
        }
        Guard {
            watchdog: self,
            key,
            fired,
        }
    }
}

fn watch(shared: &Shared) {
    let mut deadlines = shared
        .deadlines
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    loop {
        if deadlines.stopping {
            return;
        }
        let now = Instant::now();
        while let Some(entry) = deadlines.armed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let armed = entry.remove();
            armed.fired.store(true, Ordering::SeqCst);
            armed.handle.interrupt();
            tracing::warn!("a statement ran past its time limit and was interrupted");
        }
        deadlines = match deadlines.armed.keys().next() {
            Some(&(at, _)) => {
                let wait = at.saturating_duration_since(Instant::now());
                shared
                    .changed
                    .wait_timeout(deadlines, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait(deadlines)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared
            .deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_statement_is_interrupted_and_a_quick_one_is_not() {
        let watchdog = Watchdog::start().expect("start");
        let conn = libsql_sys::rusqlite::Connection::open_in_memory().expect("open");
        let guard = watchdog.arm(&conn, Duration::from_millis(50));
        let endless = conn.query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
            [],
            |r| r.get::<_, i64>(0),
        );
        let err = endless.expect_err("interrupted");
        assert!(err.to_string().contains("interrupt"), "{err}");
        assert!(guard.fired());
        drop(guard);
        let guard = watchdog.arm(&conn, Duration::from_secs(60));
        let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0)).expect("quick");
        assert_eq!(one, 1);
        assert!(!guard.fired());
    }
}
