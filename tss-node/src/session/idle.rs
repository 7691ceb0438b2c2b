//! The presignature pool's own runtime, whose threads run in the idle
//! scheduling class (`SCHED_IDLE`): client requests and Health never wait
//! behind pool work.

/// The pool's runtime: a separate Tokio runtime on low-priority threads.
pub struct PoolRuntime {
    handle: tokio::runtime::Handle,
}

impl PoolRuntime {
    /// Starts the runtime on its own OS thread (which owns it for the life of
    /// the process); `idle`: in the idle scheduling class.
    pub fn start(blocking_threads: usize, idle: bool) -> std::io::Result<Self> {
        let lower = move || {
            if idle {
                lower_priority();
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("presign-pool".into())
            .spawn(move || {
                lower();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(blocking_threads.max(1))
                    .thread_name("presign-pool")
                    .on_thread_start(lower)
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx
            .recv()
            .map_err(|e| std::io::Error::other(format!("pool runtime thread died: {e}")))??;
        Ok(Self { handle })
    }

    /// Handle to spawn pool work on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// Puts the calling thread in the idle scheduling class (Linux `SCHED_IDLE`:
/// it runs only when no normal thread wants the CPU, and a waking normal
/// thread preempts it at once), else at nice 19.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if let Err(e) = idle {
            tracing::warn!(error = ?e, "cannot put the presign thread in SCHED_IDLE; using nice 19");
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
                tracing::warn!(error = %e, "cannot lower the presign thread's priority");
            }
        }
    }
}
