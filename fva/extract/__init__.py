"""Stage 1: frozen encoders over a manifest, in batches, to resumable sharded HDF5 caches."""
