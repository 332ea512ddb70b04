"""retouch.server: the gRPC service that validates, routes, runs and stores image edits."""
