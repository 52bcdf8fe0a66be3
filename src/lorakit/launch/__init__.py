"""Starting training elsewhere: several local processes (torchrun), Slurm jobs, containers."""
