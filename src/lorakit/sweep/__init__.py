"""lorakit sweep: search config keys on Optuna, each trial a tracked run, here or as Slurm jobs."""
