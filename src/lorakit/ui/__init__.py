"""The local web dashboard (``lorakit ui``): a view of run folders, queue workspaces and sweeps."""
