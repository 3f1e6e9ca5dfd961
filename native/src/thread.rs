//! One native thread owns all libtorch state of a trainer.
//!
//! Grad mode, autocast and the current CUDA device are thread-local in
//! libtorch, and Deno's non-blocking FFI calls land on arbitrary threads,
//! so calls are posted here as closures and their callers wait.
use std::sync::mpsc;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A thread that owns a value of type `S` created on that thread.
pub struct Owner<S> {
    jobs: Option<mpsc::Sender<Job<S>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<S: 'static> Owner<S> {
    /// Starts the thread and builds its state there with `init`.
    pub fn spawn<F>(name: &str, init: F) -> anyhow::Result<Self>
    where
        F: FnOnce() -> anyhow::Result<S> + Send + 'static,
    {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job<S>>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let mut state = match crate::status::catch(init) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(job) = jobs_rx.recv() {
                job(&mut state);
            }
        })?;
        ready_rx.recv().map_err(|_| anyhow::anyhow!("{name} thread died while starting"))??;
        Ok(Owner { jobs: Some(jobs_tx), thread: Some(thread) })
    }

    /// Runs `f` on the owning thread and waits for its result.
    pub fn call<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> anyhow::Result<R> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job<S> = Box::new(move |s: &mut S| {
            let _ = tx.send(crate::status::catch(|| f(s)));
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the owning thread is closed"))?
            .send(job)
            .map_err(|_| anyhow::anyhow!("the owning thread has stopped"))?;
        rx.recv().map_err(|_| anyhow::anyhow!("the owning thread stopped during a call"))?
    }
}

impl<S> Drop for Owner<S> {
    fn drop(&mut self) {
        // Closing the channel ends the loop; the state drops on its thread.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
