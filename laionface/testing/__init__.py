"""Test and demo helpers: a local HTTP server with fault endpoints, and real face images
composed at known boxes. They live in the package because `laionface demo` uses them too."""
