"""gRPC servicers of the typed API and their proto <-> domain conversions."""
