"""Run folders: versioned names, the manifest, results, the loss plot and the model card."""
