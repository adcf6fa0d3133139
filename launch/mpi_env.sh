# Sourced by the launch scripts: lets OpenMPI run as root (containers, CI) and place more ranks
# than cores (tests and demos on small machines). Harmless on a real cluster.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
# Blocking MPI calls busy-poll by default; our communication threads then steal the core from the
# compute thread beside them (measured: overlap run at 0.81x of serial; 0.98x with yielding).
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
# mpirun ends a job (SIGTERM or SIGINT to it, or a dead rank) by sending the ranks SIGCONT at once,
# SIGTERM this many seconds later and SIGKILL as long again; our ranks checkpoint and exit on the
# SIGCONT (launch/stop_signals.h), so 2 x this is their time for a step and a checkpoint (default 1:
# 2 s, too short for SDXL). 15 fits SLURM's default KillWait (30 s). mpirun waits the full 2 x this
# even after the ranks are gone, so a failed job also takes that long to end.
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-15}
