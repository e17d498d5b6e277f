"""Fakes of outside systems for tests: real servers on loopback that record what they receive."""
