//! The one thread that forks instance processes.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! and tokio retires idle blocking threads, so spawning from a tokio thread
//! would kill instances at random. This thread lives as long as the
//! supervisor; when it ends, the kernel kills every instance it started.

use std::sync::mpsc;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::RuntimeError;

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Spawner {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Spawner {
    pub(crate) fn new() -> Result<Self, RuntimeError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("redwall-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(RuntimeError::io("starting the spawner thread"))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
        })
    }

    /// Runs `f` on the spawner thread and returns its result.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done_tx.send(f());
        });
        {
            let guard = self.tx.lock().map_err(|_| RuntimeError::SpawnerGone)?;
            let tx = guard.as_ref().ok_or(RuntimeError::SpawnerGone)?;
            tx.send(job).map_err(|_| RuntimeError::SpawnerGone)?;
        }
        done_rx.await.map_err(|_| RuntimeError::SpawnerGone)
    }

    /// Ends the thread once queued jobs are done; its children then receive
    /// SIGKILL from the kernel.
    pub(crate) fn shut_down(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
    }
}
