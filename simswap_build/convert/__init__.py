"""From official checkpoints to a bundle: safe unpickling, architecture detection, strict loading, the
bundle writer, and the optional enhancer role."""
