// The signals that ask a training run to checkpoint and exit: a scheduler's SIGTERM, a preemption
// warning's SIGUSR1, and the SIGCONT with which OpenMPI's launcher starts ending a job.
#pragma once

#include <atomic>
#include <string>

namespace lookahead::launch {

/// Installs handlers that raise `*flag` (which must outlive the process's handlers) on
///  - SIGTERM and SIGUSR1 (schedulers, preemption warnings; mpirun forwards SIGUSR1);
///  - SIGCONT sent by the parent process while not suspended. OpenMPI's mpirun / orted (the
///    ranks' parent) end a job, on SIGTERM or SIGINT to mpirun or a dead rank, by sending the
///    ranks SIGCONT at once, SIGTERM `odls_base_sigkill_timeout` seconds later and SIGKILL as long
///    again: the SIGCONT is the first and often the only warning with time to act on.
/// A SIGCONT that resumes a stopped process (Ctrl-Z to mpirun, which stops the ranks, then `fg`)
/// is a resume, not a stop: a heartbeat thread tells the two apart (a stopped process's heartbeat
/// is more than 1 s old). Each stop request prints one line to stderr naming `who` (e.g. "rank 1
/// of 4 on node3") and the signal.
void install_stop_signals(std::atomic<bool>* flag, const std::string& who);

}  // namespace lookahead::launch
