"""Development tooling: the services the tests and benchmarks run on."""
