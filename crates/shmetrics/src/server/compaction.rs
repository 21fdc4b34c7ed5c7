//! Compaction beside the scrapes: a [`Compactor`] on a task of its own, every
//! [`super::ServerOptions::compact_interval`] (the wait doubled after each failure in a
//! row), each compaction on a blocking thread. No scrape waits for one: the scraping reader
//! finds the new archive and the removed files at its next listing, and reports the
//! compactor's failures (`Reader::follow_compactor`).

use std::time::Duration;

use shmetrics_reader::{Compactor, CompactorHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The compaction task.
pub(crate) struct Compaction {
    task: JoinHandle<()>,
    handle: CompactorHandle,
}

impl Compaction {
    /// Compacts with `compactor` until `stop` is set (or dropped).
    pub(crate) fn start(compactor: Compactor, stop: watch::Receiver<bool>) -> Self {
        let handle = compactor.handle();
        Self {
            task: tokio::spawn(compact_periodically(compactor, stop)),
            handle,
        }
    }

    /// Stops compacting, without waiting: a compaction in progress ends after its batch.
    pub(crate) fn stop(&self) {
        self.handle.stop();
    }

    /// Waits, at most `grace`, for the task to end (after [`Compaction::stop`]). A batch
    /// still running then is finished on its blocking thread, or abandoned when the process
    /// exits: compaction is safe to kill at any point.
    pub(crate) async fn finish(self, grace: Duration) {
        if tokio::time::timeout(grace, self.task).await.is_err() {
            log::warn!(
                "a compaction still runs {grace:?} after shutdown began; not waiting for it"
            );
        }
    }
}

async fn compact_periodically(mut compactor: Compactor, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(compactor.due_in()) => {}
            _ = stop.wait_for(|&stopping| stopping) => return,
        }
        let compacted = tokio::task::spawn_blocking(move || {
            compactor.compact_if_due();
            compactor
        })
        .await;
        compactor = match compacted {
            Ok(c) => c,
            Err(e) => {
                log::error!("compaction failed: {e}; no more compactions until a restart");
                return;
            }
        };
    }
}
