"""The `msp` command: the composition root that runs, supervises and demonstrates the platform
on one machine, with its development infrastructure (broker, PostgreSQL, Debian packages)."""
