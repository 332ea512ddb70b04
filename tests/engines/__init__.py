"""The real engines the tests start themselves, each on free loopback ports in a
temporary directory, stopped by its own pid. A missing engine fails the suite with a
message saying how to install it; it is never skipped."""
