//! `libsql-wal-scheduler`: the per-namespace upload scheduler of libsql-wal.
//!
//! A `NamespaceScheduler` (an actix actor) keeps one namespace's sealed segments in frame order,
//! merges the waiting ones into one `UploadJob`, asks its owner for an upload worker with one
//! `RequestUpload` at a time, and retries failed jobs with backoff. The owner (the supervisor
//! crate) runs the jobs, keeps every segment until it is durable, and restarts a scheduler that
//! stops. Messages are nouns: `QueueSegment`, `RequestUpload`, `UploadDone`, `DurableUpTo`,
//! `ForceShutdown`.
//!
//! Layers, lowest first; a module names only the ones below it: `config` (`SchedulerConfig`),
//! `messages`, `scheduler`.

mod config;
mod messages;
mod scheduler;

pub use config::SchedulerConfig;
pub use messages::{
    DurableUpTo, ForceShutdown, QueueSegment, RequestUpload, UploadDone, UploadJob, UploadOutcome,
};
pub use scheduler::{retry_delay, Destination, GetSnapshot, NamespaceScheduler, SchedulerSnapshot};

#[cfg(test)]
mod tests {
    /// Each module's source with the modules it may name (the layers below it).
    const LAYERS: [(&str, &str, &[&str]); 3] = [
        ("config", include_str!("config.rs"), &[]),
        ("messages", include_str!("messages.rs"), &["config"]),
        (
            "scheduler",
            include_str!("scheduler.rs"),
            &["config", "messages"],
        ),
    ];

    #[test]
    fn each_module_names_only_the_layers_below_it() {
        for (module, source, below) in LAYERS {
            for (other, _, _) in LAYERS {
                let named = source.contains(&format!("crate::{other}"));
                assert!(
                    !named || below.contains(&other),
                    "{module} names crate::{other}, which is not below it"
                );
            }
        }
    }
}
