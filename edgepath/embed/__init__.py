"""Scanner-side inference: slides in, one resumable HDF5 feature file per slide out (embed, watch)."""
