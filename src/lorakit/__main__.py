"""``python -m lorakit``: what torchrun and srun start on every process."""

from lorakit.cli.main import main

main()
