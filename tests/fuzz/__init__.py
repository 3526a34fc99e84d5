"""Property-based fuzzing (hypothesis) of the pure protocol code, each test on a fixed budget."""
