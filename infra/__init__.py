"""What every layer may import: the user-error type, atomic file writing, log-friendly progress.
It imports nothing of the project's."""
