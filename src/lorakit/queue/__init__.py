"""The queue: pull datasets, train each, push results, clean up, crash-safe."""
