"""Local stand-ins for the services falback talks to: each speaks the real protocol over
HTTP on a loopback port, so the production code path is the one under test."""
