//! c10d's failures, said in the user's words: which flag, which host and
//! port, and what probably happened. c10d's own text (first line) follows.
use super::group::Rendezvous;
use anyhow::{anyhow, Error};

fn first_line(e: &Error) -> String {
    let full = format!("{e:#}");
    full.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

fn has(text: &str, needles: &[&str]) -> bool {
    let t = text.to_lowercase();
    needles.iter().any(|n| t.contains(n))
}

/// What to do about replicas that share a GPU (said once, used above).
pub const SHARED_GPU: &str = "NCCL needs one GPU per replica, and two replicas are on one GPU: start at most as many replicas per node as it has GPUs, give each its own (CUDA_VISIBLE_DEVICES, or srun --gpus-per-task=1), or train on the CPU with Gloo (--no-cuda)";

/// A failed join of the process group.
pub fn rendezvous_error(e: Error, rv: &Rendezvous) -> Error {
    let msg = first_line(&e);
    let secs = rv.timeout.as_secs_f64();
    let at = format!("{}:{}", rv.master, rv.port);
    if has(&msg, &["eaddrinuse", "address already in use"]) {
        return anyhow!(
            "rank 0 cannot serve the rendezvous on port {}: the port is already in use; choose another --distributed-port (or MASTER_PORT)",
            rv.port
        );
    }
    if rv.rank == 0 && has(&msg, &["waiting for clients", "timed out", "timeout"]) {
        return anyhow!(
            "rendezvous at {at}: not all {} ranks joined within {secs} s (--distributed-timeout); did every rank start, with the same --num-replicas? ({msg})",
            rv.world
        );
    }
    if has(&msg, &["timed out", "timeout", "connect", "refused", "name or service not known", "resolve"]) {
        return anyhow!(
            "rank {} cannot reach the rendezvous at {at} within {secs} s (--distributed-timeout): is rank 0 running there, and are --distributed-master and --distributed-port right? ({msg})",
            rv.rank
        );
    }
    anyhow!("rank {} could not join the process group at {at}: {msg}", rv.rank)
}

/// A collective that failed during training: another rank died, hung or
/// lost the network.
pub fn collective_error(e: Error, rank: usize, secs: f64) -> Error {
    let msg = first_line(&e);
    // NCCL refuses a communicator with two ranks on one GPU ("Duplicate GPU
    // detected" in its detail, "invalid usage" on the first line). selfsup's
    // own check (cli/launch.ts) catches this where the launcher is known;
    // this covers the rest, e.g. SLURM tasks that were not given a GPU each.
    if has(&format!("{e:#}"), &["duplicate gpu"]) || (has(&msg, &["nccl"]) && has(&msg, &["invalid usage"])) {
        return anyhow!("rank {rank}: {SHARED_GPU} ({msg})");
    }
    if has(&msg, &["connection closed", "connection reset", "broken pipe", "peer", "eof", "socket"]) {
        return anyhow!("rank {rank}: another rank stopped or was killed (its connection closed during a collective): {msg}");
    }
    if has(&msg, &["timed out", "timeout"]) {
        return anyhow!("rank {rank}: another rank did not take part in a collective within {secs} s (--distributed-timeout): {msg}");
    }
    e
}

/// Whether an error came from c10d's communication (and not, say, from a
/// wrong tensor shape).
pub fn is_collective_error(e: &Error) -> bool {
    has(
        &first_line(e),
        // Gloo also says "Application timeout caused pair closure".
        &["gloo", "nccl", "c10d", "connection closed", "connection reset", "timed out", "timeout", "broken pipe", "dist"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_on_one_gpu_are_explained_by_what_to_do() {
        let nccl = anyhow!(
            "NCCL error in: ProcessGroupNCCL.cpp:3420, invalid usage (run with NCCL_DEBUG=WARN for details), NCCL version 2.28.3\nncclInvalidUsage: This usually reflects invalid usage of NCCL library.\nLast error:\nDuplicate GPU detected : rank 1 and rank 0 both on CUDA device 1b000"
        );
        let said = collective_error(nccl, 1, 60.0).to_string();
        assert!(said.starts_with("rank 1: NCCL needs one GPU per replica"), "{said}");
        assert!(said.contains("--no-cuda") && !said.contains('\n'), "{said}");
        // Other failures keep their own explanation.
        let closed = collective_error(anyhow!("Connection closed by peer [127.0.0.1]:4000"), 0, 60.0).to_string();
        assert!(closed.starts_with("rank 0: another rank stopped or was killed"), "{closed}");
    }
}
