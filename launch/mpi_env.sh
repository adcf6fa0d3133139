# Sourced by the launch scripts: lets OpenMPI run as root (containers, CI) and place more ranks
# than cores (tests and demos on small machines). Harmless on a real cluster.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
# Blocking MPI calls busy-poll by default; our communication threads then steal the core from the
# compute thread beside them (measured: overlap run at 0.81x of serial; 0.98x with yielding).
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
